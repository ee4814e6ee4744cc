//! `accel-bench`: what accel's register sync, exits and debug stops cost, side by side in one
//! process with what they cost without accel, as ratios. Figures, not verdicts: times in the
//! nested VM vary with the machine, so every figure is set against a baseline measured in the
//! same run, in interleaved blocks.
//!
//! - Raw KVM (module `raw`, on arm64 Linux): the same work written directly on `kvm-ioctls`,
//!   against the backend loaded as a plugin.
//! - The KVM backend linked in ([`accel_api::client::Accelerator::in_process`]) against the
//!   same backend loaded as a plugin: the cost of the dynamic-library boundary alone.
//! - gdb's view ([`gdb_view`]): a stop as gdb 13 sees it, through accel-host's gdb stub, against
//!   the fewest KVM calls that could answer what gdb asks.

mod allocations;
mod gdb_client;
mod gdb_view;
mod measure;
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
mod raw;

use std::{path::PathBuf, process::ExitCode, time::Duration};

use accel_api::{
    client::{Accelerator, Vcpu},
    CoreReg, FpReg, PutLevel, RegClass, RegValue, SveReg, SveRegs, VcpuConfig, VcpuExit, VcpuFeatures,
};
use accel_conformance::{
    asm::{self, Size},
    guest::{TestGuest, CODE, EXCEPTION_MMIO, MMIO_BASE},
};
use accel_host::loader;
use clap::Parser;

use measure::{interleave, on, Calls, Sample, Subject};

/// Every allocation of this program is counted, for the table's allocation column.
#[global_allocator]
static ALLOCATOR: allocations::Counting = allocations::Counting;

#[derive(Parser)]
#[command(
    name = "accel-bench",
    about = "Measure register sync, exit and debug-stop costs of an accel plugin"
)]
struct Cli {
    /// The plugin file.
    #[arg(long)]
    plugin: PathBuf,
    /// Rounds of interleaved blocks per operation.
    #[arg(long, default_value_t = 101)]
    rounds: u32,
    /// Milliseconds per block: each block repeats its operation for about this long.
    #[arg(long, default_value_t = 2)]
    block_ms: u64,
}

/// The benchmark's failures, as text.
type Result<T> = std::result::Result<T, String>;

fn accel<T>(r: accel_api::Result<T>) -> Result<T> {
    r.map_err(|e| e.to_string())
}

/// One row of the table: the plugin's figure, and the baselines it is set against.
pub struct Row {
    /// What was measured.
    pub what: String,
    /// Raw KVM doing the same work (for gdb's view: the fewest calls that answer gdb).
    pub raw: Option<Sample>,
    /// The backend linked in.
    pub linked: Option<Sample>,
    /// The backend loaded as a plugin.
    pub plugin: Sample,
}

/// The rows every run prints, in order.
pub const ROWS: [&str; 11] = [
    "MMIO exit round trip",
    "get core + FP/SIMD",
    "put one changed register (X0)",
    "single-step round trip",
    "full get (every class)",
    "full put (full level)",
    "put, nothing changed (runtime level)",
    "gdb stepi",
    "gdb stepi, a g packet at the stop",
    "gdb continue to a breakpoint",
    "gdb continue to a watchpoint",
];

/// The guest every measured vCPU runs: a store to an unmapped address in a loop (an MMIO exit
/// per iteration), and after it a branch to itself, where single-steps go.
fn bench_code() -> Vec<u32> {
    let mut code = asm::mov_imm64(9, MMIO_BASE);
    code.extend([asm::str(Size::X, 9, 9, 0), asm::b(-4), asm::b(0)]);
    code
}

/// Where the branch to itself of [`bench_code`] is.
fn step_at() -> u64 {
    CODE + 4 * (bench_code().len() as u64 - 1)
}

fn counted(v: &mut Vcpu) -> Calls {
    let c = v.counters();
    Calls { reads: c.reg_reads as f64, writes: c.reg_writes as f64, runs: c.runs as f64 }
}

