//! Picking the backend a run uses: the one `--accel` names, the first available of a `:`-separated
//! list (as QEMU's `-accel kvm:tcg`), or without `--accel` the first available in the documented
//! order: kvm, hvf, then the other plugins found, by name.
//!
//! Candidates of a list are probed in child processes (see [`crate::isolate`]), so a plugin that
//! crashes on probe only drops out; the one chosen is then loaded in this process.

use std::path::{Path, PathBuf};

use crate::{isolate, loader};

/// The backends tried first, in order, when `--accel` is not given.
pub const PREFERRED: [&str; 2] = ["kvm", "hvf"];

/// The chosen plugin's file, and a one-line note saying why it was chosen when a choice was
/// made (a list, or no `--accel`).
pub struct Choice {
    /// The plugin file.
    pub path: PathBuf,
    /// What to tell the user.
    pub note: Option<String>,
}

/// The candidates for `spec` (a `--accel` value), in order.
fn candidates(spec: Option<&str>) -> Result<Vec<PathBuf>, String> {
    match spec {
        Some(spec) => spec.split(':').map(|one| loader::find(one).map_err(|e| e.to_string())).collect(),
        None => {
            let mut found = loader::discover();
            let rank = |p: &PathBuf| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                PREFERRED.iter().position(|b| *name == loader::plugin_file_name(b)).unwrap_or(PREFERRED.len())
            };
            found.sort_by_key(|p| (rank(p), p.file_name().map(|n| n.to_os_string())));
            if found.is_empty() {
                let dirs: Vec<String> =
                    loader::plugin_dirs().iter().map(|d| d.display().to_string()).collect();
                return Err(format!("no plugins found in {}; pass --accel", dirs.join(", ")));
            }
            Ok(found)
        }
    }
}

/// Probes `path` in a child process: `Ok(reason)` when available, `Err(reason)` when not.
fn probe_isolated(path: &Path) -> Result<String, String> {
    let shown = path.to_string_lossy();
    let child = isolate::run_child(&["probe", &shown, "--json"])?;
    if let Some(reason) = isolate::crash_reason(path, child.status) {
        return Err(reason);
    }
    let json: serde_json::Value = serde_json::from_str(&child.stdout).map_err(|_| {
        format!("{}: {}", path.display(), child.stderr.lines().last().unwrap_or("no probe answer"))
    })?;
    let reason = json["reason"].as_str().unwrap_or_default().to_string();
    match json["available"].as_bool() {
        Some(true) => Ok(reason),
        _ => Err(format!("{}: {reason}", json["backend"].as_str().unwrap_or("?"))),
    }
}

/// Chooses the backend for `--accel spec` (or none).
pub fn choose(spec: Option<&str>) -> Result<Choice, String> {
    let candidates = candidates(spec)?;
    if let [only] = candidates.as_slice() {
        if spec.is_some() {
            // One backend named: it is used, and its own load or open error is the answer.
            return Ok(Choice { path: only.clone(), note: None });
        }
    }
    let mut refused = Vec::new();
    for path in candidates {
        match probe_isolated(&path) {
            Ok(reason) => {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let note = format!("using {name}: {reason}");
                return Ok(Choice { path, note: Some(note) });
            }
            Err(why) => refused.push(why),
        }
    }
    Err(format!("no backend can run here: {}", refused.join("; ")))
}
