//! gdb remote-protocol framing on both sides of the stub: incoming bytes cut into whole packets
//! (so that some can be answered before `gdbstub` sees them), packets and notifications encoded
//! for sending, and one outgoing reply extended with features `gdbstub` does not advertise.

/// What the framer made of the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A byte outside any packet: an acknowledgement (`+`, `-`) or an interrupt (0x03).
    Byte(u8),
    /// A whole packet: its bytes as received, its body, and whether its checksum matched.
    Packet {
        /// `$body#cs` exactly as received.
        raw: Vec<u8>,
        /// The body between `$` and `#`, still escaped.
        body: Vec<u8>,
        /// The checksum matched the body.
        valid: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Outside,
    Body,
    Checksum1,
    Checksum2,
}

/// Cuts a byte stream into [`Frame`]s.
#[derive(Debug)]
pub struct Framer {
    state: State,
    raw: Vec<u8>,
    /// The longest packet kept whole; a longer one is passed on as it grows.
    limit: usize,
}

impl Framer {
    /// A framer for packets of up to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { state: State::Outside, raw: Vec::new(), limit }
    }

    /// Takes one byte; returns a frame when one is complete.
    pub fn push(&mut self, byte: u8) -> Option<Frame> {
        match self.state {
            State::Outside if byte == b'$' => {
                self.raw.clear();
                self.raw.push(byte);
                self.state = State::Body;
                None
            }
            State::Outside => Some(Frame::Byte(byte)),
            State::Body => {
                self.raw.push(byte);
                if byte == b'#' {
                    self.state = State::Checksum1;
                } else if self.raw.len() > self.limit {
                    // Too long to be one of ours: it goes on as it is, and gdbstub judges it.
                    self.state = State::Outside;
                    let raw = std::mem::take(&mut self.raw);
                    return Some(Frame::Packet { body: Vec::new(), raw, valid: false });
                }
                None
            }
            State::Checksum1 => {
                self.raw.push(byte);
                self.state = State::Checksum2;
                None
            }
            State::Checksum2 => {
                self.raw.push(byte);
                self.state = State::Outside;
                let raw = std::mem::take(&mut self.raw);
                let body = raw[1..raw.len() - 3].to_vec();
                let sent = std::str::from_utf8(&raw[raw.len() - 2..])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                let valid = sent == Some(checksum(&body));
                Some(Frame::Packet { raw, body, valid })
            }
        }
    }
}

/// The protocol's checksum: the sum of the bytes, modulo 256.
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

/// `body` escaped for sending: `#`, `$`, `}` and `*` become `}` and the byte XOR 0x20.
fn escape(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for &b in body {
        if matches!(b, b'#' | b'$' | b'}' | b'*') {
            out.extend([b'}', b ^ 0x20]);
        } else {
            out.push(b);
        }
    }
    out
}

/// A packet (`$body#cs`), or with `lead` `%` a notification.
fn frame(lead: u8, body: &[u8]) -> Vec<u8> {
    let body = escape(body);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(lead);
    out.extend_from_slice(&body);
    out.extend(format!("#{:02x}", checksum(&body)).bytes());
    out
}

/// A reply packet carrying `body`.
pub fn packet(body: &str) -> Vec<u8> {
    frame(b'$', body.as_bytes())
}

/// An asynchronous notification carrying `body` (`%Stop:...`).
pub fn notification(body: &str) -> Vec<u8> {
    frame(b'%', body.as_bytes())
}

/// An error reply that gdb shows with its text (`E.nn.text`): gdb prints the text after the
/// second dot where it supports textual errors, and otherwise takes it as a plain error.
pub fn error_reply(text: &str) -> Vec<u8> {
    let clean: String =
        text.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { ' ' }).collect();
    packet(&format!("E.01.{clean}"))
}

/// Extends the next reply packet written through it with a suffix, recomputing the checksum;
/// other bytes pass unchanged.
#[derive(Debug, Default)]
pub struct ReplyPatch {
    suffix: Option<&'static str>,
    state: Option<(Vec<u8>, usize)>,
}

impl ReplyPatch {
    /// Extend the next reply with `suffix`.
    pub fn arm(&mut self, suffix: &'static str) {
        self.suffix = Some(suffix);
    }

