//! Faults a test injects itself: a loopback TCP proxy it can cut, and a private
//! Mosquitto it can kill and restart.

use std::{
    fs,
    io::{self, Read, Write},
    net::{Shutdown, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

/// Forwards 127.0.0.1:<port> to a target; `cut` drops every connection and refuses
/// new ones until `restore`, as a pulled cable or a restarting server would.
pub struct TcpProxy {
    pub port: u16,
    line: Arc<Line>,
    done: Arc<AtomicBool>,
}

/// What the proxy's threads share: whether the line is up, the open connections, and
/// the commit trap (see [`TcpProxy::cut_after_next_commit`]).
#[derive(Default)]
struct Line {
    up: AtomicBool,
    conns: Mutex<Vec<TcpStream>>,
    /// 0: off; 1: waiting for a client's COMMIT; 2: COMMIT forwarded, the server's
    /// answer is to be swallowed and the line cut.
    trap: AtomicU8,
    /// The connection whose COMMIT sprang the trap: only its answer is swallowed (a
    /// client with several connections, parallel writers, gets the others' answers).
    trapped: AtomicUsize,
    /// Numbers the connections.
    accepted: AtomicUsize,
    /// How late the client's bytes reach the server (see [`TcpProxy::start_lagging`]).
    lag: Option<Duration>,
}

impl Line {
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

impl TcpProxy {
    pub fn start(target: &str) -> TcpProxy {
        Self::with_line(target, Line::default())
    }

    /// A proxy whose client bytes reach the server `lag` late, and are lost if the
    /// client closes the connection meanwhile: a server that had not read the client's
    /// last packets when the connection was reset (a socket closed with unread data
    /// sends a reset, and the peer may drop what it had not read).
    pub fn start_lagging(target: &str, lag: Duration) -> TcpProxy {
        Self::with_line(
            target,
            Line {
                lag: Some(lag),
                ..Line::default()
            },
        )
    }

    fn with_line(target: &str, line: Line) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let line = Arc::new(line);
        line.up.store(true, Ordering::SeqCst);
        let done = Arc::new(AtomicBool::new(false));
        let (line2, done2, target) = (line.clone(), done.clone(), target.to_string());
        thread::spawn(move || {
            while !done2.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        if !line2.up.load(Ordering::SeqCst) {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        }
                        let Ok(server) = TcpStream::connect(&target) else {
                            continue;
                        };
                        let mut list = line2.conns.lock().unwrap();
                        list.push(client.try_clone().unwrap());
                        list.push(server.try_clone().unwrap());
                        let id = line2.accepted.fetch_add(1, Ordering::SeqCst);
                        pipe(
                            client.try_clone().unwrap(),
                            server.try_clone().unwrap(),
                            line2.clone(),
                            (id, true),
                        );
                        pipe(server, client, line2.clone(), (id, false));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(5))
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        TcpProxy { port, line, done }
    }

    pub fn cut(&self) {
        self.line.cut();
    }

    pub fn restore(&self) {
        self.line.up.store(true, Ordering::SeqCst);
    }

    /// How many connections it has forwarded (not those refused while cut).
    pub fn forwarded(&self) -> usize {
        self.line.accepted.load(Ordering::SeqCst)
    }

    /// The next COMMIT a client sends reaches the server, but the server's answer is
    /// swallowed and the line cut: the client cannot know whether it committed.
    /// (MySQL protocol: a COM_QUERY packet, command byte 3, with the text COMMIT.)
    pub fn cut_after_next_commit(&self) {
        self.line.trapped.store(usize::MAX, Ordering::SeqCst);
        self.line.trap.store(1, Ordering::SeqCst);
    }

    /// Whether the trap has gone off.
    pub fn trap_sprung(&self) -> bool {
        self.line.trap.load(Ordering::SeqCst) == 0 && !self.line.up.load(Ordering::SeqCst)
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.done.store(true, Ordering::SeqCst);
        self.line.cut();
    }
}

/// `(connection, from_client)` says which connection and which way.
fn pipe(mut from: TcpStream, to: TcpStream, line: Arc<Line>, way: (usize, bool)) {
    let (_, from_client) = way;
    match line.lag {
        Some(lag) if from_client => {
            let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
            let closed = Arc::new(AtomicBool::new(false));
            let (late, to2) = (closed.clone(), to.try_clone().unwrap());
            thread::spawn(move || delay(rx, to2, lag, &late));
            thread::spawn(move || {
                let mut buf = [0u8; 16 << 10];
                while let Ok(n @ 1..) = from.read(&mut buf) {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                closed.store(true, Ordering::SeqCst);
            });
        }
        _ => forward(from, to, line, way),
    }
}

/// Writes what the client sent `lag` after it came; once the client has closed, drops
/// what is still waiting and closes the server's side.
fn delay(
    rx: std::sync::mpsc::Receiver<(Instant, Vec<u8>)>,
    mut to: TcpStream,
    lag: Duration,
    closed: &AtomicBool,
) {
    while let Ok((at, bytes)) = rx.recv() {
        let due = at + lag;
        while Instant::now() < due && !closed.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
        if closed.load(Ordering::SeqCst) || to.write_all(&bytes).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
}

fn forward(mut from: TcpStream, mut to: TcpStream, line: Arc<Line>, way: (usize, bool)) {
    let (id, from_client) = way;
    thread::spawn(move || {
        let mut buf = [0u8; 16 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if from_client
                        && line.trap.load(Ordering::SeqCst) == 1
                        && buf[..n].windows(7).any(|w| w == b"\x03COMMIT")
                        && line
                            .trap
                            .compare_exchange(1, 2, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok()
                    {
                        // Before the COMMIT goes on, so before its answer can come.
                        line.trapped.store(id, Ordering::SeqCst);
                    } else if !from_client
                        && line.trapped.load(Ordering::SeqCst) == id
                        && line
                            .trap
                            .compare_exchange(2, 0, Ordering::SeqCst, Ordering::SeqCst)
                            .is_ok()
                    {
                        line.cut();
                        break;
                    }
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// A Mosquitto of the test's own on a free port, with its own persistence directory
/// and no queue limit (the system broker's 1,000-message default drops data while a
/// collector is stopped).
pub struct PrivateBroker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PrivateBroker {
    pub fn start() -> PrivateBroker {
        Self::start_with(|_| String::new())
    }

    /// Starts with extra settings for its listener; `extra` gets the broker's own
    /// directory (for certificates, password files).
    pub fn start_with(extra: impl FnOnce(&Path) -> String) -> PrivateBroker {
        let dir = tempfile::tempdir().unwrap();
        // Started as root, Mosquitto drops to its own user, which cannot write to a
        // 0700 root temp dir: persistence would silently fail, and a restart would
        // forget the collector's session and the messages queued for it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        }
        let port = free_port();
        let extra = extra(dir.path());
        let anonymous = !extra.contains("password_file");
        let conf = format!(
            "listener {port} 127.0.0.1\n{extra}allow_anonymous {anonymous}\npersistence true\npersistence_location {}/\n\
             autosave_interval 1\nmax_queued_messages 0\nmax_inflight_messages 100\nlog_dest file {}/mosquitto.log\n",
            dir.path().display(),
            dir.path().display()
        );
        fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut b = PrivateBroker {
            port,
            dir,
            child: None,
        };
        b.restart();
        b
    }

    pub fn uri(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("mosquitto.conf")
    }

    /// Starts it (again, with the same persistence) and waits until it listens.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        let child = Command::new(mosquitto())
            .arg("-c")
            .arg(self.conf())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto (scripts/test.sh installs it)");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < until,
                "private mosquitto did not listen on {}",
                self.port
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM: Mosquitto saves its persistence database and exits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .unwrap();
            let _ = child.wait();
        }
    }
}

fn mosquitto() -> &'static str {
    [
        "/usr/sbin/mosquitto",
        "/usr/bin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .unwrap_or("mosquitto")
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
