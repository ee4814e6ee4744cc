//! What a check is, and the environment every check runs in: the executable under test, the
//! plugin directory, a scratch directory, and helpers to run `accel-host` with a time limit.

use std::{
    io::Read,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// Where the checks run.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Place {
    /// A build host: no guest can run.
    Host,
    /// The nested VM, with real KVM.
    Kvm,
}

/// One check: a name that says what must hold, and the code that tries it.
pub struct Check {
    /// What must hold, as a sentence.
    pub name: &'static str,
    /// Whether it needs a guest to run (real KVM).
    pub needs_kvm: bool,
    /// Tries it: `Err` says what went wrong.
    pub run: fn(&Env) -> Result<(), String>,
}

impl Check {
    /// A check that needs no guest.
    pub const fn host(name: &'static str, run: fn(&Env) -> Result<(), String>) -> Self {
        Check { name, needs_kvm: false, run }
    }

    /// A check that runs a guest on real KVM.
    pub const fn kvm(name: &'static str, run: fn(&Env) -> Result<(), String>) -> Self {
        Check { name, needs_kvm: true, run }
    }
}

/// The environment of every check.
pub struct Env {
    /// Where this runs.
    pub place: Place,
    /// The accel-host executable under test.
    pub accel_host: PathBuf,
    /// The plugins and fixture plugins.
    pub plugins: PathBuf,
    /// The demo guest (with `Place::Kvm`).
    pub guest: Option<PathBuf>,
    /// A fresh directory of this run's own, owner-only.
    pub scratch: PathBuf,
}

/// What a command run with a time limit came to.
pub struct Ran {
    /// Its exit code; `None` when a signal ended it or the time limit killed it.
    pub code: Option<i32>,
    /// Whether the time limit killed it.
    pub timed_out: bool,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl Ran {
    /// The non-empty lines of standard error.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr.lines().filter(|l| !l.trim().is_empty()).collect()
    }

    /// Ok when it exited with `code` and printed exactly one line on standard error containing
    /// `text`.
    pub fn refused_with(&self, code: i32, text: &str) -> Result<(), String> {
        let lines = self.error_lines();
        if self.timed_out {
            return Err(format!("it did not end within the time limit; stderr {:?}", self.stderr));
        }
        if self.code != Some(code) {
            return Err(format!("exit code {:?}, not {code}; stderr {:?}", self.code, self.stderr));
        }
        match lines.as_slice() {
            [one] if one.contains(text) => Ok(()),
            _ => Err(format!("stderr should be one line containing {text:?}, was {:?}", self.stderr)),
        }
    }
}

impl Env {
    /// Makes the environment and its scratch directory.
    pub fn new(
        place: Place,
        accel_host: PathBuf,
        plugins: PathBuf,
        guest: Option<PathBuf>,
    ) -> Result<Env, String> {
        use std::os::unix::fs::DirBuilderExt;
        if place == Place::Kvm && guest.is_none() {
            return Err("--place kvm needs --guest".into());
        }
        let accel_host =
            std::fs::canonicalize(&accel_host).map_err(|e| format!("{}: {e}", accel_host.display()))?;
        let plugins = std::fs::canonicalize(&plugins).map_err(|e| format!("{}: {e}", plugins.display()))?;
        let scratch = std::env::temp_dir().join(format!("accel-edges-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&scratch)
            .map_err(|e| format!("{}: {e}", scratch.display()))?;
        Ok(Env { place, accel_host, plugins, guest, scratch })
    }

    /// A plugin or fixture file in the plugin directory.
    pub fn plugin(&self, file: &str) -> PathBuf {
        self.plugins.join(file)
    }

    /// A fresh subdirectory of the scratch directory, mode 0700.
    pub fn dir(&self, name: &str) -> PathBuf {
        use std::os::unix::fs::DirBuilderExt;
        let dir = self.scratch.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&dir);
        dir
    }

    /// `accel-host ARGS` with the environment changes `env` (a `None` value removes the
    /// variable), killed after `limit`.
    pub fn accel_host(
        &self,
        args: &[&str],
        env: &[(&str, Option<&str>)],
        limit: Duration,
    ) -> Result<Ran, String> {
        let mut command = Command::new(&self.accel_host);
        command.args(args);
        for (key, value) in env {
            match value {
                Some(v) => command.env(key, v),
                None => command.env_remove(key),
            };
        }
        run_limited(command, limit)
    }
}

/// Runs `command` with no input, capturing its output, and kills it after `limit`.
pub fn run_limited(mut command: Command, limit: Duration) -> Result<Ran, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {command:?}: {e}"))?;
    let mut out = child.stdout.take().ok_or("no stdout pipe")?;
    let mut err = child.stderr.take().ok_or("no stderr pipe")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if start.elapsed() > limit {
            timed_out = true;
            let _ = child.kill();
            break child.wait().map_err(|e| e.to_string())?;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Ran {
        code: if timed_out { None } else { status.code() },
        timed_out,
        stdout: reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    })
}

/// Whether `path` exists (without following a last symlink).
pub fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}
