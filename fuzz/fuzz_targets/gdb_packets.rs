//! The gdb stub's byte-level pieces: the `Framer` that cuts gdb's bytes into packets, the packet
//! encoders, `parse_vcont`, `Threads::parse`, `StopQueue`, `stop_reply` with expedited registers,
//! and `GdbAddress::parse`.
//!
//! Invariants, for any input:
//! - nothing panics;
//! - the framer agrees with a model of the protocol written here: a byte outside a packet comes
//!   out as itself; a `$` always starts a packet, forgetting one unfinished; a packet whose body
//!   fits the limit comes out once its two checksum characters have arrived, unescaped, judged
//!   valid exactly when they are the body's checksum; one whose body grows past the limit is
//!   reported as too long when it does, and as dropped when it ends;
//! - an encoded packet or notification frames as one valid packet, and decodes (escapes and runs
//!   in one pass, as gdb reads it) to what was encoded; an error reply is printable text;
//! - a parsed `vCont` or thread id, written out again, parses to the same actions or threads;
//! - the stop queue notifies exactly when nothing is outstanding, and hands out stops in order,
//!   as a plain queue does;
//! - a stop reply is printable text that names its thread;
//! - an address is parsed or refused in one line: a bare `PORT` or `:PORT` is 127.0.0.1, a
//!   `unix:` one is a socket at its path, and one with a `/` otherwise is a device at it. (Host
//!   names, which would be looked up, are left out.)
#![no_main]

use std::collections::VecDeque;

use accel_host::gdb::{
    expedite::{vg_field, Expedited},
    nonstop::{action_for, parse_vcont, stop_reply, thread_id, StopQueue, StopReason, ThreadAction, Threads},
    packets::{checksum, error_reply, notification, packet, Frame, Framer},
    z_packet::WatchKind,
    GdbAddress,
};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum QueueOp {
    Push(String),
    Collected,
    Restart(Vec<String>),
}

#[derive(Arbitrary, Debug)]
struct Stop {
    kind: u8,
    index: u32,
    signal: u8,
    addr: u64,
    multiprocess: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    limit: u8,
    stream: Vec<u8>,
    body: String,
    vcont: String,
    thread: String,
    queue: Vec<QueueOp>,
    stop: Stop,
    address: String,
}

/// `body` with its `}` escapes undone; a `}` at the very end escapes nothing.
fn unescape(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = body.iter();
    while let Some(&b) = bytes.next() {
        if b == b'}' {
            out.extend(bytes.next().map(|e| e ^ 0x20));
        } else {
            out.push(b);
        }
    }
    out
}

/// The frames the protocol gives for `input`, scanned as a whole.
fn model(limit: usize, input: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'$' {
            frames.push(Frame::Byte(input[i]));
            i += 1;
            continue;
        }
        let start = i + 1;
        let end = input[start..].iter().position(|b| matches!(b, b'#' | b'$')).map(|p| start + p);
        let body_end = end.unwrap_or(input.len());
        let too_long = body_end - start > limit;
        if too_long {
            frames.push(Frame::TooLong);
        }
        let Some(hash) = end.filter(|e| input[*e] == b'#') else {
            // Unfinished, or restarted by the next `$`.
            i = end.unwrap_or(input.len());
            continue;
        };
        // The two checksum characters; a `$` among them restarts.
        let digits = &input[hash + 1..input.len().min(hash + 3)];
        if let Some(p) = digits.iter().position(|b| *b == b'$') {
            i = hash + 1 + p;
            continue;
        }
        if digits.len() < 2 {
            break;
        }
        if too_long {
            frames.push(Frame::Dropped);
        } else {
            let body = &input[start..hash];
            let sent = std::str::from_utf8(digits).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            frames.push(Frame::Packet { body: unescape(body), valid: sent == Some(checksum(body)) });
        }
        i = hash + 3;
    }
    frames
}

fn check_framer(limit: usize, input: &[u8]) {
    let mut framer = Framer::new(limit);
    let frames: Vec<Frame> = input.iter().filter_map(|b| framer.push(*b)).collect();
    assert_eq!(frames, model(limit, input), "the framer agrees with the protocol");
}

/// An encoded body as gdb reads it: escapes and runs undone in one pass.
fn decode(body: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut at = 0;
    while at < body.len() {
        match body[at] {
            b'}' => {
                out.push(body[at + 1] ^ 0x20);
                at += 2;
            }
            b'*' => {
                let last = *out.last().expect("a run repeats the byte before it");
                let more = usize::from(body[at + 1]) - 29;
                out.extend(std::iter::repeat_n(last, more));
                at += 2;
            }
            b => {
                out.push(b);
                at += 1;
            }
        }
    }
    out
}

fn check_encoders(body: &str) {
    for (lead, encoded) in [(b'$', packet(body)), (b'%', notification(body))] {
        assert_eq!(encoded[0], lead);
        let raw = &encoded[1..encoded.len() - 3];
        assert!(!raw.iter().any(|b| matches!(b, b'$' | b'#')), "no frame character inside a body");
        assert_eq!(decode(raw), body.as_bytes(), "{body:?} decodes to itself");
        let mut as_packet = encoded.clone();
        as_packet[0] = b'$';
        let mut framer = Framer::new(usize::MAX);
        let frames: Vec<Frame> = as_packet.iter().filter_map(|b| framer.push(*b)).collect();
        assert!(matches!(&frames[..], [Frame::Packet { valid: true, .. }]), "{body:?} framed as {frames:?}");
    }
    let e = error_reply(body);
    let text = decode(&e[1..e.len() - 3]);
    assert!(text.starts_with(b"E.01.") && text.iter().all(|b| b.is_ascii_graphic() || *b == b' '));
}

