//! The guest a real gdb debugs on two vCPUs: vCPU 0 starts vCPU 1 through PSCI CPU_ON, then
//! each counts in a loop of its own, and vCPU 1 also stores into a 16-byte array that a wide
//! watchpoint covers.

#![no_std]
#![no_main]

#[path = "../rt.rs"]
mod rt;

use core::arch::global_asm;
use core::hint::black_box;
use core::ptr::{addr_of, addr_of_mut};

/// PSCI 0.2 CPU_ON, SMC64 calling convention.
const PSCI_CPU_ON: u64 = 0xc400_0003;

/// Counted up by vCPU 0.
#[no_mangle]
pub static mut COUNT0: u64 = 0;

/// Counted up by vCPU 1.
#[no_mangle]
pub static mut COUNT1: u64 = 0;

/// Sixteen bytes, aligned to 16, that vCPU 1 stores into one word at a time.
#[repr(C, align(16))]
pub struct Wide(pub [u32; 4]);

/// Stored into by vCPU 1: word `n % 4` gets `n`.
#[no_mangle]
pub static mut WIDE: Wide = Wide([0; 4]);

/// vCPU 1's stack.
#[repr(C, align(16))]
pub struct Stack(pub [u8; 16384]);

/// The stack vCPU 1 starts on.
#[no_mangle]
pub static mut SECONDARY_STACK: Stack = Stack([0; 16384]);

// vCPU 1's entry from CPU_ON, with the MMU off: FP/SIMD on, its own stack, then Rust.
global_asm!(
    ".global secondary_entry",
    ".type secondary_entry, %function",
    "secondary_entry:",
    "mov x1, #(3 << 20)",
    "msr cpacr_el1, x1",
    "isb",
    "adrp x1, SECONDARY_STACK",
    "add x1, x1, :lo12:SECONDARY_STACK",
    "mov x2, #16384",
    "add x1, x1, x2",
    "mov sp, x1",
    "bl secondary_main",
    "1: b 1b",
    ".size secondary_entry, . - secondary_entry"
);

extern "C" {
    fn secondary_entry();
}

/// One round of vCPU 0's loop.
#[no_mangle]
#[inline(never)]
pub extern "C" fn primary_loop() {
    // SAFETY: only vCPU 0 writes COUNT0; gdb reads it.
    unsafe { addr_of_mut!(COUNT0).write_volatile(addr_of!(COUNT0).read_volatile().wrapping_add(1)) };
}

/// One round of vCPU 1's loop: the count, and a store into `WIDE`.
#[no_mangle]
#[inline(never)]
pub extern "C" fn secondary_loop(n: u64) {
    // SAFETY: only vCPU 1 writes COUNT1 and WIDE; gdb reads and watches them.
    unsafe {
        addr_of_mut!(COUNT1).write_volatile(n);
        addr_of_mut!(WIDE.0[(n % 4) as usize]).write_volatile(n as u32);
    }
}

/// vCPU 1's program.
#[no_mangle]
pub extern "C" fn secondary_main() -> ! {
    let mut n = 0u64;
    loop {
        n = n.wrapping_add(1);
        secondary_loop(black_box(n));
    }
}

/// PSCI CPU_ON for the vCPU with MPIDR affinity `target`, starting at `entry`.
fn cpu_on(target: u64, entry: u64) -> u64 {
    let result: u64;
    // SAFETY: HVC with PSCI CPU_ON is handled by the hypervisor; it returns a status in x0 and
    // touches nothing of this vCPU's state beyond the registers named.
    unsafe {
        core::arch::asm!("hvc #0", inout("x0") PSCI_CPU_ON => result, in("x1") target, in("x2") entry,
            in("x3") 0u64, options(nostack))
    };
    result
}

/// The guest's program.
#[no_mangle]
pub extern "C" fn main() -> ! {
    rt::puts("smp: start\n");
    let status = cpu_on(1, secondary_entry as *const () as usize as u64);
    if status != 0 {
        rt::puts("smp: CPU_ON failed with ");
        rt::put_hex(status);
        rt::puts("\n");
        rt::psci(rt::PSCI_SYSTEM_OFF);
    }
    rt::puts("smp: vCPU 1 started\n");
    loop {
        primary_loop();
    }
}
