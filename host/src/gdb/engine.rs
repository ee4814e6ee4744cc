//! The gdb remote protocol of one connection, from gdb's bytes to the stub's replies: packets
//! are framed once, each is answered by its handler, and every reply goes out as it is meant
//! to, in all-stop and in non-stop mode.
//!
//! Why our own engine rather than `gdbstub` behind a narrower seam: `gdbstub` 0.7 owns its
//! packet table and gives no way to add packets or reply features, and gdb's non-stop mode
//! (`QNonStop`, `vStopped`, `vCtrlC`, `%Stop` notifications, `?` and per-thread `vCont` while
//! other threads run) is exactly that; neither does it let a refused breakpoint say why. Keeping
//! it meant framing every packet twice and patching its `qSupported` reply afterwards. The packets
//! gdb sends to a bare-metal target are few and plain, so one table here answers all of them.

use std::collections::HashMap;

use accel_api::{AccelError, ErrorKind, Result};

use super::{
    arch::GdbRegId,
    connection::Conn,
    nonstop::{action_for, parse_vcont, stop_reply, thread_id, StopQueue, StopReason, ThreadAction, Threads},
    nonstop::{SIGINT, SIGTRAP},
    packets::{error_body, hex, notification, packet_bytes, unhex, Frame, Framer, PACKET_SIZE},
    target::{Action, GdbTarget},
    vcpu_thread::{Event, Events, Stop},
    z_packet::Point,
};
use crate::vmm::Outcome;

/// What the stub supports, as told in reply to `qSupported`.
const FEATURES: &str = "vContSupported+;multiprocess+;QStartNoAckMode+;swbreak+;hwbreak+;\
                        qXfer:features:read+;QNonStop+";

/// The most memory one `m` packet reads: what fits a reply in hex.
const MAX_READ: usize = PACKET_SIZE / 2 - 16;

/// How one connection ended.
#[derive(Debug)]
pub enum Flow {
    /// The guest ended, or gdb killed it.
    Ended(Outcome),
    /// gdb detached.
    Detached,
}

/// The answer to one packet.
enum Answer {
    /// A reply packet with this body.
    Reply(Vec<u8>),
    /// No reply now: gdb waits for a stop (all-stop `c`, `s`, `vCont`).
    Resumed,
    /// The reply `OK`, and then the connection's end.
    End(Flow),
}

fn reply(text: &str) -> Result<Answer> {
    Ok(Answer::Reply(text.as_bytes().to_vec()))
}

fn ok() -> Result<Answer> {
    reply("OK")
}

/// A packet's argument as a hex number.
fn number(text: &str) -> Result<u64> {
    u64::from_str_radix(text, 16).map_err(|_| AccelError::invalid(format!("'{text}' is not a hex number")))
}

/// The `addr,len` of a memory packet.
fn addr_len(text: &str) -> Result<(u64, usize)> {
    let (addr, len) =
        text.split_once(',').ok_or_else(|| AccelError::invalid(format!("no length in '{text}'")))?;
    let len = usize::try_from(number(len)?).unwrap_or(usize::MAX);
    Ok((number(addr)?, len))
}

/// One connection's protocol state.
pub struct Engine {
    framer: Framer,
    out: Conn,
    no_ack: bool,
    multiprocess: bool,
    non_stop: bool,
    /// All-stop mode: gdb resumed the machine and waits for the stop reply.
    waiting: bool,
    /// Non-stop mode: the stops gdb has not collected yet.
    stops: StopQueue,
    /// vCPUs asked to stop (`vCont;t`, `vCtrlC`), with the signal their stop reports.
    requested: HashMap<u32, u8>,
}

impl Engine {
    /// A fresh protocol state for a connection that writes to `out`.
    pub fn new(out: Conn) -> Self {
        Self {
            framer: Framer::new(PACKET_SIZE),
            out,
            no_ack: false,
            multiprocess: false,
            non_stop: false,
            waiting: false,
            stops: StopQueue::default(),
            requested: HashMap::new(),
        }
    }

    /// Sends the packet that carries `body`.
    fn send_packet(&mut self, body: &[u8]) -> Result<()> {
        self.out.send(&packet_bytes(body))
    }

    /// Acknowledges a packet, when acknowledgements are on: at once, before anything is sent
    /// in answer to it (a `monitor` command's output comes before its reply).
    fn acknowledge(&mut self) -> Result<()> {
        if self.no_ack {
            return Ok(());
        }
        self.out.send(b"+")
    }

