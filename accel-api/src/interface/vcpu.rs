//! A virtual CPU: its registers, its runs and exits, and the getters of its optional extensions.

use accel_api_macros::interface;

use super::{
    events::{BackendEvents, Events, EventsBox},
    kick::{Kick, Kicker, KickerBox, NoKick},
    sve::{BackendSve, Sve, SveBox},
};
use crate::{
    abi::records::ExitRecord,
    error::Result,
    events::MpState,
    exit::VcpuExit,
    regs::{CoreRegs, FpRegs, PutLevel, SyncCounters},
    sysreg::{RegClass, RegId, RegValue},
};

/// A backend's vCPU.
#[interface(abi = VcpuOps, boxed = VcpuBox, client = Vcpu, bounds(Send), holds = own)]
pub trait BackendVcpu: Send + 'static {
    /// The vCPU's index in its VM.
    #[abi(or_else = |_| u32::MAX)]
    fn index(&self) -> u32;

    /// Reads the core registers.
    fn get_core(&mut self) -> Result<CoreRegs>;

    /// Writes the core registers that changed since the last get (see the contract in
    /// [`crate::backend`]).
    fn put_core(&mut self, regs: &CoreRegs, level: PutLevel) -> Result<()>;

    /// Reads the FP/SIMD registers.
    fn get_fp(&mut self) -> Result<FpRegs>;

    /// Writes the FP/SIMD registers that changed since the last get.
    fn put_fp(&mut self, regs: &FpRegs, level: PutLevel) -> Result<()>;

    /// Reads every register of `class`, in a stable order.
    fn get_regs(&mut self, class: RegClass) -> Result<Vec<RegValue>>;

    /// Writes the given registers that may be written at `level` and changed since the last get;
    /// an unknown register is [`ErrorKind::NOT_FOUND`](crate::ErrorKind::NOT_FOUND).
    fn put_regs(&mut self, values: &[RegValue], level: PutLevel) -> Result<()>;

    /// Reads the multiprocessing state.
    fn get_mp_state(&mut self) -> Result<MpState>;

    /// Sets the multiprocessing state.
    fn set_mp_state(&mut self, state: MpState) -> Result<()>;

    /// A handle that another thread uses to kick the vCPU out of `run`.
    #[abi(ret = KickerBox, client = Kicker, or_else = |_| Box::new(NoKick) as Box<dyn Kick>)]
    fn kicker(&self) -> Box<dyn Kick>;

    /// The register accesses and guest entries the vCPU has made so far.
    fn counters(&self) -> SyncCounters;

    /// Supplies the value of the MMIO read of the last exit (little-endian; the access's `len`
    /// low bytes are used). Without a pending MMIO read it is
    /// [`ErrorKind::BAD_STATE`](crate::ErrorKind::BAD_STATE).
    fn set_mmio_read_data(&mut self, value: u64) -> Result<()>;

    /// Runs the guest until an exit.
    #[abi(ret = ExitRecord)]
    fn run(&mut self) -> Result<VcpuExit>;

    /// The SVE registers, if SVE is enabled on this vCPU.
    #[abi(name = sve, ret = abi_stable::std_types::ROption<SveBox<'_>>, client = Option<Sve<'_>>)]
    fn support_sve(&mut self) -> Option<&mut dyn BackendSve> {
        None
    }

    /// Pending events, if the backend can inject SErrors or external data aborts.
    #[abi(name = events, ret = abi_stable::std_types::ROption<EventsBox<'_>>, client = Option<Events<'_>>, last)]
    fn support_events(&mut self) -> Option<&mut dyn BackendEvents> {
        None
    }

    /// Reads the registers `ids`, in that order: core registers (`RegId::core`) as
    /// [`get_core`](Self::get_core) reports them, FPSR and FPCR (their system-register ids) as [`get_fp`](Self::get_fp) does,
    /// and listed registers of any class as [`get_regs`](Self::get_regs) does. An id the vCPU does not have is
    /// [`ErrorKind::NOT_FOUND`](crate::ErrorKind::NOT_FOUND) (ABI 2.3).
    #[abi(op = "vcpu get named", since = "2.3", what = "reading registers by id")]
    fn get_named(&mut self, ids: &[RegId]) -> Result<Vec<RegValue>> {
        let _ = ids;
        Err(crate::AccelError::unsupported("this backend cannot read registers by id"))
    }
}
