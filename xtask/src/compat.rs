//! ABI compatibility with real old builds: the plugin, host and conformance runner of the first
//! ABI 2.0 release, built from that commit's source out of git, so that `cargo xtask test` can
//! load the old plugin in today's host and today's plugin in the old host, on real KVM.

use std::{path::PathBuf, process::Command};

use crate::{
    cargo, cmd,
    report::{summary_line, Tally},
    root,
    vm::{Job, VmFile, VmRun},
    Error, Result, CROSS_TARGET, DEMO_LINE,
};

/// Today's KVM plugin in the VM.
const NEW_PLUGIN: &str = "/lib/accel/libaccel_kvm.so";

/// The oldest release a host of this ABI major version must load: the first ABI 2.0 commit.
pub const OLDEST: Release = Release { abi: "2.0.0", commit: "3da6bc67768952ee63123904fc9c8236fbfaed4e" };

/// A published ABI release, pinned by commit.
pub struct Release {
    /// Its ABI version.
    pub abi: &'static str,
    /// The commit its source is built from.
    pub commit: &'static str,
}

impl Release {
    /// Where its binaries go in the VM.
    pub fn vm_dir(&self) -> String {
        format!("/opt/accel-{}", self.abi)
    }

    fn work(&self) -> PathBuf {
        root().join("target/abi-compat").join(&self.commit[..12])
    }

    fn out(&self, name: &str) -> PathBuf {
        self.work().join("target").join(CROSS_TARGET).join("release").join(name)
    }
}

/// Builds `release`'s KVM plugin, host and conformance runner for the VM from its commit, with
/// `git archive` into `target/abi-compat`; the build is kept for later runs.
pub fn build(release: &Release) -> Result<()> {
    let work = release.work();
    let src = work.join("src");
    if !src.join("Cargo.toml").is_file() {
        let known = Command::new("git")
            .current_dir(root())
            .args(["cat-file", "-e", &format!("{}^{{commit}}", release.commit)])
            .status()
            .is_ok_and(|s| s.success());
        if !known {
            return Err(Error(format!(
                "commit {} (ABI {}) is not in this clone's history, so the old plugin cannot be built; \
                 a shallow clone needs `git fetch --unshallow`",
                release.commit, release.abi
            )));
        }
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).map_err(|e| Error(format!("creating {}: {e}", src.display())))?;
        println!("xtask: extracting ABI {} from commit {}", release.abi, &release.commit[..12]);
        cmd::run(Command::new("sh").current_dir(root()).args([
            "-c",
            &format!("git archive --format=tar {} | tar -x -C '{}'", release.commit, src.display()),
        ]))?;
    }
    println!("xtask: building the ABI {} plugin, host and conformance runner", release.abi);
    cmd::run(
        cargo()
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", work.join("target"))
            .args(["build", "--release", "--target", CROSS_TARGET])
            .args(["-p", "accel-kvm", "-p", "accel-host", "-p", "accel-conformance"]),
    )
}

/// The old release's files for the VM, under [`Release::vm_dir`].
pub fn vm_files(release: &Release) -> Result<Vec<VmFile>> {
    let dir = release.vm_dir();
    let file =
        |vm: &str, name: &str, perm| VmFile::from_host(&format!("{dir}/{vm}"), &release.out(name), perm);
    Ok(vec![
        file("bin/accel-host", "accel-host", 0o755)?,
        file("bin/accel-conformance", "accel-conformance", 0o755)?,
        file("lib/libaccel_kvm.so", "libaccel_kvm.so", 0o755)?,
    ])
}

/// The VM jobs that pair the old release with today's build.
pub fn jobs(release: &Release) -> Vec<Job> {
    let dir = release.vm_dir();
    let old_plugin = format!("{dir}/lib/libaccel_kvm.so");
    let job = Job::new;
    vec![
        job(
            "compat-new-host-old-plugin",
            &[
                "/bin/accel-conformance",
                "--plugin",
                &old_plugin,
                "--fixtures",
                "/lib/accel",
                "--allow-not-run",
            ],
        ),
        job(
            "compat-new-host-old-plugin-run",
            &["/bin/accel-host", "run", "--accel", &old_plugin, "/guests/demo.elf"],
        ),
        job(
            "compat-old-host-new-plugin",
            &[&format!("{dir}/bin/accel-conformance"), "--plugin", NEW_PLUGIN, "--fixtures", "/lib/accel"],
        ),
        job(
            "compat-old-host-new-plugin-run",
            &[&format!("{dir}/bin/accel-host"), "run", "--accel", NEW_PLUGIN, "/guests/demo.elf"],
        ),
    ]
}

/// Checks the compatibility jobs of one VM boot.
pub fn check(tally: &mut Tally, cpu: &str, run: &VmRun, release: &Release) {
    let abi = release.abi;
    for (name, what) in [
        ("compat-new-host-old-plugin", format!("today's suite against the ABI {abi} plugin: nothing fails")),
        (
            "compat-old-host-new-plugin",
            format!("the ABI {abi} suite against today's plugin: everything passes"),
        ),
    ] {
        let job = run.job(name);
        let summary = job.and_then(|j| summary_line(&j.output));
        for line in
            job.iter().flat_map(|j| &j.output).filter(|l| l.starts_with("NOT RUN") || l.starts_with("FAIL"))
        {
            println!("xtask: [{cpu}] {name}: {line}");
        }
        tally.check(
            &format!("[{cpu}] {what}"),
            job.is_some_and(|j| j.status == Some(0))
                && summary.is_some_and(|(passed, failed)| passed > 0 && failed == 0),
            || format!("status {:?}, summary {summary:?}", job.map(|j| j.status)),
        );
        if let Some((passed, _)) = summary {
            println!("xtask: [{cpu}] {name}: {passed} passed");
        }
    }
    for (name, what) in [
        (
            "compat-new-host-old-plugin-run",
            format!("today's accel-host runs a guest on the ABI {abi} plugin"),
        ),
        (
            "compat-old-host-new-plugin-run",
            format!("the ABI {abi} accel-host runs a guest on today's plugin"),
        ),
    ] {
        let job = run.job(name);
        tally.check(
            &format!("[{cpu}] {what}"),
            job.is_some_and(|j| j.status == Some(0) && j.output.iter().any(|l| l.contains(DEMO_LINE))),
            || format!("{:?}", job.map(|j| (&j.status, &j.output))),
        );
    }
}
