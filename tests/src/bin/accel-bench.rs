//! `accel-bench`: what register sync and exits cost on a backend, in accelerator calls and
//! time. Figures, not verdicts: times vary with the machine, so they are also given as ratios
//! to a plain system call measured in the same run.

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use accel_api::{
    client::Vcpu, CoreReg, FpReg, PutLevel, RegClass, SveReg, SyncCounters, VcpuConfig, VcpuExit,
    VcpuFeatures,
};
use accel_conformance::{
    asm::{self, Size},
    guest::{TestGuest, EXCEPTION_MMIO, MMIO_BASE},
};
use accel_host::loader;
use clap::Parser;

#[derive(Parser)]
#[command(name = "accel-bench", about = "Measure register sync and exit costs of an accel plugin")]
struct Cli {
    /// The plugin file.
    #[arg(long)]
    plugin: PathBuf,
    /// Repetitions per measurement.
    #[arg(long, default_value_t = 200)]
    iterations: u32,
}

/// A measured operation: accelerator calls and average time per repetition.
struct Figure {
    reads: f64,
    writes: f64,
    runs: f64,
    time: Duration,
}

fn measure(
    vcpu: &mut Vcpu,
    iterations: u32,
    mut op: impl FnMut(&mut Vcpu) -> accel_api::Result<()>,
) -> accel_api::Result<Figure> {
    let before: SyncCounters = vcpu.counters();
    let start = Instant::now();
    for _ in 0..iterations {
        op(vcpu)?;
    }
    let time = start.elapsed() / iterations;
    let after = vcpu.counters();
    let n = f64::from(iterations);
    Ok(Figure {
        reads: (after.reg_reads - before.reg_reads) as f64 / n,
        writes: (after.reg_writes - before.reg_writes) as f64 / n,
        runs: (after.runs - before.runs) as f64 / n,
        time,
    })
}

fn syscall_time() -> Duration {
    let n = 20_000;
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: getppid has no preconditions and cannot fail.
        unsafe { libc::getppid() };
    }
    start.elapsed() / n
}

fn row(what: &str, f: &Figure, syscall: Duration) {
    println!(
        "{what:<44} {:>7.1} {:>7.1} {:>5.1} {:>10.1} {:>9.1}",
        f.reads,
        f.writes,
        f.runs,
        f.time.as_secs_f64() * 1e6,
        f.time.as_secs_f64() / syscall.as_secs_f64()
    );
}

