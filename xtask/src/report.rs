//! Reading results: the tally of checks, and the summary lines of the conformance runner and of
//! libtest.

/// Tallies of a test run.
#[derive(Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub failures: Vec<String>,
}

impl Tally {
    pub fn check(&mut self, name: &str, ok: bool, why: impl FnOnce() -> String) {
        if ok {
            self.passed += 1;
            println!("xtask: PASS {name}");
        } else {
            self.failed += 1;
            let why = why();
            println!("xtask: FAIL {name}: {why}");
            self.failures.push(format!("{name}: {why}"));
        }
    }
}

/// Parses `N passed, N failed` (the conformance runner's summary).
pub fn summary_line(lines: &[String]) -> Option<(usize, usize)> {
    lines.iter().rev().find_map(|l| {
        let (p, f) = l.trim().split_once(" passed, ")?;
        Some((p.parse().ok()?, f.strip_suffix(" failed")?.parse().ok()?))
    })
}

/// Sums libtest's `test result: ok. N passed; M failed; ...` lines.
pub fn libtest_counts(lines: &[String]) -> (usize, usize) {
    let mut total = (0, 0);
    for line in lines.iter().filter_map(|l| l.strip_prefix("test result: ")) {
        let number = |word: &str| -> usize {
            line.split(';')
                .find_map(|part| {
                    part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(word)
                })
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0)
        };
        total.0 += number(" passed");
        total.1 += number(" failed");
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_summaries() {
        let lines: Vec<String> =
            ["PASS x", "3 not run", "17 passed, 2 failed"].iter().map(|s| s.to_string()).collect();
        assert_eq!(summary_line(&lines), Some((17, 2)));
        assert_eq!(summary_line(&["nothing".to_string()]), None);
        let libtest: Vec<String> = [
            "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s",
            "test result: FAILED. 3 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(libtest_counts(&libtest), (15, 1));
    }
}
