//! gdb's view of a stop: the packets gdb 13 sends around a `stepi`, a `continue` to a
//! breakpoint and a `continue` to a watchpoint (captured with `cargo xtask gdb-e2e --session
//! gdb-packets`), replayed over TCP against accel-host's gdb stub serving a machine on the
//! plugin, each call counted with the stub's `monitor counters`. Set against raw KVM making the
//! fewest calls that could answer the same packets (`raw::RawGuest::gdb_stop`).
//!
//! The stub's stop replies expedite PC, SP, X29, X30, CPSR (and VG with SVE), and gdb 13 then
//! asks for no `g` after a `stepi` or at a watchpoint; at a breakpoint it still does, to show
//! the function's arguments. The `stepi` row with `g` is what a client that asks for every
//! register at each stop costs.

use std::{net::TcpListener, thread::JoinHandle, time::Duration};

use accel_api::{client::Accelerator, VcpuFeatures};
use accel_conformance::asm::{self, Size};
use accel_host::{
    gdb::{serve, GdbAddress, GdbOptions},
    vmm::{Machine, MachineConfig, Outcome, Payload, Plan, RAM_BASE},
};

use crate::{
    gdb_client::GdbClient,
    measure::{on, Calls, Subject},
    Cli, Result, Row,
};

/// Where the loop's watched doubleword is.
const WATCHED: u64 = RAM_BASE + 0x1000;

/// The debuggee: X10 = [`WATCHED`], then a loop that counts in X9 and stores it there.
pub fn code() -> Vec<u32> {
    let mut code = asm::mov_imm64(10, WATCHED);
    code.extend([asm::add_imm(9, 9, 1), asm::str(Size::X, 9, 10, 0), asm::b(-8)]);
    code
}

/// The loop's first instruction, where breakpoints go.
pub fn breakpoint_at() -> u64 {
    RAM_BASE + 4 * (code().len() as u64 - 3)
}

/// The loop's store, where the watchpoint stops.
fn store_at() -> u64 {
    breakpoint_at() + 4
}

