//! PSCI in user space on KVM: the SMCCC filter (`KVM_ARM_VM_SMCCC_FILTER`, Linux 6.4) that
//! forwards the PSCI function ranges to the plugin as `KVM_EXIT_HYPERCALL`, and the VM's power
//! board, on which the shared [`accel_kit::psci`] code answers them.
//!
//! KVM keeps the SMCCC architecture range (SMCCC_VERSION, the workarounds) to itself; only the
//! PSCI ranges are forwarded. A vCPU created powered off is created runnable in KVM and kept
//! off on the board instead: its `run` waits there for CPU_ON, which resets it with
//! `KVM_ARM_VCPU_INIT`, as KVM's own CPU_ON does, and starts it at the entry point.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, Weak},
};

use accel_kit::psci::{function, Offer, PowerBoard};

use accel_api::Result;
use kvm_bindings::{
    kvm_device_attr, kvm_smccc_filter, kvm_smccc_filter_action_KVM_SMCCC_FILTER_FWD_TO_USER,
    KVM_ARM_VM_SMCCC_CTRL, KVM_ARM_VM_SMCCC_FILTER,
};
use kvm_ioctls::VmFd;

use super::{error::ioctl_error, kick::KickShared};

/// A VM's PSCI in user space: its power board, what it offers, and its vCPUs' kick states.
#[derive(Default)]
pub struct UserPsci {
    /// The vCPUs' power states, which their kickers wake too.
    pub board: Arc<PowerBoard>,
    /// What the answers offer beyond the mandatory calls.
    pub offer: Offer,
    /// The vCPUs, to bring out of the guest when a system event stops them all.
    vcpus: Mutex<BTreeMap<u32, Weak<KickShared>>>,
}

impl UserPsci {
    /// PSCI in user space offering `offer`, with no vCPU yet.
    pub fn new(offer: Offer) -> Self {
        Self { offer, ..Self::default() }
    }

    /// Registers vCPU `index`'s kick state.
    pub fn register(&self, index: u32, kick: &Arc<KickShared>) {
        if let Ok(mut vcpus) = self.vcpus.lock() {
            vcpus.insert(index, Arc::downgrade(kick));
        }
    }

    /// Forgets vCPU `index`.
    pub fn unregister(&self, index: u32) {
        if let Ok(mut vcpus) = self.vcpus.lock() {
            vcpus.remove(&index);
        }
    }

    /// Nudges every vCPU but `index` out of the guest.
    pub fn nudge_others(&self, index: u32) {
        let others: Vec<Arc<KickShared>> = match self.vcpus.lock() {
            Ok(vcpus) => {
                vcpus.iter().filter(|(i, _)| **i != index).filter_map(|(_, k)| k.upgrade()).collect()
            }
            Err(_) => return,
        };
        for kick in others {
            kick.nudge();
        }
    }
}

/// Forwards both PSCI ranges (SMC32 and SMC64) of `vm` to user space. Must come before any vCPU
/// runs.
pub fn install_filter(vm: &VmFd) -> Result<()> {
    for (first, last) in [function::PSCI_RANGE_32, function::PSCI_RANGE_64] {
        let filter = kvm_smccc_filter {
            base: first,
            nr_functions: last - first + 1,
            action: kvm_smccc_filter_action_KVM_SMCCC_FILTER_FWD_TO_USER as u8,
            pad: [0; 15],
        };
        let attr = kvm_device_attr {
            group: KVM_ARM_VM_SMCCC_CTRL,
            attr: u64::from(KVM_ARM_VM_SMCCC_FILTER),
            addr: &filter as *const kvm_smccc_filter as u64,
            flags: 0,
        };
        vm.set_device_attr(&attr).map_err(|e| {
            ioctl_error(
                format!("KVM_SET_DEVICE_ATTR(KVM_ARM_VM_SMCCC_FILTER) forwarding {first:#x}..={last:#x}"),
                e,
            )
        })?;
    }
    Ok(())
}
