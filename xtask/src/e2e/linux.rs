//! The machine end to end on real KVM: the Debian kernel booted by `accel-host` with 1 and 2
//! vCPUs (online CPUs, the timer ticking, console input echoed back, poweroff and reboot), a
//! bare-metal program reading its device tree, the dumped device tree read by `dtc`, and bad
//! input refused in one line before the backend is opened.

use std::{path::Path, process::Command};

use crate::{
    error::{Error, Result},
    provision::{
        initramfs::VmFile,
        linux_guest::{self, CheckInit, GuestEnd, MARKER},
    },
    report::Tally,
    vm::{Job, JobResult, VmRun},
};

/// Where the guest files go in the VM.
const KERNEL: &str = "/guests/linux/Image";
const CHECK_OFF: &str = "/guests/linux/check-poweroff.cpio";
const CHECK_REBOOT: &str = "/guests/linux/check-reboot.cpio";
const DTBINFO: &str = "/guests/dtbinfo.elf";
const FILL: &str = "/guests/fill-1m.bin";
/// The line written into the guest's console.
const INPUT_LINE: &str = "hello-from-the-host";
/// The kernel command line of the checks.
const APPEND: &str = "console=ttyAMA0 panic=-1 quiet";
const DTB_OUT: &str = "/tmp/virt.dtb";

/// The files the checks need in the VM.
pub fn files(work: &Path, kernel: &Path, dtbinfo: &Path) -> Result<Vec<VmFile>> {
    let busybox = linux_guest::busybox()?;
    let mut files = vec![
        VmFile::from_host(KERNEL, kernel, 0o644)?,
        VmFile::from_host(DTBINFO, dtbinfo, 0o644)?,
        VmFile { path: FILL.into(), data: vec![0u8; 1 << 20], perm: 0o644 },
    ];
    for (vm_path, end) in [(CHECK_OFF, GuestEnd::PowerOff), (CHECK_REBOOT, GuestEnd::Reboot)] {
        let init = linux_guest::check_init(&CheckInit { delay_secs: 2, read_timeout_secs: 30, end });
        let out = work.join(Path::new(vm_path).file_name().unwrap_or_default());
        linux_guest::initramfs(&out, &busybox, &init, Vec::new())?;
        files.push(VmFile::from_host(vm_path, &out, 0o644)?);
    }
    Ok(files)
}

fn run(args: &[&str]) -> Vec<String> {
    let mut argv = vec!["/bin/accel-host", "run", "--accel", "kvm"];
    argv.extend_from_slice(args);
    argv.iter().map(|s| s.to_string()).collect()
}

fn linux(cpus: &str, initrd: &str, extra: &[&str]) -> Vec<String> {
    let mut args = vec!["--kernel", KERNEL, "--initrd", initrd, "--append", APPEND, "--cpus", cpus];
    args.extend_from_slice(&["--mem", "256M", "--escape", "none", "--stats"]);
    args.extend_from_slice(extra);
    run(&args)
}

fn job(name: &str, argv: Vec<String>) -> Job {
    Job { name: name.into(), argv, respond: None, console: false }
}