fn mmio_exit(v: &mut Vcpu) -> Result<()> {
    match accel(v.run())? {
        VcpuExit::MmioWrite(a) if a.addr == EXCEPTION_MMIO => Err(format!(
            "the guest took an exception (ESR_EL1 {:#x}) instead of looping on its MMIO write",
            a.value()
        )),
        VcpuExit::MmioWrite(_) => Ok(()),
        other => Err(format!("expected an MMIO exit, got {other:?}")),
    }
}

fn debug_exit(v: &mut Vcpu) -> Result<()> {
    match accel(v.run())? {
        VcpuExit::Debug(_) => Ok(()),
        other => Err(format!("expected a debug exit, got {other:?}")),
    }
}

/// A guest on one accelerator, with the state its puts write back.
struct Side {
    guest: TestGuest,
    sve: bool,
    full: Option<Snapshot>,
}

/// Every register class as one get read it.
struct Snapshot {
    core: accel_api::CoreRegs,
    fp: accel_api::FpRegs,
    sve: Option<SveRegs>,
    listed: Vec<RegValue>,
}

const LISTED: [RegClass; 5] =
    [RegClass::SYS, RegClass::TIMER, RegClass::FIRMWARE, RegClass::CCSIDR, RegClass::RAW];

impl Side {
    fn new(accel: &Accelerator, features: VcpuFeatures) -> Result<Self> {
        let mut guest = TestGuest::build(accel, &bench_code(), &VcpuConfig::new(0, features), None)
            .map_err(|f| format!("{f:?}"))?;
        guest.expect_mmio_write().map_err(|f| format!("{f:?}"))?;
        Ok(Self { guest, sve: features.contains(VcpuFeatures::SVE), full: None })
    }

    fn full_get(&mut self) -> Result<()> {
        let v = &mut self.guest.vcpu;
        let core = accel(v.get_core())?;
        let fp = accel(v.get_fp())?;
        let sve = if self.sve { Some(accel(v.get_sve())?) } else { None };
        let mut listed = Vec::new();
        for class in LISTED {
            listed.extend(accel(v.get_regs(class))?);
        }
        self.full = Some(Snapshot { core, fp, sve, listed });
        Ok(())
    }

    fn full_put(&mut self, level: PutLevel) -> Result<()> {
        let Some(s) = &self.full else { return Err("no full get to put back".into()) };
        let v = &mut self.guest.vcpu;
        accel(v.put_core(&s.core, level))?;
        match &s.sve {
            Some(sve) => accel(v.put_sve(sve, level))?,
            None => accel(v.put_fp(&s.fp, level))?,
        }
        accel(v.put_regs(&s.listed, level))
    }

    fn put_x0(&mut self) -> Result<()> {
        let Some(s) = &mut self.full else { return Err("no get to change".into()) };
        s.core.x[0] ^= 1;
        accel(self.guest.vcpu.put_core(&s.core, PutLevel::RUNTIME))
    }

    fn start_stepping(&mut self) -> Result<()> {
        let v = &mut self.guest.vcpu;
        let mut core = accel(v.get_core())?;
        core.pc = step_at();
        accel(v.put_core(&core, PutLevel::RUNTIME))?;
        let debug = self.guest.vm.debug().ok_or("the backend has no guest debug")?;
        accel(debug.set_single_step(0, true))
    }
}

/// `op` on a side, counted by its vCPU's counters.
fn side(s: &mut Side, op: fn(&mut Side) -> Result<()>) -> impl Subject + '_ {
    on(s, op, |s: &mut Side| counted(&mut s.guest.vcpu))
}

/// [`side`] on the linked-in backend, if there is one.
fn linked_side(l: &mut Option<Side>, op: fn(&mut Side) -> Result<()>) -> Option<impl Subject + '_> {
    l.as_mut().map(move |s| side(s, op))
}

