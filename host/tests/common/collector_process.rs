//! The collector binary as a child process: started for a config dir and waited for,
//! stopped, killed and restarted, its log kept in the config dir.

use std::{
    fs,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use super::{forget_session, Setup};

/// Runs the collector binary with a config dir, capturing its log.
pub fn mes_collector(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mes-collector"));
    cmd.args(args)
        .env("RUST_LOG", "info")
        .env_remove("MES_DB_PASSWORD")
        .env_remove("MES_MQTT_PASSWORD");
    cmd
}

/// `mes-collector run` for `setup`, to its end, for a collector expected to refuse to
/// start: (exit code, log). Killed after `timeout` if it does start.
pub fn run_to_exit(setup: &Setup, timeout: Duration) -> (Option<i32>, String) {
    let mut child = mes_collector(&["run", "--config-dir", setup.path().to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `mes-collector` with `args`, its output appended to `log` after a line that
/// marks the start of run number `run` (see [`run_in_log`]).
pub fn spawn_logged(args: &[&str], log: &Path, run: u32) -> Child {
    let mut out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    writeln!(out, "--- run {run} ---").unwrap();
    mes_collector(args)
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap()
}

/// The part of a log written by [`spawn_logged`] from run number `run` on, or `None`
/// while that run has not started.
pub fn run_in_log(log: &str, run: u32) -> Option<&str> {
    log.find(&format!("--- run {run} ---")).map(|at| &log[at..])
}

/// Waits until run number `run` of the collector `child`, started by [`spawn_logged`]
/// with `log`, has subscribed; fails if it exits first or takes over 30 s.
pub fn wait_subscribed(child: &mut Child, log: &Path, run: u32) {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if run_in_log(&text, run).is_some_and(|t| t.contains("subscribed to")) {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("collector exited ({status}) before subscribing:\n{text}");
        }
        assert!(
            Instant::now() < until,
            "collector did not subscribe within 30 s:\n{text}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

pub struct Collector {
    child: Option<Child>,
    log: PathBuf,
    setup_dir: PathBuf,
    broker: String,
    client_id: String,
    runs: u32,
    /// Options before the `run` command, such as `--log-format json`.
    global_args: Vec<String>,
}

impl Collector {
    /// Starts `mes-collector run` and waits until it has subscribed.
    pub fn start(setup: &Setup) -> Collector {
        Self::start_with(setup, &[])
    }

    /// [`Collector::start`] with options given before `run`.
    pub fn start_with(setup: &Setup, global_args: &[&str]) -> Collector {
        let mut c = Collector {
            child: None,
            log: setup.path().join("collector.log"),
            setup_dir: setup.path().to_path_buf(),
            broker: setup.broker.clone(),
            client_id: setup.client_id.clone(),
            runs: 0,
            global_args: global_args.iter().map(|a| a.to_string()).collect(),
        };
        c.restart();
        c
    }

    /// Starts the collector again (after `kill9` or `stop`), appending to the same log.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "still running");
        self.runs += 1;
        let mut args: Vec<&str> = self.global_args.iter().map(String::as_str).collect();
        args.extend(["run", "--config-dir", self.setup_dir.to_str().unwrap()]);
        let child = self.child.insert(spawn_logged(&args, &self.log, self.runs));
        wait_subscribed(child, &self.log, self.runs);
    }

    /// Peak resident memory (VmHWM) of the running collector, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let until = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().unwrap()) {
                panic!(
                    "collector exited ({status}) before {needle:?}:\n{}",
                    self.log()
                );
            }
            if Instant::now() > until {
                panic!(
                    "no {needle:?} in the collector's log after {timeout:?}:\n{}",
                    self.log()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM, then waits for the exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_within(Duration::from_secs(20))
            .unwrap_or_else(|| {
                panic!(
                    "collector did not stop within 20 s of SIGTERM:\n{}",
                    self.log()
                )
            })
    }

    /// SIGTERM, then waits up to `timeout` for the exit; SIGKILL and `None` past it,
    /// for callers that record a slow stop instead of failing on it.
    pub fn stop_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let until = Instant::now() + timeout;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status if the collector ended on its own; it then counts as stopped,
    /// so `restart` works.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().unwrap()?;
        self.child = None;
        Some(status)
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
        forget_session(&self.broker, &self.client_id);
        if thread::panicking() {
            eprintln!(
                "--- collector log ({}) ---\n{}",
                self.setup_dir.display(),
                self.log()
            );
        }
    }
}

/// `mes-collector check` on the setup: (passed, stdout).
pub fn check(setup: &Setup) -> (bool, String) {
    let out = mes_collector(&["check", "--config-dir", setup.path().to_str().unwrap()])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}
