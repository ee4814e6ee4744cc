//! The gdb stub's byte-level front: the `Framer` that cuts gdb's bytes into packets, the
//! `ReplyPatch` that extends one reply, the packet encoders, `parse_vcont`, `Threads::parse`,
//! `StopQueue` and `stop_reply`.
//!
//! Invariants, for any input:
//! - nothing panics;
//! - the framer never loses or duplicates a byte: what it has emitted (lone bytes, and each
//!   packet's raw bytes) is the input in order, and what it holds back is the start of one
//!   packet, not yet complete; a complete packet's body is what lies between `$` and `#`, judged
//!   valid exactly when its two hex digits are the body's checksum; an overlong packet goes on
//!   whole, unjudged, as the limit's worth of bytes;
//! - the reply patch changes nothing until it is armed, and then only the one reply that starts
//!   next (unless it is disarmed before that reply starts): that reply goes out with the suffix
//!   before its `#` and the checksum of what it now carries; every other byte passes as it came;
//! - an encoded packet or notification frames as one valid packet whose body unescapes to what
//!   was encoded; an error reply is a valid packet of printable text;
//! - a parsed `vCont` or thread id, written out again, parses to the same actions or threads;
//! - the stop queue notifies exactly when nothing is outstanding, and hands out stops in order,
//!   as a plain queue does;
//! - a stop reply is printable text that names its thread.
#![no_main]

use std::collections::VecDeque;

use accel_host::gdb::{
    nonstop::{action_for, parse_vcont, stop_reply, StopQueue, ThreadAction, Threads},
    packets::{checksum, error_reply, notification, packet, Frame, Framer, ReplyPatch},
};
use arbitrary::Arbitrary;
use gdbstub::{
    common::{Signal, Tid},
    stub::MultiThreadStopReason,
    target::ext::breakpoints::WatchKind,
};
use libfuzzer_sys::fuzz_target;

const SUFFIXES: [&str; 3] = [";QNonStop+", ";x", ""];

