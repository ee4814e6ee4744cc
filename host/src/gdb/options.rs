//! How the host asks for gdb to be served: the address, parsed and checked before anything else
//! is opened, and the session's settings.

use std::{
    fmt,
    net::{Ipv4Addr, SocketAddr, ToSocketAddrs},
    os::unix::fs::FileTypeExt,
    path::{Path, PathBuf},
    time::Duration,
};

/// How long a client may send nothing while the guest is stopped before it is disconnected,
/// unless `--gdb-idle-timeout` says otherwise.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Where gdb is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GdbAddress {
    /// A TCP port to listen on.
    Tcp(SocketAddr),
    /// A Unix socket to create, owner-only, at this path (which must not exist).
    Unix(PathBuf),
    /// A character device (a serial or virtio-serial port) to talk over.
    Device(PathBuf),
}

impl GdbAddress {
    /// Parses `--gdb`'s value: `unix:PATH`, a character device's path, `HOST:PORT`, or `:PORT`
    /// and `PORT` for 127.0.0.1:PORT. Paths are checked here: a socket's must not exist yet,
    /// a device's must be a character device.
    pub fn parse(text: &str) -> Result<GdbAddress, String> {
        // The refusal quotes what it was given, which can hold any character: it stays one line.
        Self::parse_checked(text).map_err(|e| {
            e.chars()
                .flat_map(|c| {
                    c.escape_default()
                        .filter(move |_| c.is_control())
                        .chain(Some(c).filter(|c| !c.is_control()))
                })
                .collect()
        })
    }

    fn parse_checked(text: &str) -> Result<GdbAddress, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            return Self::unix(Path::new(path));
        }
        if text.contains('/') {
            return Self::device(Path::new(text));
        }
        let port = text.strip_prefix(':').unwrap_or(text);
        if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
            let port: u16 = port.parse().map_err(|_| format!("port {port} is not in 0-65535"))?;
            return Ok(GdbAddress::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
        }
        let usage = "give HOST:PORT, :PORT or PORT (127.0.0.1), unix:PATH, or a character device's path";
        if !text.contains(':') {
            return Err(format!("'{text}' is not a gdb address: {usage}"));
        }
        let mut found =
            text.to_socket_addrs().map_err(|e| format!("'{text}' is not a gdb address ({e}): {usage}"))?;
        found.next().map(GdbAddress::Tcp).ok_or_else(|| format!("'{text}' resolves to no address: {usage}"))
    }

    fn unix(path: &Path) -> Result<GdbAddress, String> {
        let shown = path.display();
        if path.as_os_str().is_empty() {
            return Err("unix: needs the path of the socket to create, as unix:PATH".into());
        }
        if path.symlink_metadata().is_ok() {
            return Err(format!("{shown} already exists; give unix: a path where nothing is"));
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !parent.is_dir() {
            return Err(format!("{shown}: the directory {} does not exist", parent.display()));
        }
        Ok(GdbAddress::Unix(path.to_path_buf()))
    }

    fn device(path: &Path) -> Result<GdbAddress, String> {
        let shown = path.display();
        let meta = std::fs::metadata(path).map_err(|e| format!("{shown}: {e}"))?;
        let kind = meta.file_type();
        if !kind.is_char_device() {
            let what = if kind.is_file() {
                "a regular file"
            } else if kind.is_dir() {
                "a directory"
            } else if kind.is_socket() {
                "a socket (to serve on a new Unix socket, give unix:PATH)"
            } else {
                "not a character device"
            };
            return Err(format!(
                "{shown} is {what}; a gdb device must be a character device (a serial or virtio-serial port)"
            ));
        }
        Ok(GdbAddress::Device(path.to_path_buf()))
    }
}

impl fmt::Display for GdbAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GdbAddress::Tcp(addr) => write!(f, "{addr}"),
            GdbAddress::Unix(path) => write!(f, "unix:{}", path.display()),
            GdbAddress::Device(path) => write!(f, "{}", path.display()),
        }
    }
}

/// How to serve gdb.
#[derive(Clone, Debug)]
pub struct GdbOptions {
    /// Where to serve it.
    pub address: GdbAddress,
    /// Start with every vCPU stopped, waiting for gdb.
    pub wait: bool,
    /// What `monitor info` says about the backend: its name, ABI and file.
    pub about: String,
    /// How long a client may send nothing while the guest is stopped before it is
    /// disconnected; `None` for ever.
    pub idle_timeout: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(text: &str) -> Option<SocketAddr> {
        match GdbAddress::parse(text) {
            Ok(GdbAddress::Tcp(addr)) => Some(addr),
            _ => None,
        }
    }

    #[test]
    fn a_bare_port_is_on_loopback() {
        let local = SocketAddr::from((Ipv4Addr::LOCALHOST, 1234));
        assert_eq!(tcp("1234"), Some(local));
        assert_eq!(tcp(":1234"), Some(local));
        assert_eq!(tcp("0.0.0.0:1234"), Some(SocketAddr::from(([0, 0, 0, 0], 1234))));
        assert_eq!(tcp("[::1]:1234").map(|a| a.ip().is_loopback()), Some(true));
    }

    #[test]
    fn nonsense_is_refused_in_one_line() {
        for text in
            ["", ":", "70000", ":70000", "nonsense", "host:port", "1.2.3.4:", "unix:", "-1", "\n\n", "/a\n/b"]
        {
            let e = GdbAddress::parse(text).expect_err(text);
            assert!(!e.is_empty() && !e.contains('\n'), "{text}: {e}");
        }
    }

    #[test]
    fn paths_are_checked_for_what_they_are() {
        let dir = std::env::temp_dir().join(format!("accel-gdb-options-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("file");
        std::fs::write(&file, b"").expect("file");
        let e = GdbAddress::parse(&file.display().to_string()).expect_err("a regular file");
        assert!(e.contains("regular file"), "{e}");
        assert!(GdbAddress::parse(&dir.join("missing").display().to_string()).is_err());
        assert!(GdbAddress::parse(&dir.display().to_string()).is_err());
        assert_eq!(GdbAddress::parse("/dev/null"), Ok(GdbAddress::Device("/dev/null".into())));
        let e = GdbAddress::parse(&format!("unix:{}", file.display())).expect_err("exists");
        assert!(e.contains("already exists"), "{e}");
        let new = dir.join("sock");
        assert_eq!(GdbAddress::parse(&format!("unix:{}", new.display())), Ok(GdbAddress::Unix(new)));
        assert!(GdbAddress::parse("unix:/no/such/dir/sock").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
