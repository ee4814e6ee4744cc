//! Interleaved measurement: the variants of one operation (raw KVM, the backend linked in, the
//! backend loaded as a plugin) run in alternating blocks, round after round, in one process, so
//! that the load of the machine drifts over all of them alike. A figure is the median over the
//! rounds; a ratio is the median of the ratios within each round.

use std::time::{Duration, Instant};

/// Accelerator calls per repetition of an operation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Calls {
    /// Register reads (`KVM_GET_ONE_REG`).
    pub reads: f64,
    /// Register writes (`KVM_SET_ONE_REG`).
    pub writes: f64,
    /// Guest entries (`KVM_RUN`).
    pub runs: f64,
}

impl Calls {
    fn since(self, before: Calls, n: f64) -> Calls {
        Calls {
            reads: (self.reads - before.reads) / n,
            writes: (self.writes - before.writes) / n,
            runs: (self.runs - before.runs) / n,
        }
    }

    /// `reads/writes/runs`, whole numbers where they are.
    pub fn show(&self) -> String {
        let n = |v: f64| if v.fract() == 0.0 { format!("{v}") } else { format!("{v:.1}") };
        format!("{}/{}/{}", n(self.reads), n(self.writes), n(self.runs))
    }
}

/// Something measured: one repetition of an operation, and the calls made so far.
pub trait Subject {
    /// One repetition.
    fn once(&mut self) -> Result<(), String>;
    /// The accelerator calls made so far.
    fn calls(&mut self) -> Calls;
}

/// A subject made of a state and two functions on it.
pub struct On<'a, T, F, C> {
    state: &'a mut T,
    op: F,
    count: C,
}

/// `op` on `state`, counted by `count`.
pub fn on<'a, T, F, C>(state: &'a mut T, op: F, count: C) -> On<'a, T, F, C>
where
    F: FnMut(&mut T) -> Result<(), String>,
    C: FnMut(&mut T) -> Calls,
{
    On { state, op, count }
}

impl<T, F, C> Subject for On<'_, T, F, C>
where
    F: FnMut(&mut T) -> Result<(), String>,
    C: FnMut(&mut T) -> Calls,
{
    fn once(&mut self) -> Result<(), String> {
        (self.op)(self.state)
    }

    fn calls(&mut self) -> Calls {
        (self.count)(self.state)
    }
}

impl<S: Subject + ?Sized> Subject for Box<S> {
    fn once(&mut self) -> Result<(), String> {
        (**self).once()
    }

    fn calls(&mut self) -> Calls {
        (**self).calls()
    }
}

/// What one variant measured: seconds per repetition in each round, and calls per repetition.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Seconds per repetition, one entry per round.
    pub secs: Vec<f64>,
    /// Calls per repetition, over all rounds.
    pub calls: Calls,
    /// Heap allocations of this program per repetition, over all rounds.
    pub allocs: f64,
}

/// The median of `values` (0 when empty).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

impl Sample {
    /// The median time per repetition, in microseconds.
    pub fn micros(&self) -> f64 {
        median(&self.secs) * 1e6
    }

    /// The median over rounds of this sample's time over `base`'s in the same round.
    pub fn ratio_to(&self, base: &Sample) -> f64 {
        let ratios: Vec<f64> = self.secs.iter().zip(&base.secs).map(|(a, b)| a / b).collect();
        median(&ratios)
    }
}

/// Runs the subjects in turn for `rounds` rounds, each round starting with the next subject,
/// after `warmup` unmeasured repetitions each. A block is as many repetitions as take about
/// `block` on the slowest subject (at least one), so that the blocks compared in a round are
/// close in time.
pub fn interleave(
    subjects: &mut [&mut dyn Subject],
    rounds: u32,
    block: Duration,
    warmup: u32,
) -> Result<Vec<Sample>, String> {
    let n = subjects.len();
    let mut slowest = 0f64;
    for s in subjects.iter_mut() {
        let start = Instant::now();
        for _ in 0..warmup {
            s.once()?;
        }
        slowest = slowest.max(start.elapsed().as_secs_f64() / f64::from(warmup.max(1)));
    }
    let iterations =
        if slowest > 0.0 { (block.as_secs_f64() / slowest).clamp(1.0, 1000.0) as u32 } else { 1 };
    let mut samples = vec![Sample::default(); n];
    let before: Vec<Calls> = subjects.iter_mut().map(|s| s.calls()).collect();
    for round in 0..rounds as usize {
        for k in 0..n {
            let i = (round + k) % n;
            let allocs = crate::allocations::count();
            let start = Instant::now();
            for _ in 0..iterations {
                subjects[i].once()?;
            }
            let secs = start.elapsed().as_secs_f64();
            samples[i].allocs += (crate::allocations::count() - allocs) as f64;
            samples[i].secs.push(secs / f64::from(iterations));
        }
    }
    let total = f64::from(rounds) * f64::from(iterations);
    for (i, s) in subjects.iter_mut().enumerate() {
        samples[i].calls = s.calls().since(before[i], total);
        samples[i].allocs /= total;
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn ratios_pair_rounds() {
        let a = Sample { secs: vec![2.0, 4.0, 9.0], ..Sample::default() };
        let b = Sample { secs: vec![1.0, 4.0, 3.0], ..Sample::default() };
        assert_eq!(a.ratio_to(&b), 2.0);
    }

    #[test]
    fn interleaving_counts_calls_per_repetition() {
        let mut count = 0u64;
        let mut s = on(
            &mut count,
            |c| {
                *c += 2;
                Ok(())
            },
            |c| Calls { reads: *c as f64, writes: 0.0, runs: 0.0 },
        );
        let samples = interleave(&mut [&mut s], 3, Duration::from_millis(1), 1).expect("measured");
        assert_eq!(samples[0].secs.len(), 3);
        assert_eq!(samples[0].calls.reads, 2.0);
        assert_eq!(samples[0].calls.show(), "2/0/0");
    }
}