/// Measures `what` on the plugin and, where given, the linked-in backend and raw KVM.
fn row<'a>(
    rows: &mut Vec<Row>,
    cli: &Cli,
    what: &str,
    raw: Option<&'a mut dyn Subject>,
    linked: Option<&'a mut dyn Subject>,
    plugin: &'a mut dyn Subject,
) -> Result<()> {
    let mut subjects: Vec<&'a mut dyn Subject> = vec![plugin];
    let has_raw = raw.is_some();
    let has_linked = linked.is_some();
    subjects.extend(raw);
    subjects.extend(linked);
    let mut samples =
        interleave(&mut subjects, cli.rounds, Duration::from_millis(cli.block_ms), 3)?.into_iter();
    let plugin = samples.next().unwrap_or_default();
    let raw = if has_raw { samples.next() } else { None };
    let linked = if has_linked { samples.next() } else { None };
    rows.push(Row { what: what.into(), raw, linked, plugin });
    Ok(())
}

/// The backend linked into this program, where it can run.
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
fn linked_in() -> Option<Accelerator> {
    match Accelerator::in_process(accel_kvm::open) {
        Ok(a) => Some(a),
        Err(e) => {
            println!("the linked-in KVM backend did not open ({e}); its column stays empty");
            None
        }
    }
}

#[cfg(not(all(target_os = "linux", target_arch = "aarch64")))]
fn linked_in() -> Option<Accelerator> {
    println!("the KVM backend can only be linked in on arm64 Linux; its column stays empty");
    None
}

/// The raw KVM baseline and its subjects, where KVM runs.
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
mod baseline {
    pub use super::raw::RawGuest as Guest;
    use super::{
        measure::{on, Calls, Subject},
        Result,
    };

    fn counted(g: &mut Guest) -> Calls {
        let c = g.calls;
        Calls { reads: c.gets as f64, writes: c.sets as f64, runs: c.runs as f64 }
    }

    /// A guest with the benchmark's code, SVE on if `sve`.
    /// A guest with the benchmark's code in the suite's test-guest image, SVE on if `sve`, run
    /// to its first MMIO exit as the accel guests are.
    pub fn guest(sve: bool) -> Option<Guest> {
        use accel_conformance::guest::{image, RAM_BASE, RAM_SIZE};
        let started = Guest::new(RAM_BASE, RAM_SIZE as usize, &image(&super::bench_code()), RAM_BASE, sve)
            .and_then(|mut g| g.run_to_mmio().map(|()| g));
        match started {
            Ok(g) => Some(g),
            Err(e) => {
                println!("the raw KVM baseline did not start ({e}); its column stays empty");
                None
            }
        }
    }

    pub fn mmio(g: &mut Guest) -> impl Subject + '_ {
        on(g, |g| g.run_to_mmio(), counted)
    }

    pub fn get_core_fp(g: &mut Guest) -> impl Subject + '_ {
        on(g, |g| g.get_core_fp(), counted)
    }

    pub fn put_x0(g: &mut Guest) -> impl Subject + '_ {
        on(g, |g| g.put_x0(), counted)
    }

    /// Single-steps the branch to itself.
    pub fn step(g: &mut Guest) -> Result<impl Subject + '_> {
        g.complete_mmio()?;
        g.set_pc(super::step_at())?;
        g.guest_debug(true, None)?;
        Ok(on(g, |g| g.run_to_debug(), counted))
    }

    /// The stepping guest back on its loop, so that it runs into MMIO exits again.
    pub fn unstep(g: &mut Guest) -> Result<()> {
        g.guest_debug(false, None)?;
        g.set_pc(accel_conformance::guest::CODE)
    }
}

/// No raw baseline off arm64 Linux.
#[cfg(not(all(target_os = "linux", target_arch = "aarch64")))]
mod baseline {
    use super::{measure::Subject, Result};

    /// Nothing: raw KVM needs arm64 Linux.
    pub enum Guest {}

    pub fn guest(_: bool) -> Option<Guest> {
        println!("raw KVM needs arm64 Linux; its column stays empty");
        None
    }