/// Bad input, each refused with one line (all but the largest RAM before the backend is opened):
/// the job's name, its arguments, and the phrases one of which its error must contain.
fn bad_inputs() -> Vec<(&'static str, Vec<String>, &'static [&'static str])> {
    let long = "x".repeat(3000);
    vec![
        ("bad-not-an-image", run(&["--kernel", DTBINFO]), &["not an arm64 Linux Image"]),
        (
            "bad-initrd-too-large",
            run(&["--kernel", KERNEL, "--initrd", KERNEL, "--mem", "64M"]),
            &["does not fit"],
        ),
        ("bad-image-too-large", run(&["--mem", "1M", KERNEL]), &["more than the 1048576 bytes"]),
        ("bad-cmdline", run(&["--kernel", KERNEL, "--append", &long]), &["command line"]),
        // The largest size the argument takes, RAM ending at 2^52: past the IPA of a CPU whose
        // IPA is smaller; one with 52 bits (FEAT_LPA2, `max`) takes it, and the host cannot
        // allocate it.
        (
            "bad-ram-beyond-ipa",
            run(&["--mem", "4294966272M", DTBINFO]),
            &["guest physical address space", "Cannot allocate memory"],
        ),
        ("bad-vcpus-beyond-probe", run(&["--cpus", "100000", DTBINFO]), &["at most"]),
        ("bad-vcpus-beyond-layout", run(&["--cpus", "200", DTBINFO]), &["redistributor window"]),
        ("bad-dtb-overlap", run(&["--mem", "1M", FILL]), &["overlap"]),
        ("bad-usage", run(&["--no-such-option", DTBINFO]), &["unexpected argument"]),
    ]
}

/// The jobs, in the order they run.
pub fn jobs() -> Vec<Job> {
    let mut jobs = vec![
        job("linux-1cpu", linux("1", CHECK_OFF, &[]))
            .responding(&format!("{MARKER} read"), &format!("{INPUT_LINE}\n")),
        job("linux-2cpus-reboot", linux("2", CHECK_REBOOT, &[]))
            .responding(&format!("{MARKER} read"), &format!("{INPUT_LINE}\n")),
        job("linux-dump-dtb", linux("2", CHECK_OFF, &["--dump-dtb", DTB_OUT])),
        job("linux-dtb-hex", vec!["@hex".into(), DTB_OUT.into()]),
        job("bare-metal-dtb", run(&["--cpus", "3", "--mem", "96M", "--append", "hello dtb", DTBINFO])),
    ];
    jobs.extend(bad_inputs().into_iter().map(|(name, argv, _)| job(name, argv)));
    jobs
}

/// The `@@linux` markers of a job, without the marker.
fn markers(job: &JobResult) -> Vec<&str> {
    job.output.iter().filter_map(|l| l.find(MARKER).map(|i| l[i + MARKER.len()..].trim())).collect()
}

/// The sum of the per-CPU counts of a `timer` marker (`11: 343 350 GICv3 27 Level arch_timer`).
fn timer_total(marker: &str) -> Option<u64> {
    let rest = marker.strip_prefix("timer ")?;
    let mut words = rest.split_whitespace();
    words.next()?;
    Some(words.map_while(|w| w.parse::<u64>().ok()).sum())
}

fn check_linux(tally: &mut Tally, boot: &str, run: &VmRun, name: &str, cpus: u32, end: &str) {
    let tag = |what: &str| format!("[{boot}] Linux, {cpus} vCPU(s): {what}");
    let Some(job) = run.job(name) else {
        tally.check(&tag("the job ran"), false, || "it did not run".into());
        return;
    };
    let m = markers(job);
    let online = m.iter().find_map(|l| l.strip_prefix("cpus ")).and_then(|r| r.split_whitespace().next());
    tally.check(&tag("the online CPU count equals --cpus"), online == Some(&cpus.to_string()), || {
        format!("markers {m:?}, output tail {:?}", job.output.iter().rev().take(15).collect::<Vec<_>>())
    });
    let timers: Vec<u64> = m.iter().filter_map(|l| timer_total(l)).collect();
    tally.check(&tag("the timer interrupt count grows"), timers.len() == 2 && timers[1] > timers[0], || {
        format!("timer counts {timers:?}")
    });
    tally.check(
        &tag("a line written into the console input comes back"),
        m.iter().any(|l| *l == format!("echo {INPUT_LINE}")),
        || format!("markers {m:?}"),
    );
    let ended = m.iter().any(|l| *l == format!("end {end}"));
    let status_ok = job.status == Some(0);
    let reset_said = job.output.iter().any(|l| l.contains("the guest reset the machine"));
    tally.check(
        &tag(&format!(
            "{end} ends accel-host with status 0{}",
            if end == "reboot" { ", saying reset" } else { "" }
        )),
        ended && status_ok && (end != "reboot" || reset_said),
        || format!("status {:?}, markers {m:?}", job.status),
    );
    if let Some(stats) = job.output.iter().find(|l| l.contains("accel-host: exits:")) {
        println!("xtask: [{boot}] Linux boot, {cpus} vCPU(s): {}", stats.trim_start_matches("accel-host: "));
    }
}

/// Decodes the `@@hex` lines of a job.
fn unhex(job: &JobResult) -> Vec<u8> {
    let digit = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
    job.output
        .iter()
        .filter_map(|l| l.strip_prefix("@@hex "))
        .flat_map(|h| {
            h.as_bytes()
                .chunks(2)
                .map(|p| digit(p[0]) << 4 | digit(*p.get(1).unwrap_or(&b'0')))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn check_dtb(tally: &mut Tally, boot: &str, file_stem: &str, run: &VmRun, work: &Path) -> Result<()> {
    let dumped = run.job("linux-dump-dtb").is_some_and(|j| j.status == Some(0));
    let dtb = run.job("linux-dtb-hex").map(unhex).unwrap_or_default();
    let file = work.join(format!("virt-{file_stem}.dtb"));
    std::fs::write(&file, &dtb).map_err(|e| Error(format!("writing {}: {e}", file.display())))?;
    let dts = Command::new("dtc").args(["-I", "dtb", "-O", "dts"]).arg(&file).output();
    let (ok, text) = match dts {
        Ok(out) => (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned()),
        Err(e) => (false, format!("running dtc: {e}")),
    };
    let has = |s: &str| text.contains(s);
    tally.check(
        &format!("[{boot}] --dump-dtb writes a device tree dtc reads, with the virt nodes"),
        dumped
            && ok
            && has("compatible = \"arm,gic-v3\"")
            && has("compatible = \"arm,gic-v3-its\"")
            && has("compatible = \"arm,armv8-timer")
            && has("compatible = \"arm,pl011\\0arm,primecell\"")
            && has("method = \"hvc\"")
            && text.matches("enable-method = \"psci\"").count() == 2
            && has("linux,initrd-start")
            && has("rng-seed"),
        || format!("dumped {dumped}, dtc ok {ok}, {} bytes:\n{text}", dtb.len()),
    );
    Ok(())
}

/// Checks the jobs of one VM boot, named `boot` in the tally and `file_stem` in file names.
pub fn check(tally: &mut Tally, boot: &str, file_stem: &str, run: &VmRun, work: &Path) -> Result<()> {
    check_linux(tally, boot, run, "linux-1cpu", 1, "poweroff");
    check_linux(tally, boot, run, "linux-2cpus-reboot", 2, "reboot");
    check_dtb(tally, boot, file_stem, run, work)?;
    let bare = run.job("bare-metal-dtb");
    let out = bare.map(|j| j.output.join("\n")).unwrap_or_default();
    tally.check(
        &format!(
            "[{boot}] a bare-metal image finds its memory, CPUs and bootargs in the device tree from x0"
        ),
        bare.is_some_and(|j| j.status == Some(0))
            && out.contains("dtbinfo: memory total MiB 96")
            && out.contains("dtbinfo: cpus 3")
            && out.contains("dtbinfo: psci hvc")
            && out.contains("dtbinfo: bootargs 'hello dtb'"),
        || out.clone(),
    );
    for (name, _, phrases) in bad_inputs() {
        let job = run.job(name);
        let lines: Vec<&String> = job.map(|j| j.output.iter().collect()).unwrap_or_default();
        let error_lines: Vec<&&String> =
            lines.iter().filter(|l| l.starts_with("accel-host: error:") || l.starts_with("error:")).collect();
        tally.check(
            &format!("[{boot}] bad input refused in one line: {name}"),
            job.is_some_and(|j| j.status == Some(1))
                && error_lines.len() == 1
                && phrases.iter().any(|p| error_lines[0].contains(p)),
            || format!("status {:?}, output {lines:?}", job.map(|j| j.status)),
        );
    }
    Ok(())
}
