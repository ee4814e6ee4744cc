//! ABI compatibility with real old builds: the plugin, host and conformance runner of each pinned
//! ABI release (the first 2.0 commit, and 2.1), built from that commit's source out of git, so
//! that `cargo xtask test` can load the old plugin in today's host and today's plugin in the old
//! host, on real KVM. It also runs the old release's own exit decoding on an exit kind it does
//! not know.

use std::{path::PathBuf, process::Command};

use accel_api::{abi::ExitRecord, VcpuExit};

use crate::{
    cmd::{self, cargo},
    error::{Error, Result},
    guests::DEMO_LINE,
    layout::{root, CROSS_TARGET},
    provision::initramfs::VmFile,
    report::{summary_line, Tally},
    vm::{Job, VmRun},
};

/// Today's KVM plugin in the VM.
const NEW_PLUGIN: &str = "/lib/accel/libaccel_kvm.so";

/// The oldest release a host of this ABI major version must load: the first ABI 2.0 commit.
pub const OLDEST: Release = Release {
    abi: "2.0.0",
    commit: "3da6bc67768952ee63123904fc9c8236fbfaed4e",
    fixed_since: FIXED_AFTER_2_1,
};

/// The last ABI 2.1 commit (the GIC's ITS), before 2.2 added `DebugOps::program`.
pub const ABI_2_1: Release = Release {
    abi: "2.1.0",
    commit: "8bcd29d036753a9188437aa720613045ce3c1f4d",
    fixed_since: FIXED_AFTER_2_1,
};

/// Cases of today's suite that fail on plugins built before these accel-kvm fixes, which came
/// after ABI 2.1, and the defect each meets in that old code.
const FIXED_AFTER_2_1: &[(&str, &str)] = &[
    ("vm::irqfd_before_the_first_run", "KVM_IRQFD before any vCPU ran failed with EAGAIN"),
    (
        "stress::eight_vcpus_exits_kicks_debug_irqfd",
        "the same EAGAIN; past it, one kick could make two interrupted runs",
    ),
    ("stress::create_destroy_loop", "the same EAGAIN"),
    (
        "races::breakpoints_race_with_memory_removal",
        "a software breakpoint wrote through its host pointer after letting go of the memory map's lock",
    ),
];

/// Every pinned release, oldest first.
pub const RELEASES: [&Release; 2] = [&OLDEST, &ABI_2_1];

/// A published ABI release, pinned by commit.
pub struct Release {
    /// Its ABI version.
    pub abi: &'static str,
    /// The commit its source is built from.
    pub commit: &'static str,
    /// Cases of today's suite its plugin may fail, each for a defect in that plugin's own code
    /// that was fixed after it (not for anything the ABI decides), and the defect.
    pub fixed_since: &'static [(&'static str, &'static str)],
}

impl Release {
    /// Where its binaries go in the VM.
    pub fn vm_dir(&self) -> String {
        format!("/opt/accel-{}", self.abi)
    }

    /// Where its source is extracted and built: in the cache, since a pinned commit's build never
    /// changes (cargo rebuilds it when the toolchain does), so a later run skips it.
    fn work(&self) -> PathBuf {
        crate::layout::cache_dir().join("abi-compat").join(&self.commit[..12])
    }

    fn out(&self, name: &str) -> PathBuf {
        self.work().join("target").join(CROSS_TARGET).join("release").join(name)
    }

    /// A VM job's name for this release.
    fn job(&self, what: &str) -> String {
        format!("compat-{}-{what}", self.abi)
    }
}

/// Builds `release`'s KVM plugin, host and conformance runner for the VM from its commit, with
/// `git archive` into the cache (`~/.cache/accel/abi-compat`); the build is kept for later runs.
pub fn build(release: &Release) -> Result<()> {
    extract(release)?;
    let work = release.work();
    let src = work.join("src");
    println!("xtask: building the ABI {} plugin, host and conformance runner", release.abi);
    cmd::run(
        cargo()
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", work.join("target"))
            .args(["build", "--release", "--target", CROSS_TARGET])
            .args(["-p", "accel-kvm", "-p", "accel-host", "-p", "accel-conformance"]),
    )
}

/// Extracts `release`'s source into its cache directory with `git archive`, once.
fn extract(release: &Release) -> Result<()> {
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
    Ok(())
}

/// An exit kind that no pinned release defines, as a later plugin would send it.
fn new_exit() -> ExitRecord {
    ExitRecord { kind: 0x7f, args: [0xc300_0001, 1, 2, 3, 4, 5], data: Default::default() }
}

