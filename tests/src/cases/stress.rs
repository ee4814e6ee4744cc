//! Stress on one VM and on the VM lifecycle: eight vCPUs on their own threads making MMIO exits
//! while other threads kick them, churn the debug pool and fire irqfds; and VMs and vCPUs created
//! and destroyed in a loop, some while another thread kicks them, without leaking a descriptor.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::SeqCst},
        mpsc, Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use accel_api::{
    client::{Accelerator, Debug, Kicker, Vcpu},
    debug::{WatchKind, Watchpoint},
    GicConfig, PutLevel, VcpuConfig, VcpuExit, VcpuFeatures, VmConfig,
};
use accel_host::vmm::{ram::GuestRam, PSTATE_EL1H_DAIF};
use rand::{seq::SliceRandom, Rng};

use crate::{
    asm::{self, Size},
    ensure,
    guest::{TestGuest, CODE, DATA, EXCEPTION_MMIO, MMIO_BASE, RAM_BASE, VECTORS},
    Case, CaseResult, Context, Failure,
};

/// Each stress case runs in a process of its own: one that fails or stalls takes its threads and
/// descriptors with it.
pub fn cases() -> Vec<Case> {
    crate::case_list![stress: eight_vcpus_exits_kicks_debug_irqfd, create_destroy_loop]
        .into_iter()
        .map(Case::in_own_process)
        .collect()
}

/// vCPUs in the VM of [`eight_vcpus_exits_kicks_debug_irqfd`].
const VCPUS: u32 = 8;
/// MMIO exits each vCPU makes.
const EXITS: u64 = 10_000;
/// The fewest irqfd rounds (one interrupt to every vCPU each) fired; firing goes on until every
/// vCPU has made its exits, so the interrupts arrive throughout.
const MIN_IRQ_ROUNDS: u64 = 100;
/// How much the machine may do while a kicked vCPU's `run` has not returned `Interrupted`, a
/// fired irqfd has not been taken by the guest, or a vCPU with exits left makes none: this many
/// MMIO exits, made by all the vCPUs together. The bound is counted in the work the others get
/// done, not in time, so a machine that is slow, or slowed down halfway by other load, waits
/// longer and never fails for it. A lost kick or interrupt, or a vCPU left behind, is caught as
/// soon as the others have made this many exits; when nothing moves at all, the runner's stall
/// bound ends the case. A scheduler gives a runnable thread its turn long before: nested under TCG
/// (two emulated cores for a dozen busy threads) on a machine loaded four times over, the longest
/// a vCPU went without an exit was while the others made 4,689, and the slowest kick took 22.7 s,
/// more than a bound in time of 50,000 round trips at the pace measured at the start.
const RESPONSE_EXITS: u64 = 50_000;

/// The guest's MMIO page of vCPU `i`: offset 0 takes its exit count, [`FOREIGN`] an INTID it
/// acknowledged that was not its own, [`DONE`] the count once it has made every exit.
fn mmio_page(i: usize) -> u64 {
    MMIO_BASE + 0x1000 * i as u64
}
const FOREIGN: u64 = 8;
const DONE: u64 = 16;

/// Where vCPU `i`'s interrupt handler keeps the number of its interrupts taken (in RAM, read by
/// the host without an exit).
fn irq_count_at(i: usize) -> u64 {
    DATA + 64 * i as u64
}

/// The SPI of vCPU `i`'s irqfd (INTID 40 + i).
fn spi_of(i: usize) -> u32 {
    8 + i as u32
}

/// Guest code addresses nothing executes and data addresses nothing accesses: the debug pool's
/// breakpoints and watchpoints go there and must never fire.
const UNREACHED_CODE: u64 = RAM_BASE + 0x18_0000;
const UNREACHED_DATA: u64 = RAM_BASE + 0x10_0000;

/// The IRQ entry of the vector table (current EL with SP_ELx, offset 0x280): acknowledge
/// (ICC_IAR1_EL1); its own SPI (INTID in X25) adds one to X27, stores it at [X24] and ends
/// (ICC_EOIR1_EL1); any other INTID is written to the vCPU's [`FOREIGN`] address. ERET restores
/// PSTATE, flags included, so the interrupted loop goes on unchanged. Uses X26.
fn irq_handler() -> Vec<u32> {
    vec![
        asm::mrs(26, asm::ICC_IAR1_EL1),
        asm::cmp(26, 25),
        asm::b_ne(20),
        asm::add_imm(27, 27, 1),
        asm::str(Size::X, 27, 24, 0),
        asm::msr(asm::ICC_EOIR1_EL1, 26),
        asm::ERET,
        asm::str(Size::X, 26, 9, FOREIGN as u32),
        asm::ERET,
    ]
}

