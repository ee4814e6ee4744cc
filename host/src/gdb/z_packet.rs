//! What a `Z`/`z` packet names: a software or hardware breakpoint, or a watchpoint of a kind.

/// What a watchpoint watches for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchKind {
    /// `Z2`: writes.
    Write,
    /// `Z3`: reads.
    Read,
    /// `Z4`: reads and writes.
    ReadWrite,
}

/// What a `Z`/`z` packet sets or clears.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// `Z0`: a software breakpoint (BRK).
    Software,
    /// `Z1`: a hardware breakpoint.
    Hardware,
    /// `Z2`..`Z4`: a watchpoint.
    Watch(WatchKind),
}

impl Point {
    /// The point of a `Z`/`z` packet's type digit.
    pub fn of_type(t: u8) -> Option<Point> {
        Some(match t {
            b'0' => Point::Software,
            b'1' => Point::Hardware,
            b'2' => Point::Watch(WatchKind::Write),
            b'3' => Point::Watch(WatchKind::Read),
            b'4' => Point::Watch(WatchKind::ReadWrite),
            _ => return None,
        })
    }
}
