//! Debian arm64 packages, fetched through a private apt root built from this host's own Debian
//! sources (the system's apt setup is not touched) and unpacked into the cache, one directory per
//! exact package name, version and architecture. Later runs find them there without apt.
//!
//! Cache layout, under [`cache_dir`]:
//! - `apt/`: the private apt root (`etc/apt.conf`, `etc/sources.list`, `state/lists/`);
//! - `debian/<name>_<version>_<arch>/`: one package, named as its `.deb` file is (`:` in the
//!   version written `%3a`), holding `control` (the package's control fields) and `root/` (its
//!   files: all of them, or only the members asked for);
//! - `debian/by-name/<name>`: the directory a requested name resolved to last time.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
};

use crate::{
    cmd,
    error::{Error, Result},
    layout::cache_dir,
    provision::apt_sources::system_debian_sources,
};

/// Set once the private apt lists were refreshed by this process, so that it happens at most once.
static LISTS_UPDATED: AtomicBool = AtomicBool::new(false);

/// What to unpack from a package.
#[derive(Clone, Copy)]
pub enum Extract {
    /// Every file (`dpkg-deb -x`).
    All,
    /// Only the first member matching each of these `tar` wildcards (such as `./boot/vmlinuz-*`);
    /// reading stops once all are found, which spares decompressing the rest of a large package.
    /// A package is always unpacked the same way by xtask, so the cache does not record which.
    Members(&'static [&'static str]),
}

/// One package's fields, from `apt-cache show` or from a `.deb`'s control file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Control {
    /// The package name.
    pub package: String,
    /// Its exact version.
    pub version: String,
    /// `arm64` or `all`.
    pub architecture: String,
    /// The size of the `.deb` in bytes, when the record comes from the archive's index.
    pub size: u64,
    /// The packages named by `Pre-Depends` and `Depends`: the first alternative of each, without
    /// version or architecture qualifiers.
    pub depends: Vec<String>,
}

impl Control {
    /// The cache directory name, which is also the stem of the `.deb` file `apt-get download`
    /// writes.
    fn key(&self) -> String {
        format!("{}_{}_{}", self.package, self.version.replace(':', "%3a"), self.architecture)
    }
}

/// Parses control stanzas (separated by blank lines); continuation lines belong to the field above.
pub fn parse_control(text: &str) -> Vec<Control> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n").filter(|s| !s.trim().is_empty()) {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = fields.last_mut() {
                    value.push('\n');
                    value.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let field = |k: &str| fields.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        let Some(package) = field("package") else { continue };
        out.push(Control {
            package: package.to_string(),
            version: field("version").unwrap_or_default().to_string(),
            architecture: field("architecture").unwrap_or_default().to_string(),
            size: field("size").and_then(|s| s.parse().ok()).unwrap_or(0),
            depends: ["pre-depends", "depends"]
                .iter()
                .filter_map(|k| field(k))
                .flat_map(relation_names)
                .collect(),
        });
    }
    out
}

/// The first alternative of each relation in a `Depends`-style field, as a bare package name.
fn relation_names(field: &str) -> Vec<String> {
    field
        .split(',')
        .filter_map(|relation| {
            let first = relation.split('|').next()?.trim();
            let name = first.split([' ', '(', '[']).next()?.split(':').next()?.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

/// A package unpacked in the cache.
#[derive(Debug, Clone)]
pub struct Package {
    /// Its control fields.
    pub control: Control,
    /// The unpacked files: the package's `/` lies here.
    pub root: PathBuf,
}

impl Package {
    fn load(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join("control")).ok()?;
        let control = parse_control(&text).into_iter().next()?;
        Some(Self { control, root: dir.join("root") })
    }
}

/// A size in bytes for people: `823 KiB`, `7.8 MiB`, `1.0 GiB`.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    match bytes {
        0..=1023 => format!("{bytes} B"),
        1024..=1_048_575 => format!("{:.0} KiB", b / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", b / 1_048_576.0),
        _ => format!("{:.2} GiB", b / 1_073_741_824.0),
    }
}

fn packages_dir() -> PathBuf {
    cache_dir().join("debian")
}

fn io_error<'a>(what: &'a str, path: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |e| Error(format!("{what} {}: {e}", path.display()))
}

/// The package a name resolved to before, if it is still in the cache.
fn cached_by_name(name: &str) -> Option<Package> {
    let key = std::fs::read_to_string(packages_dir().join("by-name").join(name)).ok()?;
    Package::load(&packages_dir().join(key.trim()))
}