/// vCPU `i`'s program: install the vector table, bring up its own GICv3 redistributor, make
/// every vCPU's SPI edge-triggered in group 1 (all vCPUs write the same words), route its own
/// SPI to itself (GICD_IROUTER<n> = its affinity) and enable it, unmask IRQs, then store the
/// counts 1 to [`EXITS`] to its MMIO page, report [`DONE`], and wait for interrupts.
///
/// Edge-triggered, because an irqfd only raises its line: KVM lowers it again only through a
/// resample eventfd, which the API does not use, so a level-triggered SPI would stay pending
/// after every end of interrupt.
fn vcpu_program(i: usize, affinity: u64, gic: &GicConfig) -> Vec<u32> {
    let intid = 32 + spi_of(i);
    let spis: Vec<u32> = (0..VCPUS as usize).map(|v| 32 + spi_of(v)).collect();
    // GICD_ICFGR<n>: two bits per INTID, the upper one set for edge-triggered.
    let icfgr = spis.iter().fold(0u64, |w, n| w | 1 << (2 * (n % 16) + 1));
    let igroupr = spis.iter().fold(0u64, |w, n| w | 1 << (n % 32));
    let mut code = asm::mov_imm64(0, VECTORS);
    code.extend([asm::msr(accel_api::sysreg::VBAR_EL1, 0), asm::ISB]);
    code.extend(asm::mov_imm64(20, gic.dist_base));
    code.extend(asm::mov_imm64(21, gic.redist_base + 0x2_0000 * i as u64));
    // GICR_WAKER.ProcessorSleep = 0; GICD_CTLR = ARE | EnableGrp1.
    code.push(asm::str(Size::W, 31, 21, 0x14));
    code.push(asm::movz(19, 0x12, 0));
    code.push(asm::str(Size::W, 19, 20, 0));
    code.extend(asm::mov_imm64(19, icfgr));
    code.push(asm::str(Size::W, 19, 20, 0xc00 + 4 * (spis[0] / 16)));
    code.extend(asm::mov_imm64(19, igroupr));
    code.push(asm::str(Size::W, 19, 20, 0x080 + 4 * (spis[0] / 32)));
    code.extend(asm::mov_imm64(19, affinity));
    code.push(asm::str(Size::X, 19, 20, 0x6000 + 8 * intid));
    code.extend(asm::mov_imm64(19, 1 << (intid % 32)));
    code.push(asm::str(Size::W, 19, 20, 0x100 + 4 * (intid / 32)));
    code.extend([
        asm::movz(19, 0xff, 0),
        asm::msr(asm::ICC_PMR_EL1, 19),
        asm::movz(19, 1, 0),
        asm::msr(asm::ICC_IGRPEN1_EL1, 19),
        asm::ISB,
    ]);
    code.extend(asm::mov_imm64(9, mmio_page(i)));
    code.extend(asm::mov_imm64(24, irq_count_at(i)));
    code.extend(asm::mov_imm64(25, u64::from(intid)));
    code.extend(asm::mov_imm64(2, EXITS));
    code.extend([asm::movz(27, 0, 0), asm::movz(1, 0, 0), asm::msr_daifclr(2)]);
    code.extend([
        asm::add_imm(1, 1, 1),
        asm::str(Size::X, 1, 9, 0),
        asm::cmp(1, 2),
        asm::b_ne(-12),
        asm::str(Size::X, 1, 9, DONE as u32),
        asm::WFI,
        asm::b(-4),
    ]);
    code
}

/// What the threads of the stress case share about one vCPU.
#[derive(Default)]
struct VcpuState {
    /// The guest has made its first exit: its GIC set-up is done.
    ready: AtomicBool,
    /// The guest has made every exit.
    done: AtomicBool,
    /// Exits seen so far.
    exits: AtomicU64,
    /// Kicks sent so far.
    kicked: AtomicU64,
    /// The value of `kicked` when the vCPU's `run` last returned `Interrupted`.
    acked: AtomicU64,
}

/// What the threads of the stress case share.
struct Shared {
    vcpus: Vec<VcpuState>,
    /// Tells the kicker, debug and irqfd threads to end.
    helpers_stop: AtomicBool,
    /// Tells the vCPU threads to end at their next `Interrupted`.
    vcpus_stop: AtomicBool,
    /// Some thread failed; the others stop waiting.
    failed: AtomicBool,
    /// The first failure any thread saw.
    failure: Mutex<Option<String>>,
    /// How many exits the vCPUs may make together while a kick, an interrupt or a starved vCPU
    /// waits ([`RESPONSE_EXITS`]).
    response: u64,
}

impl Shared {
    fn fail(&self, why: String) {
        if let Ok(mut first) = self.failure.lock() {
            first.get_or_insert(why);
        }
        self.failed.store(true, SeqCst);
        self.helpers_stop.store(true, SeqCst);
    }

    fn failed(&self) -> bool {
        self.failed.load(SeqCst)
    }

    /// The first failure, if any thread failed.
    fn failure(&self) -> Option<Failure> {
        self.failure.lock().ok().and_then(|f| f.clone()).map(Failure::Fail)
    }

    fn helpers_stopping(&self) -> bool {
        self.helpers_stop.load(SeqCst)
    }

    fn all(&self, flag: impl Fn(&VcpuState) -> bool) -> bool {
        self.vcpus.iter().all(flag)
    }

    /// The exits every vCPU has made, together: the clock the response bound is counted on.
    fn exits(&self) -> u64 {
        self.vcpus.iter().map(|v| v.exits.load(SeqCst)).sum()
    }

    /// How far each vCPU got, for a message.
    fn progress(&self) -> String {
        let exits: Vec<u64> = self.vcpus.iter().map(|v| v.exits.load(SeqCst)).collect();
        format!("exits made per vCPU: {exits:?} of {EXITS}")
    }
}

