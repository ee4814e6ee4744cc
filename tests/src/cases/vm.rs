//! The VM layer: the in-kernel GIC delivering SPIs and the timer's PPI, irqfd and ioeventfd,
//! dirty-page logging, several vCPUs with PSCI CPU_ON, kicks from another thread, and PSCI
//! system suspend.

use std::{sync::mpsc, thread, time::Duration};

use accel_api::{
    sysreg::MPIDR_EL1, ErrorKind, GicConfig, IrqLine, SystemEventKind, VcpuConfig, VcpuExit, VcpuFeatures,
    VmConfig,
};
use accel_host::vmm::ram::GuestRam;

use crate::{
    asm::{self, Size},
    ensure,
    guest::{gic_enable, Psci, TestGuest, CODE, MMIO_BASE},
    Case, CaseResult, Context, Failure,
};

pub fn cases() -> Vec<Case> {
    crate::case_list![vm: spi_and_ppi_reach_the_guest, gic_its, ipa_size_selection, timer_interrupt, irqfd_raises_an_spi, irqfd_before_the_first_run, ioeventfd_signals_without_an_exit, dirty_pages_are_the_written_ones, kick_from_another_thread, two_vcpus_with_psci_cpu_on, two_vcpus_with_psci_cpu_on_in_plugin, psci_system_suspend, psci_system_suspend_in_plugin]
}

/// A guest that enables `intids`, says it is ready with a write to MMIO_BASE, runs `then`, and
/// waits for interrupts.
/// Returns the guest and the address of its wait loop.
fn waiting_guest(ctx: &Context, intids: &[u32], then: &[u32]) -> Result<(TestGuest, u64), Failure> {
    let mut code = gic_enable(intids);
    code.extend(asm::mov_imm64(9, MMIO_BASE));
    code.push(asm::str(Size::X, 9, 9, 0));
    code.extend_from_slice(then);
    let wait = CODE + 4 * code.len() as u64;
    code.extend([asm::WFI, asm::b(-4)]);
    let mut g = TestGuest::with_gic(&ctx.accelerator()?, &code)?;
    let (addr, _, _) = g.expect_mmio_write()?;
    ensure!(addr == MMIO_BASE, "the guest's ready write went to {addr:#x}");
    Ok((g, wait))
}

fn expect_irq(g: &mut TestGuest, intid: u32) -> CaseResult {
    let taken = g.expect_exception()?;
    ensure!(taken.offset == 0x280, "vector offset {:#x}: expected 0x280 (IRQ, current EL)", taken.offset);
    ensure!(taken.esr == u64::from(intid), "the guest acknowledged INTID {}, expected {intid}", taken.esr);
    Ok(())
}

fn spi_and_ppi_reach_the_guest(ctx: &Context) -> CaseResult {
    let (mut g, wait) = waiting_guest(ctx, &[37, 20], &[])?;
    g.gic()?.set_irq(IrqLine::spi(5), true)?;
    expect_irq(&mut g, 37)?;
    g.gic()?.set_irq(IrqLine::spi(5), false)?;
    // The guest spins after reporting; let it wait again from the start of its wait loop.
    let mut core = g.core()?;
    core.pc = wait;
    core.pstate &= !(1 << 7); // PSTATE.I clear: IRQs unmasked again
    g.vcpu.put_core(&core, accel_api::PutLevel::RUNTIME)?;
    g.gic()?.set_irq(IrqLine::ppi(0, 20), true)?;
    expect_irq(&mut g, 20)?;
    g.gic()?.set_irq(IrqLine::ppi(0, 20), false)?;
    let err = g.gic()?.set_irq(IrqLine::spi(64), true).err();
    ensure!(err.is_some_and(|e| e.kind == ErrorKind::INVALID_ARGUMENT), "SPI 64 of 64 was accepted");
    Ok(())
}

