//! Watchpoint range encoding and the debug pool: `debug::watchpoint_registers`,
//! `debug::watch_pieces`, and `DebugPool` driven by a sequence of inserts, removals, steps and
//! exits.
//!
//! Invariants, for any input:
//! - nothing panics;
//! - a watchpoint is never wider or narrower than asked: the DBGWCR/DBGWVR pair produced, decoded
//!   as the hardware reads it (BAS bytes of the doubleword, or a MASK-sized aligned block; the
//!   address compared in VA bits `[52:0]`), watches exactly the asked bytes, with the asked kind
//!   in LSC and nothing else set; a range that one register can watch exactly is never refused;
//! - `watch_pieces` returns pieces that are in order, disjoint, non-empty, cover exactly
//!   `[addr, addr + len)`, number at most `MAX_DEBUG_REGS`, and that one register each encodes;
//! - the pool agrees with a plain model of what was inserted and removed (the same refusals, the
//!   same counts, a generation that moves on every change), the registers it programs decode to
//!   exactly its breakpoints and watchpoints, and an exit is matched only to what the pool holds
//!   and its exception class names.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use accel_api::{
    abi::DebugProgramRecord,
    debug::{DebugEvent, DebugProgram, WatchKind, Watchpoint, BRK_INSN, MAX_DEBUG_REGS},
    ErrorKind,
};

