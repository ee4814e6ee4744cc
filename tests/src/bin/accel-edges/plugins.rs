//! The plugins edges: libraries that are no plugins, plugins others can write or that are links,
//! plugin paths that are relative, FIFOs, truncated files, the dynamic loader's own search,
//! directory names that are not UTF-8, and plugins that call themselves by another name.

use std::{
    ffi::{OsStr, OsString},
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use crate::check::{exists, run_limited, Check, Env, Ran};

/// Long enough for any refusal here; it only catches a hang.
const LIMIT: Duration = Duration::from_secs(120);

/// The fixture whose constructor leaves a marker file.
const CONSTRUCTOR: &str = "libaccel_fixture_constructor.so";
/// The environment variable naming the constructor's marker file.
const MARKER_ENV: &str = "ACCEL_FIXTURE_MARKER";
/// The option that lifts the trust checks.
const ALLOW: &str = "--allow-untrusted-plugins";
/// A real plugin that loads and probes (as unavailable) on every host.
const HVF: &str = "libaccel_hvf.so";
/// The fixture whose probe never returns, named so that no search finds it.
const HANGING: &str = "libfixture_hanging.so";
/// A real plugin that calls itself `example`.
const EXAMPLE: &str = "libaccel_example.so";

/// The checks of this area.
pub fn checks() -> Vec<Check> {
    vec![
        Check::host(
            "a library in a plugin directory that exports no root module never runs its constructor in list, probe or run",
            constructor_never_runs,
        ),
        Check::host(
            "a plugin in a world-writable directory is refused in one line naming the directory, its mode and the option",
            world_writable_dir_refused,
        ),
        Check::host(
            "--allow-untrusted-plugins loads a plugin from a world-writable directory",
            allow_option_loads_it,
        ),
        Check::host("a plugin file of mode 666 is refused in one line naming it and its mode", mode_666_refused),
        Check::host("a plugin file owned by another user is refused in one line naming its owner", other_owner_refused),
        Check::host("a plugin that is a symbolic link is refused in one line by probe, list and run", symlink_refused),
        Check::host(
            "a relative ACCEL_PLUGIN_PATH entry is refused in one line naming it, by list, probe and run",
            relative_plugin_path_refused,
        ),
        Check::host("a FIFO given as --accel is refused at once by probe and run, and list passes one by", fifo_refused),
        Check::host("a truncated copy of a plugin is refused in one line by run and probe, with no SIGBUS", truncated_refused),
        Check::host(
            "a bare --accel file name loads the file in the current directory or is refused, never one LD_LIBRARY_PATH finds",
            bare_name_is_the_cwd_file,
        ),
        Check::host(
            "a plugin in a directory whose name is not UTF-8 is the one probed, not one at the lossy name",
            non_utf8_directory,
        ),
        Check::host(
            "a plugin found by name that calls itself by another name is refused in one line by probe and run",
            name_mismatch_refused,
        ),
        Check::host(
            "a plugin whose probe never returns is killed at the time limit and reported in one line by probe, list and run",
            hanging_probe_killed,
        ),
        Check::kvm(
            "the kvm plugin, checked and loaded through its open descriptor, runs the demo guest by name, by choice and when allowed from an untrusted directory",
            kvm_runs_after_the_checks,
        ),
    ]
}

/// `accel-host ARGS` as a command, with `env` set, in the directory `cwd` when given.
fn command(env: &Env, args: &[&OsStr], vars: &[(&str, &OsStr)], cwd: Option<&Path>) -> Command {
    let mut command = Command::new(&env.accel_host);
    command.args(args);
    for (key, value) in vars {
        command.env(key, value);
    }
    if let Some(dir) = cwd {
        command.current_dir(dir);
    }
    command
}

/// Runs `accel-host ARGS` (string arguments) with `ACCEL_PLUGIN_PATH=dir` when given.
fn host(env: &Env, args: &[&str], plugin_path: Option<&Path>) -> Result<Ran, String> {
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let vars: Vec<(&str, &OsStr)> =
        plugin_path.map(|d| ("ACCEL_PLUGIN_PATH", d.as_os_str())).into_iter().collect();
    run_limited(command(env, &args, &vars, None), LIMIT)
}

/// Copies the plugin directory's `file` to `to`, with `mode`.
fn copy(env: &Env, file: &str, to: &Path, mode: u32) -> Result<(), String> {
    let from = env.plugin(file);
    std::fs::copy(&from, to).map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
    chmod(to, mode)
}

fn chmod(path: &Path, mode: u32) -> Result<(), String> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {:o} {}: {e}", mode, path.display()))
}

