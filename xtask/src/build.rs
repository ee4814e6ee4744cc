//! The cross build: everything that runs inside the nested VM, built for aarch64 Linux, and the
//! bare-metal guests.

use crate::{cmd, error::Result, guests, layout::CROSS_TARGET};

/// Builds everything that runs inside the VM, and the demo guest.
pub fn cross_build() -> Result<()> {
    cmd::run(cmd::cargo().args(["build", "--release", "--target", CROSS_TARGET]).args([
        "-p",
        "accel-host",
        "-p",
        "accel-kvm",
        "-p",
        "accel-hvf",
        "-p",
        "accel-conformance",
        "-p",
        "accel-fixture-wrong-abi",
        "-p",
        "accel-fixture-wrong-layout",
        "-p",
        "accel-fixture-panicking",
        "-p",
        "accel-fixture-segfaulting",
        "-p",
        "accel-fixture-constructor",
        "-p",
        "accel-fixture-hanging",
        "-p",
        "accel-vm-init",
        "-p",
        "accel-example-minimal-kvm",
    ]))?;
    guests::build()
}