fn remember(name: &str, package: &Package) -> Result<()> {
    let dir = packages_dir().join("by-name");
    std::fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
    let path = dir.join(name);
    std::fs::write(&path, package.control.key()).map_err(io_error("writing", &path))
}

/// The private apt root: the host's Debian sources for arm64, its own lists and state.
struct AptRoot {
    dir: PathBuf,
    conf: PathBuf,
}

impl AptRoot {
    fn open() -> Result<Self> {
        let sources = system_debian_sources();
        if sources.is_empty() {
            return Err(Error(
                "no Debian apt source is configured on this host, so Debian arm64 packages cannot be fetched"
                    .into(),
            ));
        }
        let dir = cache_dir().join("apt");
        for sub in
            ["state/lists/partial", "cache/archives/partial", "etc/sources.list.d", "etc/preferences.d"]
        {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(io_error("creating", &path))?;
        }
        let list: String = sources
            .iter()
            .flat_map(|s| {
                let key = s.signed_by.as_ref().map(|k| format!(" signed-by={k}")).unwrap_or_default();
                let components = s.components.join(" ");
                s.suites
                    .iter()
                    .map(move |suite| format!("deb [arch=arm64{key}] {} {suite} {components}\n", s.uri))
            })
            .collect();
        write(&dir.join("etc/sources.list"), list.as_bytes())?;
        let status = dir.join("state/status");
        if !status.exists() {
            write(&status, b"")?;
        }
        let conf = format!(
            "Dir::State \"{0}/state\";\nDir::State::status \"{0}/state/status\";\nDir::Cache \"{0}/cache\";\n\
             Dir::Etc::sourcelist \"{0}/etc/sources.list\";\nDir::Etc::sourceparts \"{0}/etc/sources.list.d\";\n\
             Dir::Etc::preferencesparts \"{0}/etc/preferences.d\";\nAPT::Architecture \"arm64\";\n\
             APT::Architectures {{ \"arm64\"; }};\nAPT::Sandbox::User \"root\";\n",
            dir.display()
        );
        let conf_path = dir.join("etc/apt.conf");
        write(&conf_path, conf.as_bytes())?;
        let root = Self { dir, conf: conf_path };
        if !root.has_lists() {
            root.update()?;
        }
        Ok(root)
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("APT_CONFIG", &self.conf);
        c
    }

    fn has_lists(&self) -> bool {
        std::fs::read_dir(self.dir.join("state/lists")).is_ok_and(|d| {
            d.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().contains("_Packages"))
        })
    }

    /// Refreshes the package lists, once per process; false if that was done already.
    fn update(&self) -> Result<bool> {
        if LISTS_UPDATED.swap(true, Ordering::SeqCst) {
            return Ok(false);
        }
        cmd::run(self.command("apt-get").args(["update", "-qq"]))?;
        Ok(true)
    }

    /// The candidate records for `specs` (`name` or `name=version`); names apt does not know,
    /// and virtual packages, are left out.
    fn show(&self, specs: &[String]) -> Result<Vec<Control>> {
        let out = self
            .command("apt-cache")
            .args(["show", "--no-all-versions"])
            .args(specs)
            .stderr(Stdio::null())
            .output()
            .map_err(|e| Error(format!("cannot run apt-cache: {e}")))?;
        // apt-cache exits 100 when it finds none of them: that is an empty answer here.
        Ok(parse_control(&String::from_utf8_lossy(&out.stdout)))
    }

    /// Records for those of `wanted` (name, exact version if any) that apt knows, refreshing the
    /// lists once if some are unknown.
    fn resolve_known(&self, wanted: &[(String, Option<String>)]) -> Result<Vec<Control>> {
        let specs: Vec<String> = wanted
            .iter()
            .map(|(name, version)| version.as_ref().map_or_else(|| name.clone(), |v| format!("{name}={v}")))
            .collect();
        let found = self.show(&specs)?;
        if wanted.iter().all(|(name, _)| found.iter().any(|c| &c.package == name)) || !self.update()? {
            return Ok(found);
        }
        self.show(&specs)
    }

    /// Records for all of `wanted`.
    fn resolve(&self, wanted: &[(String, Option<String>)]) -> Result<Vec<Control>> {
        let found = self.resolve_known(wanted)?;
        let missing: Vec<String> = wanted
            .iter()
            .filter(|(name, _)| !found.iter().any(|c| &c.package == name))
            .map(|(name, version)| version.as_ref().map_or_else(|| name.clone(), |v| format!("{name} {v}")))
            .collect();
        if !missing.is_empty() {
            return Err(Error(format!(
                "the Debian arm64 archive named by this host's apt sources has no {}",
                missing.join(", ")
            )));
        }
        Ok(found)
    }

    /// Downloads the exact versions of `controls` into `dir`, refreshing the lists and retrying
    /// once if the mirror no longer has them.
    fn download(&self, dir: &Path, controls: &[&Control]) -> Result<()> {
        let specs: Vec<String> = controls.iter().map(|c| format!("{}={}", c.package, c.version)).collect();
        let run =
            || cmd::run(self.command("apt-get").current_dir(dir).args(["download", "-qq"]).args(&specs));
        match run() {
            Err(_) if self.update()? => run(),
            result => result,
        }
    }
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    std::fs::write(path, data).map_err(io_error("writing", path))
}