    macro_rules! none {
        ($($name:ident),*) => {$(
            pub fn $name(g: &mut Guest) -> Box<dyn Subject + '_> {
                match *g {}
            }
        )*};
    }
    none!(mmio, get_core_fp, put_x0);

    pub fn step(g: &mut Guest) -> Result<Box<dyn Subject + '_>> {
        match *g {}
    }

    pub fn unstep(g: &mut Guest) -> Result<()> {
        match *g {}
    }
}

fn bench(cli: &Cli) -> Result<()> {
    let plugin = accel(loader::load(&cli.plugin))?;
    let loaded = accel(plugin.open())?;
    let caps = loaded.probe().caps;
    let mut features = VcpuFeatures::PSCI_0_2;
    if caps.vcpu_features.contains(VcpuFeatures::SVE) {
        features |= VcpuFeatures::SVE;
    }
    let sve = features.contains(VcpuFeatures::SVE);
    println!(
        "plugin {} ({}), SVE {}; {} rounds of interleaved blocks of about {} ms",
        plugin.name(),
        cli.plugin.display(),
        if sve { "on" } else { "off" },
        cli.rounds,
        cli.block_ms
    );
    let linked = linked_in();
    let mut p = Side::new(&loaded, features)?;
    let mut l = match &linked {
        Some(a) => Some(Side::new(a, features)?),
        None => None,
    };
    let mut r = baseline::guest(sve);

    let v = &mut p.guest.vcpu;
    let mut counts = vec![("core", CoreReg::all().count()), ("fp", FpReg::all().count())];
    if sve {
        counts.push(("sve", SveReg::all().count()));
    }
    for (name, class) in
        LISTED.iter().zip(["sys", "timer", "firmware", "ccsidr", "raw"]).map(|(c, n)| (n, *c))
    {
        counts.push((name, accel(v.get_regs(class))?.len()));
    }
    let total: usize = counts.iter().map(|(_, c)| c).sum();
    let list: Vec<String> = counts.iter().map(|(n, c)| format!("{n} {c}")).collect();
    println!("registers synced per class: {} (total {total})", list.join(", "));

    let mut rows = Vec::new();

    // (a) An MMIO exit and back.
    {
        let mut rs = r.as_mut().map(baseline::mmio);
        let mut ls = linked_side(&mut l, |s| mmio_exit(&mut s.guest.vcpu));
        let mut ps = side(&mut p, |s| mmio_exit(&mut s.guest.vcpu));
        row(
            &mut rows,
            cli,
            ROWS[0],
            rs.as_mut().map(|s| s as &mut dyn Subject),
            ls.as_mut().map(|s| s as &mut dyn Subject),
            &mut ps,
        )?;
    }
    // (b) What a debugger reads at a stop.
    fn get_core_fp(s: &mut Side) -> Result<()> {
        accel(s.guest.vcpu.get_core())?;
        accel(s.guest.vcpu.get_fp()).map(drop)
    }
    {
        let mut rs = r.as_mut().map(baseline::get_core_fp);
        let mut ls = linked_side(&mut l, get_core_fp);
        let mut ps = side(&mut p, get_core_fp);
        row(
            &mut rows,
            cli,
            ROWS[1],
            rs.as_mut().map(|s| s as &mut dyn Subject),
            ls.as_mut().map(|s| s as &mut dyn Subject),
            &mut ps,
        )?;
    }
    // (c) One register changed and put.
    for s in [Some(&mut p), l.as_mut()].into_iter().flatten() {
        s.full_get()?;
    }
    {
        let mut rs = r.as_mut().map(baseline::put_x0);
        let mut ls = linked_side(&mut l, Side::put_x0);
        let mut ps = side(&mut p, Side::put_x0);
        row(
            &mut rows,
            cli,
            ROWS[2],
            rs.as_mut().map(|s| s as &mut dyn Subject),
            ls.as_mut().map(|s| s as &mut dyn Subject),
            &mut ps,
        )?;
    }
    // (d) One instruction stepped: the guest branches to itself.
    for s in [Some(&mut p), l.as_mut()].into_iter().flatten() {
        s.start_stepping()?;
    }
    {
        let mut rs = match r.as_mut() {
            Some(g) => Some(baseline::step(g)?),
            None => None,
        };
        let mut ls = linked_side(&mut l, |s| debug_exit(&mut s.guest.vcpu));
        let mut ps = side(&mut p, |s| debug_exit(&mut s.guest.vcpu));
        row(
            &mut rows,
            cli,
            ROWS[3],
            rs.as_mut().map(|s| s as &mut dyn Subject),
            ls.as_mut().map(|s| s as &mut dyn Subject),
            &mut ps,
        )?;
    }
    if let Some(g) = r.as_mut() {
        baseline::unstep(g)?;
    }
    // The whole register file, both ways, on the plugin and linked in.
    let ops: [fn(&mut Side) -> Result<()>; 3] =
        [Side::full_get, |s| s.full_put(PutLevel::FULL), |s| s.full_put(PutLevel::RUNTIME)];
    for (what, op) in ROWS[4..7].iter().zip(ops) {
        let mut ls = linked_side(&mut l, op);
        let mut ps = side(&mut p, op);
        row(&mut rows, cli, what, None, ls.as_mut().map(|s| s as &mut dyn Subject), &mut ps)?;
    }
    drop((p, l, r));

    rows.extend(gdb_view::rows(&loaded, features, cli)?);
    print_table(&rows);
    Ok(())
}

