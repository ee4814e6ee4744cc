//! The generic timer as a backend that emulates WFI sees it: whether the virtual timer asserts
//! its interrupt, and how long a WFI may sleep before it does (Arm ARM D11.2, "The AArch64 view
//! of the Generic Timer": CNTV_CTL_EL0 and CNTV_CVAL_EL0 against the virtual count).

use std::time::Duration;

/// CNTV_CTL_EL0.ENABLE.
pub const CTL_ENABLE: u64 = 1 << 0;
/// CNTV_CTL_EL0.IMASK: the timer's interrupt is masked.
pub const CTL_IMASK: u64 = 1 << 1;
/// CNTV_CTL_EL0.ISTATUS: the timer condition is met.
pub const CTL_ISTATUS: u64 = 1 << 2;

/// Whether the timer asserts its interrupt: enabled, not masked, and the count at or past CVAL.
pub fn asserts(ctl: u64, cval: u64, count: u64) -> bool {
    ctl & CTL_ENABLE != 0 && ctl & CTL_IMASK == 0 && count >= cval
}

/// How long a WFI may sleep, as far as the virtual timer is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WfiWait {
    /// The timer asserts already: do not sleep.
    Now,
    /// The timer fires after this many counter ticks.
    Ticks(u64),
    /// The timer is off or masked: only another event ends the wait.
    Indefinitely,
}

/// The virtual timer's deadline for a WFI at virtual count `count`.
pub fn wfi_wait(ctl: u64, cval: u64, count: u64) -> WfiWait {
    if ctl & CTL_ENABLE == 0 || ctl & CTL_IMASK != 0 {
        WfiWait::Indefinitely
    } else if count >= cval {
        WfiWait::Now
    } else {
        WfiWait::Ticks(cval - count)
    }
}

/// `ticks` of a counter running at `frequency` Hz as a duration (saturating; a frequency of 0
/// gives no duration).
pub fn ticks_to_duration(ticks: u64, frequency: u64) -> Duration {
    if frequency == 0 {
        return Duration::ZERO;
    }
    let nanos = u128::from(ticks) * 1_000_000_000 / u128::from(frequency);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timer_asserts_when_enabled_unmasked_and_due() {
        assert!(asserts(CTL_ENABLE, 100, 100));
        assert!(!asserts(CTL_ENABLE, 100, 99));
        assert!(!asserts(CTL_ENABLE | CTL_IMASK, 100, 200));
        assert!(!asserts(0, 100, 200));
    }

    #[test]
    fn wfi_sleeps_until_the_deadline() {
        assert_eq!(wfi_wait(CTL_ENABLE, 1000, 400), WfiWait::Ticks(600));
        assert_eq!(wfi_wait(CTL_ENABLE, 1000, 1000), WfiWait::Now);
        assert_eq!(wfi_wait(CTL_ENABLE | CTL_IMASK, 1000, 400), WfiWait::Indefinitely);
        assert_eq!(wfi_wait(0, 1000, 400), WfiWait::Indefinitely);
        assert_eq!(wfi_wait(CTL_ENABLE, u64::MAX, 0), WfiWait::Ticks(u64::MAX));
    }

    #[test]
    fn ticks_become_durations() {
        assert_eq!(ticks_to_duration(24_000_000, 24_000_000), Duration::from_secs(1));
        assert_eq!(ticks_to_duration(24, 24_000_000), Duration::from_micros(1));
        assert_eq!(ticks_to_duration(5, 0), Duration::ZERO);
        assert!(ticks_to_duration(u64::MAX, 1) >= Duration::from_secs(500 * 365 * 86_400));
    }
}