/// Unpacks `deb` into `dest` as `extract` says.
fn unpack(deb: &Path, dest: &Path, extract: Extract) -> Result<()> {
    match extract {
        Extract::All => cmd::run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dest)),
        Extract::Members(patterns) => {
            let mut dpkg = Command::new("dpkg-deb")
                .arg("--fsys-tarfile")
                .arg(deb)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .map_err(|e| Error(format!("cannot run dpkg-deb: {e}")))?;
            let tarball = dpkg.stdout.take().ok_or_else(|| Error("dpkg-deb has no stdout".into()))?;
            let status = Command::new("tar")
                .arg("-x")
                .arg("-C")
                .arg(dest)
                .args(["--wildcards", "--occurrence=1"])
                .args(patterns)
                .stdin(tarball)
                .status()
                .map_err(|e| Error(format!("cannot run tar: {e}")))?;
            // tar stops reading once it has every member, so dpkg-deb may die of a broken pipe:
            // tar's status says whether the members were there, and dpkg-deb's complaint matters
            // only when they were not.
            let dpkg = dpkg.wait_with_output().map_err(|e| Error(format!("waiting for dpkg-deb: {e}")))?;
            if status.success() {
                Ok(())
            } else {
                Err(Error(format!(
                    "{} lacks one of {} (tar: {status}; dpkg-deb: {})",
                    deb.display(),
                    patterns.join(" "),
                    String::from_utf8_lossy(&dpkg.stderr).trim()
                )))
            }
        }
    }
}

/// Fetches and unpacks `wanted` (name, exact version or the candidate) unless the cache has
/// them, and returns them in the same order.
fn fetch_wanted(wanted: &[(String, Option<String>)], extract: Extract) -> Result<Vec<Package>> {
    let cached = |name: &str, version: &Option<String>| match version {
        None => cached_by_name(name),
        Some(v) => cached_by_name(name).filter(|p| &p.control.version == v),
    };
    let absent: Vec<(String, Option<String>)> =
        wanted.iter().filter(|(n, v)| cached(n, v).is_none()).cloned().collect();
    if !absent.is_empty() {
        let apt = AptRoot::open()?;
        let controls = apt.resolve(&absent)?;
        let base = packages_dir();
        let to_get: Vec<&Control> =
            controls.iter().filter(|c| Package::load(&base.join(c.key())).is_none()).collect();
        if !to_get.is_empty() {
            let names: Vec<String> = to_get.iter().map(|c| format!("{} {}", c.package, c.version)).collect();
            let bytes: u64 = to_get.iter().map(|c| c.size).sum();
            eprintln!("xtask: downloading {} ({}) into {}", names.join(", "), human(bytes), base.display());
            let download = base.join(format!(".download-{}", std::process::id()));
            std::fs::create_dir_all(&download).map_err(io_error("creating", &download))?;
            let result = apt.download(&download, &to_get).and_then(|()| {
                to_get.iter().try_for_each(|c| {
                    let deb = download.join(format!("{}.deb", c.key()));
                    let result = install(&deb, c, &base, extract);
                    let _ = std::fs::remove_file(&deb);
                    result
                })
            });
            let _ = std::fs::remove_dir_all(&download);
            result?;
        }
        for c in &controls {
            let package = Package::load(&base.join(c.key()))
                .ok_or_else(|| Error(format!("{} is missing from the cache after unpacking", c.key())))?;
            remember(&c.package, &package)?;
        }
    }
    wanted
        .iter()
        .map(|(n, v)| cached(n, v).ok_or_else(|| Error(format!("{n} is not in the package cache"))))
        .collect()
}

