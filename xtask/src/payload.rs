//! The files every nested VM gets: our aarch64 binaries, the plugins, the fixtures and the demo
//! guest.

use crate::{error::Result, guests, layout::cross_out, provision::initramfs::VmFile};

/// The files every VM gets: our aarch64 binaries, plugins, fixtures and the demo guest.
pub fn vm_files() -> Result<Vec<VmFile>> {
    let mut files = vec![
        VmFile::from_host("/bin/accel-host", &cross_out("accel-host"), 0o755)?,
        VmFile::from_host("/bin/accel-conformance", &cross_out("accel-conformance"), 0o755)?,
        VmFile::from_host("/bin/accel-bench", &cross_out("accel-bench"), 0o755)?,
        VmFile::from_host("/bin/accel-boot-bench", &cross_out("accel-boot-bench"), 0o755)?,
        VmFile::from_host("/bin/accel-edges", &cross_out("accel-edges"), 0o755)?,
        VmFile::from_host("/guests/demo.elf", &guests::demo(), 0o644)?,
        VmFile {
            path: "/lib/accel/not-a-plugin.so".into(),
            data: b"this file is not a shared library\n".to_vec(),
            perm: 0o644,
        },
    ];
    for lib in [
        "libaccel_kvm.so",
        "libaccel_hvf.so",
        "libaccel_fixture_wrong_abi.so",
        "libaccel_fixture_wrong_layout.so",
        "libaccel_fixture_panicking.so",
        "libaccel_fixture_segfaulting.so",
        "libaccel_fixture_constructor.so",
        "libfixture_hanging.so",
        "libaccel_example.so",
    ] {
        files.push(VmFile::from_host(&format!("/lib/accel/{lib}"), &cross_out(lib), 0o755)?);
    }
    Ok(files)
}
