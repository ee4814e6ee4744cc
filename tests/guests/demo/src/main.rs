//! The demo guest: runs at EL1 with the MMU off on accel's machine, prints a line through the
//! PL011 UART at 0x0900_0000 and powers off with PSCI SYSTEM_OFF over HVC.

#![no_std]
#![no_main]

use core::{arch::global_asm, panic::PanicInfo};

/// UARTDR of the PL011.
const UART_DR: *mut u32 = 0x0900_0000 as *mut u32;
/// PSCI 0.2 SYSTEM_OFF.
const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
/// PSCI 0.2 SYSTEM_RESET.
const PSCI_SYSTEM_RESET: u64 = 0x8400_0009;

// Entry: enable FP/SIMD at EL1 (CPACR_EL1.FPEN = 0b11), set the stack, clear .bss, call main.
global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    mov     x0, #(3 << 20)
    msr     cpacr_el1, x0
    isb
    ldr     x0, =__stack_top
    mov     sp, x0
    ldr     x0, =__bss_start
    ldr     x1, =__bss_end
1:  cmp     x0, x1
    b.hs    2f
    str     xzr, [x0], #8
    b       1b
2:  bl      main
3:  b       3b
"#
);

fn putc(byte: u8) {
    // SAFETY: UART_DR is the PL011 data register on accel's machine; a volatile 32-bit store is
    // the architected way to transmit a byte.
    unsafe { UART_DR.write_volatile(u32::from(byte)) }
}

fn puts(text: &str) {
    text.bytes().for_each(putc);
}

fn psci(function: u64) -> ! {
    // SAFETY: HVC with a PSCI function id is handled by the hypervisor; SYSTEM_OFF and
    // SYSTEM_RESET do not return.
    unsafe { core::arch::asm!("hvc #0", in("x0") function, options(noreturn)) }
}

/// The guest's program.
#[no_mangle]
pub extern "C" fn main() -> ! {
    puts("Hello from an accel guest\n");
    psci(PSCI_SYSTEM_OFF)
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    puts("guest panic\n");
    psci(PSCI_SYSTEM_RESET)
}
