//! `accel-boot-bench`: how long a Linux guest takes to reach its init, booted by `accel-host` and
//! by QEMU's own KVM support, alternately in one run on the same kernel and initramfs, with the
//! KVM exits each took to get there (KVM's counters in debugfs, read at the init's marker, so
//! both are counted the same way). Figures, not verdicts: the ratio accel / QEMU is what holds
//! on a noisy machine.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, ExitCode, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use accel_conformance::kvm_stats::{self, Counters, ExitKinds};
use clap::Parser;

#[derive(Parser)]
#[command(name = "accel-boot-bench", about = "Boot time and exits of Linux on accel-host against QEMU")]
struct Cli {
    /// The kernel Image.
    #[arg(long)]
    kernel: PathBuf,
    /// The initramfs; its init prints the marker, then powers off.
    #[arg(long)]
    initrd: PathBuf,
    /// The line the init prints once it runs.
    #[arg(long, default_value = "@@linux booted")]
    marker: String,
    /// The kernel command line.
    #[arg(long, default_value = "console=ttyAMA0 panic=-1 quiet")]
    append: String,
    /// accel-host.
    #[arg(long, default_value = "/bin/accel-host")]
    accel_host: PathBuf,
    /// qemu-system-aarch64.
    #[arg(long, default_value = "/usr/bin/qemu-system-aarch64")]
    qemu: PathBuf,
    /// vCPU counts to boot with, comma-separated.
    #[arg(long, default_value = "1,2", value_delimiter = ',')]
    cpus: Vec<u32>,
    /// Boots per VMM and vCPU count; the median is quoted.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Guest RAM.
    #[arg(long, default_value = "256M")]
    mem: String,
    /// Seconds a boot may print nothing before it is abandoned (a slow boot that gets on is
    /// waited for).
    #[arg(long, default_value_t = 120)]
    timeout: u64,
}

/// One boot: time to the marker and to the end, KVM's counters at the marker, and the VMM's
/// own summary of exits (accel-host's `--stats`).
struct Boot {
    to_marker: Duration,
    to_end: Duration,
    counters: Vec<u64>,
    /// KVM's exits by kind to the marker, where the kernel's tracefs has histograms.
    kinds: Result<Vec<(String, u64)>, String>,
    summary: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Vmm {
    Accel,
    Qemu,
}

impl Vmm {
    fn name(self) -> &'static str {
        match self {
            Vmm::Accel => "accel-host",
            Vmm::Qemu => "QEMU",
        }
    }

    fn command(self, cli: &Cli, cpus: u32) -> Command {
        let (kernel, initrd) = (&cli.kernel, &cli.initrd);
        match self {
            Vmm::Accel => {
                let mut c = Command::new(&cli.accel_host);
                c.args(["run", "--accel", "kvm", "--kernel"]).arg(kernel).arg("--initrd").arg(initrd);
                c.args(["--append", &cli.append, "--cpus", &cpus.to_string(), "--mem", &cli.mem]);
                c.args(["--escape", "none", "--stats"]);
                c
            }
            Vmm::Qemu => {
                let mut c = Command::new(&cli.qemu);
                c.args(["-M", "virt,gic-version=3", "-accel", "kvm", "-cpu", "host", "-nographic"]);
                c.args(["-nic", "none", "-no-reboot", "-m", &cli.mem, "-smp", &cpus.to_string()]);
                c.arg("-kernel").arg(kernel).arg("-initrd").arg(initrd).args(["-append", &cli.append]);
                c
            }
        }
    }
}

