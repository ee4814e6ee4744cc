//! The packets the session answers before `gdbstub` sees them: breakpoints and watchpoints (so
//! that a refusal carries its reason), `vCont?`, and gdb's non-stop mode (`QNonStop`, per-thread
//! `vCont`, `vStopped`, `vCtrlC`, `?` and the `%Stop` notifications). Everything else goes on
//! to `gdbstub` unchanged, watched for what the session must know: the client's features,
//! no-ack mode and the thread gdb looks at.

use std::collections::HashMap;

use accel_api::{AccelError, Result};
use gdbstub::{common::Signal, conn::Connection, stub::MultiThreadStopReason};

use super::{
    connection::{accel_err, Conn},
    nonstop::{action_for, parse_vcont, stop_reply, StopQueue, ThreadAction, Threads},
    packets::{error_reply, notification, packet, Frame, Framer},
    points::Point,
    target::{index_tid, GdbTarget},
    vcpu_thread::{Event, Events, Stop},
};
use crate::vmm::Outcome;

/// The longest packet the session may answer itself; longer ones go to `gdbstub` as they come.
const OWN_PACKET_LIMIT: usize = 256;

/// What became of a byte from gdb.
pub enum Route {
    /// These bytes go on to `gdbstub`.
    Pass(Vec<u8>),
    /// Nothing for `gdbstub` (yet).
    Done,
}

/// One connection's protocol state on the session's side of `gdbstub`.
pub struct Front {
    framer: Framer,
    writer: Conn,
    no_ack: bool,
    multiprocess: bool,
    /// gdb asked for non-stop mode.
    pub non_stop: bool,
    stops: StopQueue,
    /// vCPUs asked to stop (`vCont;t`, `vCtrlC`), with the signal their stop reports.
    requested: HashMap<u32, Signal>,
}

impl Front {
    /// A fresh protocol state for a connection that writes to `writer`.
    pub fn new(writer: Conn) -> Self {
        Self {
            framer: Framer::new(OWN_PACKET_LIMIT),
            writer,
            no_ack: false,
            multiprocess: false,
            non_stop: false,
            stops: StopQueue::default(),
            requested: HashMap::new(),
        }
    }

    /// Starts the framing afresh (after `gdbstub` gave up on malformed input).
    pub fn restart_framing(&mut self) {
        self.framer = Framer::new(OWN_PACKET_LIMIT);
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer.write_all(bytes).and_then(|()| self.writer.flush()).map_err(accel_err)
    }

    /// Takes a byte from gdb: answers the packets that are the session's, and hands the rest on.
    pub fn data(&mut self, byte: u8, machine: &mut GdbTarget, events: &mut Events) -> Result<Route> {
        let Some(frame) = self.framer.push(byte) else { return Ok(Route::Done) };
        let (raw, body, valid) = match frame {
            Frame::Byte(b) => return Ok(Route::Pass(vec![b])),
            Frame::Packet { raw, body, valid } => (raw, body, valid),
        };
        let text = String::from_utf8_lossy(&body).into_owned();
        if !self.is_own(&text) {
            // gdbstub refuses a packet whose checksum is wrong, so what it asks takes no effect
            // here either: a damaged qSupported must not arm the patch for another reply.
            if valid {
                self.observe(&text, machine);
            }
            return Ok(Route::Pass(raw));
        }
        if !self.no_ack {
            self.send(if valid { b"+" } else { b"-" })?;
        }
        if valid {
            let reply = self.answer(&text, machine, events)?;
            self.send(&reply)?;
        }
        Ok(Route::Done)
    }

    fn is_own(&self, text: &str) -> bool {
        let point = matches!(text.as_bytes(), [b'Z' | b'z', b'0'..=b'4', b',', ..]);
        point
            || text == "vCont?"
            || text.starts_with("QNonStop:")
            || (self.non_stop && (text.starts_with("vCont;") || matches!(text, "vStopped" | "vCtrlC" | "?")))
    }

    /// Notes what a packet bound for `gdbstub` changes for the session.
    fn observe(&mut self, text: &str, machine: &mut GdbTarget) {
        // `qSupported` alone or with `:features`, as gdbstub parses it: any other text it refuses
        // unanswered, and the patch would wait for the next reply, whatever it answers.
        let features = text.strip_prefix("qSupported").filter(|f| f.is_empty() || f.starts_with(':'));
        if let Some(features) = features {
            self.multiprocess = features.contains("multiprocess+");
            self.writer.patch_next_reply(";QNonStop+");
        } else if text == "QStartNoAckMode" {
            self.no_ack = true;
        } else if let Some(id) = text.strip_prefix("Hg") {
            if let Some(Threads::One(index)) = Threads::parse(id) {
                machine.focus = Some(index);
            }
        }
    }

