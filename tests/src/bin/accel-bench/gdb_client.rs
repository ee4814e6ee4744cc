//! A minimal gdb remote-protocol client: what gdb sends, framed as gdb frames it, over TCP to
//! accel-host's stub, in no-ack mode as gdb runs over a reliable connection.

use std::{
    io::{BufRead, BufReader, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use crate::Result;

/// A reply body with its run-length encoding undone: `X*N` is X and then `N - 29` more Xs.
fn run_length_decoded(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    let mut bytes = body.iter().copied();
    while let Some(b) = bytes.next() {
        match (b, out.last().copied()) {
            (b'*', Some(repeated)) => {
                let count = bytes.next().map_or(0, |n| usize::from(n.saturating_sub(29)));
                out.extend(std::iter::repeat_n(repeated, count));
            }
            _ => out.push(b),
        }
    }
    out
}

/// One connection to a gdb stub.
pub struct GdbClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> String + '_ {
    move |e| format!("gdb client: {what}: {e}")
}

impl GdbClient {
    /// Connects to `address`, retrying for up to `wait` while the stub starts, and leaves
    /// acknowledgements off.
    pub fn connect(address: &str, wait: Duration) -> Result<Self> {
        let start = Instant::now();
        let stream = loop {
            match TcpStream::connect(address) {
                Ok(s) => break s,
                Err(e) if start.elapsed() < wait => {
                    log::debug!("gdb client: {address} not ready ({e})");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(format!("gdb client: connecting to {address}: {e}")),
            }
        };
        stream.set_nodelay(true).map_err(io("TCP_NODELAY"))?;
        stream.set_read_timeout(Some(Duration::from_secs(60))).map_err(io("read timeout"))?;
        let writer = stream.try_clone().map_err(io("cloning the stream"))?;
        let mut client = Self { reader: BufReader::new(stream), writer };
        let reply = client.ask("QStartNoAckMode")?;
        if reply != "OK" {
            return Err(format!("gdb client: QStartNoAckMode answered {reply:?}"));
        }
        client.writer.write_all(b"+").map_err(io("acknowledging"))?;
        Ok(client)
    }

    /// Sends the packet `body` and returns the body of the stub's reply.
    pub fn ask(&mut self, body: &str) -> Result<String> {
        let sum = body.bytes().fold(0u8, u8::wrapping_add);
        self.writer.write_all(format!("${body}#{sum:02x}").as_bytes()).map_err(io("sending"))?;
        self.reply()
    }

    /// Sends `body` and checks that the reply starts with `expected`.
    pub fn expect(&mut self, body: &str, expected: &str) -> Result<()> {
        let reply = self.ask(body)?;
        match reply.starts_with(expected) {
            true => Ok(()),
            false => Err(format!("gdb client: {body} answered {reply:?}, expected {expected}...")),
        }
    }

    /// The next packet from the stub, skipping acknowledgements.
    fn reply(&mut self) -> Result<String> {
        let mut skipped = Vec::new();
        self.reader.read_until(b'$', &mut skipped).map_err(io("reading"))?;
        if skipped.last() != Some(&b'$') {
            return Err("gdb client: the stub closed the connection".into());
        }
        let mut body = Vec::new();
        self.reader.read_until(b'#', &mut body).map_err(io("reading"))?;
        body.pop();
        let mut sum = [0u8; 2];
        std::io::Read::read_exact(&mut self.reader, &mut sum).map_err(io("reading the checksum"))?;
        String::from_utf8(run_length_decoded(&body))
            .map_err(|_| "gdb client: a reply that is not text".into())
    }

    /// `monitor CMD`: its output, decoded from the stub's `O` packets.
    pub fn monitor(&mut self, cmd: &str) -> Result<String> {
        let hex: String = cmd.bytes().map(|b| format!("{b:02x}")).collect();
        let mut reply = self.ask(&format!("qRcmd,{hex}"))?;
        let mut text = String::new();
        while let Some(output) = reply.strip_prefix('O').filter(|_| reply != "OK") {
            let bytes: Vec<u8> = (0..output.len() / 2)
                .filter_map(|i| u8::from_str_radix(output.get(2 * i..2 * i + 2)?, 16).ok())
                .collect();
            text.push_str(&String::from_utf8_lossy(&bytes));
            reply = self.reply()?;
        }
        match reply.as_str() {
            "OK" => Ok(text),
            other => Err(format!("gdb client: monitor {cmd} ended with {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn run_lengths_expand() {
        assert_eq!(super::run_length_decoded(b"0* "), b"0000");
        assert_eq!(super::run_length_decoded(b"ab"), b"ab");
    }
}