#[derive(Arbitrary, Debug)]
enum PatchOp {
    Arm(u8),
    Disarm,
    Write(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum QueueOp {
    Push(String),
    Collected,
    Restart(Vec<String>),
}

#[derive(Arbitrary, Debug)]
struct Stop {
    kind: u8,
    tid: u32,
    signal: u8,
    addr: u64,
    multiprocess: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    limit: u8,
    stream: Vec<u8>,
    patch: Vec<PatchOp>,
    body: String,
    vcont: String,
    thread: String,
    queue: Vec<QueueOp>,
    stop: Stop,
}

fn check_framer(limit: usize, input: &[u8]) {
    let mut framer = Framer::new(limit);
    let mut emitted = Vec::new();
    for &b in input {
        match framer.push(b) {
            None => {}
            Some(Frame::Byte(b)) => {
                assert_ne!(b, b'$', "a packet's start is never a lone byte");
                emitted.push(b);
            }
            Some(Frame::Packet { raw, body, valid }) => {
                assert_eq!(raw[0], b'$');
                let complete =
                    raw.len() >= 4 && raw[raw.len() - 3] == b'#' && !raw[..raw.len() - 3].contains(&b'#');
                if complete {
                    assert_eq!(body, raw[1..raw.len() - 3]);
                    let sent = std::str::from_utf8(&raw[raw.len() - 2..])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    assert_eq!(valid, sent == Some(checksum(&body)), "judged by its checksum");
                } else {
                    assert!(!valid && body.is_empty(), "an overlong packet goes on unjudged");
                    assert_eq!(raw.len(), (limit + 1).max(2), "an overlong packet is cut at the limit");
                    assert!(!raw.contains(&b'#'));
                }
                emitted.extend(raw);
            }
        }
    }
    assert_eq!(emitted[..], input[..emitted.len()], "every byte comes out once, in order");
    let held = &input[emitted.len()..];
    if !held.is_empty() {
        assert_eq!(held[0], b'$', "only a packet's start is held back");
        let hash = held.iter().position(|b| *b == b'#');
        assert!(hash.is_none_or(|h| held.len() < h + 3), "a complete packet is never held back");
        assert!(hash.is_some() || held.len() <= limit.max(1), "an overlong packet is never held back");
    }
}

/// The stream with the reply that starts next after each arm extended by its suffix: the patch's
/// contract, stated over the whole stream, without a patched reply still incomplete at the end.
fn patched(ops: &[PatchOp]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut armed: Option<&str> = None;
    // A patched reply in progress: its body, and the checksum digits seen so far.
    let mut reply: Option<(Vec<u8>, Option<usize>)> = None;
    for op in ops {
        match op {
            PatchOp::Arm(s) => armed = Some(SUFFIXES[*s as usize % SUFFIXES.len()]),
            PatchOp::Disarm if reply.is_none() => armed = None,
            PatchOp::Disarm => {}
            PatchOp::Write(bytes) => {
                for &b in bytes {
                    match (&mut reply, armed) {
                        (None, Some(_)) if b == b'$' => reply = Some((Vec::new(), None)),
                        (None, _) => out.push(b),
                        (Some((_, digits @ None)), _) if b == b'#' => *digits = Some(0),
                        (Some((body, None)), _) => body.push(b),
                        (Some((body, Some(digits))), suffix) => {
                            *digits += 1;
                            if *digits == 2 {
                                let mut body = std::mem::take(body);
                                body.extend(suffix.unwrap_or_default().as_bytes());
                                out.push(b'$');
                                out.extend(&body);
                                out.extend(format!("#{:02x}", checksum(&body)).bytes());
                                reply = None;
                                armed = None;
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn check_patch(ops: &[PatchOp]) {
    let mut patch = ReplyPatch::default();
    let mut out: Vec<u8> = Vec::new();
    let mut input: Vec<u8> = Vec::new();
    let mut armed = false;
    for op in ops {
        match op {
            PatchOp::Arm(s) => {
                armed = true;
                patch.arm(SUFFIXES[*s as usize % SUFFIXES.len()]);
            }
            PatchOp::Disarm => patch.disarm(),
            PatchOp::Write(bytes) => {
                input.extend(bytes);
                out.extend(patch.filter(bytes));
            }
        }
    }
    if !armed {
        assert_eq!(out, input, "an unarmed patch changes nothing");
    }
    assert_eq!(out, patched(ops), "only the reply after an arm changes");
}

fn unescape(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut bytes = body.iter();
    while let Some(&b) = bytes.next() {
        if b == b'}' {
            out.push(bytes.next().expect("an escape is followed by its byte") ^ 0x20);
        } else {
            out.push(b);
        }
    }
    out
}

fn check_encoders(body: &str) {
    for (lead, encoded) in [(b'$', packet(body)), (b'%', notification(body))] {
        assert_eq!(encoded[0], lead);
        let mut as_packet = encoded.clone();
        as_packet[0] = b'$';
        let mut framer = Framer::new(usize::MAX);
        let frames: Vec<Frame> = as_packet.iter().filter_map(|b| framer.push(*b)).collect();
        match &frames[..] {
            [Frame::Packet { raw, body: framed, valid: true }] => {
                assert_eq!(*raw, as_packet);
                assert_eq!(unescape(framed), body.as_bytes(), "the body unescapes to what was sent");
            }
            other => panic!("{body:?} framed as {other:?}"),
        }
    }
    let e = error_reply(body);
    let mut framer = Framer::new(usize::MAX);
    let frames: Vec<Frame> = e.iter().filter_map(|b| framer.push(*b)).collect();
    match &frames[..] {
        [Frame::Packet { body: framed, valid: true, .. }] => {
            let text = unescape(framed);
            assert!(text.starts_with(b"E.01.") && text.iter().all(|b| b.is_ascii_graphic() || *b == b' '));
        }
        other => panic!("error reply {body:?} framed as {other:?}"),
    }
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
    let Some(tid) = Tid::new(s.tid as usize) else { return };
    let reason = match s.kind % 9 {
        0 => MultiThreadStopReason::SignalWithThread { tid, signal: Signal(s.signal) },
        1 => MultiThreadStopReason::HwBreak(tid),
        2 => MultiThreadStopReason::SwBreak(tid),
        3 => MultiThreadStopReason::Watch { tid, kind: WatchKind::Write, addr: s.addr },
        4 => MultiThreadStopReason::Watch { tid, kind: WatchKind::ReadWrite, addr: s.addr },
        5 => MultiThreadStopReason::DoneStep,
        6 => MultiThreadStopReason::Signal(Signal(s.signal)),
        7 => MultiThreadStopReason::Exited(s.signal),
        _ => MultiThreadStopReason::Terminated(Signal(s.signal)),
    };
    let reply = stop_reply(&reason, s.multiprocess);
    assert!(
        reply.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'$' | b'#' | b'}' | b'*')),
        "{reply:?}"
    );
    if reply.starts_with('T') {
        let named =
            if s.multiprocess { format!("thread:p1.{:x};", s.tid) } else { format!("thread:{:x};", s.tid) };
        assert!(reply.contains(&named), "{reply:?} names thread {}", s.tid);
    }
}

fuzz_target!(|input: Input| {
    check_framer(usize::from(input.limit), &input.stream);
    check_patch(&input.patch);
    check_encoders(&input.body);
    check_threads(&input.thread);
    check_vcont(&input.vcont);
    check_queue(input.queue);
    check_stop_reply(&input.stop);
});