/// Builds a small program against `release`'s own accel-api (its source at the pinned commit,
/// with its lock file) that decodes an exit record with that release's `From<ExitRecord> for
/// VcpuExit`, feeds it the record of an exit kind it does not know, and checks that the old host
/// reads it as `Unknown { kind, .. }` with the arguments intact.
pub fn check_old_decoding(tally: &mut Tally, release: &Release) -> Result<()> {
    extract(release)?;
    let dir = release.work().join("exit-decode");
    let write = |path: PathBuf, text: &str| {
        std::fs::create_dir_all(path.parent().unwrap_or(&dir))
            .and_then(|()| std::fs::write(&path, text))
            .map_err(|e| Error(format!("writing {}: {e}", path.display())))
    };
    write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"exit-decode\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\naccel-api = { path = \"../src/accel-api\" }\n\n[workspace]\n",
    )?;
    write(
        dir.join("src/main.rs"),
        "use accel_api::{abi::ExitRecord, VcpuExit};\n\n\
         fn main() {\n    \
         let n: Vec<u64> = std::env::args().skip(1).map(|a| a.parse().expect(\"a number\")).collect();\n    \
         let mut args = [0u64; 6];\n    \
         args.copy_from_slice(&n[1..7]);\n    \
         let record = ExitRecord { kind: n[0] as u32, args, data: Default::default() };\n    \
         println!(\"{:?}\", VcpuExit::from(record));\n\
         }\n",
    )?;
    std::fs::copy(release.work().join("src/Cargo.lock"), dir.join("Cargo.lock"))
        .map_err(|e| Error(format!("copying ABI {}'s Cargo.lock: {e}", release.abi)))?;
    let record = new_exit();
    let mut run = cargo();
    run.current_dir(&dir)
        .env("CARGO_TARGET_DIR", release.work().join("host-target"))
        .args(["run", "--quiet", "--offline", "--"])
        .arg(record.kind.to_string())
        .args(record.args.iter().map(u64::to_string));
    let out =
        run.output().map_err(|e| Error(format!("running the ABI {} exit decoder: {e}", release.abi)))?;
    let seen = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let expected = format!("{:?}", VcpuExit::Unknown { kind: record.kind, args: record.args });
    println!("xtask: ABI {} reads exit kind {:#x} as: {seen}", release.abi, record.kind);
    tally.check(
        &format!(
            "a host of ABI {} reads an exit kind it does not know as unknown, arguments intact",
            release.abi
        ),
        out.status.success() && seen == expected,
        || format!("expected {expected}, got {seen:?}; stderr: {}", String::from_utf8_lossy(&out.stderr)),
    );
    Ok(())
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
    let job = |what: &str, argv: &[&str]| Job::new(&release.job(what), argv);
    vec![
        job(
            "new-host-old-plugin",
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
            "new-host-old-plugin-run",
            &["/bin/accel-host", "run", "--accel", &old_plugin, "/guests/demo.elf"],
        ),
        job(
            "old-host-new-plugin",
            &[&format!("{dir}/bin/accel-conformance"), "--plugin", NEW_PLUGIN, "--fixtures", "/lib/accel"],
        ),
        job(
            "old-host-new-plugin-run",
            &[&format!("{dir}/bin/accel-host"), "run", "--accel", NEW_PLUGIN, "/guests/demo.elf"],
        ),
    ]
}

/// The case a runner's `FAIL    name: why` line names.
fn failed_case(line: &str) -> Option<&str> {
    Some(line.strip_prefix("FAIL")?.trim_start().split_once(": ")?.0)
}

/// Checks the compatibility jobs of one VM boot.
pub fn check(tally: &mut Tally, boot: &str, run: &VmRun, release: &Release) {
    let abi = release.abi;
    for (what_job, what, may_fail) in [
        (
            "new-host-old-plugin",
            format!("today's suite against the ABI {abi} plugin: nothing fails but defects fixed since"),
            release.fixed_since,
        ),
        (
            "old-host-new-plugin",
            format!("the ABI {abi} suite against today's plugin: everything passes"),
            &[][..],
        ),
    ] {
        let name = &release.job(what_job);
        let job = run.job(name);
        let summary = job.and_then(|j| summary_line(&j.output));
        let shown = |l: &&String| l.starts_with("NOT RUN") || l.starts_with("FAIL");
        let mut failed = Vec::new();
        for line in job.iter().flat_map(|j| &j.output).filter(shown) {
            let defect = failed_case(line).and_then(|case| {
                failed.push(case);
                may_fail.iter().find(|(c, _)| *c == case).map(|(_, defect)| defect)
            });
            match defect {
                Some(defect) => println!("xtask: [{boot}] {name}: {line} (a defect of that build: {defect})"),
                None => println!("xtask: [{boot}] {name}: {line}"),
            }
        }
        let unexpected: Vec<&str> =
            failed.iter().copied().filter(|case| !may_fail.iter().any(|(c, _)| c == case)).collect();
        // The runner exits 1 when a case failed.
        let status_ok =
            job.is_some_and(|j| j.status == Some(0) || (j.status == Some(1) && !failed.is_empty()));
        tally.check(
            &format!("[{boot}] {what}"),
            status_ok
                && unexpected.is_empty()
                && summary.is_some_and(|(passed, n)| passed > 0 && n == failed.len()),
            || format!("status {:?}, summary {summary:?}, failed {unexpected:?}", job.map(|j| j.status)),
        );
        if let Some((passed, _)) = summary {
            println!("xtask: [{boot}] {name}: {passed} passed");
        }
    }
    for (what_job, what) in [
        ("new-host-old-plugin-run", format!("today's accel-host runs a guest on the ABI {abi} plugin")),
        ("old-host-new-plugin-run", format!("the ABI {abi} accel-host runs a guest on today's plugin")),
    ] {
        let job = run.job(&release.job(what_job));
        tally.check(
            &format!("[{boot}] {what}"),
            job.is_some_and(|j| j.status == Some(0) && j.output.iter().any(|l| l.contains(DEMO_LINE))),
            || format!("{:?}", job.map(|j| (&j.status, &j.output))),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_case_names_the_case() {
        assert_eq!(
            failed_case("FAIL    vm::irqfd_before_the_first_run: KVM_IRQFD: x"),
            Some("vm::irqfd_before_the_first_run")
        );
        assert_eq!(failed_case("NOT RUN vm::gic_its: no GIC"), None);
        assert_eq!(failed_case("PASS    vm::gic_its (3 ms)"), None);
    }
}