/// Passes `result` on, recording its failure first so that the other threads stop.
fn or_fail<T>(shared: &Shared, result: Result<T, String>) -> Result<T, String> {
    if let Err(why) = &result {
        shared.fail(why.clone());
    }
    result
}

/// Polls `cond` until it holds (true), another thread fails, or the vCPUs together make more
/// than the response bound's exits meanwhile (false).
fn wait_for(shared: &Shared, cond: impl Fn() -> bool) -> bool {
    let start = shared.exits();
    loop {
        if cond() {
            return true;
        }
        if shared.failed() || shared.exits() - start > shared.response {
            return false;
        }
        thread::sleep(Duration::from_micros(200));
    }
}

/// Ends the stress case's threads however the case ends: helpers stop, and vCPU threads end at
/// the kick that follows.
struct Teardown {
    shared: Arc<Shared>,
    kickers: Vec<Kicker>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        self.shared.helpers_stop.store(true, SeqCst);
        self.shared.vcpus_stop.store(true, SeqCst);
        for kicker in &self.kickers {
            kicker.kick();
        }
    }
}

/// What one vCPU's thread saw.
#[derive(Debug, Default)]
struct VcpuReport {
    exits: u64,
    interrupted: u64,
    /// Spurious INTIDs (1020–1023) the guest read from ICC_IAR1_EL1.
    spurious: u64,
}

/// Runs vCPU `i` until, after the vCPU threads are told to stop, a kick interrupts it. Every
/// exit is checked against the guest's count in it.
fn drive(vcpu: &mut Vcpu, i: usize, shared: &Shared) -> Result<VcpuReport, String> {
    let page = mmio_page(i);
    let state = &shared.vcpus[i];
    let mut report = VcpuReport::default();
    loop {
        let exit = vcpu.run().map_err(|e| format!("vCPU {i}: run failed: {e}"))?;
        match exit {
            VcpuExit::MmioWrite(a) if a.addr == page => {
                report.exits += 1;
                state.exits.store(report.exits, SeqCst);
                if a.value() != report.exits {
                    return Err(format!(
                        "vCPU {i}: MMIO exit {} carried the guest's count {}: an exit was lost or repeated",
                        report.exits,
                        a.value()
                    ));
                }
                state.ready.store(true, SeqCst);
            }
            VcpuExit::MmioWrite(a) if a.addr == page + DONE => {
                if a.value() != EXITS || report.exits != EXITS {
                    return Err(format!(
                        "vCPU {i}: the guest reports {} exits made, the host saw {}, of {EXITS}",
                        a.value(),
                        report.exits
                    ));
                }
                state.done.store(true, SeqCst);
            }
            VcpuExit::MmioWrite(a) if a.addr == page + FOREIGN => {
                if a.value() < 1020 {
                    return Err(format!(
                        "vCPU {i} acknowledged INTID {}; only its own, {}, is routed to it",
                        a.value(),
                        32 + spi_of(i)
                    ));
                }
                report.spurious += 1;
            }
            VcpuExit::Interrupted => {
                report.interrupted += 1;
                state.acked.store(state.kicked.load(SeqCst), SeqCst);
                if shared.vcpus_stop.load(SeqCst) {
                    return Ok(report);
                }
            }
            VcpuExit::Debug(d) => {
                return Err(format!(
                    "vCPU {i}: a debug exit ({d:x?}), though every breakpoint and watchpoint is at an address the guest never reaches"
                ))
            }
            VcpuExit::MmioWrite(a) if a.addr == EXCEPTION_MMIO => {
                return Err(format!("vCPU {i}: the guest took an unexpected exception, ESR_EL1 {:#x}", a.value()))
            }
            other => return Err(format!("vCPU {i}: unexpected exit {other:?}")),
        }
    }
}

/// What the kicker thread measured.
#[derive(Debug, Default)]
struct KickStats {
    kicks: u64,
    worst: Duration,
    /// The most exits the vCPUs made together while one kick waited for its answer.
    worst_exits: u64,
    total: Duration,
}

/// Kicks the vCPUs one at a time, in a fresh random order each pass and at random intervals, and
/// waits after each kick until that vCPU's `run` has returned `Interrupted`, within
/// [`RESPONSE_EXITS`].
fn kick_at_random(kickers: &[Kicker], shared: &Shared) -> Result<KickStats, String> {
    let mut rng = rand::rng();
    let mut stats = KickStats::default();
    let mut order: Vec<usize> = (0..kickers.len()).collect();
    while !shared.helpers_stopping() {
        order.shuffle(&mut rng);
        for &i in &order {
            let state = &shared.vcpus[i];
            let seq = state.kicked.fetch_add(1, SeqCst) + 1;
            let start = Instant::now();
            let exits_before = shared.exits();
            kickers[i].kick();
            if !wait_for(shared, || state.acked.load(SeqCst) >= seq) {
                if shared.failed() {
                    return Ok(stats);
                }
                return Err(format!(
                    "vCPU {i}: kick {seq} was not answered by an interrupted run while the vCPUs made {} exits; {}",
                    shared.response,
                    shared.progress()
                ));
            }
            let took = start.elapsed();
            stats.kicks += 1;
            stats.worst = stats.worst.max(took);
            stats.worst_exits = stats.worst_exits.max(shared.exits() - exits_before);
            stats.total += took;
            thread::sleep(Duration::from_micros(rng.random_range(0..500)));
        }
    }
    Ok(stats)
}

