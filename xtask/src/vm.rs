//! The nested arm64 VM: an initramfs of our aarch64 binaries, a QEMU boot with EL2 so that the
//! guest kernel offers `/dev/kvm`, and the job results read back from the serial console.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use crate::{
    error::{Error, Result},
    provision::{
        host::CROSS_LIB,
        initramfs::{Initramfs, VmFile},
    },
};

/// How long a nested VM's console may stay silent before the VM is stopped as stuck. No VM is
/// judged by its total time: a slower machine takes longer and passes.
pub const SILENCE: Duration = Duration::from_secs(20 * 60);

/// A job for the VM's init: a name and a command line.
#[derive(Clone)]
pub struct Job {
    /// Unique name.
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Text to type into the job's standard input once it prints a line containing the first
    /// string (its input is `/dev/null` otherwise).
    pub respond: Option<(String, String)>,
    /// The job gets the VM's console, input included, and its status becomes the VM's.
    pub console: bool,
}

impl Job {
    /// A job running `argv`.
    pub fn new(name: &str, argv: &[&str]) -> Self {
        Self {
            name: name.into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            respond: None,
            console: false,
        }
    }

    /// The same job, on the VM's console for a person at the terminal.
    pub fn on_console(self) -> Self {
        Self { console: true, ..self }
    }

    /// The same job, with `text` typed into its input once it prints a line holding `trigger`.
    pub fn responding(self, trigger: &str, text: &str) -> Self {
        Self { respond: Some((trigger.into(), text.into())), ..self }
    }
}

/// What one job did.
#[derive(Debug, Default, Clone)]
pub struct JobResult {
    /// The job's name.
    pub name: String,
    /// Its exit status, if it ended.
    pub status: Option<i32>,
    /// Its console lines.
    pub output: Vec<String>,
}

/// What a VM boot produced.
#[derive(Debug)]
pub struct VmRun {
    /// Job results in order.
    pub jobs: Vec<JobResult>,
    /// Init reported the end of the job list.
    pub all_done: bool,
    /// QEMU's exit status (None when it was killed on timeout).
    pub qemu_status: Option<i32>,
    /// Wall time of the boot.
    pub elapsed: Duration,
}

impl VmRun {
    /// The result of the job called `name`.
    pub fn job(&self, name: &str) -> Option<&JobResult> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

/// The glibc runtime a dynamically linked aarch64 program (and `dlopen`) needs.
fn runtime_files() -> Result<Vec<VmFile>> {
    let lib = Path::new(CROSS_LIB);
    let mut files =
        vec![VmFile::from_host("/lib/ld-linux-aarch64.so.1", &lib.join("ld-linux-aarch64.so.1"), 0o755)?];
    for name in ["libc.so.6", "libgcc_s.so.1", "libm.so.6"] {
        files.push(VmFile::from_host(&format!("/lib/aarch64-linux-gnu/{name}"), &lib.join(name), 0o755)?);
    }
    Ok(files)
}

/// As [`initramfs`], with each job stopped once it has printed nothing for `timeout_secs`.
pub fn initramfs_with_timeout(
    out: &Path,
    init: &Path,
    files: Vec<VmFile>,
    env: &[(&str, &str)],
    timeout_secs: u64,
    jobs: &[Job],
) -> Result<()> {
    let mut limited = vec![Job::new("timeout", &[&timeout_secs.to_string()])];
    limited.extend(jobs.iter().cloned());
    initramfs(out, init, files, env, &limited)
}

/// Writes an initramfs with `init` as `/init`, the glibc runtime, `files`, and the job list.
pub fn initramfs(
    out: &Path,
    init: &Path,
    files: Vec<VmFile>,
    env: &[(&str, &str)],
    jobs: &[Job],
) -> Result<()> {
    let mut all = vec![VmFile::from_host("/init", init, 0o755)?];
    all.extend(runtime_files()?);
    all.extend(files);
    let mut list: String = env.iter().map(|(k, v)| format!("env\t{k}={v}\n")).collect();
    for job in jobs {
        if let Some((trigger, text)) = &job.respond {
            list.push_str(&format!("respond\t{trigger}\t{}\n", text.replace('\n', "\\n")));
        }
        if job.console {
            list.push_str("console\n");
        }
        list.push_str(&format!("{}\t{}\n", job.name, job.argv.join("\t")));
    }
    all.push(VmFile { path: "/etc/accel/jobs".into(), data: list.into_bytes(), perm: 0o644 });

    let mut image = Initramfs::with_dirs(&["/dev", "/proc", "/sys", "/tmp", "/bin"]);
    image.add_all(all)?;
    image.write(out).map(drop)
}

/// Where the VM's console goes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Console {
    /// QEMU's standard streams, read by xtask (`-nographic`).
    Captured,
    /// The terminal, raw: every key goes to the VM, none to QEMU's monitor.
    Terminal,
}

