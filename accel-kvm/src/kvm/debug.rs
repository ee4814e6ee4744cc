//! The VM's guest-debug pool on KVM: the kit's [`PoolDebug`] over the kit's [`GuestText`], and
//! the pool's set-up in KVM's form, which each vCPU applies with
//! `KVM_SET_GUEST_DEBUG` on its own thread before it next enters the guest.

use accel_api::debug::DebugSetup;

use accel_kit::{guest_text::GuestText, pool_debug::PoolDebug};
use kvm_bindings::{
    kvm_guest_debug, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_SINGLESTEP, KVM_GUESTDBG_USE_HW,
    KVM_GUESTDBG_USE_SW_BP,
};

/// A VM's debug pool, planting software breakpoints in guest memory through the VM's memory map.
pub type KvmDebug = PoolDebug<GuestText>;

/// The `KVM_SET_GUEST_DEBUG` argument of a debug set-up.
pub fn to_kvm(s: &DebugSetup) -> kvm_guest_debug {
    let mut d = kvm_guest_debug::default();
    if s.active() {
        d.control = KVM_GUESTDBG_ENABLE;
    }
    if s.sw_breakpoints {
        d.control |= KVM_GUESTDBG_USE_SW_BP;
    }
    if s.hardware {
        d.control |= KVM_GUESTDBG_USE_HW;
    }
    if s.single_step {
        d.control |= KVM_GUESTDBG_SINGLESTEP;
    }
    d.arch.dbg_bcr = s.bcr;
    d.arch.dbg_bvr = s.bvr;
    d.arch.dbg_wcr = s.wcr;
    d.arch.dbg_wvr = s.wvr;
    d
}
