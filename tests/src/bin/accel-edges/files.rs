//! The files and arguments of `accel-host run`: what is not a regular file, an initrd without a
//! kernel, RAM sizes, a missing file and no arguments at all are refused in one line before any
//! plugin is loaded, and `--dump-dtb` replaces its file atomically without following a symlink.

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use crate::check::{Check, Env};

/// Generous: only a hang (a FIFO opened for reading waits for a writer forever) reaches it.
const LIMIT: Duration = Duration::from_secs(30);

/// The checks of this area.
pub fn checks() -> Vec<Check> {
    vec![
        Check::host(
            "a FIFO as the image, --kernel or --initrd is refused in one line without blocking",
            fifo,
        ),
        Check::host("a directory or a device as the image is refused in one line", not_regular),
        Check::host("--initrd without --kernel is refused in one line, whatever the image", initrd_alone),
        Check::host("--mem 0 and --mem 1000k are refused with the rule, before any file is read", mem_rule),
        Check::host("no arguments print the help, not an error line", no_arguments),
        Check::host("a missing image is refused in one line that gives the OS error once", missing_file),
        Check::kvm(
            "--dump-dtb replaces a symlink, leaves its target untouched, and writes mode 0644",
            dump_dtb,
        ),
    ]
}

/// A fixture plugin that would abort the process if it were loaded: a refusal that names the
/// file shows the file was checked before any plugin was loaded.
fn aborting_plugin(env: &Env) -> String {
    env.plugin("libaccel_fixture_panicking.so").display().to_string()
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Writes `bytes` to `name` in `dir`.
fn file(dir: &Path, name: &str, bytes: &[u8]) -> Result<String, String> {
    let p = dir.join(name);
    std::fs::write(&p, bytes).map_err(|e| format!("writing {}: {e}", p.display()))?;
    Ok(path(&p))
}

/// Runs `accel-host run ARGS` with the aborting fixture plugin as the backend.
fn run(env: &Env, args: &[&str]) -> Result<crate::check::Ran, String> {
    let accel = aborting_plugin(env);
    let mut all = vec!["run", "--accel", &accel];
    all.extend_from_slice(args);
    env.accel_host(&all, &[], LIMIT)
}

fn fifo(env: &Env) -> Result<(), String> {
    let dir = env.dir("fifo");
    let fifo = dir.join("fifo");
    let c_path = std::ffi::CString::new(path(&fifo)).map_err(|e| e.to_string())?;
    // SAFETY: `c_path` is a valid NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        return Err(format!("mkfifo {}: {}", fifo.display(), std::io::Error::last_os_error()));
    }
    let fifo = path(&fifo);
    let kernel = file(&dir, "Image", &[0; 64])?;
    for (what, args) in [
        ("image", vec![fifo.as_str()]),
        ("kernel", vec!["--kernel", &fifo]),
        ("initrd", vec!["--kernel", &kernel, "--initrd", &fifo]),
    ] {
        run(env, &args)?
            .refused_with(1, &format!("{what} {fifo} is a FIFO, not a regular file"))
            .map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(())
}

fn not_regular(env: &Env) -> Result<(), String> {
    let dir = path(&env.dir("directory"));
    run(env, &[&dir])?.refused_with(1, &format!("image {dir} is a directory, not a regular file"))?;
    run(env, &["/dev/zero"])?.refused_with(1, "image /dev/zero is a character device, not a regular file")?;
    run(env, &["--kernel", "/dev/null"])?
        .refused_with(1, "kernel /dev/null is a character device, not a regular file")
}

fn initrd_alone(env: &Env) -> Result<(), String> {
    let dir = env.dir("initrd");
    let initrd = file(&dir, "initrd", b"initrd")?;
    let raw = file(&dir, "raw.bin", &[0x1f, 0x20, 0x03, 0xd5])?;
    // A raw file with the arm64 Image header ("ARM\x64" at 56), which boots as Linux.
    let mut header = vec![0u8; 64];
    header[56..60].copy_from_slice(b"ARM\x64");
    let image = file(&dir, "Image", &header)?;
    let elf = file(&dir, "guest.elf", b"\x7fELF")?;
    for (what, args) in [
        ("initrd before a raw image", vec!["--initrd", &initrd, &raw]),
        ("initrd after a raw image", vec![&raw, "--initrd", &initrd]),
        ("a raw image with the arm64 Image header", vec!["--initrd", &initrd, &image]),
        ("an ELF image", vec![&elf, "--initrd", &initrd]),
        ("--initrd=", vec![&elf, &format!("--initrd={initrd}")]),
    ] {
        run(env, &args)?.refused_with(1, "--initrd needs --kernel").map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(())
}

fn mem_rule(env: &Env) -> Result<(), String> {
    // The image does not exist: the size is refused first.
    let missing = path(&env.dir("mem").join("missing.elf"));
    for mem in ["0", "1000k", "1048577", "99999999G"] {
        run(env, &["--mem", mem, &missing])?
            .refused_with(1, "must be a non-zero multiple of 1 MiB")
            .map_err(|e| format!("--mem {mem}: {e}"))?;
    }
    Ok(())
}

fn no_arguments(env: &Env) -> Result<(), String> {
    let ran = env.accel_host(&[], &[], LIMIT)?;
    if ran.code != Some(1) {
        return Err(format!("exit code {:?}, not 1; stderr {:?}", ran.code, ran.stderr));
    }
    if !ran.stdout.is_empty() {
        return Err(format!("output on stdout: {:?}", ran.stdout));
    }
    if !ran.stderr.contains("Usage: accel-host") || !ran.stderr.contains("run ") {
        return Err(format!("no help on stderr: {:?}", ran.stderr));
    }
    match ran.error_lines().iter().find(|l| l.contains("error")) {
        Some(line) => Err(format!("an error line: {line:?}")),
        None => Ok(()),
    }
}

fn missing_file(env: &Env) -> Result<(), String> {
    let missing = path(&env.dir("missing").join("missing.elf"));
    let ran = run(env, &[&missing])?;
    ran.refused_with(1, &format!("image {missing}"))?;
    let os = std::io::Error::from_raw_os_error(libc::ENOENT).to_string();
    match ran.stderr.matches(&os).count() {
        1 => Ok(()),
        n => Err(format!("the OS error {os:?} is given {n} times: {:?}", ran.stderr)),
    }
}

fn dump_dtb(env: &Env) -> Result<(), String> {
    let guest = path(env.guest.as_deref().ok_or("no guest")?);
    let dir = env.dir("dump-dtb");
    let target = dir.join("precious");
    std::fs::write(&target, b"keep me").map_err(|e| e.to_string())?;
    let link = dir.join("machine.dtb");
    std::os::unix::fs::symlink(&target, &link).map_err(|e| e.to_string())?;
    // A named backend: no note on which was chosen, so standard error stays empty.
    let ran = env.accel_host(&["run", "--accel", "kvm", "--dump-dtb", &path(&link), &guest], &[], LIMIT)?;
    if ran.code != Some(0) || !ran.error_lines().is_empty() {
        return Err(format!("exit code {:?}, stderr {:?}", ran.code, ran.stderr));
    }
    if !crate::check::exists(&target) || std::fs::read(&target).map_err(|e| e.to_string())? != b"keep me" {
        return Err("the symlink's target was written through".into());
    }
    let meta = std::fs::symlink_metadata(&link).map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err(format!("{} is not a regular file now: {:?}", link.display(), meta.file_type()));
    }
    if meta.permissions().mode() & 0o7777 != 0o644 {
        return Err(format!("mode {:o}, not 644", meta.permissions().mode() & 0o7777));
    }
    let dtb = std::fs::read(&link).map_err(|e| e.to_string())?;
    if !dtb.starts_with(&[0xd0, 0x0d, 0xfe, 0xed]) {
        return Err(format!("not a device tree blob: {:02x?}", &dtb[..dtb.len().min(8)]));
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    names.sort();
    if names != ["machine.dtb", "precious"] {
        return Err(format!("the directory holds {names:?}: a temporary file was left behind"));
    }
    // A destination in a directory that does not exist: one line.
    let nowhere = path(&dir.join("no-such-dir").join("machine.dtb"));
    env.accel_host(&["run", "--accel", "kvm", "--dump-dtb", &nowhere, &guest], &[], LIMIT)?
        .refused_with(1, &nowhere)
}