/// The GIC's ITS (ABI 2.1): a plugin of an older ABI refuses the option by name and keeps the
/// VM usable; a newer one creates the ITS when its probe offers it, and the guest reads its
/// registers (GITS_TYPER.Physical is 1, GITS_IIDR names an implementer) without an exit.
fn gic_its(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let caps = accel.probe().caps;
    let vm = accel.create_vm(&VmConfig::default())?;
    let gic = crate::extension(vm.gic(), "in-kernel GICv3", caps.gic_v3)?;
    let with_its = GicConfig::virt_with_its(64);
    let its_base = with_its.its_base.unwrap_or_default();
    if ctx.plugin.abi_version().minor < 1 || !caps.gic_its {
        let err = gic.create(&with_its).err();
        ensure!(
            err.as_ref().is_some_and(|e| e.kind == ErrorKind::UNSUPPORTED),
            "a GIC with an ITS on a plugin without one (ABI {}, probe says {}): expected unsupported, got {err:?}",
            ctx.plugin.abi_version(),
            caps.gic_its
        );
        gic.create(&GicConfig::virt(64))?;
        vm.create_vcpu(&VcpuConfig::new(0, VcpuFeatures::PSCI_0_2))?;
        return Ok(());
    }
    drop((gic, vm));
    let mut code = asm::mov_imm64(10, its_base);
    code.extend(asm::mov_imm64(9, MMIO_BASE));
    code.extend([
        asm::ldr(Size::W, 1, 10, 0x4), // GITS_IIDR
        asm::ldr(Size::X, 2, 10, 0x8), // GITS_TYPER
        asm::str(Size::X, 1, 9, 0),
        asm::str(Size::X, 2, 9, 8),
        asm::b(0),
    ]);
    let mut g = TestGuest::build(&accel, &code, &VcpuConfig::new(0, VcpuFeatures::PSCI_0_2), Some(with_its))?;
    let (at, _, iidr) = g.expect_mmio_write()?;
    ensure!(at == MMIO_BASE, "the guest's first exit was at {at:#x}, not its report: an ITS read exited");
    ensure!(iidr & 0xfff != 0, "GITS_IIDR {iidr:#x} names no implementer");
    let (_, _, typer) = g.expect_mmio_write()?;
    ensure!(typer & 1 == 1, "GITS_TYPER {typer:#x}: Physical LPIs not supported");
    Ok(())
}

fn ipa_size_selection(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let max = accel.probe().caps.ipa_bits;
    for bits in [40, max] {
        let vm = accel.create_vm(&VmConfig { ipa_bits: bits, ..VmConfig::default() })?;
        vm.create_vcpu(&VcpuConfig::new(0, VcpuFeatures::PSCI_0_2))?;
    }
    for bits in [max + 1, 31] {
        let err = accel.create_vm(&VmConfig { ipa_bits: bits, ..VmConfig::default() }).err();
        ensure!(
            err.as_ref()
                .is_some_and(|e| e.kind == ErrorKind::UNSUPPORTED && e.message.contains(&bits.to_string())),
            "an IPA size of {bits} bits: expected an unsupported error naming it, got {err:?}"
        );
    }
    Ok(())
}

fn timer_interrupt(ctx: &Context) -> CaseResult {
    // The virtual timer's PPI (INTID 27) fires 1000 ticks after CNTV_TVAL_EL0 is written.
    let arm = [
        asm::movz(0, 1000, 0),
        asm::msr(asm::CNTV_TVAL_EL0, 0),
        asm::movz(0, 1, 0),
        asm::msr(accel_api::sysreg::CNTV_CTL_EL0, 0),
        asm::ISB,
    ];
    let (mut g, _) = waiting_guest(ctx, &[27], &arm)?;
    expect_irq(&mut g, 27)
}

/// Linux eventfds on another OS: the backend must not offer them, and the case cannot run.
#[cfg(not(target_os = "linux"))]
fn no_eventfds_here(ctx: &Context) -> CaseResult {
    let vm = ctx.accelerator()?.create_vm(&VmConfig::default())?;
    ensure!(vm.linux_eventfd().is_none(), "the backend offers Linux eventfds on {}", std::env::consts::OS);
    Err(Failure::NotRun("irqfd and ioeventfd are Linux eventfds; this is not Linux".into()))
}

#[cfg(not(target_os = "linux"))]
fn irqfd_raises_an_spi(ctx: &Context) -> CaseResult {
    no_eventfds_here(ctx)
}

#[cfg(not(target_os = "linux"))]
fn irqfd_before_the_first_run(ctx: &Context) -> CaseResult {
    no_eventfds_here(ctx)
}

#[cfg(not(target_os = "linux"))]
fn ioeventfd_signals_without_an_exit(ctx: &Context) -> CaseResult {
    no_eventfds_here(ctx)
}

