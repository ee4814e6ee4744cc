//! gdb remote-protocol framing: gdb's bytes cut into packets once, with a bound on a packet's
//! length, and replies and notifications encoded (escaped, run-length encoded, checksummed).

/// The longest packet body accepted, as advertised in `qSupported` (`PacketSize`): room for a
/// whole `G` packet at the largest SVE vector length. A longer packet is discarded as it comes.
pub const PACKET_SIZE: usize = 0x10000;

/// What the framer made of the bytes so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A byte outside any packet: an acknowledgement (`+`, `-`) or an interrupt (0x03).
    Byte(u8),
    /// A whole packet: its body (unescaped), and whether its checksum matched.
    Packet {
        /// The body between `$` and `#`, with `}` escapes undone.
        body: Vec<u8>,
        /// The checksum matched the body as sent.
        valid: bool,
    },
    /// A packet grew past the limit: what it has is dropped, and the rest is skipped.
    TooLong,
    /// The end (`#` and checksum) of a packet that grew past the limit.
    Dropped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Outside,
    Body,
    /// Inside a packet longer than the limit: its bytes are skipped.
    Skipping,
    Checksum1,
    Checksum2(u8),
}

/// Cuts a byte stream into [`Frame`]s, holding at most one packet of up to `limit` bytes.
/// A `$` always starts a packet (gdb escapes it inside one), so a packet that never ends is
/// forgotten when the next one starts.
#[derive(Debug)]
pub struct Framer {
    state: State,
    body: Vec<u8>,
    limit: usize,
    /// The packet being skipped is too long: its end is reported as [`Frame::Dropped`].
    skipping: bool,
}

impl Framer {
    /// A framer for packet bodies of up to `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self { state: State::Outside, body: Vec::new(), limit, skipping: false }
    }

    /// How many bytes of a packet are held (for tests of the bound).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.body.capacity()
    }

    /// Takes one byte; returns a frame when one is complete.
    pub fn push(&mut self, byte: u8) -> Option<Frame> {
        if byte == b'$' {
            self.body.clear();
            self.skipping = false;
            self.state = State::Body;
            return None;
        }
        match self.state {
            State::Outside => Some(Frame::Byte(byte)),
            State::Body | State::Skipping if byte == b'#' => {
                self.state = State::Checksum1;
                None
            }
            State::Body if self.body.len() >= self.limit => {
                self.body = Vec::new();
                self.skipping = true;
                self.state = State::Skipping;
                Some(Frame::TooLong)
            }
            State::Body => {
                self.body.push(byte);
                None
            }
            State::Skipping => None,
            State::Checksum1 => {
                self.state = State::Checksum2(byte);
                None
            }
            State::Checksum2(high) => {
                self.state = State::Outside;
                if std::mem::take(&mut self.skipping) {
                    return Some(Frame::Dropped);
                }
                let sent =
                    std::str::from_utf8(&[high, byte]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                let valid = sent == Some(checksum(&self.body));
                let body = unescape(&std::mem::take(&mut self.body));
                Some(Frame::Packet { body, valid })
            }
        }
    }
}

/// `body` with its escapes (`}` and the byte XOR 0x20) undone.
fn unescape(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut bytes = body.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'}' => out.extend(bytes.next().map(|e| e ^ 0x20)),
            _ => out.push(b),
        }
    }
    out
}

/// The protocol's checksum: the sum of the bytes, modulo 256.
pub fn checksum(body: &[u8]) -> u8 {
    body.iter().fold(0u8, |sum, b| sum.wrapping_add(*b))
}

/// `body` escaped for sending (`#`, `$`, `}` and `*` become `}` and the byte XOR 0x20), with
/// runs of a letter or digit run-length encoded: `c*n` stands for `c` and `n - 29` more of it,
/// where `n` is never `#`, `$` or `}`.
fn encode(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut at = 0;
    while at < body.len() {
        let b = body[at];
        if matches!(b, b'#' | b'$' | b'}' | b'*') {
            out.extend([b'}', b ^ 0x20]);
            at += 1;
            continue;
        }
        let run = body[at..].iter().take(98).take_while(|c| **c == b).count();
        if b.is_ascii_alphanumeric() && run >= 4 {
            // A run of 7, 8 or 97 would have its count sent as `#`, `$` or `}`.
            let run = match run {
                7 | 8 => 6,
                97 => 96,
                run => run,
            };
            out.extend([b, b'*', (run - 1 + 29) as u8]);
            at += run;
        } else {
            out.push(b);
            at += 1;
        }
    }
    out
}

/// A packet (`$body#cs`), or with `lead` `%` a notification.
fn frame(lead: u8, body: &[u8]) -> Vec<u8> {
    let body = encode(body);
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

/// A reply packet carrying the bytes of `body`.
pub fn packet_bytes(body: &[u8]) -> Vec<u8> {
    frame(b'$', body)
}

/// An asynchronous notification carrying `body` (`%Stop:...`).
pub fn notification(body: &str) -> Vec<u8> {
    frame(b'%', body.as_bytes())
}

/// The body of an error reply that gdb shows with its text (`E.nn.text`): gdb prints the text
/// after the second dot where it supports textual errors, and otherwise takes a plain error.
pub fn error_body(text: &str) -> String {
    let clean: String =
        text.chars().map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { ' ' }).collect();
    format!("E.01.{clean}")
}

