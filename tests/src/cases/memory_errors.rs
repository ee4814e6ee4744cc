//! Hardware memory errors: a guest load from a poisoned RAM page becomes a synchronous external
//! abort in the guest, as the host's SIGBUS handling delivers it.

use crate::{Case, CaseResult, Context, Failure};

pub fn cases() -> Vec<Case> {
    crate::case_list![memory_errors: poisoned_ram_becomes_an_sea]
}

/// Only Linux poisons a page on request (`MADV_HWPOISON`) and reports the error as `SIGBUS`.
#[cfg(not(target_os = "linux"))]
fn poisoned_ram_becomes_an_sea(_: &Context) -> CaseResult {
    Err(Failure::NotRun("poisoning a page and its SIGBUS report exist only on Linux".into()))
}

#[cfg(target_os = "linux")]
fn poisoned_ram_becomes_an_sea(ctx: &Context) -> CaseResult {
    use accel_host::vmm::memory_error::{self, MemoryErrorKind};

    use crate::{
        asm::{self, Size},
        ensure,
        guest::{TestGuest, CODE, DATA, RAM_BASE},
    };

    memory_error::install();
    let mut code = asm::mov_imm64(10, DATA);
    let load_at = CODE + 4 * code.len() as u64;
    code.extend([asm::ldr(Size::X, 1, 10, 0), asm::b(0)]);
    let mut g = TestGuest::new(&ctx.accelerator()?, &code)?;
    let page = g.ram.host_addr()? + (DATA - RAM_BASE);
    g.ram.write(DATA, &[1; 8])?;
    // MADV_HWPOISON may report the error to its caller as action required, on the call's return
    // as KVM_RUN does (not at a faulting access): marked as such, it is recorded.
    // SAFETY: the page belongs to the guest RAM this case owns; poisoning it makes later accesses
    // fault, and only the guest touches it again.
    let rc = memory_error::in_run(|| unsafe {
        libc::madvise(page as *mut libc::c_void, 4096, libc::MADV_HWPOISON)
    });
    if rc != 0 {
        return Err(Failure::NotRun(format!(
            "this kernel cannot poison a page (MADV_HWPOISON: {})",
            std::io::Error::last_os_error()
        )));
    }
    let exit = memory_error::in_run(|| g.vcpu.run())?;
    let error = memory_error::take_pending()
        .ok_or_else(|| Failure::Fail(format!("no memory error was signalled; the load gave {exit:?}")))?;
    ensure!(
        error.kind == MemoryErrorKind::ActionRequired,
        "the error is {:?}, expected action required",
        error.kind
    );
    ensure!(
        g.ram.host_to_guest(error.host_addr) == Some(DATA),
        "the error is at host {:#x}, not the poisoned page",
        error.host_addr
    );
    memory_error::inject_sea(&mut g.vcpu)?;
    let taken = g.expect_exception()?;
    ensure!(
        taken.esr == 0x9600_0410,
        "ESR_EL1 {:#x}: expected a synchronous external abort (0x96000410)",
        taken.esr
    );
    ensure!(taken.elr == load_at, "ELR_EL1 {:#x}, expected the load at {load_at:#x}", taken.elr);
    Ok(())
}
