//! The gdb edges: addresses refused before anything is opened, one client at a time, owner-only
//! Unix sockets, loopback by default, a warning on any other bind, bounded memory for a client
//! that never ends its packet, idle clients disconnected, and memory writes that cross RAM's end.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    os::unix::{fs::MetadataExt, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::check::{exists, Check, Env};

/// The checks of this area.
pub fn checks() -> Vec<Check> {
    vec![
        Check::host(
            "--gdb naming a regular file is refused in one line before any plugin is loaded",
            |env| refused_before_plugin(env, |dir| regular_file(dir).display().to_string(), "regular file"),
        ),
        Check::host("--gdb naming no address is refused in one line before any plugin is loaded", |env| {
            refused_before_plugin(env, |_| "nonsense".into(), "not a gdb address")
        }),
        Check::host(
            "--gdb naming a missing path is refused in one line before any plugin is loaded",
            |env| refused_before_plugin(env, |dir| dir.join("missing").display().to_string(), "No such file"),
        ),
        Check::host(
            "--gdb unix:PATH where PATH exists is refused in one line before any plugin is loaded",
            |env| {
                refused_before_plugin(
                    env,
                    |dir| format!("unix:{}", regular_file(dir).display()),
                    "already exists",
                )
            },
        ),
        Check::kvm("--gdb :PORT listens on 127.0.0.1 only, and says nothing of a warning", port_is_loopback),
        Check::kvm(
            "--gdb on a non-loopback address warns in one line that anyone can read and write guest memory",
            non_loopback_warns,
        ),
        Check::kvm(
            "--gdb unix:PATH makes an owner-only socket, serves gdb on it, and removes it at exit",
            unix_socket_is_owner_only,
        ),
        Check::kvm(
            "a second gdb client is refused with an error reply and closed while the first is served on",
            second_client_refused,
        ),
        Check::kvm(
            "an 18 MiB gdb packet that never ends grows the stub by less than 2 MB",
            long_packet_is_bounded,
        ),
        Check::kvm(
            "a gdb client idle past --gdb-idle-timeout is disconnected, and the next finds the guest stopped",
            idle_client_disconnected,
        ),
        Check::kvm(
            "a gdb M or X write that crosses the end of RAM changes nothing in RAM",
            write_across_ram_end,
        ),
    ]
}

/// A regular file in `dir`.
fn regular_file(dir: &Path) -> PathBuf {
    let file = dir.join("regular");
    let _ = std::fs::write(&file, b"not a device\n");
    file
}

/// `accel-host run --gdb ADDR` with a plugin that cannot load is refused for the address, in one
/// line, while the same command without `--gdb` is refused for the plugin: the address is
/// checked first.
fn refused_before_plugin(env: &Env, address: fn(&Path) -> String, text: &str) -> Result<(), String> {
    let dir = env.dir("gdb-address");
    let plugin = dir.join("libaccel_broken.so");
    std::fs::write(&plugin, b"not a shared object").map_err(|e| e.to_string())?;
    let image = regular_file(&dir);
    let (plugin, image) = (plugin.display().to_string(), image.display().to_string());
    let address = address(&dir);
    let limit = Duration::from_secs(60);
    let without = env.accel_host(&["run", "--accel", &plugin, &image], &[], limit)?;
    if without.code != Some(1) || !without.stderr.contains("libaccel_broken.so") {
        return Err(format!("without --gdb, the plugin should be refused: {:?}", without.stderr));
    }
    let ran = env.accel_host(&["run", "--accel", &plugin, "--gdb", &address, &image], &[], limit)?;
    ran.refused_with(1, text)?;
    if !ran.stdout.is_empty() {
        return Err(format!("a refusal prints nothing on stdout, printed {:?}", ran.stdout));
    }
    if ran.stderr.contains("libaccel_broken.so") {
        return Err(format!("the plugin was looked at before the address: {:?}", ran.stderr));
    }
    Ok(())
}

