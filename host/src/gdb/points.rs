//! Breakpoints and watchpoints as gdb asks for them (`Z`/`z` packets): software and hardware
//! breakpoints, and watchpoints split over as many watchpoint registers as their range needs,
//! as gdbserver does. A refusal keeps its reason, for gdb's error reply and `monitor
//! debug-pool`.

use super::{
    target::GdbTarget,
    z_packet::{Point, WatchKind},
};
use accel_api::{
    debug::{WatchKind as AccelWatchKind, Watchpoint},
    AccelError, ErrorKind, Result,
};
use accel_kit::debug_regs::watch_pieces;

fn watch(addr: u64, len: u64, kind: WatchKind) -> Watchpoint {
    let kind = match kind {
        WatchKind::Read => AccelWatchKind::READ,
        WatchKind::Write => AccelWatchKind::WRITE,
        WatchKind::ReadWrite => AccelWatchKind::ACCESS,
    };
    Watchpoint { addr, len, kind }
}

/// The ranges a watch of `len` bytes at `addr` takes, one watchpoint register each: a range no
/// single register covers exactly is split over several.
fn pieces(addr: u64, len: u64) -> Result<Vec<(u64, u64)>> {
    watch_pieces(addr, len).ok_or_else(|| {
        AccelError::new(
            ErrorKind::NO_RESOURCE,
            format!("a {len}-byte watchpoint at {addr:#x} needs more watchpoint registers than exist"),
        )
    })
}

impl GdbTarget {
    /// Sets (`insert`) or clears `point` at `addr` over `len` bytes (a watchpoint's length; a
    /// breakpoint's kind otherwise). A refused insertion is remembered with its reason.
    pub(super) fn set_point(&mut self, insert: bool, point: Point, addr: u64, len: u64) -> Result<()> {
        let result = match (point, insert) {
            (Point::Software, true) => {
                self.physical_for_breakpoint(addr).and_then(|pa| self.debug.insert_sw_breakpoint(addr, pa))
            }
            (Point::Software, false) => self.debug.remove_sw_breakpoint(addr),
            (Point::Hardware, true) => self.debug.insert_hw_breakpoint(addr),
            (Point::Hardware, false) => self.debug.remove_hw_breakpoint(addr),
            (Point::Watch(kind), true) => pieces(addr, len).and_then(|pieces| {
                for (i, (a, l)) in pieces.iter().enumerate() {
                    if let Err(e) = self.debug.insert_watchpoint(&watch(*a, *l, kind)) {
                        for (a, l) in &pieces[..i] {
                            let _ = self.debug.remove_watchpoint(&watch(*a, *l, kind));
                        }
                        let e = if pieces.len() > 1 && e.kind == ErrorKind::NO_RESOURCE {
                            AccelError::new(
                                ErrorKind::NO_RESOURCE,
                                format!(
                                    "a {len}-byte watchpoint at {addr:#x} takes {} watchpoint registers \
                                     and too few are free ({})",
                                    pieces.len(),
                                    e.message
                                ),
                            )
                        } else {
                            e
                        };
                        return Err(e);
                    }
                }
                Ok(())
            }),
            (Point::Watch(kind), false) => pieces(addr, len).and_then(|pieces| {
                pieces.iter().try_for_each(|(a, l)| self.debug.remove_watchpoint(&watch(*a, *l, kind)))
            }),
        };
        if let (true, Err(e)) = (insert, &result) {
            log::debug!("gdb: refused: {e}");
            self.last_refusal = Some(e.message.to_string());
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_types() {
        assert_eq!(Point::of_type(b'0'), Some(Point::Software));
        assert_eq!(Point::of_type(b'1'), Some(Point::Hardware));
        assert_eq!(Point::of_type(b'3'), Some(Point::Watch(WatchKind::Read)));
        assert_eq!(Point::of_type(b'5'), None);
    }

    #[test]
    fn a_range_no_register_set_can_cover_is_refused_with_its_size() {
        assert_eq!(pieces(0x1004, 12).map(|p| p.len()).ok(), Some(2));
        let e = pieces(1, 0xffff_ffff).err();
        assert!(e.is_some_and(|e| e.kind == ErrorKind::NO_RESOURCE && e.message.contains("4294967295-byte")));
    }
}