    /// Takes a chunk of gdb's bytes: answers each packet it completes. Returns the connection's
    /// end when a packet ends it.
    pub fn data(
        &mut self,
        bytes: &[u8],
        machine: &mut GdbTarget,
        events: &mut Events,
    ) -> Result<Option<Flow>> {
        for &byte in bytes {
            let Some(frame) = self.framer.push(byte) else { continue };
            let flow = match frame {
                Frame::Byte(0x03) => self.interrupt(machine, events)?,
                // Acknowledgements, and noise between packets.
                Frame::Byte(_) => None,
                Frame::TooLong => {
                    log::warn!(
                        "gdb: a packet longer than the advertised PacketSize ({PACKET_SIZE:#x} bytes) is discarded"
                    );
                    None
                }
                Frame::Dropped => {
                    self.acknowledge()?;
                    self.send_packet(error_body("packet longer than PacketSize").as_bytes())?;
                    None
                }
                // No `-` asks for it again: the stub's transports do not damage packets, so one
                // that comes damaged is from a client that does not speak the protocol, and on a
                // character device what the stub writes can reach the next client instead. A
                // gdb that did send it resends what goes unacknowledged.
                Frame::Packet { valid: false, body } => {
                    log::debug!(
                        "gdb: a packet with a wrong checksum is dropped: {}",
                        String::from_utf8_lossy(&body[..body.len().min(40)])
                    );
                    None
                }
                Frame::Packet { body, valid: true } => self.packet(&body, machine, events)?,
            };
            if flow.is_some() {
                return Ok(flow);
            }
        }
        Ok(None)
    }

    /// Answers one packet.
    fn packet(&mut self, body: &[u8], machine: &mut GdbTarget, events: &mut Events) -> Result<Option<Flow>> {
        self.acknowledge()?;
        let answer = match self.answer(body, machine, events) {
            Ok(answer) => answer,
            Err(e) => {
                log::debug!("gdb: {} refused: {e}", String::from_utf8_lossy(&body[..body.len().min(40)]));
                Answer::Reply(error_body(&e.message).into_bytes())
            }
        };
        match answer {
            Answer::Reply(body) => self.send_packet(&body)?,
            Answer::Resumed => {}
            Answer::End(flow) => {
                self.send_packet(b"OK")?;
                return Ok(Some(flow));
            }
        }
        if body == b"QStartNoAckMode" {
            self.no_ack = true;
        }
        Ok(machine.ended.take().map(Flow::Ended))
    }

    /// The answer to the packet `body`.
    fn answer(&mut self, body: &[u8], machine: &mut GdbTarget, events: &mut Events) -> Result<Answer> {
        // Only `X` carries binary data, after its `:`.
        let head = match body.first() {
            Some(b'X') => body.split(|b| *b == b':').next().unwrap_or_default(),
            _ => body,
        };
        let text = String::from_utf8_lossy(head);
        let text = text.as_ref();
        let focus = machine.focus.unwrap_or(0);
        let (kind, rest) = text.split_at(text.chars().next().map_or(0, char::len_utf8));
        match kind {
            "g" => reply(&hex(&machine.read_registers(focus)?.serialize())),
            "G" => {
                let bytes = unhex(rest.as_bytes()).ok_or_else(|| AccelError::invalid("malformed G"))?;
                machine.write_registers(focus, &bytes)?;
                ok()
            }
            "p" => reply(&hex(&machine.read_register(focus, register(rest)?)?)),
            "P" => {
                let (reg, value) =
                    rest.split_once('=').ok_or_else(|| AccelError::invalid(format!("malformed P{rest}")))?;
                let value =
                    unhex(value.as_bytes()).ok_or_else(|| AccelError::invalid("malformed P value"))?;
                machine.write_register(focus, register(reg)?, &value)?;
                ok()
            }
            "m" => {
                let (addr, len) = addr_len(rest)?;
                match machine.read_memory(focus, addr, len.min(MAX_READ)) {
                    Ok(data) => reply(&hex(&data)),
                    Err(e) => {
                        // gdb reads past what is mapped all the time (a backtrace, `x` at a bad
                        // address) and shows the failure itself.
                        log::debug!("gdb: {e}");
                        reply("E14")
                    }
                }
            }
            "M" | "X" => {
                let (spec, data) = match kind {
                    "M" => {
                        let (spec, data) = rest.split_once(':').unwrap_or((rest, ""));
                        (spec, unhex(data.as_bytes()).ok_or_else(|| AccelError::invalid("malformed M data"))?)
                    }
                    _ => (rest, body.get(head.len() + 1..).unwrap_or_default().to_vec()),
                };
                let (addr, _) = addr_len(spec)?;
                match machine.write_memory(focus, addr, &data) {
                    Ok(()) => ok(),
                    Err(e) => {
                        log::debug!("gdb: {e}");
                        reply("E14")
                    }
                }
            }
            "Z" | "z" => {
                self.point(text, machine, events)?;
                ok()
            }
            "H" => {
                // `Hg` picks the thread whose registers and memory gdb reads; `Hc` (for `c` and
                // `s`) is not used: gdb resumes by `vCont`.
                if let Some(id) = rest.strip_prefix('g') {
                    match Threads::parse(id) {
                        Some(Threads::One(index)) => machine.focus = Some(index),
                        Some(_) => {}
                        None => return Err(AccelError::invalid(format!("no thread {id}"))),
                    }
                }
                ok()
            }
            "T" => match Threads::parse(rest) {
                Some(Threads::One(index)) if (index as usize) < machine.vcpus.len() => ok(),
                _ => Err(AccelError::new(ErrorKind::NOT_FOUND, format!("no thread {rest}"))),
            },
            "?" => self.question(machine),
            "c" | "C" | "s" | "S" => {
                let action = if matches!(kind, "c" | "C") { Action::Continue } else { Action::Step };
                machine.actions.clear();
                for index in 0..machine.vcpus.len() as u32 {
                    let step = action == Action::Step && index == focus;
                    machine.actions.insert(index, if step { Action::Step } else { Action::Continue });
                }
                self.resume_all(machine)
            }
            "D" => Ok(Answer::End(Flow::Detached)),
            "k" => {
                log::info!("gdb killed the guest");
                Ok(Answer::End(Flow::Ended(Outcome::Killed)))
            }
            _ => self.named(text, body, machine, events),
        }
    }

