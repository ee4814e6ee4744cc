//! irqfd and ioeventfd (`KVM_IRQFD`, `KVM_IOEVENTFD`): Linux eventfds that raise an SPI, or
//! complete an MMIO write in the kernel, without an exit to the monitor.

use std::{
    collections::HashMap,
    os::fd::{FromRawFd, RawFd},
    sync::{Arc, Mutex, MutexGuard},
};

use accel_api::{backend::BackendLinuxEventFd, AccelError, ErrorKind, Result};
use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::{error::ioctl_error, gic::Gic};

/// What an eventfd was registered for, to find it again on unregister.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum EventKey {
    Irq { fd: RawFd, spi: u32 },
    Io { fd: RawFd, addr: u64, len: u32, datamatch: Option<u64> },
}

/// The eventfds of one VM, each a duplicate the backend owns.
pub struct EventFds {
    vm: Arc<VmFd>,
    gic: Arc<Gic>,
    fds: Mutex<HashMap<EventKey, EventFd>>,
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

impl EventFds {
    /// The eventfds of `vm`, whose SPIs are those of `gic`.
    pub fn new(vm: Arc<VmFd>, gic: Arc<Gic>) -> Self {
        Self { vm, gic, fds: Mutex::new(HashMap::new()) }
    }

    fn fds(&self) -> Result<MutexGuard<'_, HashMap<EventKey, EventFd>>> {
        self.fds.lock().map_err(|_| AccelError::bad_state("the eventfd lock is poisoned"))
    }

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
        let vm = &self.vm;
        let result = match (datamatch, len, assign) {
            (None, 0, true) => vm.register_ioevent(efd, &at, NoDatamatch),
            (None, 0, false) => vm.unregister_ioevent(efd, &at, NoDatamatch),
            (Some(v), 1, true) => vm.register_ioevent(efd, &at, v as u8),
            (Some(v), 1, false) => vm.unregister_ioevent(efd, &at, v as u8),
            (Some(v), 2, true) => vm.register_ioevent(efd, &at, v as u16),
            (Some(v), 2, false) => vm.unregister_ioevent(efd, &at, v as u16),
            (Some(v), 4, true) => vm.register_ioevent(efd, &at, v as u32),
            (Some(v), 4, false) => vm.unregister_ioevent(efd, &at, v as u32),
            (Some(v), 8, true) => vm.register_ioevent(efd, &at, v),
            (Some(v), 8, false) => vm.unregister_ioevent(efd, &at, v),
            _ => {
                return Err(AccelError::invalid(format!(
                    "an ioeventfd takes length 0 (any, without datamatch) or 1, 2, 4, 8 with a datamatch; got {len}"
                )))
            }
        };
        result.map_err(|e| ioctl_error(format!("KVM_IOEVENTFD at {addr:#x}"), e))
    }
}

impl BackendLinuxEventFd for EventFds {
    fn register_irqfd(&self, fd: i32, spi: u32) -> Result<()> {
        let config =
            self.gic.config().ok_or_else(|| AccelError::bad_state("the VM has no GIC (create it first)"))?;
        if spi >= config.spis {
            return Err(AccelError::invalid(format!(
                "SPI {spi} is out of range: the GIC has {}",
                config.spis
            )));
        }
        let key = EventKey::Irq { fd, spi };
        let mut fds = self.fds()?;
        if fds.contains_key(&key) {
            return Err(AccelError::invalid(format!("eventfd {fd} is already an irqfd for SPI {spi}")));
        }
        // KVM refuses an irqfd (EAGAIN) until the vGIC is initialised, which this backend does
        // on demand: complete the GIC's set-up now, as driving a line does.
        self.gic.ensure_ready()?;
        let efd = dup_eventfd(fd)?;
        self.vm.register_irqfd(&efd, spi).map_err(|e| ioctl_error(format!("KVM_IRQFD for SPI {spi}"), e))?;
        fds.insert(key, efd);
        Ok(())
    }

    fn unregister_irqfd(&self, fd: i32, spi: u32) -> Result<()> {
        let mut fds = self.fds()?;
        let efd = fds.remove(&EventKey::Irq { fd, spi }).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("eventfd {fd} is not an irqfd for SPI {spi}"))
        })?;
        self.vm
            .unregister_irqfd(&efd, spi)
            .map_err(|e| ioctl_error(format!("KVM_IRQFD(DEASSIGN) for SPI {spi}"), e))
    }

    fn register_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()> {
        let key = EventKey::Io { fd, addr, len, datamatch };
        let mut fds = self.fds()?;
        if fds.contains_key(&key) {
            return Err(AccelError::invalid(format!("eventfd {fd} is already registered at {addr:#x}")));
        }
        let efd = dup_eventfd(fd)?;
        self.ioevent(&efd, addr, len, datamatch, true)?;
        fds.insert(key, efd);
        Ok(())
    }

    fn unregister_ioeventfd(&self, fd: i32, addr: u64, len: u32, datamatch: Option<u64>) -> Result<()> {
        let mut fds = self.fds()?;
        let efd = fds.remove(&EventKey::Io { fd, addr, len, datamatch }).ok_or_else(|| {
            AccelError::new(ErrorKind::NOT_FOUND, format!("eventfd {fd} is not registered at {addr:#x}"))
        })?;
        self.ioevent(&efd, addr, len, datamatch, false)
    }
}
