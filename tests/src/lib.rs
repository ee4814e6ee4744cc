//! The accel conformance suite: cases that any backend plugin must pass, the guest programs they
//! run, and the runner.
//!
//! Each case takes the loaded plugin under test. A case that needs a working backend is reported
//! as "not run" when the plugin's probe says it cannot run here: never as passed.

pub mod asm;
pub mod cases;
pub mod guest;

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::PathBuf,
    sync::mpsc,
    time::{Duration, Instant},
};

use accel_api::AccelError;
use accel_host::loader::Plugin;

/// Why a case did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The backend misbehaved.
    Fail(String),
    /// The case could not run here (backend unavailable, fixture missing).
    NotRun(String),
}

impl From<AccelError> for Failure {
    fn from(e: AccelError) -> Self {
        Failure::Fail(format!("unexpected error: {e} [{}]", e.kind))
    }
}

/// What a case returns.
pub type CaseResult = Result<(), Failure>;

/// A call to something a backend may not offer (a register class, a snapshot of every class):
/// its value, or NOT RUN when the backend answers `unsupported`, naming `what`. Any other error
/// fails the case.
pub fn offered<T>(result: accel_api::Result<T>, what: &str) -> Result<T, Failure> {
    match result {
        Ok(value) => Ok(value),
        Err(e) if e.kind == accel_api::ErrorKind::UNSUPPORTED => {
            Err(Failure::NotRun(format!("the backend does not offer {what}: {e}")))
        }
        Err(e) => Err(e.into()),
    }
}

/// An optional extension a case needs: the extension, or NOT RUN naming what the backend does
/// not offer. When the probe promises it (`promised`), its absence fails the case instead.
pub fn extension<T>(ext: Option<T>, what: &str, promised: bool) -> Result<T, Failure> {
    match ext {
        Some(ext) => Ok(ext),
        None if promised => Err(Failure::Fail(format!("the probe reports {what}, but the VM offers none"))),
        None => Err(Failure::NotRun(format!("the backend offers no {what}"))),
    }
}

/// Fails the case with a formatted message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($crate::Failure::Fail(format!($($fmt)+)));
        }
    };
}

/// Builds a case list from functions grouped by area: `cases![regs: a, b; timer: c]` names them
/// `regs::a`, `regs::b` and `timer::c`, so a name cannot drift from its function.
#[macro_export]
macro_rules! cases {
    ($($area:ident: $($f:ident),+);+ $(;)?) => {
        vec![$($($crate::Case { name: concat!(stringify!($area), "::", stringify!($f)), run: $f }),+),+]
    };
}

/// What a case gets to work with.
pub struct Context {
    /// The plugin under test.
    pub plugin: Plugin,
    /// Its file.
    pub plugin_path: PathBuf,
    /// Where test fixtures (such as the wrong-ABI plugin) live, if known.
    pub fixtures: Option<PathBuf>,
}

impl Context {
    /// Opens the accelerator, or reports the case as not run when the backend cannot run here.
    pub fn accelerator(&self) -> Result<accel_api::client::Accelerator, Failure> {
        let info = self.plugin.probe();
        if !info.available {
            return Err(Failure::NotRun(format!("backend unavailable: {}", info.reason)));
        }
        Ok(self.plugin.open()?)
    }
}

/// One conformance case.
pub struct Case {
    /// A unique name, `area::what`.
    pub name: &'static str,
    /// The check.
    pub run: fn(&Context) -> CaseResult,
}

/// The verdict of one case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It passed.
    Pass,
    /// It failed, and why.
    Fail(String),
    /// It did not run, and why.
    NotRun(String),
}

/// Counts over a run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Cases passed.
    pub passed: usize,
    /// Cases failed.
    pub failed: usize,
    /// Cases not run.
    pub not_run: usize,
}

/// How long one case may take before it counts as failed.
pub const CASE_TIMEOUT: Duration = Duration::from_secs(60);

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Runs one case on its own thread, with a time limit and panic containment.
///
/// A case that times out is reported as failed; its thread (perhaps stuck in a guest) is left
/// behind and ends with the process.
pub fn run_case(case: &Case, ctx: &'static Context) -> Verdict {
    let (tx, rx) = mpsc::channel();
    let run = case.run;
    let spawned = std::thread::Builder::new().name(case.name.into()).spawn(move || {
        let result = catch_unwind(AssertUnwindSafe(|| run(ctx)));
        let _ = tx.send(result);
    });
    if let Err(e) = spawned {
        return Verdict::Fail(format!("could not start the case's thread: {e}"));
    }
    match rx.recv_timeout(CASE_TIMEOUT) {
        Ok(Ok(Ok(()))) => Verdict::Pass,
        Ok(Ok(Err(Failure::Fail(why)))) => Verdict::Fail(why),
        Ok(Ok(Err(Failure::NotRun(why)))) => Verdict::NotRun(why),
        Ok(Err(payload)) => Verdict::Fail(format!("panicked: {}", panic_text(payload.as_ref()))),
        Err(_) => Verdict::Fail(format!("timed out after {} s", CASE_TIMEOUT.as_secs())),
    }
}

/// Runs the cases whose names contain `filter` and prints one line per case and the summary
/// line `N passed, N failed`.
pub fn run_all(ctx: &'static Context, filter: Option<&str>) -> Summary {
    let mut summary = Summary::default();
    for case in cases::all().iter().filter(|c| filter.is_none_or(|f| c.name.contains(f))) {
        let start = Instant::now();
        let verdict = run_case(case, ctx);
        let ms = start.elapsed().as_millis();
        match verdict {
            Verdict::Pass => {
                summary.passed += 1;
                println!("PASS    {} ({ms} ms)", case.name);
            }
            Verdict::Fail(why) => {
                summary.failed += 1;
                println!("FAIL    {}: {why}", case.name);
                // The failure stands. Running the case once more only tells whoever reads the
                // log whether it recurs (a backend bug) or not (a race, or the emulated host).
                let again = match run_case(case, ctx) {
                    Verdict::Pass => "passed when run again: an intermittent failure".to_string(),
                    Verdict::Fail(why) => format!("failed again: {why}"),
                    Verdict::NotRun(why) => format!("could not run again: {why}"),
                };
                println!("AGAIN   {}: {again}", case.name);
            }
            Verdict::NotRun(why) => {
                summary.not_run += 1;
                println!("NOT RUN {}: {why}", case.name);
            }
        }
    }
    if summary.not_run > 0 {
        println!("{} not run", summary.not_run);
    }
    println!("{} passed, {} failed", summary.passed, summary.failed);
    summary
}