/// Inserts hardware breakpoints and watchpoints (a random number of each, up to the capacity, at
/// random addresses the guest never reaches; BAS and MASK watchpoints of every kind), holds them
/// a moment, and removes them, until told to stop. Returns the number of inserts and removes.
fn churn_debug_pool(debug: &Debug, shared: &Shared) -> Result<u64, String> {
    let mut rng = rand::rng();
    let capacity = debug.capacity();
    let mut ops = 0;
    let mut slots: Vec<u64> = (0..64).collect();
    let kinds = [WatchKind::READ, WatchKind::WRITE, WatchKind::ACCESS];
    while !shared.helpers_stopping() {
        slots.shuffle(&mut rng);
        let breakpoints: Vec<u64> = slots
            .iter()
            .take(rng.random_range(1..=capacity.breakpoints) as usize)
            .map(|k| UNREACHED_CODE + 4 * k)
            .collect();
        slots.shuffle(&mut rng);
        let watchpoints: Vec<Watchpoint> = slots
            .iter()
            .take(rng.random_range(1..=capacity.watchpoints) as usize)
            .map(|k| Watchpoint {
                addr: UNREACHED_DATA + 0x100 * k,
                len: if rng.random() { 8 } else { 0x100 },
                kind: kinds[rng.random_range(0..kinds.len())],
            })
            .collect();
        for &addr in &breakpoints {
            debug
                .insert_hw_breakpoint(addr)
                .map_err(|e| format!("inserting a breakpoint at {addr:#x}: {e}"))?;
        }
        for w in &watchpoints {
            debug.insert_watchpoint(w).map_err(|e| format!("inserting {w:?}: {e}"))?;
        }
        thread::sleep(Duration::from_micros(rng.random_range(0..2000)));
        for &addr in &breakpoints {
            debug
                .remove_hw_breakpoint(addr)
                .map_err(|e| format!("removing the breakpoint at {addr:#x}: {e}"))?;
        }
        for w in &watchpoints {
            debug.remove_watchpoint(w).map_err(|e| format!("removing {w:?}: {e}"))?;
        }
        ops += 2 * (breakpoints.len() + watchpoints.len()) as u64;
    }
    Ok(ops)
}

/// One eventfd per vCPU, each an irqfd for that vCPU's SPI.
#[cfg(target_os = "linux")]
struct Irqfds(Vec<vmm_sys_util::eventfd::EventFd>);

#[cfg(target_os = "linux")]
impl Irqfds {
    fn register(g: &TestGuest) -> Result<Self, Failure> {
        use std::os::fd::AsRawFd;

        let eventfds = g.eventfds()?;
        let mut fds = Vec::new();
        for i in 0..VCPUS as usize {
            let efd = vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK)
                .map_err(|e| Failure::Fail(format!("creating an eventfd: {e}")))?;
            eventfds.register_irqfd(efd.as_raw_fd(), spi_of(i))?;
            fds.push(efd);
        }
        Ok(Self(fds))
    }

    fn fire(&self, i: usize) -> Result<(), String> {
        self.0[i].write(1).map_err(|e| format!("writing vCPU {i}'s irqfd: {e}"))
    }
}

/// irqfds are Linux eventfds: elsewhere the backend offers none, and the case cannot run.
#[cfg(not(target_os = "linux"))]
enum Irqfds {}

#[cfg(not(target_os = "linux"))]
impl Irqfds {
    fn register(g: &TestGuest) -> Result<Self, Failure> {
        ensure!(
            g.vm.linux_eventfd().is_none(),
            "the backend offers Linux eventfds on {}",
            std::env::consts::OS
        );
        Err(Failure::NotRun("irqfds are Linux eventfds; this is not Linux".into()))
    }

    fn fire(&self, _: usize) -> Result<(), String> {
        match *self {}
    }
}

/// The number of interrupts vCPU `i`'s handler has counted.
fn irq_count(ram: &GuestRam, i: usize) -> Result<u64, String> {
    let mut word = [0u8; 8];
    ram.read(irq_count_at(i), &mut word).map_err(|e| format!("reading vCPU {i}'s interrupt count: {e}"))?;
    Ok(u64::from_le_bytes(word))
}