/// A small raw guest image: `run` reads it before it picks a backend.
fn raw_image(env: &Env) -> Result<PathBuf, String> {
    let path = env.scratch.join("raw-image.bin");
    std::fs::write(&path, [0u8; 4096]).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// Ok when `ran` exited with `code` and one error line containing every one of `texts`.
fn refused_with_all(ran: &Ran, code: i32, texts: &[&str]) -> Result<(), String> {
    for text in texts {
        ran.refused_with(code, text)?;
    }
    Ok(())
}

/// Ok when `ran` ended with exit code 0.
fn succeeded(ran: &Ran, what: &str) -> Result<(), String> {
    if ran.timed_out || ran.code != Some(0) {
        return Err(format!("{what}: exit code {:?}, stderr {:?}", ran.code, ran.stderr));
    }
    Ok(())
}

/// Whether `probe --json` printed the hvf plugin's answer.
fn probed_hvf(ran: &Ran) -> bool {
    ran.stdout.contains("\"backend\": \"hvf\"")
}

/// Loads `library` into this process with `MARKER_ENV` naming `marker`: the fixture's
/// constructor must leave it, or the checks that it never runs would prove nothing.
fn constructor_runs_when_loaded(library: &Path, marker: &Path) -> Result<(), String> {
    std::env::set_var(MARKER_ENV, marker);
    let name = std::ffi::CString::new(library.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: the fixture is a library of this workspace whose only code is its constructor; the
    // handle is kept open (never dlclose'd), so nothing of it dangles.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    std::env::remove_var(MARKER_ENV);
    if handle.is_null() {
        return Err(format!("the fixture {} does not load with dlopen", library.display()));
    }
    if !exists(marker) {
        return Err(format!("the fixture's constructor left no marker when loaded: {}", marker.display()));
    }
    Ok(())
}

fn constructor_never_runs(env: &Env) -> Result<(), String> {
    let dir = env.dir("constructor");
    let plugin = dir.join(CONSTRUCTOR);
    copy(env, CONSTRUCTOR, &plugin, 0o755)?;
    constructor_runs_when_loaded(&plugin, &dir.join("control-marker"))?;
    let marker = env.scratch.join("constructor-marker");
    let image = raw_image(env)?;
    let image = image.as_os_str();
    let runs: [(&str, Vec<&OsStr>); 3] = [
        ("list", vec![OsStr::new("list")]),
        ("probe", vec![OsStr::new("probe"), OsStr::new("--accel"), OsStr::new("fixture_constructor")]),
        ("run without --accel", vec![OsStr::new("run"), image]),
    ];
    for (what, args) in runs {
        let vars = [("ACCEL_PLUGIN_PATH", dir.as_os_str()), (MARKER_ENV, marker.as_os_str())];
        let ran = run_limited(command(env, &args, &vars, None), LIMIT)?;
        if exists(&marker) {
            return Err(format!("{what} ran the library's constructor"));
        }
        let said = format!("{}{}", ran.stdout, ran.stderr);
        if !said.contains(&format!("{}: not an accel plugin", plugin.display())) {
            return Err(format!("{what} did not say the library is no plugin: {said:?}"));
        }
        if what != "list" {
            ran.refused_with(1, "not an accel plugin").map_err(|e| format!("{what}: {e}"))?;
        }
    }
    Ok(())
}

fn world_writable_dir_refused(env: &Env) -> Result<(), String> {
    let dir = env.dir("world-writable");
    copy(env, HVF, &dir.join(HVF), 0o755)?;
    chmod(&dir, 0o777)?;
    let ran = host(env, &["probe", "--accel", "hvf"], Some(&dir))?;
    refused_with_all(&ran, 1, &[&dir.display().to_string(), "world-writable", "0777", ALLOW])?;
    let ran = host(env, &["list"], Some(&dir))?;
    let line = ran.stdout.lines().find(|l| l.contains("world-writable"));
    if !line.is_some_and(|l| l.contains(&*dir.display().to_string()) && l.contains(ALLOW)) {
        return Err(format!("list does not refuse it, naming the directory: {:?}", ran.stdout));
    }
    Ok(())
}

fn allow_option_loads_it(env: &Env) -> Result<(), String> {
    let dir = env.dir("world-writable-allowed");
    copy(env, HVF, &dir.join(HVF), 0o755)?;
    chmod(&dir, 0o777)?;
    let ran = host(env, &[ALLOW, "probe", "--accel", "hvf", "--json"], Some(&dir))?;
    succeeded(&ran, "probe with the option")?;
    if !probed_hvf(&ran) {
        return Err(format!("the plugin probed is not hvf: {:?}", ran.stdout));
    }
    Ok(())
}

fn mode_666_refused(env: &Env) -> Result<(), String> {
    let dir = env.dir("mode-666");
    let plugin = dir.join(HVF);
    copy(env, HVF, &plugin, 0o666)?;
    let ran = host(env, &["probe", "--accel", "hvf"], Some(&dir))?;
    refused_with_all(&ran, 1, &[&plugin.display().to_string(), "world-writable", "0666", ALLOW])?;
    let shown = plugin.display().to_string();
    let ran = host(env, &["probe", "--accel", &shown], None)?;
    refused_with_all(&ran, 1, &[&shown, "the file is world-writable", ALLOW])
}

fn other_owner_refused(env: &Env) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("this check gives a file to another user, which needs root".into());
    }
    let dir = env.dir("other-owner");
    let plugin = dir.join(HVF);
    copy(env, HVF, &plugin, 0o755)?;
    std::os::unix::fs::chown(&plugin, Some(65534), Some(65534))
        .map_err(|e| format!("chown {}: {e}", plugin.display()))?;
    let ran = host(env, &["probe", "--accel", "hvf"], Some(&dir))?;
    refused_with_all(&ran, 1, &[&plugin.display().to_string(), "owned by another user", "uid 65534", ALLOW])
}