    /// The reply to one of the session's packets.
    fn answer(&mut self, text: &str, machine: &mut GdbTarget, events: &mut Events) -> Result<Vec<u8>> {
        let ok = || packet("OK");
        Ok(match text {
            "vCont?" => packet("vCont;c;C;s;S;t"),
            "QNonStop:1" => {
                self.non_stop = true;
                ok()
            }
            "QNonStop:0" => {
                self.non_stop = false;
                machine.stop_others(&events.channel, &mut events.deferred);
                ok()
            }
            "?" => {
                // One stopped vCPU is reported, the one gdb looks at or else the first; the
                // others run on, as when gdbserver attaches in non-stop mode. (gdb 13 fails an
                // internal assertion when it is given more than one stop at connection.)
                let stopped: Vec<u32> =
                    (0..machine.vcpus.len() as u32).filter(|i| !machine.running[*i as usize]).collect();
                let shown = machine.focus.filter(|f| stopped.contains(f)).or(stopped.first().copied());
                for index in stopped.iter().filter(|i| Some(**i) != shown) {
                    machine.resume_thread(*index, false)?;
                }
                let replies = shown
                    .map(|index| {
                        let reason = MultiThreadStopReason::SignalWithThread {
                            tid: index_tid(index),
                            signal: Signal(0),
                        };
                        vec![stop_reply(&reason, self.multiprocess)]
                    })
                    .unwrap_or_default();
                packet(&self.stops.restart(replies))
            }
            "vStopped" => packet(&self.stops.collected()),
            "vCtrlC" => {
                let running = |i: &u32| machine.running.get(*i as usize).copied().unwrap_or(false);
                let target =
                    machine.focus.filter(running).or_else(|| (0..machine.vcpus.len() as u32).find(running));
                if let Some(index) = target {
                    self.requested.insert(index, Signal::SIGINT);
                    machine.kick(index);
                }
                ok()
            }
            _ if text.starts_with("vCont;") => match parse_vcont(text) {
                Some(actions) => {
                    self.resume(&actions, machine)?;
                    ok()
                }
                None => error_reply(&format!("malformed {text}")),
            },
            _ => match self.point(text, machine, events) {
                Ok(()) => ok(),
                Err(e) => error_reply(&e.message),
            },
        })
    }

    /// Applies non-stop `vCont` actions: each thread gets the leftmost action that names it.
    fn resume(&mut self, actions: &[(ThreadAction, Threads)], machine: &mut GdbTarget) -> Result<()> {
        for index in 0..machine.vcpus.len() as u32 {
            let running = machine.running[index as usize];
            match action_for(actions, index) {
                Some(ThreadAction::Continue) if !running => machine.resume_thread(index, false)?,
                Some(ThreadAction::Step) if !running => machine.resume_thread(index, true)?,
                Some(ThreadAction::Stop) if running => {
                    self.requested.insert(index, Signal(0));
                    machine.kick(index);
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A `Z` or `z` packet. In non-stop mode the running vCPUs pause around the change, so that
    /// none runs past a breakpoint its debug registers do not hold yet.
    fn point(&mut self, text: &str, machine: &mut GdbTarget, events: &mut Events) -> Result<()> {
        let bytes = text.as_bytes();
        let insert = bytes[0] == b'Z';
        let point = Point::of_type(bytes[1])
            .ok_or_else(|| AccelError::invalid(format!("unknown point in {text}")))?;
        let mut fields = text[3..].split([',', ';']);
        let mut number = |what: &str| {
            fields
                .next()
                .and_then(|f| u64::from_str_radix(f, 16).ok())
                .ok_or_else(|| AccelError::invalid(format!("no {what} in {text}")))
        };
        let (addr, kind) = (number("address")?, number("kind")?);
        if !self.non_stop {
            return machine.set_point(insert, point, addr, kind);
        }
        let paused = self.pause(machine, events)?;
        let result = machine.set_point(insert, point, addr, kind);
        for index in paused {
            let step = machine.stepping(index);
            machine.resume_thread(index, step)?;
        }
        result
    }

    /// Stops the running vCPUs for a moment; returns those to resume. A vCPU that met a stop of
    /// its own on the way stays stopped and is reported.
    fn pause(&mut self, machine: &mut GdbTarget, events: &mut Events) -> Result<Vec<u32>> {
        let mut paused = Vec::new();
        for (index, stop) in machine.stop_running(&events.channel, &mut events.deferred) {
            match stop {
                Stop::Kicked if !self.requested.contains_key(&index) => paused.push(index),
                Stop::Exited(outcome) => {
                    events.deferred.push_front(Event::Vcpu(index, Stop::Exited(outcome)))
                }
                stop => {
                    self.vcpu_stopped(machine, index, stop)?;
                }
            }
        }
        Ok(paused)
    }

    /// A vCPU stopped in non-stop mode: gdb hears of it by notification. Returns the machine's
    /// end when the stop is one.
    pub fn vcpu_stopped(
        &mut self,
        machine: &mut GdbTarget,
        index: u32,
        stop: Stop,
    ) -> Result<Option<Outcome>> {
        machine.stopped(index);
        let requested = self.requested.remove(&index);
        let (reason, ended) = match (stop, requested) {
            (Stop::Exited(outcome), _) => {
                (MultiThreadStopReason::Exited(outcome.exit_code() as u8), Some(outcome))
            }
            (Stop::Kicked, Some(signal)) => {
                (MultiThreadStopReason::SignalWithThread { tid: index_tid(index), signal }, None)
            }
            (stop, _) => (machine.stop_reason(index, stop)?, None),
        };
        if let Some(note) = self.stops.push(stop_reply(&reason, self.multiprocess)) {
            self.send(&notification(&note))?;
        }
        Ok(ended)
    }
}