/// Fires rounds of irqfds, one interrupt to every vCPU each, until every vCPU has made its exits
/// and at least [`MIN_IRQ_ROUNDS`] rounds are done. An edge-triggered SPI fired again while still
/// pending would be taken once, so each round waits until every vCPU's handler has counted it
/// (within [`RESPONSE_EXITS`]): the invariant is then exact, the guest's count equals the rounds
/// fired, and never exceeds them. Returns the rounds fired.
fn fire_irqfds(irqfds: &Irqfds, ram: &GuestRam, shared: &Shared) -> Result<u64, String> {
    if !wait_for(shared, || shared.all(|v| v.ready.load(SeqCst))) {
        return Err(format!("the vCPUs did not all reach their exit loop; {}", shared.progress()));
    }
    let mut rounds = 0;
    while rounds < MIN_IRQ_ROUNDS || !shared.all(|v| v.done.load(SeqCst)) {
        if shared.helpers_stopping() {
            return Ok(rounds);
        }
        rounds += 1;
        for i in 0..shared.vcpus.len() {
            irqfds.fire(i)?;
        }
        for i in 0..shared.vcpus.len() {
            let taken = wait_for(shared, || irq_count(ram, i).is_ok_and(|n| n >= rounds));
            let count = irq_count(ram, i)?;
            if count > rounds {
                return Err(format!("vCPU {i} counted {count} interrupts, more than the {rounds} fired"));
            }
            if !taken && !shared.failed() {
                return Err(format!(
                    "vCPU {i} had counted {count} interrupts of {rounds} fired while the vCPUs made {} exits",
                    shared.response
                ));
            }
        }
    }
    Ok(rounds)
}

/// Spawns `f` on a named thread whose result arrives on the returned channel.
fn spawn<T: Send + 'static>(
    name: String,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<mpsc::Receiver<T>, Failure> {
    let (tx, rx) = mpsc::channel();
    thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| Failure::Fail(format!("starting thread {name}: {e}")))?;
    Ok(rx)
}

/// The result a thread sends. A thread that never ends is the runner's to catch: the case then
/// stands still, and its stall bound fails it.
fn collect<T>(rx: &mpsc::Receiver<T>, what: &str) -> Result<T, Failure> {
    rx.recv().map_err(|_| Failure::Fail(format!("{what} ended without a result")))
}

/// Watches the vCPUs of [`eight_vcpus_exits_kicks_debug_irqfd`] while they work: reports their
/// progress to the runner, and fails the case when one vCPU that has exits left makes none while
/// the others make the response bound's exits (starved, or stuck in `run`).
struct Starvation {
    /// Each vCPU's exit count when last seen to change, when, and every vCPU's exits together
    /// then.
    last: Vec<(u64, Instant, u64)>,
    /// Every vCPU's exits and interrupted runs together, last seen.
    total: u64,
    /// The longest any vCPU with exits left went without one, and how many exits the others
    /// made meanwhile.
    worst: (Duration, u64),
}

impl Starvation {
    fn new(vcpus: usize) -> Self {
        Self { last: vec![(0, Instant::now(), 0); vcpus], total: 0, worst: (Duration::ZERO, 0) }
    }

    fn look(&mut self, ctx: &Context, shared: &Shared) -> Result<(), Failure> {
        let exits: Vec<u64> = shared.vcpus.iter().map(|v| v.exits.load(SeqCst)).collect();
        let total =
            exits.iter().sum::<u64>() + shared.vcpus.iter().map(|v| v.acked.load(SeqCst)).sum::<u64>();
        if total != self.total {
            self.total = total;
            ctx.progress();
        }
        let now = Instant::now();
        let all: u64 = exits.iter().sum();
        for (i, &n) in exits.iter().enumerate() {
            if n != self.last[i].0 || shared.vcpus[i].done.load(SeqCst) {
                self.last[i] = (n, now, all);
                continue;
            }
            let others = all - self.last[i].2;
            let still = now - self.last[i].1;
            if others > self.worst.1 {
                self.worst = (still, others);
            }
            if others > shared.response {
                return Err(Failure::Fail(format!(
                    "vCPU {i} made no exit while the others made {others} ({:.1} s); {}",
                    still.as_secs_f64(),
                    shared.progress()
                )));
            }
        }
        Ok(())
    }
}

