//! The accel contract: the stable plugin ABI, the AArch64 register model, exits, configuration
//! and the one error type, shared by every backend and host.
//!
//! **This crate is what a plugin author reads.** Everything in it is part of the contract between
//! a host and a plugin. Logic that backends may share but need not (PSCI, trap decoding, the
//! debug pool, change-tracked puts) is in the backend kit, `accel-kit`; tools only hosts use
//! (the stage-1 walk, the snapshot codec) are in `accel-host`.
//!
//! - Backends implement [`backend::Backend`] and friends and export them with [`export_plugin!`].
//! - Hosts load plugins (see the `accel-host` crate) and drive them through [`client`].
//! - [`abi`] states the compatibility contract between the two and how it is kept.
//!
//! This crate makes no OS calls and builds on every host.

#![deny(missing_docs)]

pub mod abi;
pub mod backend;
pub mod client;
pub mod config;
pub mod debug;
pub mod error;
pub mod events;
pub mod exit;
mod export;
#[doc(hidden)]
pub mod glue;
pub mod idregs;
pub mod interface;
pub mod irq;
pub mod logging;
mod numbered;
pub mod regs;
pub mod sve;
pub mod sysreg;

pub use abi_stable;
pub use config::{Capabilities, MemoryRegion, ProbeInfo, VcpuConfig, VcpuFeatures, VmConfig};
pub use error::{AccelError, ErrorKind, Result};
pub use events::{MpState, VcpuEvents};
pub use exit::{DebugExit, MmioAccess, SystemEventKind, VcpuExit};
pub use idregs::IdRegisters;
pub use irq::{GicConfig, IrqLine};
pub use regs::{CoreReg, CoreRegs, FpReg, FpRegs, PutLevel, SyncCounters};
pub use sve::{SveReg, SveRegs};
pub use sysreg::{RegClass, RegId, RegValue};
