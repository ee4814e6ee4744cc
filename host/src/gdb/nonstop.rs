//! gdb's non-stop protocol, which `gdbstub` does not speak: stop replies written out, `vCont`
//! actions per thread (`c`, `s`, `t`), and the queue of stops that go to gdb as `%Stop`
//! notifications and are collected with `vStopped`.

use std::collections::VecDeque;

use gdbstub::{common::Tid, stub::MultiThreadStopReason, target::ext::breakpoints::WatchKind};

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
            hex => u32::from_str_radix(hex, 16).ok().filter(|t| *t > 0).map(|t| Threads::One(t - 1)),
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

/// A thread id as gdb expects it in a reply.
fn thread_id(tid: Tid, multiprocess: bool) -> String {
    if multiprocess {
        format!("p1.{:x}", tid.get())
    } else {
        format!("{:x}", tid.get())
    }
}

/// A stop reply: `T` with the signal, the thread and what stopped it, or `W` for the end.
pub fn stop_reply(reason: &MultiThreadStopReason<u64>, multiprocess: bool) -> String {
    let t =
        |sig: u8, tid: Tid, extra: &str| format!("T{sig:02x}thread:{};{extra}", thread_id(tid, multiprocess));
    match reason {
        MultiThreadStopReason::SignalWithThread { tid, signal } => t(signal.0, *tid, ""),
        MultiThreadStopReason::HwBreak(tid) => t(5, *tid, "hwbreak:;"),
        MultiThreadStopReason::SwBreak(tid) => t(5, *tid, "swbreak:;"),
        MultiThreadStopReason::Watch { tid, kind, addr } => {
            let name = match kind {
                WatchKind::Write => "watch",
                WatchKind::Read => "rwatch",
                WatchKind::ReadWrite => "awatch",
            };
            t(5, *tid, &format!("{name}:{addr:x};"))
        }
        MultiThreadStopReason::DoneStep => "S05".into(),
        MultiThreadStopReason::Signal(s) => format!("S{:02x}", s.0),
        MultiThreadStopReason::Exited(code) => format!("W{code:02x}"),
        MultiThreadStopReason::Terminated(s) => format!("X{:02x}", s.0),
        _ => "S05".into(),
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
    use gdbstub::common::Signal;

    #[test]
    fn thread_ids() {
        assert_eq!(Threads::parse("p1.2"), Some(Threads::One(1)));
        assert_eq!(Threads::parse("p1.-1"), Some(Threads::All));
        assert_eq!(Threads::parse("p-1.-1"), Some(Threads::All));
        assert_eq!(Threads::parse("a"), Some(Threads::One(9)));
        assert_eq!(Threads::parse("0"), Some(Threads::Any));
        assert_eq!(Threads::parse("zz"), None);
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
        let tid = Tid::new(2).unwrap();
        assert_eq!(stop_reply(&MultiThreadStopReason::HwBreak(tid), true), "T05thread:p1.2;hwbreak:;");
        assert_eq!(
            stop_reply(&MultiThreadStopReason::SignalWithThread { tid, signal: Signal::SIGINT }, false),
            "T02thread:2;"
        );
        let watch = MultiThreadStopReason::Watch { tid, kind: WatchKind::Read, addr: 0x1000 };
        assert_eq!(stop_reply(&watch, true), "T05thread:p1.2;rwatch:1000;");
        assert_eq!(stop_reply(&MultiThreadStopReason::Exited(3), true), "W03");
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
