//! The end-to-end suites: accel-host, the KVM plugin and real guests together in the nested VM.
//! Real gdb sessions against the host's stub, Linux booted and checked on 1 and 2 vCPUs, and the
//! boot benchmark against QEMU's own KVM support.

pub mod boot_bench;
pub mod gdb;
pub mod linux;
