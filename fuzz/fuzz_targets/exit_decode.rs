//! Exit records and syndrome decoding: `ExitRecord` <-> `VcpuExit`, `DebugEventRecord` <->
//! `DebugEvent`, `mmio::DataAbort::decode` with the values a load or store moves,
//! `systrap::SysRegAccess::decode`, and `debug::guest_syndrome`.
//!
//! Invariants, for any input:
//! - nothing panics;
//! - a decoded exit (or debug event) re-encodes to a record that decodes to the same exit, and a
//!   record in canonical form (unused arguments zero, every field within the width it decodes
//!   to) comes back as the same record;
//! - a record of a kind this side does not know decodes as `Unknown` with its kind and arguments
//!   intact;
//! - a well-formed exit (MMIO length up to 8, bytes past it zero, no `Unknown` that reuses a known
//!   number) survives the trip through its record unchanged;
//! - a data abort is classified by S1PTW, then CM, then ISV, and the fields decoded from an
//!   access's ISS re-encode to exactly those ISS bits; a store moves the low `len` bytes of its
//!   register, a load zero- or sign-extends them to the register's width;
//! - a trapped MSR/MRS decodes to the register, Rt and direction its ISS names;
//! - the syndrome given to the guest differs from the hardware's only in the exception class, and
//!   only from a lower-EL debug class to its current-EL one.
#![no_main]

use accel_api::{
    abi::{debug_event_kind, exit_kind, DebugEventRecord, ExitRecord},
    abi_stable::std_types::RVec,
    debug::DebugEvent,
    DebugExit, MmioAccess, SystemEventKind, VcpuExit,
};

use accel_kit::{
    guest_debug::guest_syndrome,
    mmio::{DataAbort, MmioInstruction},
    systrap::SysRegAccess,
};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

/// An exit built from parts, made well-formed before it is used.
#[derive(Arbitrary, Debug)]
enum ExitSpec {
    MmioRead { addr: u64, len: u8 },
    MmioWrite { addr: u64, len: u8, data: [u8; 8] },
    SystemEvent { kind: u32, data: Vec<u64> },
    Debug { esr: u64, far: u64, pc: u64 },
    InternalError { suberror: u32, data: Vec<u64> },
    FailEntry { reason: u64, cpu: u32 },
    ArmNisv { esr_iss: u64, fault_ipa: u64 },
    Interrupted,
    BackendSpecific { reason: u32 },
    Unknown { kind: u32, args: [u64; 6] },
}

#[derive(Arbitrary, Debug)]
struct Input {
    kind: u32,
    args: [u64; 6],
    data: Vec<u64>,
    exit: ExitSpec,
    event_kind: u32,
    event_args: [u64; 4],
    esr: u64,
    pstate: u64,
    xt: u64,
    loaded: u64,
}

const KNOWN_EXITS: std::ops::RangeInclusive<u32> = exit_kind::MMIO_READ..=exit_kind::BACKEND_SPECIFIC;
const KNOWN_EVENTS: std::ops::RangeInclusive<u32> = debug_event_kind::HW_BREAKPOINT..=debug_event_kind::GUEST;

fn fits_u32(v: u64) -> bool {
    u32::try_from(v).is_ok()
}

/// Whether every argument from `from` on is zero.
fn zero_from(args: &[u64], from: usize) -> bool {
    args[from..].iter().all(|a| *a == 0)
}

/// The mask of the low `len` bytes.
fn byte_mask(len: u64) -> u64 {
    if len >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * len)) - 1
    }
}

/// True when `record` is the one encoding of the exit it decodes to.
fn canonical_exit(r: &ExitRecord) -> bool {
    use exit_kind::*;
    let a = &r.args;
    let no_data = r.data.is_empty();
    match r.kind {
        MMIO_READ => a[1] <= 8 && zero_from(a, 2) && no_data,
        MMIO_WRITE => a[1] <= 8 && a[2] & !byte_mask(a[1]) == 0 && zero_from(a, 3) && no_data,
        SYSTEM_EVENT | INTERNAL_ERROR => fits_u32(a[0]) && zero_from(a, 1),
        DEBUG => zero_from(a, 3) && no_data,
        FAIL_ENTRY => fits_u32(a[1]) && zero_from(a, 2) && no_data,
        ARM_NISV => zero_from(a, 2) && no_data,
        INTERRUPTED => zero_from(a, 0) && no_data,
        BACKEND_SPECIFIC => fits_u32(a[0]) && zero_from(a, 1) && no_data,
        _ => no_data,
    }
}

