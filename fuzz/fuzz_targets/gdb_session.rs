//! The gdb stub's whole protocol handling, against the host's own target: a machine built by
//! `Machine::build` on an in-process fake backend (`accel_host::fake`), served by the session
//! (its front, `gdbstub`'s state machine, the target over real vCPU threads) to one in-memory
//! client whose bytes the fuzzer writes.
//!
//! The input's first byte picks the machine (bit 0: start stopped, bit 1: SVE, bit 2: two vCPUs)
//! and, with bit 3, the memory mode below; otherwise the rest is a script, one line per piece: `$body` sends a packet with its checksum, `!body`
//! one with a wrong checksum, `^` an interrupt (0x03), `+` and `-` themselves, `%bytes` the bytes
//! as they are; other lines send nothing. (Stray bytes are sent only when asked for: gdbstub
//! scans its whole 64 KiB packet buffer for each one, which under the fuzzer's instrumentation
//! would cost more than everything else a run does.)
//!
//! In the memory mode the rest is memory writes, 4 bytes and data each: `M` or `X` (bit 0 of the
//! first byte), at an offset (the next two bytes) from 4 KiB below RAM's end (so that some cross
//! it), of a length (the fourth byte), with the data that follows, on a stopped machine whose MMU
//! is off.
//!
//! Invariants, for any input:
//! - nothing panics or hangs (a hang is libFuzzer's timeout);
//! - the session survives whatever the client sends: it ends as the client or the user ends it
//!   (kill, monitor reset, or the quit after the client hangs up), never with an error;
//! - everything the stub sends is acknowledgements and whole packets and notifications, each
//!   with its checksum right;
//! - in the memory mode, RAM's last page holds exactly what the writes that lie wholly in RAM
//!   put there, in order (one that crosses RAM's end writes nothing), and each of those, and only
//!   those, is answered `OK`;
//! - only the reply to `qSupported` carries the `QNonStop+` feature the session adds to it (an
//!   error reply quoting a client's packet that ends so aside).
#![no_main]

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use accel_api::VcpuFeatures;
use accel_host::fake::{accelerator, World};
use accel_host::{
    gdb::{packets::checksum, serve_bytes, GdbAddress, GdbOptions},
    vmm::{Machine, MachineConfig, Outcome, Payload, Plan},
};
use libfuzzer_sys::fuzz_target;

/// What the stub writes, kept for checking.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The bytes a script sends.
fn client_bytes(script: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for line in script.split(|b| *b == b'\n') {
        match line.split_first() {
            Some((b'$', body)) | Some((b'!', body)) => {
                let sum = checksum(body).wrapping_add(u8::from(line[0] == b'!'));
                out.push(b'$');
                out.extend(body);
                out.extend(format!("#{sum:02x}").bytes());
            }
            Some((b'^', _)) => out.push(3),
            Some((b'+', _)) => out.push(b'+'),
            Some((b'-', _)) => out.push(b'-'),
            Some((b'%', raw)) => out.extend(raw),
            _ => {}
        }
    }
    out
}

