//! A KVM VM: memory slots, dirty-page logging, the in-kernel GICv3 and its lines, irqfd and
//! ioeventfd, and vCPU creation.

use std::{
    collections::{HashMap, HashSet},
    os::fd::{FromRawFd, RawFd},
    sync::{Arc, Mutex, MutexGuard},
};

use accel_api::{
    abi::DebugCapacity,
    backend::{BackendDebug, BackendVm},
    memory::MemoryMap,
    AccelError, Capabilities, ErrorKind, GicConfig, IrqLine, MemoryRegion, Result, VcpuConfig, VcpuFeatures,
    VmConfig,
};
use kvm_bindings::{
    kvm_enable_cap, kvm_userspace_memory_region, kvm_vcpu_init, KVM_ARM_IRQ_TYPE_PPI, KVM_ARM_IRQ_TYPE_SPI,
    KVM_CAP_ARM_NISV_TO_USER, KVM_CAP_ARM_SYSTEM_SUSPEND, KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY,
};
use kvm_ioctls::{IoEventAddress, Kvm, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::{debug::KvmDebug, gic::Gic, ioctl_error, vcpu::KvmVcpu};

/// What an eventfd was registered for, to find it again on unregister.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum EventKey {
    Irq { fd: RawFd, spi: u32 },
    Io { fd: RawFd, addr: u64, len: u32, datamatch: Option<u64> },
}

/// A KVM VM.
pub struct KvmVm {
    fd: VmFd,
    caps: Capabilities,
    max_slots: u32,
    page_size: u64,
    memory: Arc<Mutex<MemoryMap>>,
    debug: Option<Arc<KvmDebug>>,
    dirty_logged: Mutex<HashSet<u32>>,
    eventfds: Mutex<HashMap<EventKey, EventFd>>,
    gic: Arc<Gic>,
    target: kvm_vcpu_init,
}

fn locked<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    m.lock().map_err(|_| AccelError::bad_state("a VM lock is poisoned"))
}