    /// Cancels the extension if no reply has started since [`ReplyPatch::arm`]; a reply under
    /// way is finished as armed.
    pub fn disarm(&mut self) {
        if self.state.is_none() {
            self.suffix = None;
        }
    }

    /// A reply is to be extended: bytes must go through [`ReplyPatch::filter`].
    pub fn armed(&self) -> bool {
        self.suffix.is_some()
    }

    /// Takes outgoing bytes; returns what to send now.
    pub fn filter(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(bytes.len());
        for &b in bytes {
            let Some(suffix) = self.suffix else {
                out.push(b);
                continue;
            };
            match &mut self.state {
                None if b == b'$' => self.state = Some((Vec::new(), 0)),
                None => out.push(b),
                Some((_, n @ 0)) if b == b'#' => *n = 1,
                Some((body, 0)) => body.push(b),
                Some((body, n)) => {
                    // The old checksum's digits are dropped; after the second, the longer
                    // packet goes out with its own.
                    *n += 1;
                    if *n == 3 {
                        body.extend_from_slice(suffix.as_bytes());
                        out.push(b'$');
                        out.extend_from_slice(body);
                        out.extend(format!("#{:02x}", checksum(body)).bytes());
                        self.state = None;
                        self.suffix = None;
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(bytes: &[u8]) -> Vec<Frame> {
        let mut f = Framer::new(64);
        bytes.iter().filter_map(|b| f.push(*b)).collect()
    }

    #[test]
    fn cuts_packets_and_lone_bytes() {
        let got = frames(b"+$vCont?#49\x03$g#00");
        assert_eq!(got[0], Frame::Byte(b'+'));
        assert_eq!(
            got[1],
            Frame::Packet { raw: b"$vCont?#49".to_vec(), body: b"vCont?".to_vec(), valid: true }
        );
        assert_eq!(got[2], Frame::Byte(3));
        assert!(matches!(&got[3], Frame::Packet { body, valid: false, .. } if body == b"g"));
    }

    #[test]
    fn a_long_packet_passes_whole_and_unjudged() {
        let mut long = b"$X1000,40:".to_vec();
        long.extend([b'a'; 100]);
        let got = frames(&long);
        // The first 65 bytes as one unjudged packet, the rest byte by byte, nothing lost.
        assert!(matches!(&got[0], Frame::Packet { raw, valid: false, .. } if raw.len() == 65));
        assert_eq!(got.len(), 1 + long.len() - 65);
        assert!(got[1..].iter().all(|f| *f == Frame::Byte(b'a')));
    }

    #[test]
    fn encodes_with_escapes_and_checksum() {
        assert_eq!(packet("OK"), b"$OK#9a");
        let note = notification("Stop:T05");
        assert_eq!(&note[..9], b"%Stop:T05");
        assert_eq!(note[9..], *format!("#{:02x}", checksum(b"Stop:T05")).as_bytes());
        assert_eq!(packet("a#b"), b"$a}\x03b#43".to_vec());
        assert!(String::from_utf8(error_reply("must be 4-byte aligned\n"))
            .unwrap()
            .starts_with("$E.01.must be 4-byte aligned #"));
    }

    #[test]
    fn patches_one_reply_and_nothing_else() {
        let mut p = ReplyPatch::default();
        assert_eq!(p.filter(b"+$OK#9a"), b"+$OK#9a");
        p.arm(";QNonStop+");
        let mut out = p.filter(b"+$Packet");
        out.extend(p.filter(b"Size=1000#"));
        out.extend(p.filter(b"a"));
        out.extend(p.filter(b"b$OK#9a"));
        let want = [b"+".to_vec(), packet("PacketSize=1000;QNonStop+"), b"$OK#9a".to_vec()].concat();
        assert_eq!(out, want);
        p.arm(";x");
        p.disarm();
        assert_eq!(p.filter(b"$OK#9a"), b"$OK#9a", "disarmed before any reply");
        p.arm(";x");
        let mut out = p.filter(b"$O");
        p.disarm();
        out.extend(p.filter(b"K#9a"));
        assert_eq!(out, packet("OK;x"), "a reply under way is finished");
    }
}
