//! Threads and stops as the protocol writes them: thread ids, `vCont` actions per thread (`c`,
//! `s`, `t`), stop replies, and for non-stop mode the queue of stops that go to gdb as `%Stop`
//! notifications and are collected with `vStopped`.

use std::collections::VecDeque;

use super::z_packet::WatchKind;

/// gdb's number for SIGINT: an interrupt.
pub const SIGINT: u8 = 2;
/// gdb's number for SIGTRAP: a breakpoint or a step.
pub const SIGTRAP: u8 = 5;
/// gdb's number for SIGSTOP (17 in gdb's own numbering): a thread that cannot run.
pub const SIGSTOP: u8 = 17;

/// Why a vCPU stopped, as gdb is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// vCPU `index` stopped with `signal` (gdb's numbering).
    Signal {
        /// The vCPU.
        index: u32,
        /// The signal.
        signal: u8,
    },
    /// vCPU `index` hit a hardware breakpoint.
    HwBreak(u32),
    /// vCPU `index` hit a software breakpoint.
    SwBreak(u32),
    /// vCPU `index` hit a watchpoint at `addr`.
    Watch {
        /// The vCPU.
        index: u32,
        /// The watchpoint's kind.
        kind: WatchKind,
        /// The address accessed.
        addr: u64,
    },
    /// The machine ended with this exit code.
    Exited(u8),
}

/// Which threads a thread id names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// Every thread (`-1`, `p1.-1`, `p-1.-1`, or no id).
    All,
    /// Any one thread (`0`): gdb lets the stub choose.
    Any,
    /// The vCPU of this index.
    One(u32),
}

impl Threads {
    /// Parses a thread id, plain (`2`) or with a process (`p1.2`); ids count vCPUs from 1.
    pub fn parse(id: &str) -> Option<Threads> {
        let tid = match id.strip_prefix('p') {
            Some(rest) => match rest.split_once('.') {
                Some((_, tid)) => tid,
                None => "-1",
            },
            None => id,
        };
        match tid {
            "-1" => Some(Threads::All),
            "0" => Some(Threads::Any),
            // A thread id beyond any vCPU's names none: `u32::MAX`, which no vCPU has.
            hex => u64::from_str_radix(hex, 16)
                .ok()
                .filter(|t| *t > 0)
                .map(|t| Threads::One(u32::try_from(t - 1).unwrap_or(u32::MAX))),
        }
    }

    /// Whether vCPU `index` is among them.
    pub fn contains(self, index: u32) -> bool {
        match self {
            Threads::All | Threads::Any => true,
            Threads::One(i) => i == index,
        }
    }
}

/// What a `vCont` action asks of a thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadAction {
    /// `c` or `C sig`: run.
    Continue,
    /// `s` or `S sig`: run one instruction.
    Step,
    /// `t`: stop.
    Stop,
}

/// Parses `vCont;action[:thread];...` into its actions, in order (the leftmost that names a
/// thread applies to it).
pub fn parse_vcont(packet: &str) -> Option<Vec<(ThreadAction, Threads)>> {
    let rest = packet.strip_prefix("vCont;")?;
    rest.split(';')
        .map(|item| {
            let (action, thread) = match item.split_once(':') {
                Some((a, t)) => (a, Threads::parse(t)?),
                None => (item, Threads::All),
            };
            let action = match action.as_bytes().first()? {
                b'c' | b'C' => ThreadAction::Continue,
                b's' | b'S' => ThreadAction::Step,
                b't' => ThreadAction::Stop,
                _ => return None,
            };
            Some((action, thread))
        })
        .collect()
}

/// The action `actions` give vCPU `index`, if any.
pub fn action_for(actions: &[(ThreadAction, Threads)], index: u32) -> Option<ThreadAction> {
    actions.iter().find(|(_, t)| t.contains(index)).map(|(a, _)| *a)
}

/// vCPU `index`'s thread id as gdb expects it in a reply (thread ids count from 1).
pub fn thread_id(index: u32, multiprocess: bool) -> String {
    let tid = u64::from(index) + 1;
    if multiprocess {
        format!("p1.{tid:x}")
    } else {
        format!("{tid:x}")
    }
}

/// A stop reply: `T` with the signal, the thread, the `expedited` registers' fields and what
/// stopped it, or `W` for the end.
pub fn stop_reply(reason: &StopReason, multiprocess: bool, expedited: &str) -> String {
    let t = |sig: u8, index: u32, extra: &str| {
        format!("T{sig:02x}thread:{};{expedited}{extra}", thread_id(index, multiprocess))
    };
    match *reason {
        StopReason::Signal { index, signal } => t(signal, index, ""),
        StopReason::HwBreak(index) => t(SIGTRAP, index, "hwbreak:;"),
        StopReason::SwBreak(index) => t(SIGTRAP, index, "swbreak:;"),
        StopReason::Watch { index, kind, addr } => {
            let name = match kind {
                WatchKind::Write => "watch",
                WatchKind::Read => "rwatch",
                WatchKind::ReadWrite => "awatch",
            };
            t(SIGTRAP, index, &format!("{name}:{addr:x};"))
        }
        StopReason::Exited(code) => format!("W{code:02x}"),
    }
}