/// An `accel-host run --gdb ... --gdb-wait` of the demo guest on KVM, killed when dropped.
struct Stub {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

/// How long anything the stub is waited for may take before the check fails (it only catches
/// a hang: a nested guest under emulation is slow).
const LIMIT: Duration = Duration::from_secs(120);

impl Stub {
    /// Starts the stub with `args` after the common ones, and waits until it is ready.
    fn start(env: &Env, args: &[&str]) -> Result<Stub, String> {
        let guest = env.guest.as_ref().ok_or("no guest")?;
        let kvm = env.plugin("libaccel_kvm.so");
        let mut command = Command::new(&env.accel_host);
        command.args(["run", "--accel"]).arg(&kvm).args(args).arg("--gdb-wait").arg(guest);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("starting accel-host: {e}"))?;
        let mut pipe = child.stderr.take().ok_or("no stderr pipe")?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let into = Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                if let Ok(mut text) = into.lock() {
                    text.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        });
        let mut stub = Stub { child, stderr };
        let started = Instant::now();
        // The whole line: the pipe may bring it in pieces.
        let ready = |text: &str| {
            text.split_inclusive('\n').any(|l| l.contains("gdb stub ready on") && l.ends_with('\n'))
        };
        while !ready(&stub.stderr()) {
            if let Ok(Some(status)) = stub.child.try_wait() {
                return Err(format!("accel-host ended ({status}): {:?}", stub.stderr()));
            }
            if started.elapsed() > LIMIT {
                return Err(format!("the stub was not ready in time: {:?}", stub.stderr()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(stub)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The stub's resident memory, in kB.
    fn rss_kb(&self) -> Result<u64, String> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .map_err(|e| e.to_string())?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or("no VmRSS")?;
        line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).ok_or_else(|| format!("bad {line:?}"))
    }

    /// Waits for the stub to end.
    fn ended(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if self.child.try_wait().map_err(|e| e.to_string())?.is_some() {
                return Ok(());
            }
            if started.elapsed() > LIMIT {
                return Err(format!("the stub did not end: {:?}", self.stderr()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free TCP port on loopback.
fn free_port() -> Result<u16, String> {
    let probe = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    probe.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

/// A gdb client's end of a connection.
trait Wire: Read + Write {}
impl Wire for TcpStream {}
impl Wire for UnixStream {}

/// A minimal gdb client.
struct Client(Box<dyn Wire>);

impl Client {
    fn tcp(port: u16) -> Result<Client, String> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connecting: {e}"))?;
        stream.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
        Ok(Client(Box::new(stream)))
    }

    fn unix(path: &Path) -> Result<Client, String> {
        let stream = UnixStream::connect(path).map_err(|e| format!("connecting: {e}"))?;
        stream.set_read_timeout(Some(LIMIT)).map_err(|e| e.to_string())?;
        Ok(Client(Box::new(stream)))
    }

    fn send(&mut self, body: &[u8]) -> Result<(), String> {
        let sum = body.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        let mut packet = vec![b'$'];
        packet.extend(body);
        packet.extend(format!("#{sum:02x}").bytes());
        self.0.write_all(&packet).map_err(|e| format!("sending: {e}"))
    }

    /// The next packet's body (acknowledgements skipped), acknowledged.
    fn reply(&mut self) -> Result<String, String> {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match self.0.read(&mut byte) {
                Ok(1) => got.push(byte[0]),
                Ok(_) => return Err(format!("the stub hung up after {:?}", String::from_utf8_lossy(&got))),
                Err(e) => return Err(format!("reading a reply: {e}")),
            }
            let Some(start) = got.iter().position(|b| *b == b'$') else { continue };
            if let Some(hash) = got[start..].iter().position(|b| *b == b'#') {
                if got.len() >= start + hash + 3 {
                    let _ = self.0.write_all(b"+");
                    return Ok(expand(&got[start + 1..start + hash]));
                }
            }
        }
    }

    fn ask(&mut self, body: &str) -> Result<String, String> {
        self.send(body.as_bytes())?;
        self.reply()
    }

    /// Everything until the stub hangs up.
    fn rest(&mut self) -> Result<String, String> {
        let mut got = Vec::new();
        self.0.read_to_end(&mut got).map_err(|e| format!("waiting for the stub to hang up: {e}"))?;
        Ok(String::from_utf8_lossy(&got).into_owned())
    }
}

/// A reply's body with its run-length encoding undone.
fn expand(body: &[u8]) -> String {
    let mut out: Vec<u8> = Vec::new();
    let mut at = 0;
    while at < body.len() {
        match (body[at], out.last().copied(), body.get(at + 1)) {
            (b'*', Some(last), Some(n)) => {
                out.extend(std::iter::repeat_n(last, usize::from(n.saturating_sub(29))));
                at += 2;
            }
            (b, _, _) => {
                out.push(b);
                at += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The reply to `?` is a stop reply.
fn stopped(client: &mut Client) -> Result<(), String> {
    let reply = client.ask("?")?;
    if reply.starts_with('T') || reply.starts_with('S') {
        Ok(())
    } else {
        Err(format!("'?' answered {reply:?}, not a stop reply"))
    }
}

fn port_is_loopback(env: &Env) -> Result<(), String> {
    let port = free_port()?;
    let stub = Stub::start(env, &["--gdb", &format!(":{port}")])?;
    let said = stub.stderr();
    if !said.contains(&format!("ready on 127.0.0.1:{port}")) || said.contains("warning") {
        return Err(format!("stderr {said:?}"));
    }
    stopped(&mut Client::tcp(port)?)
}

fn non_loopback_warns(env: &Env) -> Result<(), String> {
    let port = free_port()?;
    let stub = Stub::start(env, &["--gdb", &format!("0.0.0.0:{port}")])?;
    let said = stub.stderr();
    let warnings: Vec<&str> = said.lines().filter(|l| l.contains("warning")).collect();
    match warnings.as_slice() {
        [one] if one.contains("anyone who can reach it can read and write guest memory") => {}
        _ => return Err(format!("one warning line expected, stderr {said:?}")),
    }
    stopped(&mut Client::tcp(port)?)
}

fn unix_socket_is_owner_only(env: &Env) -> Result<(), String> {
    let path = env.dir("gdb-unix").join("gdb.sock");
    let mut stub = Stub::start(env, &["--gdb", &format!("unix:{}", path.display())])?;
    let mode = path.symlink_metadata().map_err(|e| format!("the socket: {e}"))?.mode();
    if mode & 0o077 != 0 {
        return Err(format!("the socket's mode is {:o}", mode & 0o7777));
    }
    let mut client = Client::unix(&path)?;
    stopped(&mut client)?;
    client.send(b"k")?;
    stub.ended()?;
    if exists(&path) {
        return Err("the socket is still there after the stub ended".into());
    }
    Ok(())
}

fn second_client_refused(env: &Env) -> Result<(), String> {
    let port = free_port()?;
    let _stub = Stub::start(env, &["--gdb", &format!(":{port}")])?;
    let mut first = Client::tcp(port)?;
    stopped(&mut first)?;
    let mut second = Client::tcp(port)?;
    second.send(b"qSupported:multiprocess+")?;
    let told = second.rest()?;
    if !told.contains("$E.another gdb client is attached#") {
        return Err(format!("the second client read {told:?}"));
    }
    stopped(&mut first)
}

fn long_packet_is_bounded(env: &Env) -> Result<(), String> {
    let port = free_port()?;
    let stub = Stub::start(env, &["--gdb", &format!(":{port}")])?;
    let mut client = Client::tcp(port)?;
    stopped(&mut client)?;
    let before = stub.rss_kb()?;
    let mut chunk = vec![b'a'; 1 << 20];
    chunk[0] = b'$';
    for _ in 0..18 {
        client.0.write_all(&chunk).map_err(|e| format!("sending: {e}"))?;
        chunk[0] = b'a';
    }
    // A packet after it: its reply says every byte before it was read.
    stopped(&mut client)?;
    let after = stub.rss_kb()?;
    let grown = after.saturating_sub(before);
    if grown >= 2048 {
        return Err(format!("VmRSS grew from {before} kB to {after} kB"));
    }
    println!("  (VmRSS {before} kB before, {after} kB after)");
    Ok(())
}

fn idle_client_disconnected(env: &Env) -> Result<(), String> {
    let port = free_port()?;
    let _stub = Stub::start(env, &["--gdb", &format!(":{port}"), "--gdb-idle-timeout", "2"])?;
    let mut idle = Client::tcp(port)?;
    stopped(&mut idle)?;
    idle.rest()?;
    stopped(&mut Client::tcp(port)?)
}

fn write_across_ram_end(env: &Env) -> Result<(), String> {
    // 128 MiB of RAM at 0x4000_0000, and the MMU off at the guest's entry.
    let port = free_port()?;
    let _stub = Stub::start(env, &["--gdb", &format!(":{port}"), "--mem", "128M"])?;
    let mut client = Client::tcp(port)?;
    let before = client.ask("m47fffffc,4")?;
    if before.len() != 8 || before.starts_with('E') {
        return Err(format!("reading RAM's last bytes: {before:?}"));
    }
    let crossing = client.ask("M47fffffc,8:1122334455667788")?;
    let mut x = b"X47fffffe,4:".to_vec();
    x.extend(b"wxyz");
    client.send(&x)?;
    let crossing_x = client.reply()?;
    if !crossing.starts_with('E') || !crossing_x.starts_with('E') {
        return Err(format!("writes across RAM's end answered {crossing:?} and {crossing_x:?}"));
    }
    drop(client);
    // A new client reads RAM as it was.
    let mut client = Client::tcp(port)?;
    let after = client.ask("m47fffffc,4")?;
    if after != before {
        return Err(format!("RAM's last bytes were {before}, are {after}"));
    }
    // A write wholly in RAM does change it.
    if client.ask("M47fffffc,4:a1b2c3d4")? != "OK" || client.ask("m47fffffc,4")? != "a1b2c3d4" {
        return Err("a write inside RAM did not take".into());
    }
    Ok(())
}