#[cfg(target_os = "linux")]
fn irqfd_raises_an_spi(ctx: &Context) -> CaseResult {
    use std::os::fd::AsRawFd;

    use vmm_sys_util::eventfd::EventFd;

    let (mut g, _) = waiting_guest(ctx, &[38], &[])?;
    let efd = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Failure::NotRun(format!("eventfd: {e}")))?;
    g.eventfds()?.register_irqfd(efd.as_raw_fd(), 6)?;
    let again = g.eventfds()?.register_irqfd(efd.as_raw_fd(), 6).err();
    ensure!(again.is_some(), "registering the same irqfd twice was accepted");
    efd.write(1).map_err(|e| Failure::Fail(format!("writing the eventfd: {e}")))?;
    expect_irq(&mut g, 38)?;
    g.eventfds()?.unregister_irqfd(efd.as_raw_fd(), 6)?;
    let err = g.eventfds()?.unregister_irqfd(efd.as_raw_fd(), 6).err();
    ensure!(
        err.is_some_and(|e| e.kind == ErrorKind::NOT_FOUND),
        "unregistering twice did not fail as not found"
    );
    Ok(())
}

/// An irqfd registered once the vCPU exists, before it first runs (where a monitor sets up its
/// devices), raises its SPI. KVM accepts irqfds only on an initialised vGIC, and that set-up is
/// otherwise done at the first run.
#[cfg(target_os = "linux")]
fn irqfd_before_the_first_run(ctx: &Context) -> CaseResult {
    use std::os::fd::AsRawFd;

    use vmm_sys_util::eventfd::EventFd;

    let mut code = gic_enable(&[39]);
    code.extend(asm::mov_imm64(9, MMIO_BASE));
    code.extend([asm::str(Size::X, 9, 9, 0), asm::WFI, asm::b(-4)]);
    let mut g = TestGuest::with_gic(&ctx.accelerator()?, &code)?;
    let efd = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| Failure::NotRun(format!("eventfd: {e}")))?;
    g.eventfds()?.register_irqfd(efd.as_raw_fd(), 7)?;
    let (addr, _, _) = g.expect_mmio_write()?;
    ensure!(addr == MMIO_BASE, "the guest's ready write went to {addr:#x}");
    efd.write(1).map_err(|e| Failure::Fail(format!("writing the eventfd: {e}")))?;
    expect_irq(&mut g, 39)
}

#[cfg(target_os = "linux")]
fn ioeventfd_signals_without_an_exit(ctx: &Context) -> CaseResult {
    use std::os::fd::AsRawFd;

    use vmm_sys_util::eventfd::EventFd;

    let any = MMIO_BASE + 0x200;
    let matched = MMIO_BASE + 0x300;
    let mut code = asm::mov_imm64(9, MMIO_BASE);
    code.extend(asm::mov_imm64(10, any));
    code.extend(asm::mov_imm64(11, matched));
    code.extend([
        asm::str(Size::X, 9, 10, 0), // to the any-size ioeventfd: no exit
        asm::movz(1, 0x1111, 0),
        asm::str(Size::W, 1, 11, 0), // datamatch 0x1234 does not match: an MMIO exit
        asm::movz(1, 0x1234, 0),
        asm::str(Size::W, 1, 11, 0), // matches: no exit
        asm::str(Size::X, 9, 9, 0),  // done
        asm::b(0),
    ]);
    let mut g = TestGuest::new(&ctx.accelerator()?, &code)?;
    let (e_any, e_match) = match (EventFd::new(libc::EFD_NONBLOCK), EventFd::new(libc::EFD_NONBLOCK)) {
        (Ok(a), Ok(b)) => (a, b),
        _ => return Err(Failure::NotRun("eventfd creation failed".into())),
    };
    g.eventfds()?.register_ioeventfd(e_any.as_raw_fd(), any, 0, None)?;
    g.eventfds()?.register_ioeventfd(e_match.as_raw_fd(), matched, 4, Some(0x1234))?;
    let err = g.eventfds()?.register_ioeventfd(e_any.as_raw_fd(), any + 8, 3, Some(1)).err();
    ensure!(err.is_some_and(|e| e.kind == ErrorKind::INVALID_ARGUMENT), "a 3-byte ioeventfd was accepted");
    let first = g.expect_mmio_write()?;
    ensure!(
        first == (matched, 4, 0x1111),
        "first exit {first:x?}: expected the unmatched write at {matched:#x}"
    );
    let second = g.expect_mmio_write()?;
    ensure!(second.0 == MMIO_BASE, "second exit {second:x?}: expected the done write");
    ensure!(e_any.read().ok() == Some(1), "the any-size ioeventfd was not signalled once");
    ensure!(e_match.read().ok() == Some(1), "the datamatch ioeventfd was not signalled once");
    g.eventfds()?.unregister_ioeventfd(e_any.as_raw_fd(), any, 0, None)?;
    g.eventfds()?.unregister_ioeventfd(e_match.as_raw_fd(), matched, 4, Some(0x1234))?;
    Ok(())
}

