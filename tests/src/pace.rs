//! The suite's sense of time. Liveness is judged by progress, never by a total clock: a case
//! reports progress as it makes it, and fails only when it stands still for longer than a bound.
//! Every bound grows with this machine's speed, measured in the same run as the cases (the
//! calibration: MMIO exit round trips on the backend under test), so a slower machine makes a
//! case slower, never makes it fail.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use accel_api::{client::Accelerator, VcpuExit};

use crate::{
    asm::{self, Size},
    guest::{TestGuest, MMIO_BASE},
    Failure,
};

/// Round trips in one batch of the calibration.
const BATCH: u32 = 100;
/// Batches; the slowest one's mean is the calibration, so a bound errs on the side of waiting.
const BATCHES: u32 = 5;

/// How long a case may stand still (no progress reported, or none since it started) before it
/// fails: this many MMIO round trips, at least [`STALL_FLOOR`]. At the reference machine's
/// 100 µs a round trip (nested KVM under TCG), 60 s.
pub const STALL_ROUND_TRIPS: u32 = 600_000;
/// The smallest stall bound, whatever the calibration: a fast machine may still schedule a
/// dozen busy threads on two cores slowly.
pub const STALL_FLOOR: Duration = Duration::from_secs(60);

/// How long a case waits for one vCPU's answer to another thread (a run that a kick ends, a vCPU
/// that CPU_ON started): this many round trips, at least [`ANSWER_FLOOR`] (20 s, also at the
/// reference machine's pace).
pub const ANSWER_ROUND_TRIPS: u32 = 200_000;
/// The smallest answer bound.
pub const ANSWER_FLOOR: Duration = Duration::from_secs(20);

/// How often a watcher looks at progress.
pub const POLL_PERIOD: Duration = Duration::from_millis(100);

/// This machine's pace: the calibration, and the bounds derived from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// One MMIO exit round trip (the slowest batch's mean), or zero where the backend could not
    /// be measured: then every bound is its floor.
    pub round_trip: Duration,
}

impl Pace {
    /// A pace with no calibration: every bound is its floor.
    pub const UNMEASURED: Pace = Pace { round_trip: Duration::ZERO };

    /// Measures five batches of 100 MMIO round trips on one vCPU of a fresh VM.
    pub fn measure(accel: &Accelerator) -> Result<Pace, Failure> {
        let mut code = asm::mov_imm64(1, MMIO_BASE);
        code.extend([asm::str(Size::X, 0, 1, 0), asm::b(-4)]);
        let mut g = TestGuest::new(accel, &code)?;
        // The first exit ends the prelude and faults in the guest's pages; it is not timed.
        expect_exit(&mut g)?;
        let mut slowest = Duration::ZERO;
        for _ in 0..BATCHES {
            let start = Instant::now();
            for _ in 0..BATCH {
                expect_exit(&mut g)?;
            }
            slowest = slowest.max(start.elapsed() / BATCH);
        }
        Ok(Pace { round_trip: slowest })
    }

    /// `round_trips` round trips at this pace, at least `floor`.
    pub fn bound(&self, round_trips: u32, floor: Duration) -> Duration {
        (self.round_trip * round_trips).max(floor)
    }

    /// How long a case may make no progress.
    pub fn stall(&self) -> Duration {
        self.bound(STALL_ROUND_TRIPS, STALL_FLOOR)
    }

    /// How long to wait for one vCPU's answer ([`ANSWER_ROUND_TRIPS`]).
    pub fn answer(&self) -> Duration {
        self.bound(ANSWER_ROUND_TRIPS, ANSWER_FLOOR)
    }

    /// One line for the run's log.
    pub fn describe(&self) -> String {
        if self.round_trip.is_zero() {
            format!("pace: not measured; a case may stand still for {:.0} s", self.stall().as_secs_f64())
        } else {
            format!(
                "pace: one MMIO exit round trip in {:.1} µs (slowest of {BATCHES} batches of {BATCH}); \
                 a case may stand still for {:.0} s",
                self.round_trip.as_secs_f64() * 1e6,
                self.stall().as_secs_f64()
            )
        }
    }
}

fn expect_exit(g: &mut TestGuest) -> Result<(), Failure> {
    match g.run()? {
        VcpuExit::MmioWrite(a) if a.addr == MMIO_BASE => Ok(()),
        other => Err(Failure::Fail(format!("calibration: expected an MMIO write, got {other:?}"))),
    }
}

/// Progress a case reports: a count that only grows. The runner watches it; a case that takes
/// long calls [`Progress::tick`] as it gets on.
#[derive(Debug, Default)]
pub struct Progress(AtomicU64);

impl Progress {
    /// Records one step of progress.
    pub fn tick(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// The steps so far.
    pub fn steps(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Watches a [`Progress`] from outside: tells how long it has stood still.
#[derive(Debug)]
pub struct Watch {
    seen: u64,
    since: Instant,
}

impl Watch {
    /// Starts watching from now.
    pub fn new(progress: &Progress) -> Self {
        Self { seen: progress.steps(), since: Instant::now() }
    }

    /// Notes a step count read elsewhere (a child process's report); returns how long the count
    /// has not changed.
    pub fn observe(&mut self, steps: u64) -> Duration {
        if steps != self.seen {
            self.seen = steps;
            self.since = Instant::now();
        }
        self.since.elapsed()
    }

    /// How long the count has not changed, as of the last observation.
    pub fn still(&self) -> Duration {
        self.since.elapsed()
    }

    /// How long `progress` has not changed.
    pub fn still_for(&mut self, progress: &Progress) -> Duration {
        self.observe(progress.steps())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_grow_with_the_round_trip_and_never_drop_below_the_floor() {
        assert_eq!(Pace::UNMEASURED.stall(), STALL_FLOOR);
        let reference = Pace { round_trip: Duration::from_micros(100) };
        assert_eq!(reference.stall(), Duration::from_secs(60));
        let slow = Pace { round_trip: Duration::from_micros(500) };
        assert_eq!(slow.stall(), Duration::from_secs(300));
        let fast = Pace { round_trip: Duration::from_micros(10) };
        assert_eq!(fast.stall(), STALL_FLOOR);
    }

    #[test]
    fn a_watch_restarts_at_every_step() {
        let p = Progress::default();
        let mut w = Watch::new(&p);
        std::thread::sleep(Duration::from_millis(20));
        assert!(w.still_for(&p) >= Duration::from_millis(20));
        p.tick();
        assert!(w.still_for(&p) < Duration::from_millis(20));
    }
}
