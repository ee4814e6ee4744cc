//! A vCPU's SVE registers, borrowed from the vCPU.

use accel_api_macros::interface;

use crate::{error::Result, regs::PutLevel, sve::SveRegs};

/// A vCPU's SVE registers.
#[interface(abi = SveOps, boxed = SveBox, client = Sve, borrowed, holds = &'a mut dyn BackendSve)]
pub trait BackendSve {
    /// Reads Z0–Z31, P0–P15 and FFR at the vCPU's vector length.
    #[abi(name = get)]
    fn get_sve(&mut self) -> Result<SveRegs>;

    /// Writes the SVE registers that changed since the last get (all at [`PutLevel::FULL`]); a
    /// file of another vector length is refused.
    #[abi(name = put, last)]
    fn put_sve(&mut self, regs: &SveRegs, level: PutLevel) -> Result<()>;
}
