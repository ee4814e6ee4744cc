//! Cases in a process of their own: the runner starts itself again for one case, reads the
//! case's progress and verdict from the child's output, and kills it when it stands still, so
//! nothing a failed or stalled case leaves behind reaches the next one.
//!
//! The child prints `@@progress N` whenever its case's progress count changes, and ends with one
//! `@@verdict pass`, `@@verdict fail<TAB>why` or `@@verdict not-run<TAB>why` line; every other
//! line it prints passes through.

use std::{
    io::{BufRead, BufReader, Write},
    panic::{catch_unwind, AssertUnwindSafe},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::{
    pace::{Watch, POLL_PERIOD},
    stalled, verdict_of, Case, Context, Verdict,
};

const PROGRESS: &str = "@@progress ";
const VERDICT: &str = "@@verdict ";

/// The option that makes the runner a child running one case.
pub const CHILD_OPTION: &str = "--child-case";
/// The option that hands the child the pace measured by its parent, in nanoseconds a round trip.
pub const PACE_OPTION: &str = "--pace-ns";

/// Starts a child for `case` and waits for its verdict, watching its progress.
pub(crate) fn run(case: &Case, ctx: &'static Context) -> Verdict {
    let pace = ctx.pace();
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            return Verdict::Fail(format!("cannot find the runner's own program to start the case in: {e}"))
        }
    };
    let mut command = Command::new(exe);
    command.arg("--plugin").arg(&ctx.plugin_path);
    if let Some(fixtures) = &ctx.fixtures {
        command.arg("--fixtures").arg(fixtures);
    }
    command.args([CHILD_OPTION, case.name, PACE_OPTION, &pace.round_trip.as_nanos().to_string()]);
    let mut child = match command.stdin(Stdio::null()).stdout(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => return Verdict::Fail(format!("starting the case's process: {e}")),
    };
    let (tx, lines) = mpsc::channel();
    let reader = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        })
    });
    let mut watch = Watch::new(&ctx.progress);
    let mut verdict = None;
    loop {
        match lines.recv_timeout(POLL_PERIOD) {
            Ok(line) => {
                if let Some(steps) = line.strip_prefix(PROGRESS).and_then(|n| n.parse().ok()) {
                    watch.observe(steps);
                } else if let Some(v) = line.strip_prefix(VERDICT) {
                    verdict = Some(parse_verdict(v));
                } else {
                    println!("{line}");
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let still = watch.still();
                if still > pace.stall() {
                    let _ = child.kill();
                    let _ = child.wait();
                    return stalled(still, &pace);
                }
            }
        }
    }
    if let Some(reader) = reader {
        let _ = reader.join();
    }
    let status = child.wait();
    match (verdict, status) {
        (Some(v), _) => v,
        (None, Ok(status)) => Verdict::Fail(format!("the case's process ended ({status}) without a verdict")),
        (None, Err(e)) => Verdict::Fail(format!("waiting for the case's process: {e}")),
    }
}

fn parse_verdict(text: &str) -> Verdict {
    let (kind, why) = text.split_once('\t').unwrap_or((text, ""));
    match kind {
        "pass" => Verdict::Pass,
        "not-run" => Verdict::NotRun(why.to_string()),
        "fail" => Verdict::Fail(why.to_string()),
        other => Verdict::Fail(format!("the case's process gave an unknown verdict {other:?}")),
    }
}

fn verdict_line(verdict: &Verdict) -> String {
    let one_line = |why: &str| why.replace('\n', " | ");
    match verdict {
        Verdict::Pass => format!("{VERDICT}pass"),
        Verdict::Fail(why) => format!("{VERDICT}fail\t{}", one_line(why)),
        Verdict::NotRun(why) => format!("{VERDICT}not-run\t{}", one_line(why)),
    }
}

/// The child's side: runs the case named `name` on this thread, reporting its progress, and
/// prints its verdict. Returns the exit status; the caller ends the process at once, with any
/// thread the case left behind.
pub fn serve_child(ctx: &'static Context, name: &str) -> i32 {
    let Some(case) = crate::cases::all().into_iter().find(|c| c.name == name) else {
        println!("{}", verdict_line(&Verdict::Fail(format!("no case is named {name}"))));
        return 2;
    };
    std::thread::spawn(move || {
        let mut last = 0;
        loop {
            let steps = ctx.progress.steps();
            if steps != last {
                last = steps;
                println!("{PROGRESS}{steps}");
                let _ = std::io::stdout().flush();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let run = case.run;
    let verdict = verdict_of(catch_unwind(AssertUnwindSafe(|| run(ctx))));
    println!("{}", verdict_line(&verdict));
    let _ = std::io::stdout().flush();
    i32::from(verdict != Verdict::Pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_cross_as_one_line_each() {
        for v in [Verdict::Pass, Verdict::Fail("a\nb".into()), Verdict::NotRun("no irqfd".into())] {
            let line = verdict_line(&v);
            assert_eq!(line.lines().count(), 1);
            let back = parse_verdict(line.strip_prefix(VERDICT).unwrap_or_default());
            let expected = match v {
                Verdict::Fail(_) => Verdict::Fail("a | b".into()),
                other => other,
            };
            assert_eq!(back, expected);
        }
        assert!(matches!(parse_verdict("maybe"), Verdict::Fail(_)));
    }
}