/// Boots once; the output's lines (both streams) arrive on one channel.
fn boot(cli: &Cli, vmm: Vmm, cpus: u32) -> Result<Boot, String> {
    let mut command = vmm.command(cli, cpus);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let armed = ExitKinds::arm();
    let start = Instant::now();
    let mut child = command.spawn().map_err(|e| format!("starting {}: {e}", vmm.name()))?;
    let (tx, lines) = mpsc::channel::<String>();
    let readers: Vec<_> = [
        child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|stream| {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        })
    })
    .collect();
    drop(tx);
    let (mut to_marker, mut at_marker, mut summary) = (None, Vec::new(), None);
    let mut kinds = Err("the marker never came".to_string());
    loop {
        match lines.recv_timeout(Duration::from_secs(cli.timeout)) {
            Ok(line) => {
                if to_marker.is_none() && line.contains(&cli.marker) {
                    to_marker = Some(start.elapsed());
                    at_marker = Counters::read().values.to_vec();
                    kinds = armed.clone().and_then(|()| ExitKinds::read());
                }
                if let Some(rest) = line.strip_prefix("accel-host: exits: ") {
                    summary = Some(rest.to_string());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} with {cpus} vCPUs printed nothing for {} s",
                    vmm.name(),
                    cli.timeout
                ));
            }
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for {}: {e}", vmm.name()))?;
    let to_end = start.elapsed();
    for r in readers {
        let _ = r.join();
    }
    let to_marker =
        to_marker.ok_or_else(|| format!("{} never printed '{}' ({status})", vmm.name(), cli.marker))?;
    if !status.success() {
        return Err(format!("{} ended with {status}", vmm.name()));
    }
    Ok(Boot { to_marker, to_end, counters: at_marker, kinds, summary })
}

fn median<T: Copy + Ord>(mut v: Vec<T>) -> T {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = kvm_stats::mount_debugfs() {
        eprintln!("accel-boot-bench: {e}");
        return ExitCode::FAILURE;
    }
    println!(
        "boot of Linux to its init, median of {} boots each, alternating accel-host and QEMU",
        cli.rounds
    );
    println!(
        "{:<6} {:<11} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "vCPUs",
        "VMM",
        "to init s",
        "to end s",
        "exits",
        "mmio-usr",
        "mmio-krn",
        "HVC",
        "WFx",
        "signal",
        "other"
    );
    let mut failed = false;
    for &cpus in &cli.cpus {
        let mut boots: [Vec<Boot>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..cli.rounds {
            for (slot, vmm) in [Vmm::Accel, Vmm::Qemu].into_iter().enumerate() {
                match boot(&cli, vmm, cpus) {
                    Ok(b) => boots[slot].push(b),
                    Err(e) => {
                        eprintln!("accel-boot-bench: {e}");
                        failed = true;
                    }
                }
            }
        }
        let mut medians = [Duration::ZERO; 2];
        for (slot, vmm) in [Vmm::Accel, Vmm::Qemu].into_iter().enumerate() {
            let b = &boots[slot];
            if b.is_empty() {
                continue;
            }
            medians[slot] = median(b.iter().map(|b| b.to_marker).collect());
            let end = median(b.iter().map(|b| b.to_end).collect());
            let c = |i: usize| {
                median(b.iter().map(|b| b.counters.get(i).copied().unwrap_or(0)).collect::<Vec<_>>())
            };
            println!(
                "{:<6} {:<11} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
                cpus,
                vmm.name(),
                secs(medians[slot]),
                secs(end),
                c(0),
                c(1),
                c(2),
                c(3),
                c(4) + c(5),
                c(6),
                c(0).saturating_sub((1..7).map(c).sum())
            );
            if let Some(s) = b.iter().rev().find_map(|b| b.summary.clone()) {
                println!("{:<6} {:<11} its own count, to the end: {s}", "", vmm.name());
            }
            match b.iter().rev().map(|b| &b.kinds).next() {
                Some(Ok(kinds)) => {
                    println!(
                        "{:<6} {:<11} KVM's exits by kind, to init: {}",
                        "",
                        vmm.name(),
                        ExitKinds::describe(kinds)
                    )
                }
                Some(Err(why)) => println!("{:<6} {:<11} KVM's exits by kind: {why}", "", vmm.name()),
                None => {}
            }
        }
        if medians.iter().all(|m| !m.is_zero()) {
            println!(
                "boot-ratio cpus={cpus} accel/QEMU = {:.2} (to init: {} s against {} s)",
                medians[0].as_secs_f64() / medians[1].as_secs_f64(),
                secs(medians[0]),
                secs(medians[1])
            );
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