/// The pages, in the backend's own page size, are those the guest wrote.
fn dirty_pages_are_the_written_ones(ctx: &Context) -> CaseResult {
    const DATA_BASE: u64 = 0x5000_0000;
    const PAGES: u64 = 64;
    let accel = ctx.accelerator()?;
    let page = accel.probe().caps.page_size.max(4096);
    let written = [3u64, 7, 8, 63];
    let mut code = Vec::new();
    for (i, p) in written.iter().enumerate() {
        code.extend(asm::mov_imm64(10 + i as u32, DATA_BASE + p * page + 8 * i as u64));
        code.push(asm::str(Size::X, 10 + i as u32, 10 + i as u32, 0));
    }
    // A read does not dirty a page.
    code.extend(asm::mov_imm64(20, DATA_BASE + 10 * page));
    code.push(asm::ldr(Size::X, 21, 20, 0));
    code.extend(asm::mov_imm64(9, MMIO_BASE));
    code.extend([asm::str(Size::X, 9, 9, 0), asm::b(0)]);
    let mut g = TestGuest::new(&accel, &code)?;
    let data = GuestRam::new(DATA_BASE, PAGES * page)?;
    // SAFETY: `data` outlives the guest's last run in this case.
    let slot = unsafe { data.map_into(&g.vm) }?;
    let err = g.dirty_log()?.take(slot).err();
    ensure!(err.is_some_and(|e| e.kind == ErrorKind::BAD_STATE), "a dirty log was given with logging off");
    g.dirty_log()?.set(slot, true)?;
    let clean = g.dirty_log()?.take(slot)?;
    ensure!(clean.iter().all(|w| *w == 0), "pages dirty before the guest ran: {clean:x?}");
    g.expect_mmio_write()?;
    let log = g.dirty_log()?.take(slot)?;
    let dirty: Vec<u64> =
        (0..PAGES).filter(|p| log.get((p / 64) as usize).is_some_and(|w| w >> (p % 64) & 1 == 1)).collect();
    ensure!(dirty == written, "dirty pages {dirty:?}, the guest wrote {written:?}");
    let again = g.dirty_log()?.take(slot)?;
    ensure!(again.iter().all(|w| *w == 0), "the log was not cleared: {again:x?}");
    drop(g);
    drop(data);
    Ok(())
}

fn kick_from_another_thread(ctx: &Context) -> CaseResult {
    let mut g = TestGuest::new(&ctx.accelerator()?, &[asm::b(0)])?;
    let kicker = g.vcpu.kicker();
    let (tx, rx) = mpsc::channel();
    let helper = thread::spawn(move || {
        thread::sleep(Duration::from_millis(200));
        kicker.kick();
        let _ = tx.send(kicker);
    });
    let exit = g.vcpu.run()?;
    ensure!(exit == VcpuExit::Interrupted, "a kick while the guest spins gave {exit:?}");
    let _ = helper.join();
    // A kick before `run` makes the next `run` return at once.
    let kicker = rx.recv().map_err(|_| Failure::Fail("the helper thread ended without its kicker".into()))?;
    kicker.kick();
    let exit = g.vcpu.run()?;
    ensure!(exit == VcpuExit::Interrupted, "a kick before run gave {exit:?}");
    Ok(())
}

fn two_vcpus_with_psci_cpu_on(ctx: &Context) -> CaseResult {
    cpu_on(ctx, Psci::Default)
}

fn two_vcpus_with_psci_cpu_on_in_plugin(ctx: &Context) -> CaseResult {
    cpu_on(ctx, Psci::InPlugin)
}

fn psci_system_suspend(ctx: &Context) -> CaseResult {
    system_suspend(ctx, Psci::Default)
}

fn psci_system_suspend_in_plugin(ctx: &Context) -> CaseResult {
    system_suspend(ctx, Psci::InPlugin)
}