    /// The answer to a packet with a name (`q…`, `Q…`, `v…`).
    fn named(
        &mut self,
        text: &str,
        body: &[u8],
        machine: &mut GdbTarget,
        events: &mut Events,
    ) -> Result<Answer> {
        let focus = machine.focus.unwrap_or(0);
        // `qSupported` alone or with `:features`; any other text after it is another packet.
        let supported = text.strip_prefix("qSupported").filter(|f| f.is_empty() || f.starts_with(':'));
        if let Some(features) = supported {
            self.multiprocess = features.split([':', ';']).any(|f| f == "multiprocess+");
            return reply(&format!("PacketSize={PACKET_SIZE:x};{FEATURES}"));
        }
        if let Some(cmd) = text.strip_prefix("qRcmd,") {
            let cmd = unhex(cmd.as_bytes()).ok_or_else(|| AccelError::invalid("malformed qRcmd"))?;
            let printed = machine.monitor(&cmd);
            if !printed.is_empty() {
                let mut console = b"O".to_vec();
                console.extend(hex(printed.as_bytes()).bytes());
                self.send_packet(&console)?;
            }
            return ok();
        }
        if let Some(xfer) = text.strip_prefix("qXfer:features:read:") {
            let (annex, span) =
                xfer.split_once(':').ok_or_else(|| AccelError::invalid(format!("malformed {text}")))?;
            if annex != "target.xml" {
                return Err(AccelError::new(ErrorKind::NOT_FOUND, format!("no {annex}")));
            }
            let (offset, len) = addr_len(span)?;
            let xml = machine.xml.as_deref().unwrap_or_default().as_bytes();
            let start = usize::try_from(offset).unwrap_or(usize::MAX).min(xml.len());
            let part = &xml[start..];
            let len = len.min(PACKET_SIZE / 2);
            let mut out = if part.len() > len { b"m".to_vec() } else { b"l".to_vec() };
            out.extend_from_slice(&part[..part.len().min(len)]);
            return Ok(Answer::Reply(out));
        }
        if let Some(actions) = text.strip_prefix("vCont;") {
            let actions =
                parse_vcont(text).ok_or_else(|| AccelError::invalid(format!("malformed vCont;{actions}")))?;
            return self.vcont(&actions, machine);
        }
        if text.starts_with("vKill") {
            log::info!("gdb killed the guest");
            return Ok(Answer::End(Flow::Ended(Outcome::Killed)));
        }
        match text {
            "vCont?" => reply("vCont;c;C;s;S;t"),
            "QStartNoAckMode" => ok(),
            "QNonStop:1" => {
                self.non_stop = true;
                self.waiting = false;
                ok()
            }
            "QNonStop:0" => {
                self.non_stop = false;
                machine.stop_others(&events.channel, &mut events.deferred);
                ok()
            }
            "vStopped" if self.non_stop => reply(&self.stops.collected()),
            "vCtrlC" if self.non_stop => {
                let running = |i: &u32| machine.running.get(*i as usize).copied().unwrap_or(false);
                let target =
                    machine.focus.filter(running).or_else(|| (0..machine.vcpus.len() as u32).find(running));
                if let Some(index) = target {
                    self.requested.insert(index, SIGINT);
                    machine.kick(index);
                }
                ok()
            }
            "qfThreadInfo" => {
                let ids: Vec<String> =
                    (0..machine.vcpus.len() as u32).map(|i| thread_id(i, self.multiprocess)).collect();
                reply(&format!("m{}", ids.join(",")))
            }
            "qsThreadInfo" => reply("l"),
            "qC" => reply(&format!("QC{}", thread_id(focus, self.multiprocess))),
            _ if text.starts_with("qAttached") => reply("1"),
            // Everything else is not supported: the empty reply says so.
            _ => {
                log::debug!("gdb: {} is not supported", String::from_utf8_lossy(&body[..body.len().min(40)]));
                reply("")
            }
        }
    }

