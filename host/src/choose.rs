//! Picking the backend a run uses: the one `--accel` names, the first available of a `:`-separated
//! list (as QEMU's `-accel kvm:tcg`), or without `--accel` the first available in the documented
//! order: kvm, hvf, then the other plugins found, by name.
//!
//! Every candidate, a single named one too, is loaded and probed in a child process first (see
//! [`crate::isolate`]), so a plugin that crashes or hangs on probe only drops out, and one that is
//! refused is refused in one line; the one chosen is then loaded in this process.

use std::{
    ffi::OsStr,
    path::{Path, PathBuf},
};

use crate::{isolate, loader, trust};

/// The backends tried first, in order, when `--accel` is not given.
pub const PREFERRED: [&str; 2] = ["kvm", "hvf"];

/// The chosen plugin's file, and a one-line note saying why it was chosen when a choice was
/// made (a list, or no `--accel`).
pub struct Choice {
    /// The plugin file.
    pub path: PathBuf,
    /// The backend name it was asked for by, which the plugin must call itself.
    pub name: Option<String>,
    /// What to tell the user.
    pub note: Option<String>,
}

/// A candidate: its file, and the name it was asked for by (none for a path or a plugin found
/// without `--accel`).
type Candidate = (PathBuf, Option<String>);

/// The candidates for `spec` (a `--accel` value), in order.
fn candidates(spec: Option<&str>) -> Result<Vec<Candidate>, String> {
    match spec {
        Some(spec) => spec
            .split(':')
            .map(|one| {
                let name = (!loader::is_path(one)).then(|| one.to_string());
                loader::find(one).map(|path| (path, name)).map_err(|e| e.to_string())
            })
            .collect(),
        None => {
            let mut found = loader::discover().map_err(|e| e.to_string())?;
            let rank = |p: &PathBuf| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                PREFERRED.iter().position(|b| *name == loader::plugin_file_name(b)).unwrap_or(PREFERRED.len())
            };
            found.sort_by_key(|p| (rank(p), p.file_name().map(|n| n.to_os_string())));
            if found.is_empty() {
                let dirs: Vec<String> = loader::plugin_dirs()
                    .map_err(|e| e.to_string())?
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect();
                return Err(format!("no plugins found in {}; pass --accel", dirs.join(", ")));
            }
            Ok(found.into_iter().map(|p| (p, None)).collect())
        }
    }
}

/// The one-line error a child printed, without its `accel-host: error:` prefix, naming `path`.
fn child_error(path: &Path, stderr: &str) -> String {
    let line = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no probe answer");
    let line = line.trim_start_matches("accel-host: error: ");
    if line.starts_with(&*path.display().to_string()) {
        line.to_string()
    } else {
        format!("{}: {line}", path.display())
    }
}

/// Loads and probes `path` in a child process, checking it calls itself `name` when given:
/// `Ok(reason)` when available, `Err(reason)` when not.
fn probe_isolated(path: &Path, name: Option<&str>, policy: trust::Policy) -> Result<String, String> {
    let mut args: Vec<&OsStr> = vec![OsStr::new("probe"), path.as_os_str(), OsStr::new("--json")];
    if let Some(name) = name {
        args.extend([OsStr::new("--name"), OsStr::new(name)]);
    }
    let child = isolate::run_child(path, policy, &args)?;
    if let Some(reason) = isolate::crash_reason(path, child.status) {
        return Err(reason);
    }
    let json: serde_json::Value =
        serde_json::from_str(&child.stdout).map_err(|_| child_error(path, &child.stderr))?;
    let reason = json["reason"].as_str().unwrap_or_default().to_string();
    match json["available"].as_bool() {
        Some(true) => Ok(reason),
        _ => Err(format!("{}: {reason}", json["backend"].as_str().unwrap_or("?"))),
    }
}

/// Chooses the backend for `--accel spec` (or none), under the trust `policy`.
pub fn choose(spec: Option<&str>, policy: trust::Policy) -> Result<Choice, String> {
    let candidates = candidates(spec)?;
    let single = spec.is_some() && candidates.len() == 1;
    let mut refused = Vec::new();
    for (path, name) in candidates {
        match probe_isolated(&path, name.as_deref(), policy) {
            Ok(reason) if single => {
                log::debug!("{}: {reason}", path.display());
                return Ok(Choice { path, name, note: None });
            }
            Ok(reason) => {
                let file = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let note = format!("using {file}: {reason}");
                return Ok(Choice { path, name, note: Some(note) });
            }
            // One backend named: its own load or probe error is the answer.
            Err(why) if single => return Err(why),
            Err(why) => refused.push(why),
        }
    }
    Err(format!("no backend can run here: {}", refused.join("; ")))
}