/// Eight vCPUs in one VM, each on its own thread making [`EXITS`] MMIO exits, while one thread
/// kicks them at random, one churns the debug pool, and one fires every vCPU's irqfd round after
/// round. Checks: every exit carries the guest's own count in order, and the guest's total
/// matches the host's; every kick interrupts its vCPU's `run` before the vCPUs make
/// [`RESPONSE_EXITS`] more exits, and each vCPU's interrupted runs equal the kicks it got (one
/// kick, one interruption); every fired interrupt is taken by its vCPU within that bound, and the
/// guest's counts equal the rounds fired; no vCPU with exits left goes without one while the
/// others make that many; no breakpoint or watchpoint fires. Nothing is bounded in time: a slower
/// machine takes longer, and the runner fails the case only if it stops making progress.
fn eight_vcpus_exits_kicks_debug_irqfd(ctx: &Context) -> CaseResult {
    let counters_ready = crate::kvm_stats::mount_debugfs();
    let kvm_before = crate::kvm_stats::Counters::read();
    let kinds_armed = crate::kvm_stats::ExitKinds::arm();
    let start = Instant::now();
    let accel = ctx.accelerator()?;
    let caps = accel.probe().caps;
    if caps.max_vcpus < VCPUS {
        return Err(Failure::NotRun(format!(
            "the backend offers {} vCPUs per VM, fewer than {VCPUS}",
            caps.max_vcpus
        )));
    }
    let gic = GicConfig::virt(64);
    let g = TestGuest::build(&accel, &[asm::b(0)], &VcpuConfig::new(0, VcpuFeatures::PSCI_0_2), Some(gic))?;
    let debug = crate::extension(g.vm.debug(), "guest debug", false)?;
    let capacity = debug.capacity();
    if capacity.breakpoints == 0 || capacity.watchpoints == 0 {
        return Err(Failure::NotRun(format!(
            "the debug pool holds {} hardware breakpoints and {} watchpoints; the case needs one of each",
            capacity.breakpoints, capacity.watchpoints
        )));
    }
    let mut others = Vec::new();
    for index in 1..VCPUS {
        others.push(g.vm.create_vcpu(&VcpuConfig::new(index, VcpuFeatures::PSCI_0_2))?);
    }
    // Every vCPU exists, so the GIC's set-up can be completed: the irqfds go in before any runs.
    let irqfds = Irqfds::register(&g)?;
    let TestGuest { vm, ram, vcpu } = g;
    let ram = Arc::new(ram);
    ram.write_code(VECTORS + 0x280, &irq_handler())?;
    let mut vcpus = vec![vcpu];
    vcpus.extend(others);
    for (i, vcpu) in vcpus.iter_mut().enumerate() {
        let affinity = vcpu.mpidr()? & 0xff_00ff_ffff;
        let entry = CODE + 0x400 * i as u64;
        let program = vcpu_program(i, affinity, &gic);
        ensure!(program.len() * 4 <= 0x400, "vCPU {i}'s program does not fit its 1 KiB");
        ram.write_code(entry, &program)?;
        let mut core = vcpu.get_core()?;
        core.pc = entry;
        core.pstate = PSTATE_EL1H_DAIF;
        vcpu.put_core(&core, PutLevel::RESET)?;
    }

    let shared = Arc::new(Shared {
        vcpus: (0..VCPUS).map(|_| VcpuState::default()).collect(),
        helpers_stop: AtomicBool::new(false),
        vcpus_stop: AtomicBool::new(false),
        failed: AtomicBool::new(false),
        failure: Mutex::new(None),
        response: RESPONSE_EXITS,
    });
    let teardown =
        Teardown { shared: Arc::clone(&shared), kickers: vcpus.iter().map(Vcpu::kicker).collect() };
    let kickers: Vec<Kicker> = vcpus.iter().map(Vcpu::kicker).collect();
    let mut reports = Vec::new();
    for (i, mut vcpu) in vcpus.into_iter().enumerate() {
        let (shared, ram) = (Arc::clone(&shared), Arc::clone(&ram));
        reports.push(spawn(format!("stress-vcpu-{i}"), move || {
            let result = or_fail(&shared, drive(&mut vcpu, i, &shared));
            // The vCPU goes before the RAM it runs in.
            drop(vcpu);
            drop(ram);
            result
        })?);
    }
    let kicker_thread = {
        let shared = Arc::clone(&shared);
        spawn("stress-kicker".into(), move || or_fail(&shared, kick_at_random(&kickers, &shared)))?
    };
    let debug_thread = {
        let shared = Arc::clone(&shared);
        spawn("stress-debug".into(), move || or_fail(&shared, churn_debug_pool(&debug, &shared)))?
    };
    let irq_thread = {
        let (shared, ram) = (Arc::clone(&shared), Arc::clone(&ram));
        spawn("stress-irqfd".into(), move || or_fail(&shared, fire_irqfds(&irqfds, &ram, &shared)))?
    };

    // The irqfd thread ends once every vCPU has made its exits; then the kicker and the debug
    // churn stop, and one last kick each ends the vCPU threads.
    let mut starvation = Starvation::new(VCPUS as usize);
    let irq_result = loop {
        match irq_thread.recv_timeout(crate::pace::POLL_PERIOD) {
            Ok(result) => break result,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(shared
                    .failure()
                    .unwrap_or_else(|| Failure::Fail("the irqfd thread ended without a result".into())))
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Some(failure) = shared.failure() {
                    return Err(failure);
                }
                starvation.look(ctx, &shared).inspect_err(|f| {
                    if let Failure::Fail(why) = f {
                        shared.fail(why.clone());
                    }
                })?;
            }
        }
    };
    let loops_done = start.elapsed();
    shared.helpers_stop.store(true, SeqCst);
    let kick_result = collect(&kicker_thread, "the kicker thread")?;
    let debug_result = collect(&debug_thread, "the debug-pool thread")?;
    shared.vcpus_stop.store(true, SeqCst);
    for (i, kicker) in teardown.kickers.iter().enumerate() {
        shared.vcpus[i].kicked.fetch_add(1, SeqCst);
        kicker.kick();
    }
    let mut seen = Vec::new();
    for (i, rx) in reports.iter().enumerate() {
        let report = rx.recv().map_err(|_| {
            shared
                .failure()
                .unwrap_or_else(|| Failure::Fail(format!("vCPU {i}'s thread ended without a report")))
        })?;
        seen.push(report);
    }
    if let Some(failure) = shared.failure() {
        return Err(failure);
    }
    let rounds = irq_result.map_err(Failure::Fail)?;
    let kicks = kick_result.map_err(Failure::Fail)?;
    let debug_ops = debug_result.map_err(Failure::Fail)?;
    let mut spurious = 0;
    for (i, report) in seen.into_iter().enumerate() {
        let report = report.map_err(Failure::Fail)?;
        ensure!(report.exits == EXITS, "vCPU {i} made {} exits of {EXITS}", report.exits);
        let kicked = shared.vcpus[i].kicked.load(SeqCst);
        ensure!(
            report.interrupted == kicked,
            "vCPU {i}: {kicked} kicks, each answered before the next, gave {} interrupted runs",
            report.interrupted
        );
        let taken = irq_count(&ram, i).map_err(Failure::Fail)?;
        ensure!(taken == rounds, "vCPU {i} took {taken} interrupts of {rounds} fired");
        spurious += report.spurious;
    }
    ensure!(kicks.kicks >= u64::from(VCPUS), "only {} kicks were made", kicks.kicks);
    ensure!(debug_ops > 0, "the debug pool was never changed");
    println!(
        "  stress: {VCPUS} vCPUs x {EXITS} exits in {:.1} s; {} kicks, answered in {:.1} ms on average and {:.1} ms at worst, \
         while the vCPUs made {} exits at most (bound {RESPONSE_EXITS}); {rounds} irqfd rounds ({} interrupts), {spurious} spurious; {debug_ops} debug-pool changes; \
         longest a vCPU with exits left went without one: {:.2} s, while the others made {}",
        loops_done.as_secs_f64(),
        kicks.kicks,
        kicks.total.as_secs_f64() * 1e3 / kicks.kicks.max(1) as f64,
        kicks.worst.as_secs_f64() * 1e3,
        kicks.worst_exits,
        rounds * u64::from(VCPUS),
        starvation.worst.0.as_secs_f64(),
        starvation.worst.1
    );
    println!("  stress: {}", kvm_exits_per_round_trip(counters_ready, &kvm_before, u64::from(VCPUS) * EXITS));
    match kinds_armed.and_then(|()| crate::kvm_stats::ExitKinds::read()) {
        Ok(kinds) => {
            println!("  stress: KVM's exits by kind: {}", crate::kvm_stats::ExitKinds::describe(&kinds))
        }
        Err(why) => println!("  stress: KVM's exits by kind: {why}"),
    }
    drop(teardown);
    drop(vm);
    Ok(())
}