fn bench(cli: &Cli) -> accel_api::Result<()> {
    let plugin = loader::load(&cli.plugin)?;
    let accel = plugin.open()?;
    let caps = accel.probe().caps;
    let mut features = VcpuFeatures::PSCI_0_2;
    if caps.vcpu_features.contains(VcpuFeatures::SVE) {
        features |= VcpuFeatures::SVE;
    }
    let mut code = asm::mov_imm64(9, MMIO_BASE);
    code.extend([asm::str(Size::X, 9, 9, 0), asm::b(-4)]);
    let mut g = TestGuest::build(&accel, &code, &VcpuConfig::new(0, features), None)
        .map_err(|f| accel_api::AccelError::bad_state(format!("{f:?}")))?;
    g.expect_mmio_write().map_err(|f| accel_api::AccelError::bad_state(format!("{f:?}")))?;
    let n = cli.iterations;
    let syscall = syscall_time();
    let v = &mut g.vcpu;

    println!(
        "plugin {} ({}), SVE {}",
        plugin.name(),
        cli.plugin.display(),
        if features.contains(VcpuFeatures::SVE) { "on" } else { "off" }
    );
    println!("one plain system call (getppid): {:.2} us", syscall.as_secs_f64() * 1e6);
    let mut counts = vec![("core", CoreReg::all().count()), ("fp", FpReg::all().count())];
    if features.contains(VcpuFeatures::SVE) {
        counts.push(("sve", SveReg::all().count()));
    }
    for (name, class) in [
        ("sys", RegClass::SYS),
        ("timer", RegClass::TIMER),
        ("firmware", RegClass::FIRMWARE),
        ("ccsidr", RegClass::CCSIDR),
        ("raw", RegClass::RAW),
    ] {
        counts.push((name, v.get_regs(class)?.len()));
    }
    let total: usize = counts.iter().map(|(_, c)| c).sum();
    let list: Vec<String> = counts.iter().map(|(n, c)| format!("{n} {c}")).collect();
    println!("registers synced per class: {} (total {total})", list.join(", "));
    println!(
        "{:<44} {:>7} {:>7} {:>5} {:>10} {:>9}",
        "operation (per repetition)", "reads", "writes", "runs", "time us", "syscalls"
    );

    let classes = [RegClass::SYS, RegClass::TIMER, RegClass::FIRMWARE, RegClass::CCSIDR, RegClass::RAW];
    let sve = features.contains(VcpuFeatures::SVE);
    let get_all = |v: &mut Vcpu| -> accel_api::Result<()> {
        v.get_core()?;
        v.get_fp()?;
        if sve {
            v.get_sve()?;
        }
        for c in classes {
            v.get_regs(c)?;
        }
        Ok(())
    };
    row("full get (every class)", &measure(v, n, get_all)?, syscall);
    row("get core only", &measure(v, n, |v| v.get_core().map(drop))?, syscall);
    row(
        "get core + fp (a debugger's stop)",
        &measure(v, n, |v| {
            v.get_core()?;
            v.get_fp().map(drop)
        })?,
        syscall,
    );
    if sve {
        row("get sve", &measure(v, n, |v| v.get_sve().map(drop))?, syscall);
    }
    row("get sys", &measure(v, n, |v| v.get_regs(RegClass::SYS).map(drop))?, syscall);

    let core = v.get_core()?;
    let fp = v.get_fp()?;
    let sve_regs = if sve { Some(v.get_sve()?) } else { None };
    let mut sys = Vec::new();
    for c in classes {
        sys.extend(v.get_regs(c)?);
    }
    let put_all = |v: &mut Vcpu, level: PutLevel| -> accel_api::Result<()> {
        v.put_core(&core, level)?;
        match &sve_regs {
            Some(s) => v.put_sve(s, level)?,
            None => v.put_fp(&fp, level)?,
        }
        v.put_regs(&sys, level)
    };
    row("full put (full level)", &measure(v, n, |v| put_all(v, PutLevel::FULL))?, syscall);
    row("put, nothing changed (runtime level)", &measure(v, n, |v| put_all(v, PutLevel::RUNTIME))?, syscall);
    let mut flip = false;
    row(
        "put after changing X0 (runtime level)",
        &measure(v, n, |v| {
            let mut c = core;
            flip = !flip;
            c.x[0] ^= u64::from(flip);
            v.put_core(&c, PutLevel::RUNTIME)?;
            match &sve_regs {
                Some(s) => v.put_sve(s, PutLevel::RUNTIME)?,
                None => v.put_fp(&fp, PutLevel::RUNTIME)?,
            }
            v.put_regs(&sys, PutLevel::RUNTIME)
        })?,
        syscall,
    );
    if let Some(debug) = g.vm.debug() {
        let v = &mut g.vcpu;
        debug.set_single_step(0, true)?;
        let step = |v: &mut Vcpu| match v.run()? {
            VcpuExit::Debug(_) | VcpuExit::Interrupted => Ok(()),
            VcpuExit::MmioWrite(_) => Ok(()),
            other => Err(accel_api::AccelError::bad_state(format!("unexpected exit {other:?}"))),
        };
        // The first step applies the debug set-up (KVM_SET_GUEST_DEBUG) once.
        step(v)?;
        row("single-step round trip (one stepi)", &measure(v, n, step)?, syscall);
        row(
            "stepi as gdb sees it (step, then core + fp)",
            &measure(v, n, |v| {
                step(v)?;
                v.get_core()?;
                v.get_fp().map(drop)
            })?,
            syscall,
        );
        debug.set_single_step(0, false)?;
    }
    let v = &mut g.vcpu;
    row(
        "MMIO exit round trip (run to the next exit)",
        &measure(v, n, |v| match v.run()? {
            VcpuExit::MmioWrite(a) if a.addr == EXCEPTION_MMIO => {
                Err(accel_api::AccelError::bad_state(format!(
                    "the guest took an exception (ESR_EL1 {:#x}) instead of looping on its MMIO write",
                    a.value()
                )))
            }
            VcpuExit::MmioWrite(_) | VcpuExit::Interrupted => Ok(()),
            other => Err(accel_api::AccelError::bad_state(format!("unexpected exit {other:?}"))),
        })?,
        syscall,
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A guest that stops making exits must not hang the caller.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(300));
        eprintln!("accel-bench: error: no result after 300 s; giving up");
        std::process::exit(3);
    });
    match bench(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("accel-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}