/// An error reply packet with its text (see [`error_body`]).
pub fn error_reply(text: &str) -> Vec<u8> {
    packet(&error_body(text))
}

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of hex text; `None` when it is not an even number of hex digits.
pub fn unhex(text: &[u8]) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    text.chunks(2)
        .map(|pair| std::str::from_utf8(pair).ok().and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(limit: usize, bytes: &[u8]) -> Vec<Frame> {
        let mut f = Framer::new(limit);
        bytes.iter().filter_map(|b| f.push(*b)).collect()
    }

    /// Undoes [`encode`]'s run-length encoding and escapes, as gdb does.
    fn decode(body: &[u8]) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::new();
        let mut at = 0;
        while at < body.len() {
            match body[at] {
                b'*' => {
                    let last = *out.last().expect("a run repeats a byte");
                    out.extend(std::iter::repeat_n(last, usize::from(body[at + 1]) - 29));
                    at += 2;
                }
                b'}' => {
                    out.push(body[at + 1] ^ 0x20);
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

    #[test]
    fn cuts_packets_and_lone_bytes() {
        let got = frames(64, b"+$vCont?#49\x03$g#00$X0,1:}]#00");
        assert_eq!(got[0], Frame::Byte(b'+'));
        assert_eq!(got[1], Frame::Packet { body: b"vCont?".to_vec(), valid: true });
        assert_eq!(got[2], Frame::Byte(3));
        assert_eq!(got[3], Frame::Packet { body: b"g".to_vec(), valid: false });
        assert_eq!(got[4], Frame::Packet { body: b"X0,1:}".to_vec(), valid: false }, "unescaped");
    }

    #[test]
    fn chunks_split_anywhere_frame_alike() {
        let stream = b"+$qSupported:multiprocess+#c6\x03$m40000000,4#51-$Z1,400001b4,4#d2+";
        let whole = frames(64, stream);
        assert_eq!(whole.len(), 7);
        for cut in 0..stream.len() {
            let mut f = Framer::new(64);
            let mut got: Vec<Frame> = stream[..cut].iter().filter_map(|b| f.push(*b)).collect();
            got.extend(stream[cut..].iter().filter_map(|b| f.push(*b)));
            assert_eq!(got, whole, "cut at {cut}");
        }
    }

    #[test]
    fn an_overlong_packet_is_dropped_with_bounded_memory() {
        let mut f = Framer::new(PACKET_SIZE);
        assert_eq!(f.push(b'$'), None);
        let chunk = [b'a'; 4096];
        let mut got = Vec::new();
        // 18 MiB with no end.
        for _ in 0..18 * 256 {
            got.extend(chunk.iter().filter_map(|b| f.push(*b)));
            assert!(f.held() <= PACKET_SIZE, "held {}", f.held());
        }
        assert_eq!(got, [Frame::TooLong]);
        assert_eq!(f.held(), 0);
        // Its end is reported; then framing goes on as before.
        let rest: Vec<Frame> = b"#00$g#67".iter().filter_map(|b| f.push(*b)).collect();
        assert_eq!(rest, [Frame::Dropped, Frame::Packet { body: b"g".to_vec(), valid: true }]);
        // A packet that never ends is forgotten at the next one's start.
        let again = frames(4, b"$aaaaaaaa$g#67");
        assert_eq!(again, [Frame::TooLong, Frame::Packet { body: b"g".to_vec(), valid: true }]);
        assert_eq!(frames(4, b"$aaaa#84"), [Frame::Packet { body: b"aaaa".to_vec(), valid: true }]);
    }

    #[test]
    fn encodes_with_escapes_runs_and_checksum() {
        assert_eq!(packet("OK"), b"$OK#9a");
        let note = notification("Stop:T05");
        assert_eq!(&note[..9], b"%Stop:T05");
        assert_eq!(note[9..], *format!("#{:02x}", checksum(b"Stop:T05")).as_bytes());
        assert_eq!(packet("a#b"), b"$a}\x03b#43".to_vec());
        assert_eq!(
            packet("000000"),
            [&b"$0*\"#"[..], format!("{:02x}", checksum(b"0*\"")).as_bytes()].concat()
        );
        for n in 1..300 {
            for text in [format!("x{}y", "0".repeat(n)), "*#$}".repeat(n % 7), "  ".repeat(n)] {
                let sent = packet(&text);
                let body = &sent[1..sent.len() - 3];
                assert!(!body.iter().any(|b| matches!(b, b'#' | b'$')), "{text}");
                assert!(!body.windows(2).any(|w| w == b"*}"), "{text}");
                assert_eq!(decode(body), text.as_bytes(), "{text}");
            }
        }
        assert!(String::from_utf8(error_reply("must be 4-byte aligned\n"))
            .unwrap()
            .starts_with("$E.01.must be 4-byte aligned #"));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 7]), "00ab07");
        assert_eq!(unhex(b"00ab07"), Some(vec![0, 0xab, 7]));
        assert_eq!(unhex(b"0ab"), None);
        assert_eq!(unhex(b"zz"), None);
    }
}