/// A stop as gdb asks for it: `what` is sent in order; `vCont` packets must stop the vCPU.
#[derive(Clone, Copy)]
enum Ask {
    Packet(&'static str),
    /// `m` of `len` bytes at an address.
    Mem(u64, usize),
    /// `Z`/`z` (insert or remove) of a breakpoint or watchpoint of a type at an address.
    Point {
        insert: bool,
        kind: u8,
        at: u64,
        len: usize,
    },
}

/// The software breakpoint at [`breakpoint_at`] (gdb's `break`).
fn z0(insert: bool) -> Ask {
    Ask::Point { insert, kind: 0, at: breakpoint_at(), len: 4 }
}

/// The write watchpoint on [`WATCHED`] (gdb's `watch`).
fn z2(insert: bool) -> Ask {
    Ask::Point { insert, kind: 2, at: WATCHED, len: 8 }
}

/// What gdb 13 sends around a `stepi` (the vCPU in the loop), in order: with the registers
/// expedited in the stop reply it sends no `g`; `with_g` adds the `g` a client that asks for
/// every register sends (gdb did before the stub expedited them).
fn stepi(with_g: bool) -> Vec<Ask> {
    let (bp, st) = (breakpoint_at(), store_at());
    let mut asks = vec![Ask::Mem(bp, 4), Ask::Packet("vCont;s:p1.1")];
    if with_g {
        asks.push(Ask::Packet("g"));
    }
    asks.extend([Ask::Mem(st, 4), Ask::Mem(bp, 4), Ask::Mem(st, 4), Ask::Mem(RAM_BASE, 0x40)]);
    asks.extend([Ask::Packet("qfThreadInfo"), Ask::Packet("qsThreadInfo")]);
    asks.extend([Ask::Mem(st, 4), Ask::Mem(bp, 4), Ask::Mem(st, 4)]);
    asks
}

/// A `continue` from the breakpoint back to it: step off, insert, continue, remove. The stop
/// replies carry PC, SP, X29, X30, CPSR and VG, so gdb asks for `g` only at the breakpoint, to
/// show the function's arguments.
fn to_breakpoint() -> Vec<Ask> {
    let bp = breakpoint_at();
    let mut asks = vec![Ask::Mem(bp, 4), Ask::Packet("vCont;s:p1.1")];
    asks.extend([z0(true), Ask::Packet("vCont;c:p1.-1")]);
    asks.extend([Ask::Packet("qfThreadInfo"), Ask::Packet("qsThreadInfo"), z0(false)]);
    asks.extend([Ask::Mem(bp, 4), Ask::Mem(bp - 4, 4), Ask::Mem(bp, 4), Ask::Mem(RAM_BASE, 0x40)]);
    asks.push(Ask::Packet("g"));
    asks
}

/// A `continue` to the watchpoint, and the step over the store gdb makes to see the new value:
/// no `g` at either stop.
fn to_watchpoint() -> Vec<Ask> {
    let mut asks = vec![Ask::Mem(WATCHED, 8), z2(true), Ask::Packet("vCont;c:p1.-1")];
    asks.extend([Ask::Mem(WATCHED, 8), z2(false), Ask::Mem(store_at(), 4)]);
    asks.extend([Ask::Packet("vCont;s:p1.1"), Ask::Mem(WATCHED, 8)]);
    asks.extend([Ask::Packet("qfThreadInfo"), Ask::Packet("qsThreadInfo")]);
    asks
}

fn replay(gdb: &mut GdbClient, asks: &[Ask]) -> Result<()> {
    for ask in asks {
        match ask {
            Ask::Packet(p) if p.starts_with("vCont") => gdb.expect(p, "T05")?,
            Ask::Packet(p) => drop(gdb.ask(p)?),
            Ask::Mem(at, len) => {
                let reply = gdb.ask(&format!("m{at:x},{len:x}"))?;
                if reply.len() != 2 * len {
                    return Err(format!("gdb client: m{at:x},{len:x} answered {reply:?}"));
                }
            }
            Ask::Point { insert, kind, at, len } => {
                let z = if *insert { 'Z' } else { 'z' };
                gdb.expect(&format!("{z}{kind},{at:x},{len:x}"), "OK")?
            }
        }
    }
    Ok(())
}

/// The stub serving a machine on `accel`, and a client connected to it.
struct Stub {
    gdb: GdbClient,
    served: Option<JoinHandle<accel_api::Result<Outcome>>>,
}

impl Stub {
    fn start(accel: &Accelerator, features: VcpuFeatures) -> Result<Self> {
        let bytes: Vec<u8> = code().iter().flat_map(|w| w.to_le_bytes()).collect();
        let config = MachineConfig { cpus: 1, mem_size: 16 << 20, features, cmdline: String::new() };
        let plan =
            Plan::new(config, Payload::Image(bytes), &accel.probe().caps).map_err(|e| e.to_string())?;
        let machine = Machine::build(accel, plan, Box::new(std::io::sink())).map_err(|e| e.to_string())?;
        // A free port: the listener is dropped just before the stub binds it.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        let address = format!("127.0.0.1:{port}");
        let options = GdbOptions {
            address: GdbAddress::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], port))),
            wait: true,
            about: String::new(),
            idle_timeout: None,
        };
        let served = std::thread::spawn(move || serve(machine, &options, None));
        let mut gdb = GdbClient::connect(&address, Duration::from_secs(30))?;
        gdb.ask("qSupported:multiprocess+;swbreak+;hwbreak+;vContSupported+")?;
        gdb.expect("?", "T")?;
        Ok(Self { gdb, served: Some(served) })
    }

    fn calls(&mut self) -> Calls {
        let text = self.gdb.monitor("counters").unwrap_or_default();
        let number = |word: &str| -> f64 {
            let mut words = text.split_whitespace();
            let mut last = "";
            for w in words.by_ref() {
                if w.trim_end_matches(',') == word {
                    return last.parse().unwrap_or(f64::NAN);
                }
                last = w;
            }
            f64::NAN
        };
        Calls { reads: number("reads"), writes: number("writes"), runs: number("runs") }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.gdb.ask("vKill;1");
        if let Some(served) = self.served.take() {
            let _ = served.join();
        }
    }
}

