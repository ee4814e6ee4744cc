//! The guest a real gdb debugs in the end-to-end test: a loop to break in, a function for a
//! hardware breakpoint, a variable to watch, a function whose argument gdb rewrites before the
//! guest reports it, and a spin loop to interrupt.

#![no_std]
#![no_main]

#[path = "../rt.rs"]
mod rt;

use core::arch::global_asm;
use core::hint::black_box;
use core::ptr::{addr_of, addr_of_mut};

/// Watched by gdb: written with 7, read, then written with 9.
#[no_mangle]
pub static mut WATCHED: u64 = 0;

/// Counted up forever at the end.
#[no_mangle]
pub static mut SPIN: u64 = 0;

/// The body of a loop that runs three times.
#[no_mangle]
#[inline(never)]
pub extern "C" fn loop_body(i: u64) -> u64 {
    black_box(i * 2)
}

/// Where gdb puts a hardware breakpoint.
#[no_mangle]
#[inline(never)]
pub extern "C" fn hw_target(a: u64) -> u64 {
    black_box(a + 1)
}

// Six instructions in a row, for a predictable single-step sequence.
global_asm!(
    ".global straight",
    ".type straight, %function",
    "straight:",
    "nop", "nop", "nop", "nop", "nop",
    "ret",
    ".size straight, . - straight"
);

extern "C" {
    fn straight();
}

/// Prints its argument (X0 on entry) through the UART.
#[no_mangle]
#[inline(never)]
pub extern "C" fn report(x: u64) {
    rt::puts("report x0=");
    rt::put_dec(x);
    rt::puts("\n");
}

/// The guest's program.
#[no_mangle]
pub extern "C" fn main() -> ! {
    rt::puts("debuggee: start\n");
    let mut acc = 0;
    for i in 0..3 {
        acc += loop_body(black_box(i));
    }
    hw_target(acc);
    // SAFETY: `straight` only executes NOPs and returns.
    unsafe { straight() };
    // SAFETY: single-threaded guest; gdb watches these accesses: a store of 7, a load, a store
    // of 9.
    unsafe {
        addr_of_mut!(WATCHED).write_volatile(7);
        black_box(addr_of!(WATCHED).read_volatile());
        addr_of_mut!(WATCHED).write_volatile(9);
    }
    report(black_box(1));
    rt::puts("debuggee: spinning\n");
    loop {
        // SAFETY: single-threaded guest.
        unsafe { addr_of_mut!(SPIN).write_volatile(addr_of!(SPIN).read_volatile().wrapping_add(1)) };
    }
}