fn check_exit_record(kind: u32, args: [u64; 6], data: Vec<u64>) {
    let record = ExitRecord { kind, args, data: RVec::from(data) };
    let exit = VcpuExit::from(record.clone());
    if !KNOWN_EXITS.contains(&kind) {
        assert_eq!(exit, VcpuExit::Unknown { kind, args }, "an unknown kind keeps its number and arguments");
    }
    let again = ExitRecord::from(exit.clone());
    assert_eq!(VcpuExit::from(again.clone()), exit, "a decoded exit re-encodes to a record of the same exit");
    assert_eq!(ExitRecord::from(VcpuExit::from(again.clone())), again, "re-encoding is stable");
    if canonical_exit(&record) {
        assert_eq!(again, record, "a canonical record comes back unchanged");
    }
}

fn well_formed(spec: ExitSpec) -> VcpuExit {
    let access = |addr: u64, len: u8, data: [u8; 8]| {
        let len = u32::from(len % 9);
        let mut bytes = [0u8; 8];
        bytes[..len as usize].copy_from_slice(&data[..len as usize]);
        MmioAccess { addr, len, data: bytes }
    };
    match spec {
        ExitSpec::MmioRead { addr, len } => VcpuExit::MmioRead(access(addr, len, [0; 8])),
        ExitSpec::MmioWrite { addr, len, data } => VcpuExit::MmioWrite(access(addr, len, data)),
        ExitSpec::SystemEvent { kind, data } => VcpuExit::SystemEvent { kind: SystemEventKind(kind), data },
        ExitSpec::Debug { esr, far, pc } => VcpuExit::Debug(DebugExit { esr, far, pc }),
        ExitSpec::InternalError { suberror, data } => VcpuExit::InternalError { suberror, data },
        ExitSpec::FailEntry { reason, cpu } => VcpuExit::FailEntry { reason, cpu },
        ExitSpec::ArmNisv { esr_iss, fault_ipa } => VcpuExit::ArmNisv { esr_iss, fault_ipa },
        ExitSpec::Interrupted => VcpuExit::Interrupted,
        ExitSpec::BackendSpecific { reason } => VcpuExit::BackendSpecific { reason },
        // `Unknown` with a known number is another exit's record: not an exit a side makes.
        ExitSpec::Unknown { kind, args } => {
            let kind = if KNOWN_EXITS.contains(&kind) { kind + 1000 } else { kind };
            VcpuExit::Unknown { kind, args }
        }
    }
}

fn check_debug_event_record(kind: u32, args: [u64; 4]) {
    use debug_event_kind::*;
    let record = DebugEventRecord { kind, args };
    let event = DebugEvent::from(record);
    if !KNOWN_EVENTS.contains(&kind) {
        assert_eq!(
            event,
            DebugEvent::Unknown { kind, args },
            "an unknown event keeps its number and arguments"
        );
    }
    let again = DebugEventRecord::from(event);
    assert_eq!(DebugEvent::from(again), event, "a decoded event re-encodes to a record of the same event");
    let canonical = match kind {
        HW_BREAKPOINT | SW_BREAKPOINT => zero_from(&args, 1),
        WATCHPOINT => fits_u32(args[2]),
        STEP | GUEST => zero_from(&args, 0),
        _ => true,
    };
    if canonical {
        assert_eq!(again, record, "a canonical debug event record comes back unchanged");
    }
}

const ISV: u64 = 1 << 24;
const S1PTW: u64 = 1 << 7;
const CM: u64 = 1 << 8;
/// The ISS bits an access's fields come from: SAS, SSE, SRT, SF and WnR.
const ACCESS_FIELDS: u64 = 3 << 22 | 1 << 21 | 31 << 16 | 1 << 15 | 1 << 6;

