//! The loader against real plugin files built from this workspace: several plugins side by side
//! in one process, their logs arriving in the host's logger, and name lookup through
//! `ACCEL_PLUGIN_PATH`.

use std::{
    path::PathBuf,
    process::Command,
    sync::{Mutex, Once},
};

use accel_host::loader;

/// Builds the plugin cdylibs (cargo test builds only what the tests link) and returns their
/// directory.
fn plugin_dir() -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "accel-kvm",
                "-p",
                "accel-hvf",
                "-p",
                "accel-fixture-wrong-layout",
                "-p",
                "accel-fixture-panicking",
                "-p",
                "accel-fixture-segfaulting",
            ])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status()
            .expect("running cargo build for the plugins");
        assert!(status.success(), "building the plugins failed");
    });
    // target/debug/deps/plugins-HASH -> target/debug
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(|deps| deps.parent()).expect("target directory").to_path_buf()
}

struct Capture(Mutex<Vec<(log::Level, String, String)>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        if let Ok(mut records) = self.0.lock() {
            records.push((record.level(), record.target().to_string(), record.args().to_string()));
        }
    }
    fn flush(&self) {}
}

static CAPTURE: Capture = Capture(Mutex::new(Vec::new()));

#[test]
fn several_plugins_load_side_by_side_and_log_through_the_host() {
    log::set_logger(&CAPTURE).expect("the test's logger is the first");
    log::set_max_level(log::LevelFilter::Debug);
    let dir = plugin_dir();
    let kvm = loader::load(&dir.join(loader::plugin_file_name("kvm"))).expect("loading the KVM plugin");
    let hvf = loader::load(&dir.join(loader::plugin_file_name("hvf"))).expect("loading the HVF plugin");
    assert_eq!(kvm.name(), "kvm");
    assert_eq!(hvf.name(), "hvf");

    let kvm_probe = kvm.probe();
    let hvf_probe = hvf.probe();
    assert!(!hvf_probe.available, "HVF cannot run on this test host");
    assert!(hvf_probe.reason.contains("HVF"), "{}", hvf_probe.reason);
    if !cfg!(all(target_os = "linux", target_arch = "aarch64")) {
        assert!(!kvm_probe.available);
        let err = kvm.open().err().expect("opening KVM off arm64 Linux fails");
        assert_eq!(err.kind, accel_api::ErrorKind::UNAVAILABLE);
    }

    let records = CAPTURE.0.lock().expect("capture lock").clone();
    assert!(
        records.iter().any(|(level, target, message)| *level == log::Level::Debug
            && target.starts_with("accel_kvm")
            && message.starts_with("probe:")),
        "the KVM plugin's probe log did not reach the host's logger: {records:?}"
    );
}

#[test]
fn names_resolve_through_the_plugin_path() {
    let dir = plugin_dir();
    // Only this test reads or writes the variable.
    std::env::set_var(loader::PLUGIN_PATH_ENV, &dir);
    let (path, plugin) = loader::resolve("hvf").expect("resolving hvf by name");
    assert_eq!(path, dir.join(loader::plugin_file_name("hvf")));
    assert_eq!(plugin.name(), "hvf");
    let err = loader::resolve("no-such-backend").err().expect("an unknown name fails");
    assert_eq!(err.kind, accel_api::ErrorKind::NOT_FOUND);
    assert!(err.message.contains("libaccel_no-such-backend.so"), "{err}");
    assert!(
        loader::discover().expect("the plugin path is absolute").contains(&path),
        "discover() misses {}",
        path.display()
    );
}

#[test]
fn a_foreign_layout_is_refused_in_one_line_naming_where() {
    let dir = plugin_dir();
    let path = dir.join(loader::plugin_file_name("fixture_wrong_layout"));
    let err = loader::load(&path).err().expect("the fixture with a foreign root module is refused");
    assert_eq!(err.kind, accel_api::ErrorKind::PLUGIN_LOAD);
    let text = err.to_string();
    assert!(text.contains("layout is incompatible"), "{text}");
    assert!(text.contains("in `"), "the error names no type: {text}");
    assert!(!text.contains('\n'), "{text:?}");
}

#[test]
fn list_and_probe_survive_plugins_that_abort_or_crash() {
    let dir = plugin_dir();
    let out = Command::new(env!("CARGO_BIN_EXE_accel-host"))
        .arg("list")
        .env(loader::PLUGIN_PATH_ENV, &dir)
        .output()
        .expect("running accel-host list");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "list failed: {stdout}");
    let line = |name: &str| stdout.lines().find(|l| l.contains(name)).map(str::to_string);
    let aborted = line("libaccel_fixture_panicking.so").expect("the aborting plugin is listed");
    assert!(aborted.contains("crashed") && aborted.contains("SIGABRT"), "{aborted}");
    let crashed = line("libaccel_fixture_segfaulting.so").expect("the crashing plugin is listed");
    assert!(crashed.contains("crashed") && crashed.contains("SIGSEGV"), "{crashed}");
    assert!(
        line("libaccel_hvf.so").is_some_and(|l| l.starts_with("hvf")),
        "the others are still listed: {stdout}"
    );
    assert!(line("libaccel_kvm.so").is_some_and(|l| l.starts_with("kvm")), "{stdout}");

    let out = Command::new(env!("CARGO_BIN_EXE_accel-host"))
        .args(["probe", "--accel"])
        .arg(dir.join(loader::plugin_file_name("fixture_segfaulting")))
        .output()
        .expect("running accel-host probe");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("accel-host: error:") && stderr.contains("SIGSEGV"), "{stderr}");
}