    /// `?`: why the machine is stopped. In non-stop mode one stopped vCPU is reported, the one
    /// gdb looks at or else the first; the others run on, as when gdbserver attaches in non-stop
    /// mode (gdb 13 fails an internal assertion when given more than one stop at connection).
    fn question(&mut self, machine: &mut GdbTarget) -> Result<Answer> {
        if !self.non_stop {
            let index = machine.focus.unwrap_or(0);
            let fields = expedited_fields(machine, index);
            return reply(&stop_reply(
                &StopReason::Signal { index, signal: SIGTRAP },
                self.multiprocess,
                &fields,
            ));
        }
        let stopped: Vec<u32> =
            (0..machine.vcpus.len() as u32).filter(|i| !machine.running[*i as usize]).collect();
        let shown = machine.focus.filter(|f| stopped.contains(f)).or(stopped.first().copied());
        for index in stopped.iter().filter(|i| Some(**i) != shown) {
            machine.resume_thread(*index, false)?;
        }
        let replies = shown
            .map(|index| {
                let fields = expedited_fields(machine, index);
                vec![stop_reply(&StopReason::Signal { index, signal: 0 }, self.multiprocess, &fields)]
            })
            .unwrap_or_default();
        reply(&self.stops.restart(replies))
    }

    /// `vCont`: in all-stop mode the vCPUs an action names resume, the rest stay stopped, and gdb
    /// waits for the stop; in non-stop mode each thread gets the leftmost action that names it.
    fn vcont(&mut self, actions: &[(ThreadAction, Threads)], machine: &mut GdbTarget) -> Result<Answer> {
        if !self.non_stop {
            machine.actions.clear();
            for index in 0..machine.vcpus.len() as u32 {
                match action_for(actions, index) {
                    Some(ThreadAction::Continue) => machine.actions.insert(index, Action::Continue),
                    Some(ThreadAction::Step) => machine.actions.insert(index, Action::Step),
                    Some(ThreadAction::Stop) | None => None,
                };
            }
            return self.resume_all(machine);
        }
        for index in 0..machine.vcpus.len() as u32 {
            let running = machine.running[index as usize];
            match action_for(actions, index) {
                Some(ThreadAction::Continue) if !running => machine.resume_thread(index, false)?,
                Some(ThreadAction::Step) if !running => machine.resume_thread(index, true)?,
                Some(ThreadAction::Stop) if running => {
                    self.requested.insert(index, 0);
                    machine.kick(index);
                }
                _ => {}
            }
        }
        ok()
    }

    fn resume_all(&mut self, machine: &mut GdbTarget) -> Result<Answer> {
        machine.resume_all()?;
        self.waiting = true;
        Ok(Answer::Resumed)
    }

