//! The in-kernel GICv3 (`KVM_DEV_TYPE_ARM_VGIC_V3`) and its ITS (`KVM_DEV_TYPE_ARM_VGIC_ITS`):
//! creation, and the initialisation KVM allows only once every vCPU exists, done on demand before
//! the first vCPU runs.

use std::sync::{Arc, Mutex};

use accel_api::{backend::BackendGic, AccelError, GicConfig, IrqLine, Result};
use kvm_bindings::{
    kvm_create_device, kvm_device_attr, kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS,
    kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, KVM_ARM_IRQ_TYPE_PPI, KVM_ARM_IRQ_TYPE_SPI,
    KVM_DEV_ARM_VGIC_CTRL_INIT, KVM_DEV_ARM_VGIC_GRP_ADDR, KVM_DEV_ARM_VGIC_GRP_CTRL,
    KVM_DEV_ARM_VGIC_GRP_NR_IRQS, KVM_VGIC_ITS_ADDR_TYPE, KVM_VGIC_V3_ADDR_TYPE_DIST,
    KVM_VGIC_V3_ADDR_TYPE_REDIST,
};
use kvm_ioctls::{DeviceFd, VmFd};

use super::error::ioctl_error;

/// The VM's GIC, once created.
pub struct Gic {
    vm: Arc<VmFd>,
    its_supported: bool,
    state: Mutex<Option<GicState>>,
}

struct GicState {
    device: DeviceFd,
    /// The ITS (`KVM_DEV_TYPE_ARM_VGIC_ITS`), kept open for the VM's life.
    _its: Option<DeviceFd>,
    config: GicConfig,
    initialized: bool,
}

fn set_attr(device: &DeviceFd, group: u32, attr: u32, addr: u64, what: &str) -> Result<()> {
    let attr = kvm_device_attr { group, attr: u64::from(attr), addr, flags: 0 };
    device.set_device_attr(&attr).map_err(|e| ioctl_error(format!("KVM_SET_DEVICE_ATTR({what})"), e))
}

/// Creates the ITS at `base` and initialises it (`KVM_DEV_ARM_VGIC_CTRL_INIT`), as soon as the
/// GICv3 exists: it needs its base address and nothing else.
fn create_its(vm: &VmFd, base: u64) -> Result<DeviceFd> {
    if base % 0x1_0000 != 0 {
        return Err(AccelError::invalid(format!("the ITS base {base:#x} is not 64 KiB aligned")));
    }
    let mut create = kvm_create_device { type_: kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_ITS, fd: 0, flags: 0 };
    let its = vm.create_device(&mut create).map_err(|e| ioctl_error("KVM_CREATE_DEVICE(ARM_VGIC_ITS)", e))?;
    set_attr(
        &its,
        KVM_DEV_ARM_VGIC_GRP_ADDR,
        KVM_VGIC_ITS_ADDR_TYPE,
        &base as *const u64 as u64,
        "ITS base",
    )?;
    set_attr(&its, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, 0, "ITS CTRL_INIT")?;
    Ok(its)
}

impl Gic {
    /// The GIC of `vm`, not created yet; `its_supported` when the kernel can add an ITS.
    pub fn new(vm: Arc<VmFd>, its_supported: bool) -> Self {
        Self { vm, its_supported, state: Mutex::new(None) }
    }

    /// Creates the GICv3 and places it.
    fn create_device(&self, config: &GicConfig) -> Result<()> {
        let vm = &self.vm;
        let mut state = self.state.lock().map_err(|_| AccelError::bad_state("the GIC lock is poisoned"))?;
        if state.is_some() {
            return Err(AccelError::bad_state("the VM already has a GIC"));
        }
        if config.spis % 32 != 0 || config.spis > 988 {
            return Err(AccelError::invalid(format!(
                "{} SPIs: a GICv3 takes a multiple of 32, at most 988",
                config.spis
            )));
        }
        if config.its_base.is_some() && !self.its_supported {
            return Err(AccelError::unsupported("this kernel's KVM cannot create a GICv3 ITS"));
        }
        let mut create =
            kvm_create_device { type_: kvm_device_type_KVM_DEV_TYPE_ARM_VGIC_V3, fd: 0, flags: 0 };
        let device =
            vm.create_device(&mut create).map_err(|e| ioctl_error("KVM_CREATE_DEVICE(ARM_VGIC_V3)", e))?;
        let dist = config.dist_base;
        let redist = config.redist_base;
        let irqs = config.spis + 32;
        set_attr(
            &device,
            KVM_DEV_ARM_VGIC_GRP_ADDR,
            KVM_VGIC_V3_ADDR_TYPE_DIST,
            &dist as *const u64 as u64,
            "distributor base",
        )?;
        set_attr(
            &device,
            KVM_DEV_ARM_VGIC_GRP_ADDR,
            KVM_VGIC_V3_ADDR_TYPE_REDIST,
            &redist as *const u64 as u64,
            "redistributor base",
        )?;
        set_attr(&device, KVM_DEV_ARM_VGIC_GRP_NR_IRQS, 0, &irqs as *const u32 as u64, "number of IRQs")?;
        let its = config.its_base.map(|base| create_its(vm, base)).transpose()?;
        *state = Some(GicState { device, _its: its, config: *config, initialized: false });
        Ok(())
    }

    /// The configuration, if the VM has a GIC.
    pub fn config(&self) -> Option<GicConfig> {
        self.state.lock().ok()?.as_ref().map(|s| s.config)
    }

    /// Initialises the GIC once (`KVM_DEV_ARM_VGIC_CTRL_INIT`); a VM without a GIC needs nothing.
    pub fn ensure_ready(&self) -> Result<()> {
        let mut state = self.state.lock().map_err(|_| AccelError::bad_state("the GIC lock is poisoned"))?;
        match state.as_mut() {
            Some(s) if !s.initialized => {
                set_attr(&s.device, KVM_DEV_ARM_VGIC_GRP_CTRL, KVM_DEV_ARM_VGIC_CTRL_INIT, 0, "CTRL_INIT")?;
                s.initialized = true;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

impl BackendGic for Gic {
    fn create(&self, config: &GicConfig) -> Result<()> {
        self.create_device(config)
    }

    fn set_irq(&self, line: IrqLine, level: bool) -> Result<()> {
        let config =
            self.config().ok_or_else(|| AccelError::bad_state("the VM has no GIC (create it first)"))?;
        let irq = match line.kind {
            IrqLine::SPI if line.number < config.spis => KVM_ARM_IRQ_TYPE_SPI << 24 | (line.number + 32),
            IrqLine::PPI if (16..32).contains(&line.number) && line.vcpu < 256 => {
                KVM_ARM_IRQ_TYPE_PPI << 24 | line.vcpu << 16 | line.number
            }
            _ => {
                return Err(AccelError::invalid(format!(
                    "no such interrupt line {line:?}: SPIs are 0..{}, PPIs INTID 16..=31",
                    config.spis
                )))
            }
        };
        self.ensure_ready()?;
        self.vm
            .set_irq_line(irq, level)
            .map_err(|e| ioctl_error(format!("KVM_IRQ_LINE of INTID {}", line.intid()), e))
    }
}