fn thread_text(t: Threads) -> String {
    match t {
        Threads::All => "p1.-1".into(),
        Threads::Any => "0".into(),
        Threads::One(i) => format!("{:x}", u64::from(i) + 1),
    }
}

fn check_threads(id: &str) {
    if let Some(t) = Threads::parse(id) {
        assert_eq!(Threads::parse(&thread_text(t)), Some(t), "{id:?} written out again");
        if let Threads::One(i) = t {
            assert!(t.contains(i) && !t.contains(i.wrapping_add(1)));
        }
    }
}

fn check_vcont(text: &str) {
    let Some(actions) = parse_vcont(text) else { return };
    assert_eq!(actions.len(), text.split(';').count() - 1, "one action per item");
    let written: Vec<String> = actions
        .iter()
        .map(|(a, t)| {
            let a = match a {
                ThreadAction::Continue => 'c',
                ThreadAction::Step => 's',
                ThreadAction::Stop => 't',
            };
            format!("{a}:{}", thread_text(*t))
        })
        .collect();
    let again = format!("vCont;{}", written.join(";"));
    assert_eq!(parse_vcont(&again).as_ref(), Some(&actions), "{text:?} written out as {again:?}");
    for index in [0, 1, 2] {
        let first = actions.iter().find(|(_, t)| t.contains(index)).map(|(a, _)| *a);
        assert_eq!(action_for(&actions, index), first, "the leftmost action naming a thread applies");
    }
}

fn check_queue(ops: Vec<QueueOp>) {
    let mut queue = StopQueue::default();
    let mut model: VecDeque<String> = VecDeque::new();
    for op in ops {
        match op {
            QueueOp::Push(reply) => {
                let want = model.is_empty().then(|| format!("Stop:{reply}"));
                model.push_back(reply.clone());
                assert_eq!(queue.push(reply), want, "a notification only when none is outstanding");
            }
            QueueOp::Collected => {
                model.pop_front();
                assert_eq!(queue.collected(), model.front().cloned().unwrap_or_else(|| "OK".into()));
            }
            QueueOp::Restart(stopped) => {
                model = stopped.clone().into();
                assert_eq!(queue.restart(stopped), model.front().cloned().unwrap_or_else(|| "OK".into()));
            }
        }
    }
}

fn check_stop_reply(s: &Stop) {
    let index = s.index;
    let reason = match s.kind % 7 {
        0 => StopReason::Signal { index, signal: s.signal },
        1 => StopReason::HwBreak(index),
        2 => StopReason::SwBreak(index),
        3 => StopReason::Watch { index, kind: WatchKind::Write, addr: s.addr },
        4 => StopReason::Watch { index, kind: WatchKind::Read, addr: s.addr },
        5 => StopReason::Watch { index, kind: WatchKind::ReadWrite, addr: s.addr },
        _ => StopReason::Exited(s.signal),
    };
    let expedited =
        Expedited { pc: s.addr, sp: !s.addr, x29: s.addr.rotate_left(7), x30: 0, cpsr: s.signal.into() };
    let mut fields = expedited.fields();
    if s.multiprocess {
        fields.push_str(&vg_field(u32::from(s.signal)));
    }
    let reply = stop_reply(&reason, s.multiprocess, &fields);
    assert!(
        reply.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'$' | b'#' | b'}' | b'*')),
        "{reply:?}"
    );
    if reply.starts_with('T') {
        let named = format!("thread:{};", thread_id(index, s.multiprocess));
        assert!(reply.contains(&named), "{reply:?} names vCPU {index}");
        assert!(reply.contains(&fields), "{reply:?} carries the expedited registers {fields:?}");
    }
}

fn check_address(text: &str) {
    let host =
        text.rsplit_once(':').map_or("", |(host, _)| host.trim_start_matches('[').trim_end_matches(']'));
    if !text.starts_with("unix:")
        && !text.contains('/')
        && !host.is_empty()
        && host.parse::<std::net::IpAddr>().is_err()
    {
        return;
    }
    match GdbAddress::parse(text) {
        Err(e) => assert!(!e.is_empty() && !e.contains('\n'), "{text:?}: {e:?}"),
        Ok(GdbAddress::Unix(path)) => {
            assert_eq!(Some(path.as_os_str()), text.strip_prefix("unix:").map(std::ffi::OsStr::new))
        }
        Ok(GdbAddress::Device(path)) => assert_eq!(path.as_os_str(), text),
        Ok(GdbAddress::Tcp(addr)) => {
            let port = text.strip_prefix(':').unwrap_or(text);
            if port.bytes().all(|b| b.is_ascii_digit()) {
                assert_eq!(addr, std::net::SocketAddr::from(([127, 0, 0, 1], addr.port())), "{text:?}");
                assert_eq!(port.parse::<u16>().ok(), Some(addr.port()), "{text:?}");
            }
        }
    }
}

fuzz_target!(|input: Input| {
    check_framer(usize::from(input.limit), &input.stream);
    check_encoders(&input.body);
    check_threads(&input.thread);
    check_vcont(&input.vcont);
    check_queue(input.queue);
    check_stop_reply(&input.stop);
    check_address(&input.address);
});