fn stub_subject<'a>(s: &'a mut Stub, asks: &'a [Ask]) -> impl Subject + 'a {
    on(s, move |s: &mut Stub| replay(&mut s.gdb, asks), Stub::calls)
}

/// The gdb rows: each replayed on the stub, against raw KVM's floor where KVM runs.
pub fn rows(accel: &Accelerator, features: VcpuFeatures, cli: &Cli) -> Result<Vec<Row>> {
    let sve = features.contains(VcpuFeatures::SVE);
    let mut stub = Stub::start(accel, features)?;
    let mut floor = floor::guest(sve);
    let mut rows = Vec::new();
    let (step, step_with_g) = (stepi(false), stepi(true));
    for (what, asks, kind) in [
        (crate::ROWS[7], &step, floor::Stop::StepExpedited),
        (crate::ROWS[8], &step_with_g, floor::Stop::Step),
    ] {
        let mut s = stub_subject(&mut stub, asks);
        let mut f = floor.as_mut().map(|g| floor::subject(g, kind)).transpose()?;
        crate::row(&mut rows, cli, what, f.as_mut().map(|s| s as &mut dyn Subject), None, &mut s)?;
    }
    // To the breakpoint once, so that each repetition starts on it.
    replay(&mut stub.gdb, &[z0(true), Ask::Packet("vCont;c:p1.-1"), z0(false)])?;
    let asks = to_breakpoint();
    {
        let mut s = stub_subject(&mut stub, &asks);
        let mut f = floor.as_mut().map(|g| floor::subject(g, floor::Stop::Breakpoint)).transpose()?;
        crate::row(&mut rows, cli, crate::ROWS[9], f.as_mut().map(|s| s as &mut dyn Subject), None, &mut s)?;
    }
    let asks = to_watchpoint();
    {
        let mut s = stub_subject(&mut stub, &asks);
        let mut f = floor.as_mut().map(|g| floor::subject(g, floor::Stop::Watchpoint)).transpose()?;
        crate::row(&mut rows, cli, crate::ROWS[10], f.as_mut().map(|s| s as &mut dyn Subject), None, &mut s)?;
    }
    Ok(rows)
}

/// Raw KVM answering gdb with the fewest calls, where KVM runs.
#[cfg(all(target_os = "linux", target_arch = "aarch64"))]
mod floor {
    pub use crate::raw::{GdbStop as Stop, RawGuest};
    use crate::{
        measure::{on, Calls, Subject},
        Result,
    };

    /// The debuggee on raw KVM, or `None` (said why) when it does not start.
    pub fn guest(sve: bool) -> Option<RawGuest> {
        let image = [(accel_host::vmm::RAM_BASE, super::code())];
        let base = accel_host::vmm::RAM_BASE;
        match RawGuest::new(base, 16 << 20, &image, base, sve) {
            Ok(g) => Some(g),
            Err(e) => {
                println!("the raw KVM floor did not start ({e}); its column stays empty");
                None
            }
        }
    }

    fn counted(g: &mut RawGuest) -> Calls {
        let c = g.calls;
        Calls { reads: c.gets as f64, writes: c.sets as f64, runs: c.runs as f64 }
    }

    /// One stop of `kind`, repeated.
    pub fn subject(g: &mut RawGuest, kind: Stop) -> Result<impl Subject + '_> {
        g.gdb_prepare(kind, super::breakpoint_at(), super::WATCHED)?;
        Ok(on(g, move |g: &mut RawGuest| g.gdb_stop(kind), counted))
    }
}

/// No raw floor off arm64 Linux.
#[cfg(not(all(target_os = "linux", target_arch = "aarch64")))]
mod floor {
    use crate::{measure::Subject, Result};

    /// Nothing: raw KVM needs arm64 Linux.
    pub enum RawGuest {}

    /// The kinds of stop.
    #[derive(Clone, Copy)]
    pub enum Stop {
        Step,
        StepExpedited,
        Breakpoint,
        Watchpoint,
    }

    pub fn guest(_: bool) -> Option<RawGuest> {
        None
    }

    pub fn subject(g: &mut RawGuest, _: Stop) -> Result<Box<dyn Subject + '_>> {
        match *g {}
    }
}
