//! The bare-metal guest programs of `tests/guests/demo` (the demo, the gdb debuggees, the
//! device-tree reader): how they are built, where each lands, and the line the demo prints.

use std::path::PathBuf;

use crate::{cmd, error::Result, layout::root};

/// The bare-metal guests' target.
pub const TARGET: &str = "aarch64-unknown-none";

/// What the demo guest prints.
pub const DEMO_LINE: &str = "Hello from an accel guest";

/// Builds the guest programs.
pub fn build() -> Result<()> {
    cmd::run(
        cmd::cargo()
            .args(["build", "--release", "--target", TARGET, "--manifest-path"])
            .arg(root().join("tests/guests/demo/Cargo.toml"))
            .arg("--target-dir")
            .arg(root().join("target/guests")),
    )
}

/// A bare-metal guest program built from `tests/guests/demo`.
pub fn out(name: &str) -> PathBuf {
    root().join("target/guests").join(TARGET).join("release").join(name)
}

/// The demo guest, a bare-metal hello.
pub fn demo() -> PathBuf {
    out("demo")
}
