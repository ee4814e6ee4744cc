//! Provisioning: everything the nested VM and its guests need that is not built here. The build
//! host's tools and Rust targets, Debian arm64 packages fetched through a private apt root, the
//! kernels, QEMU for inside the VM with its shared libraries, and the initramfs images. What is
//! fetched is cached, so later runs work offline.

pub mod apt_sources;
pub mod debian;
pub mod fetch_debian;
pub mod guest_qemu;
pub mod host;
pub mod initramfs;
pub mod kernel;
pub mod linux_guest;
pub mod shlibs;