/// A duplicate of the caller's eventfd, owned by the backend.
fn dup_eventfd(fd: RawFd) -> Result<EventFd> {
    // SAFETY: dup has no memory-safety preconditions; an invalid descriptor fails with EBADF.
    let copy = unsafe { libc::dup(fd) };
    if copy < 0 {
        return Err(
            AccelError::from(std::io::Error::last_os_error()).context(format!("duplicating eventfd {fd}"))
        );
    }
    // SAFETY: `copy` is a descriptor this process just created and nothing else owns.
    Ok(unsafe { EventFd::from_raw_fd(copy) })
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

impl KvmVm {
    pub(super) fn new(kvm: &Kvm, caps: Capabilities, config: &VmConfig) -> Result<Self> {
        let fd = match config.ipa_bits {
            0 => kvm.create_vm(),
            bits if !(32..=caps.ipa_bits).contains(&bits) => {
                return Err(AccelError::unsupported(format!(
                    "an IPA size of {bits} bits is not supported; this host allows 32 to {}",
                    caps.ipa_bits
                )))
            }
            bits => kvm.create_vm_with_ipa_size(bits),
        }
        .map_err(|e| ioctl_error("KVM_CREATE_VM", e))?;
        if fd.check_extension_raw(u64::from(KVM_CAP_ARM_NISV_TO_USER)) > 0 {
            // Data aborts without a valid syndrome (ESR_EL2.ISV = 0) outside guest memory then
            // exit as KVM_EXIT_ARM_NISV, which the monitor can report, instead of failing
            // KVM_RUN with ENOSYS.
            let cap = kvm_enable_cap { cap: KVM_CAP_ARM_NISV_TO_USER, ..Default::default() };
            fd.enable_cap(&cap).map_err(|e| ioctl_error("KVM_ENABLE_CAP(KVM_CAP_ARM_NISV_TO_USER)", e))?;
        }
        if caps.system_suspend {
            // PSCI SYSTEM_SUSPEND then exits to the monitor as a suspend event.
            let cap = kvm_enable_cap { cap: KVM_CAP_ARM_SYSTEM_SUSPEND, ..Default::default() };
            fd.enable_cap(&cap).map_err(|e| ioctl_error("KVM_ENABLE_CAP(KVM_CAP_ARM_SYSTEM_SUSPEND)", e))?;
        }
        let mut target = kvm_vcpu_init::default();
        fd.get_preferred_target(&mut target).map_err(|e| ioctl_error("KVM_ARM_PREFERRED_TARGET", e))?;
        let memory = Arc::new(Mutex::new(MemoryMap::new()));
        Ok(Self {
            fd,
            caps,
            max_slots: u32::try_from(kvm.get_nr_memslots()).unwrap_or(u32::MAX),
            page_size: page_size(),
            memory: Arc::clone(&memory),
            debug: caps.guest_debug.then(|| {
                let capacity =
                    DebugCapacity { breakpoints: caps.hw_breakpoints, watchpoints: caps.hw_watchpoints };
                Arc::new(KvmDebug::new(capacity, memory))
            }),
            dirty_logged: Mutex::new(HashSet::new()),
            eventfds: Mutex::new(HashMap::new()),
            gic: Arc::new(Gic::default()),
            target,
        })
    }

    fn set_region(&self, slot: u32, region: &MemoryRegion, size: u64, log_dirty: bool) -> Result<()> {
        let mut flags = if region.read_only { KVM_MEM_READONLY } else { 0 };
        if log_dirty {
            flags |= KVM_MEM_LOG_DIRTY_PAGES;
        }
        let kvm_region = kvm_userspace_memory_region {
            slot,
            flags,
            guest_phys_addr: region.guest_addr,
            memory_size: size,
            userspace_addr: region.host_addr,
        };
        // SAFETY: the caller of `Vm::add_memory` (an unsafe function) guarantees that the host
        // range stays mapped while the region exists; a size of 0 deletes the slot.
        unsafe { self.fd.set_user_memory_region(kvm_region) }
            .map_err(|e| ioctl_error(format!("KVM_SET_USER_MEMORY_REGION for slot {slot}"), e))
    }
}

impl KvmVm {
    /// KVM_IOEVENTFD: the length comes from the datamatch type, so each width is its own call;
    /// without a datamatch, a length of 0 matches accesses of any size.
    fn ioevent(
        &self,
        efd: &EventFd,
        addr: u64,
        len: u32,
        datamatch: Option<u64>,
        assign: bool,
    ) -> Result<()> {
        let at = IoEventAddress::Mmio(addr);
        let result = match (datamatch, len, assign) {
            (None, 0, true) => self.fd.register_ioevent(efd, &at, NoDatamatch),
            (None, 0, false) => self.fd.unregister_ioevent(efd, &at, NoDatamatch),
            (Some(v), 1, true) => self.fd.register_ioevent(efd, &at, v as u8),
            (Some(v), 1, false) => self.fd.unregister_ioevent(efd, &at, v as u8),
            (Some(v), 2, true) => self.fd.register_ioevent(efd, &at, v as u16),
            (Some(v), 2, false) => self.fd.unregister_ioevent(efd, &at, v as u16),
            (Some(v), 4, true) => self.fd.register_ioevent(efd, &at, v as u32),
            (Some(v), 4, false) => self.fd.unregister_ioevent(efd, &at, v as u32),
            (Some(v), 8, true) => self.fd.register_ioevent(efd, &at, v),
            (Some(v), 8, false) => self.fd.unregister_ioevent(efd, &at, v),
            _ => {
                return Err(AccelError::invalid(format!(
                    "an ioeventfd takes length 0 (any, without datamatch) or 1, 2, 4, 8 with a datamatch; got {len}"
                )))
            }
        };
        result.map_err(|e| ioctl_error(format!("KVM_IOEVENTFD at {addr:#x}"), e))
    }
}

impl BackendVm for KvmVm {
    type Vcpu = KvmVcpu;

    fn add_memory(&self, region: &MemoryRegion) -> Result<u32> {
        if region.read_only && !self.caps.readonly_memory {
            return Err(AccelError::unsupported(
                "read-only memory (KVM_CAP_READONLY_MEM) is not supported by this kernel",
            ));
        }
        let mut map =
            self.memory.lock().map_err(|_| AccelError::bad_state("the memory map lock is poisoned"))?;
        let slot = map.insert(*region, self.page_size, self.max_slots)?;
        if let Err(e) = self.set_region(slot, region, region.size, false) {
            // Keep the map in step with the kernel.
            let _ = map.remove(slot);
            return Err(e);
        }
        Ok(slot)
    }

    fn remove_memory(&self, slot: u32) -> Result<()> {
        let mut map =
            self.memory.lock().map_err(|_| AccelError::bad_state("the memory map lock is poisoned"))?;
        let region = *map.get(slot).ok_or_else(|| {
            AccelError::new(accel_api::ErrorKind::NOT_FOUND, format!("no memory region in slot {slot}"))
        })?;
        self.set_region(slot, &region, 0, false)?;
        map.remove(slot)?;
        locked(&self.dirty_logged)?.remove(&slot);
        Ok(())
    }

    fn set_dirty_log(&self, slot: u32, enabled: bool) -> Result<()> {
        let map = locked(&self.memory)?;
        let region = *map.get(slot).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("no memory region in slot {slot}"))
        })?;
        self.set_region(slot, &region, region.size, enabled)?;
        let mut logged = locked(&self.dirty_logged)?;
        if enabled {
            logged.insert(slot);
        } else {
            logged.remove(&slot);
        }
        Ok(())
    }

    fn take_dirty_log(&self, slot: u32) -> Result<Vec<u64>> {
        if !locked(&self.dirty_logged)?.contains(&slot) {
            return Err(AccelError::bad_state(format!("dirty logging is off for slot {slot}")));
        }
        let size = locked(&self.memory)?.get(slot).map(|r| r.size).unwrap_or(0);
        self.fd
            .get_dirty_log(slot, size as usize)
            .map_err(|e| ioctl_error(format!("KVM_GET_DIRTY_LOG of slot {slot}"), e))
    }

    fn create_gic(&self, config: &GicConfig) -> Result<()> {
        self.gic.create(&self.fd, config)
    }

    fn set_irq(&self, line: IrqLine, level: bool) -> Result<()> {
        let config =
            self.gic.config().ok_or_else(|| AccelError::bad_state("the VM has no GIC (create_gic)"))?;
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
        self.gic.ensure_ready()?;
        self.fd
            .set_irq_line(irq, level)
            .map_err(|e| ioctl_error(format!("KVM_IRQ_LINE of INTID {}", line.intid()), e))
    }

    fn register_irqfd(&self, fd: i32, spi: u32) -> Result<()> {
        let config =
            self.gic.config().ok_or_else(|| AccelError::bad_state("the VM has no GIC (create_gic)"))?;
        if spi >= config.spis {
            return Err(AccelError::invalid(format!(
                "SPI {spi} is out of range: the GIC has {}",
                config.spis
            )));
        }
        let key = EventKey::Irq { fd, spi };
        let mut fds = locked(&self.eventfds)?;
        if fds.contains_key(&key) {
            return Err(AccelError::invalid(format!("eventfd {fd} is already an irqfd for SPI {spi}")));
        }
        let efd = dup_eventfd(fd)?;
        self.fd.register_irqfd(&efd, spi).map_err(|e| ioctl_error(format!("KVM_IRQFD for SPI {spi}"), e))?;
        fds.insert(key, efd);
        Ok(())
    }

    fn unregister_irqfd(&self, fd: i32, spi: u32) -> Result<()> {
        let mut fds = locked(&self.eventfds)?;
        let efd = fds.remove(&EventKey::Irq { fd, spi }).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("eventfd {fd} is not an irqfd for SPI {spi}"))
        })?;
        self.fd
            .unregister_irqfd(&efd, spi)
            .map_err(|e| ioctl_error(format!("KVM_IRQFD(DEASSIGN) for SPI {spi}"), e))
    }

    fn register_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()> {
        let key = EventKey::Io { fd, addr, len, datamatch };
        let mut fds = locked(&self.eventfds)?;
        if fds.contains_key(&key) {
            return Err(AccelError::invalid(format!("eventfd {fd} is already registered at {addr:#x}")));
        }
        let efd = dup_eventfd(fd)?;
        self.ioevent(&efd, addr, len, datamatch, true)?;
        fds.insert(key, efd);
        Ok(())
    }

    fn unregister_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()> {
        let mut fds = locked(&self.eventfds)?;
        let efd = fds.remove(&EventKey::Io { fd, addr, len, datamatch }).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("eventfd {fd} is not registered at {addr:#x}"))
        })?;
        self.ioevent(&efd, addr, len, datamatch, false)
    }

    fn debug(&self) -> Option<Arc<dyn BackendDebug>> {
        self.debug.clone().map(|d| d as Arc<dyn BackendDebug>)
    }

    fn create_vcpu(&self, config: &VcpuConfig) -> Result<KvmVcpu> {
        let missing = config.features.difference(self.caps.vcpu_features);
        if !missing.is_empty() {
            return Err(AccelError::unsupported(format!(
                "vCPU feature(s) {} not supported by this backend on this host",
                missing.names().join(", ")
            )));
        }
        let ptrauth = VcpuFeatures::PTRAUTH_ADDRESS | VcpuFeatures::PTRAUTH_GENERIC;
        let requested_ptrauth = VcpuFeatures(config.features.0 & ptrauth.0);
        if !requested_ptrauth.is_empty() && requested_ptrauth != ptrauth {
            return Err(AccelError::invalid(
                "KVM enables pointer authentication only with both ptrauth-address and ptrauth-generic",
            ));
        }
        if config.index >= self.caps.max_vcpus {
            return Err(AccelError::invalid(format!(
                "vCPU index {} is out of range: this host allows {} vCPUs",
                config.index, self.caps.max_vcpus
            )));
        }
        let mut init = self.target;
        for (feature, bit) in [
            (VcpuFeatures::POWER_OFF, kvm_bindings::KVM_ARM_VCPU_POWER_OFF),
            (VcpuFeatures::EL1_32BIT, kvm_bindings::KVM_ARM_VCPU_EL1_32BIT),
            (VcpuFeatures::PSCI_0_2, kvm_bindings::KVM_ARM_VCPU_PSCI_0_2),
            (VcpuFeatures::PTRAUTH_ADDRESS, kvm_bindings::KVM_ARM_VCPU_PTRAUTH_ADDRESS),
            (VcpuFeatures::PTRAUTH_GENERIC, kvm_bindings::KVM_ARM_VCPU_PTRAUTH_GENERIC),
            (VcpuFeatures::PMU_V3, kvm_bindings::KVM_ARM_VCPU_PMU_V3),
            (VcpuFeatures::SVE, kvm_bindings::KVM_ARM_VCPU_SVE),
        ] {
            if config.features.contains(feature) {
                init.features[(bit / 32) as usize] |= 1 << (bit % 32);
            }
        }
        KvmVcpu::new(&self.fd, config, &init, &self.caps, Arc::clone(&self.gic), self.debug.clone())
    }
}
