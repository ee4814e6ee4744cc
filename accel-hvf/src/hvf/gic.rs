//! The framework's GICv3 (macOS 15): `hv_gic_create` before the first vCPU, SPIs through
//! `hv_gic_set_spi`, and PPIs through the redistributor's pending registers, which only the
//! vCPU's own thread may touch: they are queued for it and it is woken to apply them.

use std::sync::Arc;

use accel_api::{backend::BackendGic, AccelError, GicConfig, IrqLine, Result};
use applevisor::prelude::GicConfig as HvGicConfig;
use applevisor_sys::{
    hv_gic_config_create, hv_gic_config_set_distributor_base, hv_gic_config_set_redistributor_base,
    hv_gic_create, hv_gic_set_spi, os_release,
};

use super::{
    error::{hv_check, hv_error},
    shared::VmShared,
};

/// A VM's GIC.
pub struct HvfGic {
    vm: Arc<VmShared>,
}

impl HvfGic {
    /// The GIC of `vm`, not created yet.
    pub fn new(vm: Arc<VmShared>) -> Self {
        Self { vm }
    }
}

/// Creates the framework's GIC with the distributor and redistributors where `config` says.
fn create(config: &GicConfig) -> Result<()> {
    // SAFETY: creates a configuration object; it is released below, after its last use.
    let hv_config = unsafe { hv_gic_config_create() };
    let steps = || -> Result<()> {
        // SAFETY: `hv_config` is a live GIC configuration.
        let rc = unsafe { hv_gic_config_set_distributor_base(hv_config, config.dist_base) };
        hv_check(format!("hv_gic_config_set_distributor_base({:#x})", config.dist_base), rc)?;
        // SAFETY: as above.
        let rc = unsafe { hv_gic_config_set_redistributor_base(hv_config, config.redist_base) };
        hv_check(format!("hv_gic_config_set_redistributor_base({:#x})", config.redist_base), rc)?;
        // SAFETY: as above; the VM exists and has no vCPU yet (checked by the caller).
        let rc = unsafe { hv_gic_create(hv_config) };
        hv_check("hv_gic_create", rc)
    };
    let result = steps();
    // SAFETY: `hv_config` came from hv_gic_config_create and is not used after this.
    unsafe { os_release(hv_config) };
    result
}

impl BackendGic for HvfGic {
    fn create(&self, config: &GicConfig) -> Result<()> {
        if config.its_base.is_some() {
            return Err(AccelError::unsupported(
                "Hypervisor.framework's GIC has no ITS (an ITS base was given)",
            ));
        }
        let (_, spis) = HvGicConfig::get_spi_interrupt_range()
            .map_err(|e| hv_error("hv_gic_get_spi_interrupt_range", e))?;
        if config.spis % 32 != 0 || config.spis > spis {
            return Err(AccelError::invalid(format!(
                "{} SPIs: the framework's GIC takes a multiple of 32, at most {spis}",
                config.spis
            )));
        }
        if self.vm.gic().is_some() {
            return Err(AccelError::bad_state("the VM already has a GIC"));
        }
        if !self.vm.vcpus().is_empty() {
            return Err(AccelError::bad_state("the GIC must be created before the first vCPU"));
        }
        create(config)?;
        self.vm.set_gic(*config);
        Ok(())
    }

    fn set_irq(&self, line: IrqLine, level: bool) -> Result<()> {
        let config =
            self.vm.gic().ok_or_else(|| AccelError::bad_state("the VM has no GIC (create it first)"))?;
        match line.kind {
            IrqLine::SPI if line.number < config.spis => {
                let intid = line.number + 32;
                // SAFETY: sets the level of an SPI of the VM's GIC, which exists.
                let rc = unsafe { hv_gic_set_spi(intid, level) };
                hv_check(format!("hv_gic_set_spi({intid}, {level})"), rc)?;
                // A vCPU sleeping in WFI looks again.
                for vcpu in self.vm.vcpus() {
                    vcpu.wake_sleeper();
                }
                Ok(())
            }
            IrqLine::PPI if (16..32).contains(&line.number) => {
                let vcpu = self.vm.vcpu(line.vcpu).ok_or_else(|| {
                    AccelError::invalid(format!("PPI {} of vCPU {}: no such vCPU", line.number, line.vcpu))
                })?;
                vcpu.queue_ppi(line.number, level);
                Ok(())
            }
            _ => Err(AccelError::invalid(format!(
                "no such interrupt line {line:?}: SPIs are 0..{}, PPIs INTID 16..=31",
                config.spis
            ))),
        }
    }
}
