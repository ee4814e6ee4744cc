//! Whom a plugin file is trusted from. A plugin runs with all of accel-host's rights, often
//! root's, so it and the directories it is found through must be writable by no one but root and
//! the current user: a plugin file, or a directory up to the search root (a plugin directory for a
//! plugin found by name, `/` for a path), that is group- or world-writable or owned by another
//! user is refused, as is a plugin that is a symbolic link. A root-owned sticky directory such as
//! `/tmp` counts as safe, as sshd and sudo treat it. `--allow-untrusted-plugins` lifts all of it.

use std::{
    fs::Metadata,
    os::unix::fs::{MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// The command-line option that lifts the checks.
pub const ALLOW_OPTION: &str = "--allow-untrusted-plugins";

/// How strictly plugin files are checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Load plugins that fail the ownership, mode and symbolic-link checks.
    pub allow_untrusted: bool,
}

/// How far up the directories above a plugin are checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// A plugin found in this plugin directory: that directory is checked.
    PluginDir(PathBuf),
    /// A plugin given by path: every directory from `/` down to it is checked.
    WholePath,
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Why `meta` (of a plugin file, or of a directory when `dir`) is untrusted, if it is.
fn untrusted(meta: &Metadata, dir: bool) -> Option<&'static str> {
    let (uid, mode) = (meta.uid(), meta.permissions().mode());
    if uid != 0 && uid != euid() {
        return Some("owned by another user");
    }
    if dir && uid == 0 && mode & 0o1000 != 0 {
        // Root's sticky directory: no one else can replace what is ours in it.
        return None;
    }
    if mode & 0o002 != 0 {
        return Some("world-writable");
    }
    if mode & 0o020 != 0 {
        return Some("group-writable");
    }
    None
}

/// The one-line refusal of `path`.
fn refusal(path: &Path, what: &str, why: &str, meta: &Metadata) -> String {
    format!(
        "{}: refusing to load a plugin: the {what} is {why} (owner uid {}, mode {:04o}); pass {ALLOW_OPTION} to load it anyway",
        path.display(),
        meta.uid(),
        meta.permissions().mode() & 0o7777
    )
}

/// The one-line refusal of a plugin that is a symbolic link.
pub fn symlink_refusal(path: &Path) -> String {
    format!(
        "{}: refusing to load a plugin: the file is a symbolic link; give the file it points to, or pass \
         {ALLOW_OPTION} to follow it",
        path.display()
    )
}

/// Checks the plugin file `path` (whose open descriptor's metadata is `meta`) and the directories
/// above it within `scope`.
pub fn check(path: &Path, meta: &Metadata, scope: &Scope, policy: Policy) -> Result<(), String> {
    let mut problems = Vec::new();
    if let Some(why) = untrusted(meta, false) {
        problems.push(refusal(path, "file", why, meta));
    }
    let dirs: Vec<PathBuf> = match scope {
        Scope::PluginDir(dir) => vec![dir.clone()],
        Scope::WholePath => {
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let real = std::fs::canonicalize(parent)
                .map_err(|e| format!("{}: cannot resolve its directory: {e}", path.display()))?;
            real.ancestors().map(Path::to_path_buf).collect()
        }
    };
    for dir in &dirs {
        let meta = dir.metadata().map_err(|e| format!("{}: {e}", dir.display()))?;
        if let Some(why) = untrusted(&meta, true) {
            problems.push(refusal(dir, "directory", why, &meta));
        }
    }
    match problems.into_iter().next() {
        None => Ok(()),
        Some(problem) if policy.allow_untrusted => {
            log::info!("{problem} (allowed by {ALLOW_OPTION})");
            Ok(())
        }
        Some(problem) => Err(problem),
    }
}

/// Whether this process runs setuid or setgid (the kernel's `AT_SECURE`): then the environment
/// is the caller's, not the owner's, and names no plugin directory.
pub fn secure_execution() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getauxval reads the auxiliary vector the kernel gave this process; no memory of
        // ours is touched, and an absent entry reads as 0.
        unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        // SAFETY: issetugid has no preconditions.
        unsafe { libc::issetugid() != 0 }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::{check, Policy, Scope};

    #[test]
    fn writable_directories_and_files_are_refused_unless_allowed() {
        let base = std::env::temp_dir().join(format!("accel-trust-{}", std::process::id()));
        let dir = base.join("plugins");
        std::fs::create_dir_all(&dir).expect("creating the test directory");
        let file = dir.join("libaccel_test.so");
        std::fs::write(&file, b"x").expect("writing the test file");
        let set = |p: &std::path::Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod")
        };
        set(&dir, 0o755);
        set(&file, 0o644);
        let meta = || file.metadata().expect("stat");
        let strict = Policy::default();
        let scope = Scope::PluginDir(dir.clone());
        assert_eq!(check(&file, &meta(), &scope, strict), Ok(()));
        assert_eq!(
            check(&file, &meta(), &Scope::WholePath, strict),
            Ok(()),
            "/tmp is root's sticky directory"
        );

        set(&dir, 0o777);
        let err = check(&file, &meta(), &scope, strict).expect_err("a world-writable directory");
        assert!(
            err.contains("world-writable") && err.contains("0777") && err.contains("--allow-untrusted"),
            "{err}"
        );
        assert!(err.starts_with(&*dir.to_string_lossy()), "{err}");
        assert_eq!(check(&file, &meta(), &scope, Policy { allow_untrusted: true }), Ok(()));

        set(&dir, 0o755);
        set(&file, 0o664);
        let err = check(&file, &meta(), &scope, strict).expect_err("a group-writable file");
        assert!(err.contains("group-writable") && err.contains("the file"), "{err}");
        let _ = std::fs::remove_dir_all(&base);
    }
}