    /// A `Z` or `z` packet. In non-stop mode the running vCPUs pause around the change, so that
    /// none runs past a breakpoint its debug registers do not hold yet.
    fn point(&mut self, text: &str, machine: &mut GdbTarget, events: &mut Events) -> Result<()> {
        let insert = text.starts_with('Z');
        let point = text
            .as_bytes()
            .get(1)
            .and_then(|t| Point::of_type(*t))
            .ok_or_else(|| AccelError::invalid(format!("unknown point in {text}")))?;
        let mut fields = text.get(3..).unwrap_or_default().split([',', ';']);
        let mut field = |what: &str| {
            fields
                .next()
                .and_then(|f| u64::from_str_radix(f, 16).ok())
                .ok_or_else(|| AccelError::invalid(format!("no {what} in {text}")))
        };
        let (addr, kind) = (field("address")?, field("kind")?);
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
                    self.notify(machine, index, stop)?;
                }
            }
        }
        Ok(paused)
    }

    /// An interrupt (0x03): in all-stop mode, while gdb waits for a stop, every vCPU stops and
    /// gdb hears of it on the thread it waits on.
    fn interrupt(&mut self, machine: &mut GdbTarget, events: &mut Events) -> Result<Option<Flow>> {
        if self.non_stop || !self.waiting {
            return Ok(None);
        }
        machine.stop_others(&events.channel, &mut events.deferred);
        let index = machine.waiting_on();
        self.report(machine, &StopReason::Signal { index, signal: SIGINT }, index)?;
        Ok(None)
    }

    /// The all-stop stop reply, for vCPU `index`. gdb takes the thread a stop names for the one
    /// whose registers and memory it reads next (as `Hg` would pick it), and so does the stub.
    fn report(&mut self, machine: &mut GdbTarget, reason: &StopReason, index: u32) -> Result<()> {
        self.waiting = false;
        machine.focus = Some(index);
        let fields = expedited_fields(machine, index);
        self.send_packet(stop_reply(reason, self.multiprocess, &fields).as_bytes())
    }

    /// vCPU `index` stopped: in all-stop mode, when gdb waits for a stop, the others stop too and
    /// gdb gets the stop reply; in non-stop mode gdb hears of it by notification. Returns the
    /// connection's end when the stop is the machine's.
    pub fn vcpu_stopped(
        &mut self,
        machine: &mut GdbTarget,
        index: u32,
        stop: Stop,
        events: &mut Events,
    ) -> Result<Option<Flow>> {
        if self.non_stop {
            return Ok(self.notify(machine, index, stop)?.map(Flow::Ended));
        }
        machine.stopped(index);
        let ended = if let Stop::Exited(outcome) = &stop { Some(outcome.clone()) } else { None };
        if !self.waiting {
            if ended.is_none() {
                log::debug!("gdb: vCPU {index} reported {stop:?} while stopped");
            }
            return Ok(ended.map(Flow::Ended));
        }
        machine.stop_others(&events.channel, &mut events.deferred);
        let reason = match machine.stop_reason(index, stop) {
            Ok(reason) => reason,
            Err(e) => {
                log::error!("gdb: vCPU {index} failed: {e}");
                return Ok(Some(Flow::Ended(Outcome::Fault(e.to_string()))));
            }
        };
        self.report(machine, &reason, index)?;
        Ok(ended.map(Flow::Ended))
    }

    /// A vCPU stopped in non-stop mode: gdb hears of it by notification. Returns the machine's
    /// end when the stop is one.
    fn notify(&mut self, machine: &mut GdbTarget, index: u32, stop: Stop) -> Result<Option<Outcome>> {
        machine.stopped(index);
        let requested = self.requested.remove(&index);
        let (reason, ended) = match (stop, requested) {
            (Stop::Exited(outcome), _) => (StopReason::Exited(outcome.exit_code() as u8), Some(outcome)),
            (Stop::Kicked, Some(signal)) => (StopReason::Signal { index, signal }, None),
            (stop, _) => (machine.stop_reason(index, stop)?, None),
        };
        let fields = expedited_fields(machine, index);
        if let Some(note) = self.stops.push(stop_reply(&reason, self.multiprocess, &fields)) {
            self.out.send(&notification(&note))?;
        }
        Ok(ended)
    }
}

/// The expedited registers' stop-reply fields of vCPU `index`, empty when none are held; with
/// SVE, VG too, which gdb reads at every stop to know the vector length (as gdbserver
/// expedites it), and which the stub knows without a read.
fn expedited_fields(machine: &GdbTarget, index: u32) -> String {
    let Some(expedited) = machine.expedited(index) else {
        return String::new();
    };
    let mut fields = expedited.fields();
    if let Some(vq) = machine.sve_vq {
        fields.push_str(&super::expedite::vg_field(vq));
    }
    fields
}

/// The register of a `p` or `P` packet's number.
fn register(text: &str) -> Result<GdbRegId> {
    GdbRegId::from_number(number(text)?)
        .ok_or_else(|| AccelError::new(ErrorKind::NOT_FOUND, format!("no register {text}")))
}
