//! The connection to gdb: a TCP listener or a character device, a reader thread that turns its
//! bytes into session events, and the writer gdbstub talks through.

use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::{mpsc, Arc},
};

use accel_api::{AccelError, ErrorKind, Result};
use gdbstub::conn::Connection;

use super::{vcpu_thread::Event, GdbOptions};

/// Writes to gdb through the session's shared byte sink (shared so that the protocol can be
/// restarted on the same connection).
pub struct Conn(pub Arc<std::sync::Mutex<Box<dyn Write + Send>>>);

impl Conn {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut Box<dyn Write + Send>) -> std::io::Result<T>,
    ) -> std::io::Result<T> {
        let mut w = self.0.lock().map_err(|_| std::io::Error::other("the gdb writer lock is poisoned"))?;
        f(&mut w)
    }
}

impl Connection for Conn {
    type Error = std::io::Error;

    fn write(&mut self, byte: u8) -> std::io::Result<()> {
        self.with(|w| w.write_all(&[byte]))
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.with(|w| w.write_all(buf))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.with(|w| w.flush())
    }
}

pub fn accel_err(e: impl std::fmt::Display) -> AccelError {
    AccelError::new(ErrorKind::IO, e.to_string())
}

/// Opens the gdb connection: returns a writer and starts a reader thread feeding `events`.
pub fn connect(options: &GdbOptions, events: mpsc::Sender<Event>) -> Result<Box<dyn Write + Send>> {
    let is_device = options.address.contains('/');
    let (reader, writer): (Box<dyn Read + Send>, Box<dyn Write + Send>) = if is_device {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&options.address)
            .map_err(|e| accel_err(format!("opening {}: {e}", options.address)))?;
        let reader = file.try_clone().map_err(accel_err)?;
        eprintln!("accel-host: gdb stub ready on {}", options.address);
        (Box::new(reader), Box::new(file))
    } else {
        let listener = TcpListener::bind(&options.address)
            .map_err(|e| accel_err(format!("listening on {}: {e}", options.address)))?;
        eprintln!("accel-host: gdb stub ready on {}", options.address);
        let (stream, peer) = listener.accept().map_err(accel_err)?;
        log::info!("gdb: connection from {peer}");
        let _ = stream.set_nodelay(true);
        (Box::new(stream.try_clone().map_err(accel_err)?), Box::new(stream))
    };
    std::thread::Builder::new()
        .name("gdb-reader".into())
        .spawn(move || {
            let mut reader = reader;
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    // A character device (a virtio-serial port) reads as end-of-file while nobody
                    // is connected at the other end: wait for gdb rather than hang up.
                    Ok(0) if is_device => std::thread::sleep(std::time::Duration::from_millis(20)),
                    Ok(0) | Err(_) => {
                        let _ = events.send(Event::Closed);
                        return;
                    }
                    Ok(n) => {
                        for b in &buf[..n] {
                            if events.send(Event::Byte(*b)).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        })
        .map_err(accel_err)?;
    Ok(writer)
}