/// KVM's exits during a case by reason, and how many there were per MMIO round trip the host
/// saw (`round_trips`): exits the host never sees show up here.
fn kvm_exits_per_round_trip(
    ready: Result<(), String>,
    before: &crate::kvm_stats::Counters,
    round_trips: u64,
) -> String {
    match ready {
        Ok(()) => {
            let during = crate::kvm_stats::Counters::read().since(before);
            format!(
                "KVM {}: {:.2} exits per MMIO round trip",
                during.describe(),
                during.exits() as f64 / round_trips.max(1) as f64
            )
        }
        Err(why) => format!("KVM's exit counters: {why}"),
    }
}

/// Rounds of [`create_destroy_loop`].
const LIFECYCLE_ROUNDS: u32 = 200;

/// The descriptors this process has open.
fn open_fds() -> Result<usize, Failure> {
    let dir = if cfg!(target_os = "linux") { "/proc/self/fd" } else { "/dev/fd" };
    std::fs::read_dir(dir)
        .map(Iterator::count)
        .map_err(|e| Failure::NotRun(format!("cannot list {dir} to count open descriptors: {e}")))
}

/// Registers an irqfd and an ioeventfd (where the backend offers them) and leaves them
/// registered: the VM's destruction has to release the backend's duplicates. The caller's
/// eventfds close when the round ends.
#[cfg(target_os = "linux")]
fn leave_eventfds_registered(vm: &accel_api::client::Vm) -> Result<(), Failure> {
    use std::os::fd::AsRawFd;

    use vmm_sys_util::eventfd::EventFd;

    let Some(eventfds) = vm.linux_eventfd() else { return Ok(()) };
    let (irq, io) = match (EventFd::new(libc::EFD_NONBLOCK), EventFd::new(libc::EFD_NONBLOCK)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err(Failure::Fail("creating eventfds failed".into())),
    };
    eventfds.register_irqfd(irq.as_raw_fd(), 1)?;
    eventfds.register_ioeventfd(io.as_raw_fd(), MMIO_BASE + 0x100, 0, None)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn leave_eventfds_registered(_: &accel_api::client::Vm) -> Result<(), Failure> {
    Ok(())
}

/// Sets its flag when dropped, however the function holding it ends.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

/// Where a round of [`create_destroy_loop`] is: no vCPU being destroyed, one being destroyed,
/// or every vCPU and the VM gone.
const RUNNING: u8 = 0;
const DESTROYING: u8 = 1;
const GONE: u8 = 2;

/// Kicks of one round of [`create_destroy_loop`] that began and ended while a vCPU was being
/// destroyed, and that came after everything was gone.
#[derive(Debug, Default)]
struct LifecycleKicks {
    during: u64,
    after: u64,
}

/// Kicks each kicker gets once both vCPUs and the VM are gone.
const KICKS_AFTER: u64 = 3;

/// One round: a VM (with a GIC and registered eventfds in even rounds), 64 KiB of RAM holding a
/// spin loop, and two vCPUs (the second powered off) whose kickers a second thread kicks every
/// few tens of microseconds throughout. vCPU 0 runs on a third thread until kicked out of `run`
/// three times, and is destroyed there; in odd rounds the VM's handle is dropped first, while
/// that vCPU still runs. The kicker kicks both vCPUs [`KICKS_AFTER`] more times once everything
/// is gone, then ends.
fn lifecycle_round(accel: &Accelerator, round: u32) -> Result<LifecycleKicks, Failure> {
    let vm = accel.create_vm(&VmConfig::default())?;
    let with_gic = round % 2 == 0 && accel.probe().caps.gic_v3;
    if with_gic {
        crate::extension(vm.gic(), "in-kernel GICv3", true)?.create(&GicConfig::virt(64))?;
    }
    let ram = Arc::new(GuestRam::new(RAM_BASE, 0x1_0000)?);
    // SAFETY: the RAM outlives every vCPU of the VM: it is declared before vCPU 1, so it drops
    // after it on every return, and vCPU 0's thread holds a reference it drops after that vCPU.
    unsafe { ram.map_into(&vm) }?;
    ram.write_code(RAM_BASE, &[asm::b(0)])?;
    let mut first = vm.create_vcpu(&VcpuConfig::new(0, VcpuFeatures::PSCI_0_2))?;
    let second = vm.create_vcpu(&VcpuConfig::new(1, VcpuFeatures::PSCI_0_2 | VcpuFeatures::POWER_OFF))?;
    if with_gic {
        leave_eventfds_registered(&vm)?;
    }
    let mut core = first.get_core()?;
    core.pc = RAM_BASE;
    core.pstate = PSTATE_EL1H_DAIF;
    first.put_core(&core, PutLevel::RESET)?;

    let phase = Arc::new(AtomicU8::new(RUNNING));
    let stop = SetOnDrop(Arc::new(AtomicBool::new(false)));
    let kickers = [first.kicker(), second.kicker()];
    let kicking = {
        let (phase, stop) = (Arc::clone(&phase), Arc::clone(&stop.0));
        spawn(format!("lifecycle-kicker-{round}"), move || {
            let mut kicks = LifecycleKicks::default();
            while !stop.load(SeqCst) && kicks.after < KICKS_AFTER {
                let before = phase.load(SeqCst);
                for kicker in &kickers {
                    kicker.kick();
                }
                match (before, phase.load(SeqCst)) {
                    (DESTROYING, DESTROYING) => kicks.during += 1,
                    (GONE, _) => kicks.after += 1,
                    _ => {}
                }
                thread::sleep(Duration::from_micros(20));
            }
            kicks
        })?
    };
    let running = {
        let (ram, phase) = (Arc::clone(&ram), Arc::clone(&phase));
        spawn(format!("lifecycle-vcpu-{round}"), move || {
            let mut result = Ok(());
            for _ in 0..3 {
                match first.run() {
                    Ok(VcpuExit::Interrupted) => {}
                    Ok(other) => {
                        result = Err(format!("a spinning vCPU exited with {other:?}"));
                        break;
                    }
                    Err(e) => {
                        result = Err(format!("run failed: {e}"));
                        break;
                    }
                }
            }
            phase.store(DESTROYING, SeqCst);
            drop(first);
            phase.store(RUNNING, SeqCst);
            drop(ram);
            result
        })?
    };
    if round % 2 == 1 {
        drop(vm);
        let ran = collect(&running, "the vCPU thread")?;
        ran.map_err(|why| Failure::Fail(format!("round {round}, VM destroyed first: {why}")))?;
    } else {
        let ran = collect(&running, "the vCPU thread")?;
        ran.map_err(|why| Failure::Fail(format!("round {round}: {why}")))?;
        drop(vm);
    }
    phase.store(DESTROYING, SeqCst);
    drop(second);
    phase.store(GONE, SeqCst);
    drop(ram);
    let kicks = collect(&kicking, "the kicker thread")?;
    ensure!(
        kicks.after == KICKS_AFTER,
        "round {round}: the kicker ended after {} kicks of the destroyed vCPUs",
        kicks.after
    );
    Ok(kicks)
}

/// VMs and vCPUs created and destroyed [`LIFECYCLE_ROUNDS`] times (see [`lifecycle_round`]):
/// kicks before, during and after a vCPU's destruction stay harmless, and the process holds as
/// many descriptors afterwards as before. The count is taken after one round, which creates what
/// a process opens once (the kick signal's handler, the probe's results).
fn create_destroy_loop(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let start = Instant::now();
    lifecycle_round(&accel, 0)?;
    let before = open_fds()?;
    let mut kicks = LifecycleKicks::default();
    for round in 1..=LIFECYCLE_ROUNDS {
        let round = lifecycle_round(&accel, round)?;
        ctx.progress();
        kicks.during += round.during;
        kicks.after += round.after;
    }
    let after = open_fds()?;
    ensure!(
        after == before,
        "{before} descriptors were open before {LIFECYCLE_ROUNDS} rounds of creating and destroying VMs, {after} after"
    );
    ensure!(kicks.during > 0, "no kick fell within a vCPU's destruction in {LIFECYCLE_ROUNDS} rounds");
    println!(
        "  lifecycle: {LIFECYCLE_ROUNDS} rounds in {:.1} s, {before} descriptors before and after; \
         {} kicks within a vCPU's destruction, {} after",
        start.elapsed().as_secs_f64(),
        kicks.during,
        kicks.after
    );
    Ok(())
}
