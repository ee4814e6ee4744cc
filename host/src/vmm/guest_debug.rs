//! Handing a debug exception the host does not own back to the guest, as if the host had never
//! been there.

use accel_api::{client::Vcpu, sysreg::VBAR_EL1, DebugExit, PutLevel, Result};

use accel_kit::guest_debug::guest_debug_entry;

/// Delivers a debug exception the host does not own (the guest's own BRK, or a debug event the
/// host did not set up) to the guest's EL1 vector.
pub fn deliver_to_guest(vcpu: &mut Vcpu, exit: &DebugExit) -> Result<()> {
    let mut core = vcpu.get_core()?;
    let vbar = vcpu.get_reg(VBAR_EL1)?;
    let sys = guest_debug_entry(&mut core, vbar, exit);
    vcpu.put_core(&core, PutLevel::RUNTIME)?;
    vcpu.put_regs(&sys, PutLevel::RUNTIME)
}