fn check_data_abort(esr: u64, xt: u64, loaded: u64) {
    let iss = esr & 0x1ff_ffff;
    match DataAbort::decode(esr) {
        DataAbort::TableWalk { iss: i } => assert!(i == iss && iss & S1PTW != 0),
        DataAbort::Maintenance { iss: i } => assert!(i == iss && iss & S1PTW == 0 && iss & CM != 0),
        DataAbort::NoSyndrome { iss: i } => assert!(i == iss && iss & (S1PTW | CM | ISV) == 0),
        DataAbort::Access(a) => {
            assert!(iss & ISV != 0 && iss & (S1PTW | CM) == 0, "only ISV = 1 describes an access");
            check_access(&a, iss, xt, loaded);
        }
    }
}

fn check_access(a: &MmioInstruction, iss: u64, xt: u64, loaded: u64) {
    assert!(matches!(a.len, 1 | 2 | 4 | 8), "access size {}", a.len);
    let encoded = u64::from(a.len.trailing_zeros()) << 22
        | u64::from(a.sign_extend) << 21
        | u64::from(a.srt) << 16
        | u64::from(a.sixty_four) << 15
        | u64::from(a.write) << 6;
    assert_eq!(encoded, iss & ACCESS_FIELDS, "the decoded fields are the ISS's, no more, no less");
    assert_eq!(a.register(), (a.srt != 31).then_some(a.srt));

    let mask = byte_mask(u64::from(a.len));
    let stored = a.store_value(xt);
    assert_eq!(stored, if a.srt == 31 { 0 } else { xt & mask }, "a store moves the low bytes of Rt");

    let raw = loaded & mask;
    let negative = a.len < 8 && raw >> (8 * a.len - 1) & 1 == 1;
    let extended = if a.sign_extend && negative { raw | !mask } else { raw };
    let want = if a.sixty_four { extended } else { extended & 0xffff_ffff };
    assert_eq!(a.load_value(loaded), want, "a load of {a:?}");
}

fn check_sysreg_trap(esr: u64, xt: u64) {
    let access = SysRegAccess::decode(esr);
    let field = |lsb: u32, width: u32| ((esr >> lsb) & ((1 << width) - 1)) as u8;
    let want = (field(20, 2), field(14, 3), field(10, 4), field(1, 4), field(17, 3));
    assert_eq!(access.reg.fields(), Some(want), "op0, op1, CRn, CRm, op2 from the ISS");
    assert_eq!(access.rt, field(5, 5));
    assert_eq!(access.read, esr & 1 == 1);
    assert_eq!(access.written(xt), if access.rt == 31 { 0 } else { xt });
}

fn check_guest_syndrome(esr: u64, pstate: u64) {
    const EC: u64 = 0x3f << 26;
    let out = guest_syndrome(esr, pstate);
    assert_eq!(out & !EC, esr & !EC, "only the exception class may change");
    let (before, after) = (esr >> 26 & 0x3f, out >> 26 & 0x3f);
    if before != after {
        assert!(matches!(before, 0x30 | 0x32 | 0x34), "EC {before:#x} changed");
        assert_eq!(after, before + 1, "a lower-EL class becomes its current-EL class");
        assert_eq!(pstate & 0x10, 0, "only an exception from AArch64 changes class");
    }
    let mode = pstate & 0x1f;
    if matches!(before, 0x30 | 0x32 | 0x34) && matches!(mode, 0b0100 | 0b0101) {
        assert_eq!(after, before + 1, "from EL1 the guest sees its current-EL class");
    }
    if mode == 0 {
        assert_eq!(after, before, "from EL0 the class stays lower-EL");
    }
}

fuzz_target!(|input: Input| {
    check_exit_record(input.kind, input.args, input.data);
    let exit = well_formed(input.exit);
    assert_eq!(VcpuExit::from(ExitRecord::from(exit.clone())), exit, "a well-formed exit round-trips");
    check_debug_event_record(input.event_kind, input.event_args);
    check_data_abort(input.esr, input.xt, input.loaded);
    check_sysreg_trap(input.esr, input.xt);
    check_guest_syndrome(input.esr, input.pstate);
});