/// The stops gdb has not yet collected. The first went out as a `%Stop` notification (or as
/// the reply to `?`); gdb collects the rest one `vStopped` at a time, and an `OK` says there are
/// no more, after which the next stop is notified again.
#[derive(Debug, Default)]
pub struct StopQueue {
    pending: VecDeque<String>,
}

impl StopQueue {
    /// Adds a stop; returns the notification to send now, when none is outstanding.
    pub fn push(&mut self, reply: String) -> Option<String> {
        self.pending.push_back(reply);
        (self.pending.len() == 1).then(|| format!("Stop:{}", self.pending[0]))
    }

    /// gdb's `vStopped`: the stop it has is collected; the reply is the next one, or `OK`.
    pub fn collected(&mut self) -> String {
        self.pending.pop_front();
        self.pending.front().cloned().unwrap_or_else(|| "OK".into())
    }

    /// gdb's `?`: every stopped thread, replacing what was queued; the reply is the first, or
    /// `OK` when every thread runs.
    pub fn restart(&mut self, stopped: Vec<String>) -> String {
        self.pending = stopped.into();
        self.pending.front().cloned().unwrap_or_else(|| "OK".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_ids() {
        assert_eq!(Threads::parse("p1.2"), Some(Threads::One(1)));
        assert_eq!(Threads::parse("p1.-1"), Some(Threads::All));
        assert_eq!(Threads::parse("p-1.-1"), Some(Threads::All));
        assert_eq!(Threads::parse("a"), Some(Threads::One(9)));
        assert_eq!(Threads::parse("0"), Some(Threads::Any));
        assert_eq!(Threads::parse("zz"), None);
        assert_eq!(Threads::parse("100000000"), Some(Threads::One(u32::MAX)));
    }

    #[test]
    fn vcont_leftmost_action_wins() {
        let actions = parse_vcont("vCont;s:p1.2;c:p1.-1").unwrap();
        assert_eq!(action_for(&actions, 1), Some(ThreadAction::Step));
        assert_eq!(action_for(&actions, 0), Some(ThreadAction::Continue));
        let stop = parse_vcont("vCont;t:p1.1").unwrap();
        assert_eq!(action_for(&stop, 0), Some(ThreadAction::Stop));
        assert_eq!(action_for(&stop, 1), None);
        assert_eq!(parse_vcont("vCont;C05:2").unwrap(), vec![(ThreadAction::Continue, Threads::One(1))]);
        assert!(parse_vcont("vCont;x:1").is_none());
        assert!(parse_vcont("vCont;c:p1.q").is_none());
    }

    #[test]
    fn stop_replies_name_their_thread() {
        assert_eq!(stop_reply(&StopReason::HwBreak(1), true, ""), "T05thread:p1.2;hwbreak:;");
        assert_eq!(stop_reply(&StopReason::Signal { index: 1, signal: SIGINT }, false, ""), "T02thread:2;");
        let watch = StopReason::Watch { index: 1, kind: WatchKind::Read, addr: 0x1000 };
        assert_eq!(
            stop_reply(&watch, true, "20:0010000000000000;"),
            "T05thread:p1.2;20:0010000000000000;rwatch:1000;"
        );
        assert_eq!(stop_reply(&StopReason::Exited(3), true, ""), "W03");
        assert_eq!(
            stop_reply(&StopReason::Signal { index: 15, signal: SIGSTOP }, true, ""),
            "T11thread:p1.10;"
        );
    }

    #[test]
    fn notifications_go_one_at_a_time() {
        let mut q = StopQueue::default();
        assert_eq!(q.push("T05thread:p1.1;".into()).as_deref(), Some("Stop:T05thread:p1.1;"));
        assert_eq!(q.push("T05thread:p1.2;".into()), None);
        assert_eq!(q.collected(), "T05thread:p1.2;");
        assert_eq!(q.collected(), "OK");
        assert!(q.push("T00thread:p1.1;".into()).is_some());
        assert_eq!(q.restart(vec!["T00thread:p1.1;".into(), "T00thread:p1.2;".into()]), "T00thread:p1.1;");
        assert_eq!(q.collected(), "T00thread:p1.2;");
        assert_eq!(q.collected(), "OK");
        assert_eq!(q.restart(Vec::new()), "OK");
    }
}
