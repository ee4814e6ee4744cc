//! How values cross the boundary between the plain types and the ABI's records and boxes: the
//! three conversions that the interface declarations ([`crate::interface`]) use.

use abi_stable::std_types::ROption;

use super::records::{
    DebugEventRecord, DebugProgramRecord, ExitRecord, GicConfigRecord, MemoryRegionRecord, ProbeRecord,
    VcpuConfigRecord, VmConfigRecord,
};
use crate::{
    config::{MemoryRegion, ProbeInfo, VcpuConfig, VmConfig},
    debug::{DebugEvent, DebugProgram},
    error::Result,
    exit::VcpuExit,
    irq::GicConfig,
};

/// A plugin's plain value as the ABI carries it (a return value on its way to the host).
pub trait IntoAbi<A> {
    /// Converts.
    fn into_abi(self) -> A;
}

/// The ABI's value as the host's plain one (a return value from the plugin).
pub trait FromAbi<A> {
    /// Converts.
    fn from_abi(abi: A) -> Self;
}

/// A record argument as the plugin reads it: a record with an option or flag this side does not
/// know is refused, naming it.
pub trait ToPlain<P> {
    /// Converts, or refuses.
    fn to_plain(&self) -> Result<P>;
}

impl<T: IntoAbi<A>, A> IntoAbi<ROption<A>> for Option<T> {
    fn into_abi(self) -> ROption<A> {
        self.map(IntoAbi::into_abi).into()
    }
}

impl<A, C: FromAbi<A>> FromAbi<ROption<A>> for Option<C> {
    fn from_abi(abi: ROption<A>) -> Self {
        abi.into_option().map(C::from_abi)
    }
}

/// Records converted by value in both directions.
macro_rules! by_value {
    ($($plain:ty => $record:ty),* $(,)?) => {$(
        impl IntoAbi<$record> for $plain {
            fn into_abi(self) -> $record {
                <$record>::from(self)
            }
        }
        impl FromAbi<$record> for $plain {
            fn from_abi(abi: $record) -> Self {
                <$plain>::from(abi)
            }
        }
    )*};
}

/// Records converted by reference in both directions.
macro_rules! by_reference {
    ($($plain:ty => $record:ty),* $(,)?) => {$(
        impl IntoAbi<$record> for $plain {
            fn into_abi(self) -> $record {
                <$record>::from(&self)
            }
        }
        impl FromAbi<$record> for $plain {
            fn from_abi(abi: $record) -> Self {
                <$plain>::from(&abi)
            }
        }
    )*};
}

by_value!(VcpuExit => ExitRecord, DebugEvent => DebugEventRecord);
by_reference!(ProbeInfo => ProbeRecord, DebugProgram => DebugProgramRecord);

impl ToPlain<VmConfig> for VmConfigRecord {
    fn to_plain(&self) -> Result<VmConfig> {
        self.to_config()
    }
}

impl ToPlain<VcpuConfig> for VcpuConfigRecord {
    fn to_plain(&self) -> Result<VcpuConfig> {
        self.to_config()
    }
}

impl ToPlain<GicConfig> for GicConfigRecord {
    fn to_plain(&self) -> Result<GicConfig> {
        self.to_config()
    }
}

impl ToPlain<MemoryRegion> for MemoryRegionRecord {
    fn to_plain(&self) -> Result<MemoryRegion> {
        self.to_region()
    }
}