use accel_kit::{
    debug_pool::DebugPool, debug_regs::breakpoint_control, debug_regs::sign_extend_va,
    debug_regs::watch_pieces, debug_regs::watchpoint_registers,
};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Op {
    InsertHw(u64),
    RemoveHw(u64),
    InsertWatch { addr: u64, len: u64, kind: u8 },
    RemoveWatch { addr: u64, len: u64, kind: u8 },
    InsertSw { va: u64, pa: u64, current: u32 },
    RemoveSw { va: u64, current: u32 },
    Step { index: u8, on: bool },
    RemoveAll,
    Exit { index: u8, ec: u8, iss: u32, far: u64, pc: u64 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    addr: u64,
    len: u64,
    kind: u32,
    breakpoints: u8,
    watchpoints: u8,
    ops: Vec<Op>,
}

/// The VA bits a watchpoint compares (`[52:0]`, with FEAT_LVA the most there are).
const VA_BITS: u64 = (1 << 53) - 1;

/// What a DBGWCR/DBGWVR pair watches, as the hardware reads it: the first byte and the length,
/// after checking every field the encoding may not set. Panics on an encoding that is not exact.
fn watched(wcr: u64, wvr: u64) -> (u64, u64, u32) {
    assert_eq!(wcr & 1, 1, "E");
    assert_eq!(wcr >> 1 & 3, 0b11, "PAC: EL0 and EL1");
    let lsc = (wcr >> 3 & 3) as u32;
    assert_ne!(lsc, 0, "LSC 0 is reserved");
    assert_eq!(
        wcr & !(0x1f << 24 | 0xff << 5 | 0x1f),
        0,
        "HMC, SSC, LBN, WT and RES0 bits are clear: {wcr:#x}"
    );
    assert_eq!(wvr & 3, 0, "DBGWVR bits [1:0] are RES0");
    assert_eq!(sign_extend_va(wvr), wvr, "DBGWVR bits [63:53] copy bit 52");
    let mask = wcr >> 24 & 0x1f;
    let bas = (wcr >> 5 & 0xff) as u8;
    if mask != 0 {
        assert!(mask >= 3, "MASK values 1 and 2 are reserved");
        assert_eq!(bas, 0xff, "a masked watchpoint watches every byte of each doubleword");
        let size = 1u64 << mask;
        assert_eq!(wvr & (size - 1), 0, "a masked base is aligned to its size");
        return (wvr, size, lsc);
    }
    assert_ne!(bas, 0, "BAS selects at least one byte");
    let first = bas.trailing_zeros();
    let count = bas.count_ones();
    assert_eq!(u32::from(bas >> first), (1u32 << count) - 1, "BAS {bas:#010b} is contiguous");
    if wvr & 4 != 0 {
        assert!(first + count <= 4, "with DBGWVR[2] set only BAS[3:0] count");
    }
    (wvr + u64::from(first), u64::from(count), lsc)
}

/// Whether one watchpoint register can watch exactly `len` bytes at `addr` (Arm ARM D2.9): up to
/// 8 bytes inside one aligned doubleword, or an aligned power-of-two block of 8 bytes to 2 GiB.
fn exactly_encodable(addr: u64, len: u64) -> bool {
    let in_doubleword = (1..=8).contains(&len) && (addr & 7) + len <= 8;
    let block = len.is_power_of_two() && (8..=1 << 31).contains(&len) && addr.is_multiple_of(len);
    in_doubleword || block
}

fn check_registers(addr: u64, len: u64, kind: WatchKind) {
    match watchpoint_registers(addr, len, kind) {
        Ok((wcr, wvr)) => {
            assert!((1..=3).contains(&kind.0));
            let (start, size, lsc) = watched(wcr, wvr);
            assert_eq!((start & VA_BITS, size), (addr & VA_BITS, len), "watches exactly {addr:#x}+{len}");
            assert_eq!(lsc, kind.0, "LSC is the asked kind");
        }
        Err(e) => {
            assert_eq!(e.kind, ErrorKind::INVALID_ARGUMENT);
            assert!(
                !(1..=3).contains(&kind.0) || !exactly_encodable(addr, len),
                "{addr:#x}+{len} is exactly encodable but was refused: {e}"
            );
        }
    }
}

fn check_pieces(addr: u64, len: u64) {
    let valid = len > 0 && addr.checked_add(len).is_some();
    let Some(pieces) = watch_pieces(addr, len) else {
        assert!(!valid || len > MAX_DEBUG_REGS as u64, "{addr:#x}+{len} refused though it is small");
        return;
    };
    assert!(valid, "an empty or wrapping range was split");
    assert!(!pieces.is_empty() && pieces.len() <= MAX_DEBUG_REGS);
    let mut at = addr;
    for &(a, l) in &pieces {
        assert_eq!(a, at, "pieces follow one another with no gap or overlap");
        assert!(l > 0);
        let (wcr, wvr) = watchpoint_registers(a, l, WatchKind::ACCESS).expect("each piece is encodable");
        let (start, size, _) = watched(wcr, wvr);
        assert_eq!((start & VA_BITS, size), (a & VA_BITS, l));
        at = a + l;
    }
    assert_eq!(at, addr + len, "the pieces end where the range ends");
}

/// What the pool should hold, kept plainly.
#[derive(Default)]
struct Model {
    max_breakpoints: usize,
    max_watchpoints: usize,
    breakpoints: Vec<u64>,
    watchpoints: Vec<Watchpoint>,
    sw: BTreeMap<u64, (u64, u32, u32)>,
    stepping: BTreeSet<u32>,
}

fn kind_of(k: u8) -> WatchKind {
    WatchKind(u32::from(k % 5))
}

fn expect(result: accel_api::Result<()>, want: Result<(), ErrorKind>, what: &str) {
    assert_eq!(result.map_err(|e| e.kind), want, "{what}");
}

fn apply(pool: &mut DebugPool, model: &mut Model, op: &Op) {
    let before = pool.generation();
    let mut changed = false;
    match *op {
        Op::InsertHw(addr) => {
            let want = if addr & 3 != 0 {
                Err(ErrorKind::INVALID_ARGUMENT)
            } else if model.breakpoints.len() >= model.max_breakpoints {
                Err(ErrorKind::NO_RESOURCE)
            } else {
                model.breakpoints.push(addr);
                changed = true;
                Ok(())
            };
            expect(pool.insert_hw_breakpoint(addr), want, "insert hw breakpoint");
        }
        Op::RemoveHw(addr) => {
            let want = match model.breakpoints.iter().position(|a| *a == addr) {
                Some(i) => {
                    model.breakpoints.remove(i);
                    changed = true;
                    Ok(())
                }
                None => Err(ErrorKind::NOT_FOUND),
            };
            expect(pool.remove_hw_breakpoint(addr), want, "remove hw breakpoint");
        }
        Op::InsertWatch { addr, len, kind } => {
            let watch = Watchpoint { addr, len, kind: kind_of(kind) };
            let want = if !(1..=3).contains(&watch.kind.0) || !exactly_encodable(addr, len) {
                Err(ErrorKind::INVALID_ARGUMENT)
            } else if model.watchpoints.len() >= model.max_watchpoints {
                Err(ErrorKind::NO_RESOURCE)
            } else {
                model.watchpoints.push(watch);
                changed = true;
                Ok(())
            };
            expect(pool.insert_watchpoint(watch), want, "insert watchpoint");
        }
        Op::RemoveWatch { addr, len, kind } => {
            let watch = Watchpoint { addr, len, kind: kind_of(kind) };
            let want = match model.watchpoints.iter().position(|w| *w == watch) {
                Some(i) => {
                    model.watchpoints.remove(i);
                    changed = true;
                    Ok(())
                }
                None => Err(ErrorKind::NOT_FOUND),
            };
            expect(pool.remove_watchpoint(watch), want, "remove watchpoint");
        }
        Op::InsertSw { va, pa, current } => {
            let want = if va & 3 != 0 {
                Err(ErrorKind::INVALID_ARGUMENT)
            } else if let Some(bp) = model.sw.get_mut(&va) {
                bp.2 += 1;
                Ok(false)
            } else if current == BRK_INSN {
                Err(ErrorKind::INVALID_ARGUMENT)
            } else {
                model.sw.insert(va, (pa, current, 1));
                changed = true;
                Ok(true)
            };
            assert_eq!(pool.insert_sw_breakpoint(va, pa, current).map_err(|e| e.kind), want, "insert sw");
        }
        Op::RemoveSw { va, current } => {
            let want = match model.sw.get(&va).copied() {
                None => Err(ErrorKind::NOT_FOUND),
                Some((pa, saved, uses)) if uses > 1 => {
                    model.sw.insert(va, (pa, saved, uses - 1));
                    Ok(None)
                }
                Some(_) if current != BRK_INSN => Err(ErrorKind::BAD_STATE),
                Some((pa, saved, _)) => {
                    model.sw.remove(&va);
                    changed = true;
                    Ok(Some((pa, saved)))
                }
            };
            assert_eq!(pool.remove_sw_breakpoint(va, current).map_err(|e| e.kind), want, "remove sw");
        }
        Op::Step { index, on } => {
            let index = u32::from(index % 4);
            changed = if on { model.stepping.insert(index) } else { model.stepping.remove(&index) };
            pool.set_single_step(index, on);
        }
        Op::RemoveAll => {
            let want: Vec<(u64, u32)> = model.sw.values().map(|(pa, saved, _)| (*pa, *saved)).collect();
            *model = Model {
                max_breakpoints: model.max_breakpoints,
                max_watchpoints: model.max_watchpoints,
                ..Model::default()
            };
            changed = true;
            assert_eq!(pool.remove_all(), want, "remove all restores every software breakpoint");
        }
        Op::Exit { index, ec, iss, far, pc } => {
            let index = u32::from(index % 4);
            let ec = ec & 0x3f;
            let esr = u64::from(ec) << 26 | 1 << 25 | u64::from(iss & 0x1ff_ffff);
            check_classify(model, index, ec, far, pc, pool.classify(index, esr, far, pc));
        }
    }
    if changed {
        assert!(pool.generation() > before, "a change moves the generation on");
    }
    assert_eq!(pool.counts(), (model.breakpoints.len(), model.watchpoints.len(), model.sw.len()));
    assert_eq!(pool.sw_addresses(), model.sw.keys().copied().collect::<Vec<_>>());
    for index in 0..4 {
        check_setup(pool, model, index);
    }
}

fn check_classify(model: &Model, index: u32, ec: u8, far: u64, pc: u64, event: DebugEvent) {
    let near = |w: &Watchpoint| w.covers(far) || (far & !7) == (w.addr & !7);
    match event {
        DebugEvent::HwBreakpoint { addr } => {
            assert!(matches!(ec, 0x30 | 0x31) && addr == pc && model.breakpoints.contains(&pc))
        }
        DebugEvent::Step => assert!(matches!(ec, 0x32 | 0x33) && model.stepping.contains(&index)),
        DebugEvent::Watchpoint { watch, accessed } => {
            assert!(matches!(ec, 0x34 | 0x35) && accessed == far);
            assert!(
                model.watchpoints.contains(&watch) && near(&watch),
                "{watch:?} for an access at {far:#x}"
            );
        }
        DebugEvent::SwBreakpoint { addr } => assert!(ec == 0x3c && addr == pc && model.sw.contains_key(&pc)),
        DebugEvent::Guest => {
            let ours = match ec {
                0x30 | 0x31 => model.breakpoints.contains(&pc),
                0x32 | 0x33 => model.stepping.contains(&index),
                0x34 | 0x35 => model.watchpoints.iter().any(near),
                0x3c => model.sw.contains_key(&pc),
                _ => false,
            };
            assert!(!ours, "an exit the pool owns went to the guest");
        }
        DebugEvent::Unknown { .. } => panic!("the pool made an unknown event"),
    }
}

fn check_setup(pool: &DebugPool, model: &Model, index: u32) {
    let setup = pool.setup_for(index);
    assert_eq!(setup.sw_breakpoints, !model.sw.is_empty());
    assert_eq!(setup.hardware, !model.breakpoints.is_empty() || !model.watchpoints.is_empty());
    assert_eq!(setup.single_step, model.stepping.contains(&index));
    for n in 0..MAX_DEBUG_REGS {
        match model.breakpoints.get(n) {
            Some(addr) => {
                assert_eq!(setup.bcr[n], breakpoint_control());
                assert_eq!(setup.bvr[n], sign_extend_va(*addr));
            }
            None => assert_eq!((setup.bcr[n], setup.bvr[n]), (0, 0)),
        }
        match model.watchpoints.get(n) {
            Some(w) => {
                let (start, size, lsc) = watched(setup.wcr[n], setup.wvr[n]);
                assert_eq!((start & VA_BITS, size, lsc), (w.addr & VA_BITS, w.len, w.kind.0), "register {n}");
            }
            None => assert_eq!((setup.wcr[n], setup.wvr[n]), (0, 0)),
        }
    }
    let program = DebugProgram { setup, sw_breakpoints: pool.sw_addresses() };
    assert_eq!(
        DebugProgram::from(&DebugProgramRecord::from(&program)),
        program,
        "the program crosses intact"
    );
}

fuzz_target!(|input: Input| {
    check_registers(input.addr, input.len, WatchKind(input.kind));
    check_pieces(input.addr, input.len);
    let (b, w) = (u32::from(input.breakpoints % 18), u32::from(input.watchpoints % 18));
    let mut pool = DebugPool::new(b, w);
    let mut model = Model {
        max_breakpoints: (b as usize).min(MAX_DEBUG_REGS),
        max_watchpoints: (w as usize).min(MAX_DEBUG_REGS),
        ..Model::default()
    };
    for op in input.ops.iter().take(64) {
        apply(&mut pool, &mut model, op);
    }
});
