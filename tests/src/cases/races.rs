//! Races between the host's threads and a VM's own bookkeeping: software breakpoints planted and
//! removed while the memory they land in is added, removed and unmapped; and a machine whose
//! build fails after its VM and RAM exist, which must give its error and leave the backend whole.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    thread,
};

use accel_api::{client::Vm, debug::BRK_INSN, ErrorKind, VmConfig};
use accel_host::vmm::{ram::GuestRam, Machine, MachineConfig, Payload, Plan};

use crate::{
    asm::{self, Size},
    ensure,
    guest::{TestGuest, MMIO_BASE},
    Case, CaseResult, Context, Failure,
};

pub fn cases() -> Vec<Case> {
    crate::case_list![races: breakpoints_race_with_memory_removal, a_build_that_fails_late_gives_its_error]
}

/// Where the churned RAM lives in the guest's physical address space.
const CHURNED: u64 = 0x8000_0000;
/// How many times the RAM is added, removed and unmapped.
const ROUNDS: usize = 200;

/// Adds fresh RAM at [`CHURNED`] to `vm`, removes it and unmaps it, `ROUNDS` times.
fn churn(vm: &Vm, done: &AtomicBool) -> CaseResult {
    let result = (|| {
        for _ in 0..ROUNDS {
            let ram = GuestRam::new(CHURNED, 1 << 16)?;
            ram.write_code(CHURNED, &[asm::NOP; 16])?;
            // SAFETY: this VM has no vCPU, and the RAM is removed from it before it is dropped.
            let slot = unsafe { ram.map_into(vm) }?;
            vm.remove_memory(slot)?;
            drop(ram);
        }
        Ok(())
    })();
    done.store(true, Ordering::Release);
    result
}

/// While one thread adds, removes and unmaps a region over and over, another plants and removes
/// a software breakpoint in it: every insert and remove either works on mapped memory or fails
/// cleanly because the region is absent, and the process survives (an access after the unmap
/// would end it with SIGSEGV).
fn breakpoints_race_with_memory_removal(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let vm = accel.create_vm(&VmConfig::default())?;
    let debug = crate::extension(vm.debug(), "guest debug", false)?;
    let at = CHURNED + 0x10;
    let done = AtomicBool::new(false);
    let (mut planted, mut refused) = (0u64, 0u64);
    thread::scope(|s| -> CaseResult {
        let churner = s.spawn(|| churn(&vm, &done));
        let mut tries = || -> CaseResult {
            while !done.load(Ordering::Acquire) {
                ctx.progress.tick();
                match debug.insert_sw_breakpoint(at, at) {
                    Ok(()) => planted += 1,
                    Err(e) if e.kind == ErrorKind::INVALID_ARGUMENT => {
                        refused += 1;
                        continue;
                    }
                    Err(e) => return Err(Failure::Fail(format!("planting: {e} [{}]", e.kind))),
                }
                // The region may have gone, or come back fresh, since: then the remove fails
                // cleanly, and clearing the pool drops the breakpoint.
                if let Err(e) = debug.remove_sw_breakpoint(at) {
                    ensure!(
                        matches!(e.kind, ErrorKind::INVALID_ARGUMENT | ErrorKind::BAD_STATE),
                        "removing: {e} [{}]",
                        e.kind
                    );
                    if let Err(e) = debug.remove_all() {
                        ensure!(e.kind == ErrorKind::INVALID_ARGUMENT, "clearing: {e} [{}]", e.kind);
                    }
                }
            }
            Ok(())
        };
        let tried = tries();
        let churned = churner.join().map_err(|_| Failure::Fail("the churning thread panicked".into()))?;
        churned?;
        tried
    })?;
    // A plugin before ABI 2.2 cannot show its pool; the planting below checks it still works.
    if ctx.plugin.abi_version().minor >= 2 {
        let program = debug.program(0)?;
        ensure!(
            program.sw_breakpoints.is_empty(),
            "breakpoints left in the pool after {planted} planted and {refused} refused: {:x?}",
            program.sw_breakpoints
        );
    }
    // With the region back, a breakpoint is planted and removed in it as usual.
    let ram = GuestRam::new(CHURNED, 1 << 16)?;
    ram.write_code(CHURNED, &[asm::NOP; 16])?;
    // SAFETY: this VM has no vCPU, and it is dropped below, before the RAM.
    unsafe { ram.map_into(&vm) }?;
    debug.insert_sw_breakpoint(at, at)?;
    let mut word = [0u8; 4];
    ram.read(at, &mut word)?;
    ensure!(u32::from_le_bytes(word) == BRK_INSN, "the breakpoint is not in memory");
    debug.remove_sw_breakpoint(at)?;
    ram.read(at, &mut word)?;
    ensure!(u32::from_le_bytes(word) == asm::NOP, "the instruction was not restored");
    drop(debug);
    drop(vm);
    Ok(())
}

/// A machine whose payload fails to load, after its VM, RAM, GIC and vCPUs exist, gives that
/// error and drops them in order (the VM before its RAM); the backend then builds a guest that
/// runs.
fn a_build_that_fails_late_gives_its_error(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let caps = accel.probe().caps;
    // The ELF magic and nothing of a header: the plan takes it, the loader refuses it.
    let mut image = b"\x7fELF".to_vec();
    image.resize(64, 0);
    let config =
        MachineConfig { cpus: 1, mem_size: 16 << 20, features: Default::default(), cmdline: String::new() };
    let plan = Plan::new(config, Payload::Image(image), &caps)?;
    let err = match Machine::build(&accel, plan, Box::new(std::io::sink())) {
        Ok(_) => return Err(Failure::Fail("a machine with a broken ELF image was built".into())),
        Err(e) => e,
    };
    if err.kind == ErrorKind::UNSUPPORTED {
        return Err(Failure::NotRun(format!("the backend cannot build the machine: {err}")));
    }
    ensure!(err.kind == ErrorKind::INVALID_ARGUMENT, "expected invalid argument, got {err} [{}]", err.kind);
    let message = err.to_string();
    ensure!(
        !message.contains('\n') && message.contains("ELF"),
        "the error is not one line naming the ELF: {message:?}"
    );
    // The backend is whole: a guest runs on it.
    let mut code = asm::mov_imm64(0, 0x5a);
    code.extend(asm::mov_imm64(9, MMIO_BASE));
    code.extend([asm::str(Size::X, 0, 9, 0), asm::b(0)]);
    let mut g = TestGuest::new(&accel, &code)?;
    let (_, _, value) = g.expect_mmio_write()?;
    ensure!(value == 0x5a, "the guest after the failed build reported {value:#x}");
    Ok(())
}