fn print_table(rows: &[Row]) {
    let syscall = syscall_time();
    println!("one plain system call (getppid): {:.2} us", syscall * 1e6);
    println!(
        "calls per repetition: register reads/writes/guest entries (KVM_GET_ONE_REG/KVM_SET_ONE_REG/KVM_RUN); \
         raw KVM counts its own ioctls, accel its SyncCounters; gdb rows: raw is the fewest calls that answer gdb"
    );
    println!(
        "allocs: heap allocations per repetition in this process, raw/linked/plugin (a plugin's own are not \
         seen; gdb rows: the stub's and this replaying client's)"
    );
    println!(
        "{:<38} {:>9} {:>11} {:>11} {:>9} {:>9} {:>9} {:>10} {:>10} {:>13}",
        "operation",
        "raw calls",
        "accel calls",
        "allocs",
        "raw us",
        "linked us",
        "plugin us",
        "plugin/raw",
        "linked/raw",
        "plugin/linked"
    );
    let us = |s: &Option<Sample>| s.as_ref().map_or("-".to_string(), |s| format!("{:.1}", s.micros()));
    let allocs = |s: Option<&Sample>| {
        s.map_or("-".to_string(), |s| match s.allocs.fract() {
            0.0 => format!("{}", s.allocs),
            _ => format!("{:.1}", s.allocs),
        })
    };
    let ratio = |a: Option<&Sample>, b: &Option<Sample>| match (a, b) {
        (Some(a), Some(b)) => format!("{:.3}", a.ratio_to(b)),
        _ => "-".into(),
    };
    for r in rows {
        println!(
            "{:<38} {:>9} {:>11} {:>11} {:>9} {:>9} {:>9.1} {:>10} {:>10} {:>13}",
            r.what,
            r.raw.as_ref().map_or("-".into(), |s| s.calls.show()),
            r.plugin.calls.show(),
            format!("{}/{}/{}", allocs(r.raw.as_ref()), allocs(r.linked.as_ref()), allocs(Some(&r.plugin))),
            us(&r.raw),
            us(&r.linked),
            r.plugin.micros(),
            ratio(Some(&r.plugin), &r.raw),
            ratio(r.linked.as_ref(), &r.raw),
            ratio(Some(&r.plugin), &r.linked),
        );
    }
}

fn syscall_time() -> f64 {
    let n = 20_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: getppid has no preconditions and cannot fail.
        unsafe { libc::getppid() };
    }
    start.elapsed().as_secs_f64() / f64::from(n)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A guest that stops making exits must not hang the caller.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(600));
        eprintln!("accel-bench: error: no result after 600 s; giving up");
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