fn symlink_refused(env: &Env) -> Result<(), String> {
    let dir = env.dir("symlink");
    let link = dir.join(HVF);
    std::os::unix::fs::symlink(env.plugin(HVF), &link).map_err(|e| format!("symlink: {e}"))?;
    let shown = link.display().to_string();
    let ran = host(env, &["probe", "--accel", "hvf"], Some(&dir))?;
    refused_with_all(&ran, 1, &[&shown, "symbolic link"])?;
    let ran = host(env, &["probe", "--accel", &shown], None)?;
    refused_with_all(&ran, 1, &[&shown, "symbolic link"])?;
    let image = raw_image(env)?;
    let ran = host(env, &["run", "--accel", &shown, &image.display().to_string()], None)?;
    refused_with_all(&ran, 1, &[&shown, "symbolic link"])?;
    let ran = host(env, &["list"], Some(&dir))?;
    if !ran.stdout.lines().any(|l| l.contains(&shown) && l.contains("symbolic link")) {
        return Err(format!("list does not refuse the link: {:?}", ran.stdout));
    }
    Ok(())
}

fn relative_plugin_path_refused(env: &Env) -> Result<(), String> {
    let relative = Path::new("plugins-relative");
    let image = raw_image(env)?;
    let image = image.display().to_string();
    let runs: [&[&str]; 3] = [&["list"], &["probe", "--accel", "kvm"], &["run", &image]];
    for args in runs {
        let ran = host(env, args, Some(relative))?;
        refused_with_all(&ran, 1, &["ACCEL_PLUGIN_PATH", "'plugins-relative'", "relative"])
            .map_err(|e| format!("{}: {e}", args[0]))?;
    }
    Ok(())
}