/// The QEMU command line for a CPU model. `max` gets the cheap pointer-authentication algorithm,
/// which makes emulation about three times faster.
fn qemu_command(kernel: &Path, initrd: &Path, cpu: &str, extra: &[String], console: Console) -> Command {
    let cpu_arg = if cpu == "max" { "max,pauth-impdef=on".to_string() } else { cpu.to_string() };
    let mut c = Command::new("qemu-system-aarch64");
    c.args(["-M", "virt,virtualization=on,gic-version=3", "-cpu", &cpu_arg])
        .args(["-smp", "2", "-m", "1024", "-accel", "tcg,thread=single"])
        .args(["-nic", "none", "-no-reboot"])
        .args(["-semihosting-config", "enable=on,target=native,userspace=on"])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyAMA0 rdinit=/init panic=-1 quiet"])
        .args(extra);
    match console {
        Console::Captured => c.arg("-nographic"),
        Console::Terminal => c
            .args(["-display", "none", "-monitor", "none", "-serial", "chardev:console"])
            .args(["-chardev", "stdio,id=console,mux=off,signal=off"]),
    };
    c
}

/// Boots the VM with its console on this terminal, input included, for a person: no `-nographic`
/// multiplexer, so no key is QEMU's (the guest's own escape key quits), and no time limit.
/// Returns QEMU's exit status, which a console job's status becomes.
pub fn boot_interactive(kernel: &Path, initrd: &Path, cpu: &str) -> Result<i32> {
    let status = qemu_command(kernel, initrd, cpu, &[], Console::Terminal)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| Error(format!("starting qemu-system-aarch64: {e}")))?;
    Ok(status.code().unwrap_or(1))
}

/// QEMU arguments for a virtio-serial port named `gdb` (the VM's `/dev/vport0p1`) that QEMU
/// serves as a TCP server on 127.0.0.1:`port`.
pub fn gdb_channel(port: u16) -> Vec<String> {
    [
        "-device".to_string(),
        "virtio-serial-pci".to_string(),
        "-chardev".to_string(),
        format!("socket,id=gdb0,host=127.0.0.1,port={port},server=on,wait=off"),
        "-device".to_string(),
        "virtserialport,chardev=gdb0,name=gdb".to_string(),
    ]
    .to_vec()
}

/// Boots the VM and collects the job results, echoing console lines through `echo`. QEMU is
/// killed once its console has printed nothing for `silence`: a slow machine that gets on is
/// waited for however long it takes.
pub fn boot(
    kernel: &Path,
    initrd: &Path,
    cpu: &str,
    silence: Duration,
    extra: &[String],
    echo: &dyn Fn(&str),
) -> Result<VmRun> {
    let start = Instant::now();
    let mut child = qemu_command(kernel, initrd, cpu, extra, Console::Captured)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error(format!("starting qemu-system-aarch64: {e}")))?;
    let stdout = child.stdout.take().ok_or_else(|| Error("QEMU has no stdout".into()))?;
    let (tx, rx) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
            let line = String::from_utf8_lossy(&buf).trim_end_matches(['\r', '\n']).to_string();
            buf.clear();
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut run = VmRun { jobs: Vec::new(), all_done: false, qemu_status: None, elapsed: Duration::ZERO };
    let mut current: Option<JobResult> = None;
    loop {
        match rx.recv_timeout(silence) {
            Ok(line) => {
                echo(&line);
                if let Some(name) = line.strip_prefix("@@accel job-begin ") {
                    current = Some(JobResult { name: name.trim().to_string(), ..Default::default() });
                } else if let Some(rest) = line.strip_prefix("@@accel job-end ") {
                    let mut job = current.take().unwrap_or_default();
                    let mut words = rest.split_whitespace();
                    job.name = words.next().unwrap_or_default().to_string();
                    job.status =
                        words.next().and_then(|s| s.strip_prefix("status=")).and_then(|s| s.parse().ok());
                    run.jobs.push(job);
                } else if line.starts_with("@@accel all-done") {
                    run.all_done = true;
                } else if let Some(job) = current.as_mut() {
                    job.output.push(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                eprintln!("xtask: the VM printed nothing for {} s; stopping it", silence.as_secs());
                let _ = child.kill();
                break;
            }
        }
    }
    if let Some(job) = current.take() {
        run.jobs.push(job);
    }
    let status = child.wait().map_err(|e| Error(format!("waiting for QEMU: {e}")))?;
    let _ = reader.join();
    run.qemu_status = status.code();
    run.elapsed = start.elapsed();
    Ok(run)
}