/// Unpacks one downloaded `.deb` into `base/<key>`, through a temporary directory so that a
/// package directory is either complete or absent.
fn install(deb: &Path, control: &Control, base: &Path, extract: Extract) -> Result<()> {
    let key = control.key();
    let tmp = base.join(format!(".unpack-{key}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let root = tmp.join("root");
    std::fs::create_dir_all(&root).map_err(io_error("creating", &root))?;
    let fields = cmd::output(Command::new("dpkg-deb").arg("-f").arg(deb))?;
    let result = unpack(deb, &root, extract)
        .and_then(|()| write(&tmp.join("control"), fields.as_bytes()))
        .and_then(|()| {
            let dest = base.join(&key);
            match std::fs::rename(&tmp, &dest) {
                // Another xtask unpacked the same package meanwhile.
                Err(_) if Package::load(&dest).is_some() => Ok(()),
                other => other.map_err(io_error("moving a package into", &dest)),
            }
        });
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// The candidates of these packages, all files unpacked, in the same order.
pub fn fetch(names: &[&str]) -> Result<Vec<Package>> {
    let wanted: Vec<(String, Option<String>)> = names.iter().map(|n| (n.to_string(), None)).collect();
    fetch_wanted(&wanted, Extract::All)
}

/// The package that metapackage `meta` depends on whose name starts with `prefix` (how Debian
/// names its current kernel), unpacked as `extract` says; None if `meta` has no such dependency.
pub fn fetch_via_metapackage(meta: &str, prefix: &str, extract: Extract) -> Result<Option<Package>> {
    if let Some(package) = cached_via_metapackage(meta, prefix) {
        return Ok(Some(package));
    }
    let records = AptRoot::open()?.resolve_known(&[(meta.to_string(), None)])?;
    let Some(target) = records.iter().flat_map(|c| &c.depends).find(|d| d.starts_with(prefix)) else {
        return Ok(None);
    };
    let mut got = fetch_wanted(&[(target.clone(), None)], extract)?;
    let package = got.pop().ok_or_else(|| Error(format!("{target} was not fetched")))?;
    remember(meta, &package)?;
    Ok(Some(package))
}

/// What `meta` resolved to last time, if that package is still cached and its name starts with
/// `prefix`.
pub fn cached_via_metapackage(meta: &str, prefix: &str) -> Option<Package> {
    cached_by_name(meta).filter(|p| p.control.package.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apt_cache_records_parse() {
        let text = "Package: linux-image-arm64\nSource: linux-signed-arm64 (6.1.192+2)\nVersion: 6.1.192-2\n\
                    Architecture: arm64\nDepends: linux-image-6.1.0-56-arm64 (= 6.1.192-2)\n\
                    Description: Linux for 64-bit ARMv8 machines (meta-package)\n This package depends on\n\
                    \x20the latest kernel.\n\n\
                    Package: busybox-static\nVersion: 1:1.35.0-4+deb12u1+b1\nArchitecture: arm64\nSize: 822236\n\n";
        let records = parse_control(text);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].depends, ["linux-image-6.1.0-56-arm64"]);
        assert_eq!(records[1].key(), "busybox-static_1%3a1.35.0-4+deb12u1+b1_arm64");
        assert_eq!(records[1].size, 822236);
        assert!(records[1].depends.is_empty());
    }

    #[test]
    fn sizes_for_people() {
        assert_eq!(human(822_236), "803 KiB");
        assert_eq!(human(44_218_304), "42.2 MiB");
        assert_eq!(human(1_029_086_260), "981.4 MiB");
        assert_eq!(human(2_000_000_000), "1.86 GiB");
        assert_eq!(human(12), "12 B");
    }

    #[test]
    fn relations_keep_the_first_alternative_without_qualifiers() {
        let control = parse_control(
            "Package: qemu-system-arm\nVersion: 1:7.2+dfsg-7+deb12u18+b3\nArchitecture: arm64\n\
             Pre-Depends: libc6 (>= 2.34)\n\
             Depends: libaio1 (>= 0.3.93), libglib2.0-0 (>= 2.67.3) | libglib2.0-0t64, zlib1g:any,\n \
             qemu-system-data (>> 1:7.2+dfsg~), libfoo [arm64]\n",
        );
        assert_eq!(
            control[0].depends,
            ["libc6", "libaio1", "libglib2.0-0", "zlib1g", "qemu-system-data", "libfoo"]
        );
    }
}