fn fifo_refused(env: &Env) -> Result<(), String> {
    let dir = env.dir("fifo");
    let fifo = dir.join("libaccel_fifo.so");
    let name = std::ffi::CString::new(fifo.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: mkfifo reads the NUL-terminated path, which lives across the call.
    if unsafe { libc::mkfifo(name.as_ptr(), 0o600) } != 0 {
        return Err(format!("mkfifo {}: {}", fifo.display(), std::io::Error::last_os_error()));
    }
    let shown = fifo.display().to_string();
    let ran = host(env, &["probe", "--accel", &shown], None)?;
    refused_with_all(&ran, 1, &[&shown, "not a regular file (a FIFO)"]).map_err(|e| format!("probe: {e}"))?;
    let image = raw_image(env)?;
    let ran = host(env, &["run", "--accel", &shown, &image.display().to_string()], None)?;
    refused_with_all(&ran, 1, &[&shown, "not a regular file (a FIFO)"]).map_err(|e| format!("run: {e}"))?;
    let ran = host(env, &["probe", "--accel", "fifo"], Some(&dir))?;
    refused_with_all(&ran, 1, &[&shown, "a FIFO"]).map_err(|e| format!("probe by name: {e}"))?;
    let ran = host(env, &["list"], Some(&dir))?;
    succeeded(&ran, "list with a FIFO in the plugin directory")
}

fn truncated_refused(env: &Env) -> Result<(), String> {
    let dir = env.dir("truncated");
    let plugin = dir.join(HVF);
    let whole = std::fs::read(env.plugin(HVF)).map_err(|e| format!("reading {HVF}: {e}"))?;
    std::fs::write(&plugin, &whole[..whole.len() / 2]).map_err(|e| format!("{}: {e}", plugin.display()))?;
    chmod(&plugin, 0o755)?;
    let shown = plugin.display().to_string();
    let image = raw_image(env)?;
    let ran = host(env, &["run", "--accel", &shown, &image.display().to_string()], None)?;
    refused_with_all(&ran, 1, &[&shown, "truncated"]).map_err(|e| format!("run: {e}"))?;
    let ran = host(env, &["probe", "--accel", &shown], None)?;
    refused_with_all(&ran, 1, &[&shown, "truncated"]).map_err(|e| format!("probe: {e}"))
}

fn bare_name_is_the_cwd_file(env: &Env) -> Result<(), String> {
    let here = env.dir("bare-here");
    let elsewhere = env.dir("bare-elsewhere");
    let file = "libaccel_bare.so";
    copy(env, HVF, &here.join(file), 0o755)?;
    copy(env, EXAMPLE, &elsewhere.join(file), 0o755)?;
    let args = [OsStr::new("probe"), OsStr::new("--accel"), OsStr::new(file), OsStr::new("--json")];
    let vars = [("LD_LIBRARY_PATH", elsewhere.as_os_str())];
    let ran = run_limited(command(env, &args, &vars, Some(&here)), LIMIT)?;
    succeeded(&ran, "probe of the file in the current directory")?;
    if !probed_hvf(&ran) {
        return Err(format!("the plugin probed is not the one in the current directory: {:?}", ran.stdout));
    }
    let empty = env.dir("bare-empty");
    let ran = run_limited(command(env, &args, &vars, Some(&empty)), LIMIT)?;
    refused_with_all(&ran, 1, &[file, "no such plugin file"]).map_err(|e| format!("with no file here: {e}"))
}

fn non_utf8_directory(env: &Env) -> Result<(), String> {
    let odd = env.scratch.join(OsStr::from_bytes(b"plugins-\xff"));
    let lossy = env.scratch.join("plugins-\u{FFFD}");
    for dir in [&odd, &lossy] {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        chmod(dir, 0o700)?;
    }
    copy(env, HVF, &odd.join(HVF), 0o755)?;
    // A decoy at the name a lossy copy of the path would give.
    copy(env, EXAMPLE, &lossy.join(HVF), 0o755)?;
    let path: OsString = odd.join(HVF).into_os_string();
    let args = [OsStr::new("probe"), OsStr::new("--accel"), &path, OsStr::new("--json")];
    let ran = run_limited(command(env, &args, &[], None), LIMIT)?;
    succeeded(&ran, "probe by a non-UTF-8 path")?;
    if !probed_hvf(&ran) {
        return Err(format!("the plugin probed is not the one in the non-UTF-8 directory: {:?}", ran.stdout));
    }
    let vars = [("ACCEL_PLUGIN_PATH", odd.as_os_str())];
    let ran = run_limited(command(env, &[OsStr::new("list")], &vars, None), LIMIT)?;
    succeeded(&ran, "list")?;
    // The line of the plugin in that directory (shown with U+FFFD, as the decoy's would be).
    let line = ran.stdout.lines().find(|l| l.contains("plugins-\u{FFFD}"));
    if !line.is_some_and(|l| l.starts_with("hvf ")) {
        return Err(format!("list shows another plugin than the one in the directory: {:?}", ran.stdout));
    }
    let image = raw_image(env)?;
    let args = [OsStr::new("run"), OsStr::new("--accel"), OsStr::new("hvf"), image.as_os_str()];
    let ran = run_limited(command(env, &args, &vars, None), LIMIT)?;
    // hvf loads and is unavailable here; the decoy would be refused as calling itself `example`.
    refused_with_all(&ran, 1, &["hvf: ", "HVF"]).map_err(|e| format!("run: {e}"))
}

fn name_mismatch_refused(env: &Env) -> Result<(), String> {
    let dir = env.dir("name-mismatch");
    let plugin = dir.join("libaccel_kvm.so");
    copy(env, EXAMPLE, &plugin, 0o755)?;
    let shown = plugin.display().to_string();
    let ran = host(env, &["probe", "--accel", "kvm"], Some(&dir))?;
    refused_with_all(&ran, 1, &[&shown, "asked for backend 'kvm'", "calls itself 'example'"])
        .map_err(|e| format!("probe: {e}"))?;
    let image = raw_image(env)?;
    let ran = host(env, &["run", "--accel", "kvm", &image.display().to_string()], Some(&dir))?;
    refused_with_all(&ran, 1, &[&shown, "calls itself 'example'"]).map_err(|e| format!("run: {e}"))
}

fn hanging_probe_killed(env: &Env) -> Result<(), String> {
    let dir = env.dir("hanging");
    let plugin = dir.join("libaccel_hanging.so");
    copy(env, HANGING, &plugin, 0o755)?;
    let shown = plugin.display().to_string();
    let said = "did not load and answer its probe within 2 s";
    // The limit is shortened so the check takes seconds; the default's use is the same code.
    let host = |env: &Env, args: &[&str], dir: Option<&Path>| -> Result<Ran, String> {
        let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        let mut vars = vec![("ACCEL_PROBE_TIME_LIMIT", OsStr::new("2"))];
        vars.extend(dir.map(|d| ("ACCEL_PLUGIN_PATH", d.as_os_str())));
        run_limited(command(env, &args, &vars, None), LIMIT)
    };
    let ran = host(env, &["probe", "--accel", "hanging"], Some(&dir))?;
    refused_with_all(&ran, 1, &[&shown, said]).map_err(|e| format!("probe: {e}"))?;
    let image = raw_image(env)?;
    let ran = host(env, &["run", "--accel", "hanging", &image.display().to_string()], Some(&dir))?;
    refused_with_all(&ran, 1, &[&shown, said]).map_err(|e| format!("run: {e}"))?;
    let ran = host(env, &["list"], Some(&dir))?;
    succeeded(&ran, "list")?;
    if !ran.stdout.lines().any(|l| l.contains(&shown) && l.contains(said)) {
        return Err(format!("list does not report the hanging plugin: {:?}", ran.stdout));
    }
    Ok(())
}

fn kvm_runs_after_the_checks(env: &Env) -> Result<(), String> {
    let guest = env.guest.as_ref().ok_or("no demo guest given")?.display().to_string();
    let dir = env.dir("kvm-trusted");
    copy(env, "libaccel_kvm.so", &dir.join("libaccel_kvm.so"), 0o755)?;
    let plugin_path = dir.display().to_string();
    let path = [("ACCEL_PLUGIN_PATH", Some(plugin_path.as_str()))];
    let ran_to_end = |ran: &Ran, what: &str| -> Result<(), String> {
        succeeded(ran, what)?;
        if !ran.stdout.contains("Hello from an accel guest") {
            return Err(format!("{what}: the guest printed nothing: {:?}", ran.stdout));
        }
        Ok(())
    };
    let ran = env.accel_host(&["run", "--accel", "kvm", &guest], &path, LIMIT)?;
    ran_to_end(&ran, "run --accel kvm")?;
    let ran = env.accel_host(&["run", &guest], &path, LIMIT)?;
    ran_to_end(&ran, "run without --accel")?;
    if !ran.stderr.contains("using libaccel_kvm.so") {
        return Err(format!("run without --accel did not say it chose kvm: {:?}", ran.stderr));
    }
    chmod(&dir, 0o777)?;
    let ran = env.accel_host(&["run", "--accel", "kvm", &guest], &path, LIMIT)?;
    ran.refused_with(1, "world-writable")?;
    let ran = env.accel_host(&[ALLOW, "run", "--accel", "kvm", &guest], &path, LIMIT)?;
    ran_to_end(&ran, "run with the option from a world-writable directory")
}
