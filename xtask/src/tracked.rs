//! No tracked file over 1 MiB unless it is on the allow-list: a core dump, a build output or a
//! cache committed by mistake makes every clone carry it.

use std::process::Command;

use crate::{layout::root, report::Tally};

/// The largest size a tracked file may have without being allowed by name.
const LIMIT: u64 = 1 << 20;

/// Tracked files allowed to exceed [`LIMIT`], by path from the repository's root.
const ALLOWED: &[&str] = &[];

/// Tracked paths over [`LIMIT`] that [`ALLOWED`] does not name, with their sizes, from the
/// NUL-separated output of `git ls-files -z` and a size lookup.
fn oversized(listing: &[u8], size: impl Fn(&str) -> Option<u64>) -> Vec<(String, u64)> {
    listing
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .filter(|p| !ALLOWED.contains(&p.as_str()))
        .filter_map(|p| size(&p).filter(|&s| s > LIMIT).map(|s| (p, s)))
        .collect()
}

/// Checks the work tree's tracked files against [`LIMIT`].
pub fn check(tally: &mut Tally) {
    let top = root();
    let listing = Command::new("git").arg("-C").arg(&top).args(["ls-files", "-z"]).output();
    let result = match listing {
        Ok(out) if out.status.success() => {
            Ok(oversized(&out.stdout, |p| std::fs::symlink_metadata(top.join(p)).ok().map(|m| m.len())))
        }
        Ok(out) => Err(format!("git ls-files failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
        Err(e) => Err(format!("running git ls-files: {e}")),
    };
    tally.check(
        "no tracked file over 1 MiB outside the allow-list",
        matches!(result, Ok(ref v) if v.is_empty()),
        || match result {
            Ok(files) => files
                .iter()
                .map(|(p, s)| format!("{p} ({:.1} MiB)", *s as f64 / f64::from(1 << 20)))
                .collect::<Vec<_>>()
                .join(", "),
            Err(e) => e,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_only_files_over_the_limit() {
        let listing = b"small.rs\0core\0exact\0";
        let sizes = |p: &str| match p {
            "small.rs" => Some(10),
            "core" => Some(55 << 20),
            "exact" => Some(LIMIT),
            _ => None,
        };
        assert_eq!(oversized(listing, sizes), vec![("core".to_string(), 55 << 20)]);
    }

    #[test]
    fn a_missing_file_is_not_oversized() {
        assert!(oversized(b"gone\0", |_| None).is_empty());
    }
}