/// vCPU 0 turns vCPU 1, created powered off, on with PSCI CPU_ON; vCPU 1's `run`, started before,
/// waits until then and runs from the entry point with the context id in X0.
fn cpu_on(ctx: &Context, psci: Psci) -> CaseResult {
    const CPU_ON: u64 = 0xc400_0003;
    let accel = ctx.accelerator()?;
    // None: PSCI in the plugin is not offered, and its refusal was checked instead.
    let Some(mut g) = psci.guest(ctx, &accel, &[asm::b(0)])? else { return Ok(()) };
    let mut second =
        g.vm.create_vcpu(&VcpuConfig::new(1, VcpuFeatures::PSCI_0_2 | VcpuFeatures::POWER_OFF))?;
    let affinity = second.get_reg(MPIDR_EL1)? & 0xff_00ff_ffff;
    // vCPU 0 turns vCPU 1 on at SECONDARY with context id 0x55 and reports CPU_ON's result; vCPU 1
    // writes its X0 (the context id) to MMIO_BASE + 0x40.
    let secondary_at = CODE + 0x800;
    let mut code = asm::mov_imm64(0, CPU_ON);
    code.extend(asm::mov_imm64(1, affinity));
    code.extend(asm::mov_imm64(2, secondary_at));
    code.extend(asm::mov_imm64(3, 0x55));
    code.push(asm::hvc(0));
    code.extend(asm::mov_imm64(9, MMIO_BASE));
    code.extend([asm::str(Size::X, 0, 9, 0x30), asm::b(0)]);
    let mut secondary = asm::mov_imm64(9, MMIO_BASE);
    secondary.extend([asm::str(Size::X, 0, 9, 0x40), asm::b(0)]);
    g.ram.write_code(CODE, &code)?;
    g.ram.write_code(secondary_at, &secondary)?;

    let kicker = second.kicker();
    let (tx, rx) = mpsc::channel();
    let worker = thread::spawn(move || {
        let result = match second.run() {
            Ok(VcpuExit::MmioWrite(a)) => Ok((a.addr, a.value())),
            Ok(VcpuExit::Interrupted) => Err("interrupted before CPU_ON".to_string()),
            Ok(other) => Err(format!("vCPU 1 exited with {other:?}")),
            Err(e) => Err(e.to_string()),
        };
        let _ = tx.send(result);
    });
    let (addr, _, status) = g.expect_mmio_write()?;
    ensure!(
        addr == MMIO_BASE + 0x30 && status == 0,
        "CPU_ON returned {status:#x} (at {addr:#x}); 0 is success"
    );
    let result = rx.recv_timeout(ctx.pace().answer());
    if result.is_err() {
        kicker.kick();
    }
    let _ = worker.join();
    match result {
        Ok(Ok((addr, value))) => {
            ensure!(addr == MMIO_BASE + 0x40 && value == 0x55, "vCPU 1 wrote {value:#x} at {addr:#x}");
            Ok(())
        }
        Ok(Err(why)) => Err(Failure::Fail(why)),
        Err(_) => Err(Failure::Fail("vCPU 1 never ran after CPU_ON".into())),
    }
}

fn system_suspend(ctx: &Context, psci: Psci) -> CaseResult {
    const SYSTEM_SUSPEND: u64 = 0xc400_000e;
    let caps = ctx.accelerator()?.probe().caps;
    let mut code = asm::mov_imm64(0, SYSTEM_SUSPEND);
    code.extend(asm::mov_imm64(1, crate::guest::CODE));
    code.extend([asm::movz(2, 0, 0), asm::hvc(0)]);
    code.extend(asm::mov_imm64(9, MMIO_BASE));
    code.extend([asm::str(Size::X, 0, 9, 0), asm::b(0)]);
    let accel = ctx.accelerator()?;
    // None: PSCI in the plugin is not offered, and its refusal was checked instead.
    let Some(mut g) = psci.guest(ctx, &accel, &code)? else { return Ok(()) };
    match (caps.system_suspend, g.run()?) {
        (true, VcpuExit::SystemEvent { kind, .. }) if kind == SystemEventKind::SUSPEND => Ok(()),
        // Without the capability PSCI answers in the guest: NOT_SUPPORTED (-1) or success.
        (false, VcpuExit::MmioWrite(_)) => Ok(()),
        (offered, other) => Err(Failure::Fail(format!("system suspend offered: {offered}, exit {other:?}"))),
    }
}