fn hex_digit(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// The packets (and notifications) the stub sent, checked for framing.
fn replies(output: &[u8]) -> Vec<&[u8]> {
    let mut packets = Vec::new();
    let mut at = 0;
    while at < output.len() {
        match output[at] {
            b'+' | b'-' => at += 1,
            lead @ (b'$' | b'%') => {
                let hash = output[at..].iter().position(|b| *b == b'#').map(|h| at + h);
                let hash = hash.unwrap_or_else(|| panic!("{} at {at} has no end", lead as char));
                let body = &output[at + 1..hash];
                let digits = output.get(hash + 1..hash + 3).filter(|d| d.iter().all(|b| hex_digit(*b)));
                let digits = digits.unwrap_or_else(|| panic!("the packet at {at} has no checksum"));
                let sent = u8::from_str_radix(std::str::from_utf8(digits).unwrap_or("x"), 16).ok();
                assert_eq!(sent, Some(checksum(body)), "the checksum of {:?}", String::from_utf8_lossy(body));
                if lead == b'$' {
                    packets.push(body);
                }
                at = hash + 3;
            }
            other => panic!("the stub sent {other:#04x} outside any packet at {at}"),
        }
    }
    packets
}

/// RAM's base and size in this target's machine.
const RAM: (u64, u64) = (0x4000_0000, 1 << 20);

/// The memory mode's packets, and RAM's last page as they leave it when it starts as `page`, and
/// whether each is answered `OK`.
fn memory_writes(ops: &[u8], page: &mut [u8]) -> (Vec<u8>, Vec<bool>) {
    let end = RAM.0 + RAM.1;
    let page_at = end - page.len() as u64;
    let (mut out, mut oks) = (Vec::new(), Vec::new());
    let mut rest = ops;
    while let [kind, hi, lo, len, tail @ ..] = rest {
        let addr = page_at + u64::from(u16::from_be_bytes([*hi, *lo]) % 0x1100);
        let len = usize::from(*len).min(tail.len());
        // Letters only: nothing in them needs escaping, in either packet.
        let data: Vec<u8> = tail[..len].iter().map(|b| b'a' + b % 26).collect();
        rest = &tail[len..];
        let body = if kind & 1 == 0 {
            let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
            format!("M{addr:x},{len:x}:{hex}").into_bytes()
        } else {
            let mut body = format!("X{addr:x},{len:x}:").into_bytes();
            body.extend(&data);
            body
        };
        out.push(b'$');
        out.extend(&body);
        out.extend(format!("#{:02x}", checksum(&body)).bytes());
        let inside = len == 0 || addr + len as u64 <= end;
        if inside && len > 0 {
            let at = (addr - page_at) as usize;
            page[at..at + len].copy_from_slice(&data);
        }
        oks.push(inside);
    }
    (out, oks)
}

fuzz_target!(|data: &[u8]| {
    let Some((&config, script)) = data.split_first() else { return };
    let features = if config & 2 != 0 { VcpuFeatures::SVE } else { VcpuFeatures::NONE };
    let cpus = if config & 4 != 0 { 2 } else { 1 };
    let world = Arc::new(World::default());
    let accel = accelerator(&world).expect("opening the fake backend");
    let machine_config = MachineConfig { cpus, mem_size: 1 << 20, features, cmdline: String::new() };
    let image = Payload::Image(vec![0x1f, 0x20, 0x03, 0xd5, 0x00, 0x00, 0x00, 0x14]);
    let plan = Plan::new(machine_config, image, &accel.probe().caps).expect("planning the machine");
    let machine = Machine::build(&accel, plan, Box::new(std::io::sink())).expect("building the machine");
    let memory_mode = config & 8 != 0;
    let address = GdbAddress::Tcp(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    let wait = config & 1 != 0 || memory_mode;
    let options = GdbOptions { address, wait, about: "fake".into(), idle_timeout: None };
    let sink = Sink::default();
    let ram = Arc::clone(&machine.ram);
    let mut page = vec![0u8; 0x1000];
    let page_at = RAM.0 + RAM.1 - page.len() as u64;
    ram.read(page_at, &mut page).expect("reading RAM's last page");
    let (sent, oks) =
        if memory_mode { memory_writes(script, &mut page) } else { (client_bytes(script), Vec::new()) };
    let outcome = serve_bytes(machine, &options, &sent, Box::new(sink.clone()));
    world.end();
    let outcome = outcome.unwrap_or_else(|e| panic!("the session failed: {e}"));
    assert!(
        matches!(outcome, Outcome::Quit | Outcome::Killed | Outcome::Reset),
        "the session ended with {outcome:?}"
    );
    let output = sink.0.lock().map(|o| o.clone()).unwrap_or_default();
    if memory_mode {
        let mut now = vec![0u8; page.len()];
        ram.read(page_at, &mut now).expect("reading RAM's last page");
        assert!(now == page, "RAM's last page is not what the writes wholly in RAM made it");
        let answered: Vec<bool> = replies(&output).iter().map(|r| *r == b"OK").collect();
        assert_eq!(answered, oks, "which writes are answered OK");
    }
    // An error reply may quote the client's packet, and so end as the client's text did.
    let quoted = |reply: &[u8]| reply.starts_with(b"E.") && sent.windows(10).any(|w| w == b";QNonStop+");
    for reply in replies(&output) {
        if reply.ends_with(b";QNonStop+") && !quoted(reply) {
            assert!(
                reply.starts_with(b"PacketSize="),
                "QNonStop+ added to {:?}",
                String::from_utf8_lossy(reply)
            );
        }
    }
});
