//! The accel conformance suite: cases that any backend plugin must pass, the guest programs they
//! run, and the runner.
//!
//! Each case takes the loaded plugin under test. A case that needs a working backend is reported
//! as "not run" when the plugin's probe says it cannot run here: never as passed.

pub mod asm;
pub mod cases;
mod child;
pub mod guest;
pub mod kvm_stats;
pub mod pace;

use std::{
    panic::{catch_unwind, AssertUnwindSafe},
    path::PathBuf,
    sync::{mpsc, OnceLock},
    time::{Duration, Instant},
};

use accel_api::AccelError;
use accel_host::loader::Plugin;
pub use child::serve_child;
use pace::{Pace, Progress, Watch};

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

/// Builds a case list from functions grouped by area: `case_list![regs: a, b; timer: c]` names them
/// `regs::a`, `regs::b` and `timer::c`, so a name cannot drift from its function.
#[macro_export]
macro_rules! case_list {
    ($($area:ident: $($f:ident),+);+ $(;)?) => {
        vec![$($($crate::Case {
            name: concat!(stringify!($area), "::", stringify!($f)),
            run: $f,
            own_process: false,
        }),+),+]
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
    /// The progress the running case reports ([`Context::progress`]).
    pub progress: Progress,
    /// This machine's pace, measured once per run before the first case.
    pace: OnceLock<Pace>,
}

impl Context {
    /// A context for `plugin`, loaded from `plugin_path`, with its fixtures.
    pub fn new(plugin: Plugin, plugin_path: PathBuf, fixtures: Option<PathBuf>) -> Self {
        Self { plugin, plugin_path, fixtures, progress: Progress::default(), pace: OnceLock::new() }
    }

    /// Records that the running case got on: the runner fails a case only when it stands still
    /// for longer than [`Pace::stall`].
    pub fn progress(&self) {
        self.progress.tick();
    }

    /// This machine's pace: measured on the backend under test at the first call (unmeasured
    /// where the backend cannot run), or as [`Context::set_pace`] gave it.
    pub fn pace(&self) -> Pace {
        *self.pace.get_or_init(|| {
            let measured = self.accelerator().and_then(|accel| Pace::measure(&accel));
            match measured {
                Ok(pace) => pace,
                Err(Failure::NotRun(_)) => Pace::UNMEASURED,
                Err(Failure::Fail(why)) => {
                    println!("calibration failed ({why}); every bound is its floor");
                    Pace::UNMEASURED
                }
            }
        })
    }

    /// Takes the pace measured elsewhere (the runner that started this process) instead of
    /// measuring it again.
    pub fn set_pace(&self, pace: Pace) {
        let _ = self.pace.set(pace);
    }

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
    /// Runs in a process of its own, so that whatever it leaves behind when it fails or stalls
    /// (threads inside a guest, descriptors) ends with that process and never reaches the next
    /// case.
    pub own_process: bool,
}

impl Case {
    /// The same case, run in a process of its own.
    pub fn in_own_process(self) -> Self {
        Self { own_process: true, ..self }
    }
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

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// The verdict of a case's result, or of its panic.
fn verdict_of(result: std::thread::Result<CaseResult>) -> Verdict {
    match result {
        Ok(Ok(())) => Verdict::Pass,
        Ok(Err(Failure::Fail(why))) => Verdict::Fail(why),
        Ok(Err(Failure::NotRun(why))) => Verdict::NotRun(why),
        Err(payload) => Verdict::Fail(format!("panicked: {}", panic_text(payload.as_ref()))),
    }
}

/// The failure of a case that stood still for `still`.
fn stalled(still: Duration, pace: &Pace) -> Verdict {
    Verdict::Fail(format!(
        "made no progress for {:.0} s (the bound from this run's {})",
        still.as_secs_f64(),
        pace.describe()
    ))
}

/// Runs one case, on a thread of this process or in a process of its own
/// ([`Case::own_process`]), with panic containment. A case fails when it stands still for longer
/// than this run's [`Pace::stall`]; however long it takes while it gets on, it may finish.
///
/// A case run on a thread that stalls is reported as failed; its thread (perhaps stuck in a
/// guest) is left behind and ends with the process. One in its own process is killed.
pub fn run_case(case: &Case, ctx: &'static Context) -> Verdict {
    if case.own_process {
        return child::run(case, ctx);
    }
    let (tx, rx) = mpsc::channel();
    let run = case.run;
    let spawned = std::thread::Builder::new().name(case.name.into()).spawn(move || {
        let result = catch_unwind(AssertUnwindSafe(|| run(ctx)));
        let _ = tx.send(result);
    });
    if let Err(e) = spawned {
        return Verdict::Fail(format!("could not start the case's thread: {e}"));
    }
    let pace = ctx.pace();
    let mut watch = Watch::new(&ctx.progress);
    loop {
        match rx.recv_timeout(pace::POLL_PERIOD) {
            Ok(result) => return verdict_of(result),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Verdict::Fail("the case's thread ended without a verdict".into())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let still = watch.still_for(&ctx.progress);
                if still > pace.stall() {
                    return stalled(still, &pace);
                }
            }
        }
    }
}

/// Runs the cases whose names contain `filter` and prints one line per case and the summary
/// line `N passed, N failed`.
pub fn run_all(ctx: &'static Context, filter: Option<&str>) -> Summary {
    let mut summary = Summary::default();
    println!("{}", ctx.pace().describe());
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
