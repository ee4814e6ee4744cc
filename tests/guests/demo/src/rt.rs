//! The runtime every guest program here shares: entry at EL1 with the MMU off (FP/SIMD enabled,
//! a stack, .bss cleared), the PL011 at 0x0900_0000 for output, and PSCI over HVC. `main` gets
//! the x0 the machine started it with: the device tree's address.

// Each program includes this module and uses part of it.
#![allow(dead_code)]

use core::{arch::global_asm, panic::PanicInfo};

/// UARTDR of the PL011.
const UART_DR: *mut u32 = 0x0900_0000 as *mut u32;
/// PSCI 0.2 SYSTEM_OFF.
pub const PSCI_SYSTEM_OFF: u64 = 0x8400_0008;
/// PSCI 0.2 SYSTEM_RESET.
pub const PSCI_SYSTEM_RESET: u64 = 0x8400_0009;

// Entry: keep x0 (the device tree), enable FP/SIMD at EL1 (CPACR_EL1.FPEN = 0b11), set the
// stack, clear .bss, and call main with the x0 of entry.
global_asm!(
    r#"
    .section .text.boot, "ax"
    .global _start
_start:
    mov     x19, x0
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
2:  mov     x0, x19
    bl      main
3:  b       3b
"#
);

/// Sends one byte to the UART.
pub fn putc(byte: u8) {
    // SAFETY: UART_DR is the PL011 data register on accel's machine; a volatile 32-bit store is
    // the architected way to transmit a byte.
    unsafe { UART_DR.write_volatile(u32::from(byte)) }
}

/// Sends a string to the UART.
pub fn puts(text: &str) {
    text.bytes().for_each(putc);
}

/// Sends `n` in hexadecimal, with `0x`, to the UART.
pub fn put_hex(n: u64) {
    puts("0x");
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        putc(b"0123456789abcdef"[((n >> (4 * i)) & 0xf) as usize]);
    }
}

/// Sends `n` in decimal to the UART.
pub fn put_dec(mut n: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    while len > 0 {
        len -= 1;
        putc(digits[len]);
    }
}

/// Calls PSCI `function`, which does not return (SYSTEM_OFF, SYSTEM_RESET).
pub fn psci(function: u64) -> ! {
    // SAFETY: HVC with a PSCI function id is handled by the hypervisor; SYSTEM_OFF and
    // SYSTEM_RESET do not return.
    unsafe { core::arch::asm!("hvc #0", in("x0") function, options(noreturn)) }
}

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    puts("guest panic\n");
    psci(PSCI_SYSTEM_RESET)
}
