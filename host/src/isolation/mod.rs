//! Process isolation for plugins the plant does not trust (`plugins.isolate`).
//!
//! An isolated class's plugin runs in a child process of the collector, the same
//! binary in its hidden `plugin-runner` mode ([`runner`]), one process per class,
//! started with the class's first message. The collector sends it each message and
//! gets back the writes the plugin made ([`wire`]), which it records through the same
//! [`Recorder`](crate::sink::batch::Recorder) checks as an in-process call and commits
//! in the same batch.
//!
//! What this buys: a segfault, an abort, a stack overflow or a hang of the plugin ends
//! (or gets killed in) the runner only. The message in hand becomes a `plugin_crashed`
//! or `plugin_hung` dead letter at once, the collector runs on without a restart, and
//! a new runner starts with the next message. The crash guard's marker, breaker and
//! quarantine are not involved: the collector itself never died.
//!
//! What it costs: two pipe round trips per message and the copying on either side
//! (measured in docs/operations.md). What is lost when a runner restarts: the plugin
//! instances of its machines, which are created anew (as after a collector restart).

pub mod runner;
pub mod wire;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ffi::OsString,
    io::{self, Read, Write},
    os::{
        fd::AsRawFd,
        unix::process::{CommandExt, ExitStatusExt},
    },
    path::PathBuf,
    process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use log::{error, info, warn};

use crate::{
    config::ClassMapping,
    crash_guard::signals,
    dead_letter::{DeadLetter, Reason},
    plugins::{trust::PluginPolicy, LoadedPlugin, PluginInfo},
};
use wire::{Call, Enc, Reply, WireOp, MAX_FRAME};

/// How long a runner may take to load its plugin and say hello, at least.
const MIN_START_TIMEOUT: Duration = Duration::from_secs(5);

/// One message for an isolated plugin.
pub struct Request<'a> {
    pub topic: &'a str,
    pub cnc_id: &'a str,
    pub part_program: &'a str,
    pub timestamp: i64,
    pub payload: &'a str,
    /// The message's spool record, for the dead letter's detail.
    pub seq: Option<u64>,
}

/// The isolated classes of a collector and their runner processes.
pub struct Isolation {
    exe: PathBuf,
    /// The runner's arguments, less `--plugin FILE`.
    args: Vec<OsString>,
    /// `plugins.call_timeout_ms`; `None` waits for ever.
    timeout: Option<Duration>,
    /// cnc_id → class, for the machines of isolated classes only.
    machines: HashMap<String, String>,
    /// cnc_id → its settings as JSON text.
    settings: HashMap<String, Option<String>>,
    runners: HashMap<String, Isolated>,
    /// Constructor refusals, kept as in process: the constructor is not retried.
    refused: HashMap<String, DeadLetter>,
}

struct Isolated {
    info: Arc<PluginInfo>,
    process: Option<Process>,
    /// Runner processes started so far, for the log.
    starts: u64,
}

struct Process {
    child: Child,
    to: ChildStdin,
    from: ChildStdout,
    /// Machines whose instance this process has been asked to create.
    introduced: HashSet<String>,
    frame: Vec<u8>,
}

/// Why an exchange with a runner failed.
enum Broken {
    TimedOut,
    /// The pipe closed or failed: the runner is gone.
    Gone(String),
    /// The runner sent something that is not a frame of the protocol.
    Garbled(String),
}

impl Isolation {
    /// The isolation of the classes `policy.isolate` names; `None` when it names none,
    /// so that a collector without isolated classes does not look for them.
    pub fn new(
        policy: &PluginPolicy,
        classes: &BTreeMap<String, ClassMapping>,
        plugins: &BTreeMap<String, LoadedPlugin>,
    ) -> Result<Option<Isolation>, String> {
        if policy.isolate.is_empty() {
            return Ok(None);
        }
        let exe = std::env::current_exe()
            .map_err(|e| format!("plugins.isolate: cannot find the collector's own executable to start plugin runners: {e}"))?;
        let mut args: Vec<OsString> = vec![
            "--log-format".into(),
            crate::logging::format_name().into(),
            "plugin-runner".into(),
            "--log-records-per-second".into(),
            policy.log_records_per_second.to_string().into(),
            "--metric-series-per-class".into(),
            policy.metric_series_per_class.to_string().into(),
        ];
        if policy.allow_insecure_permissions {
            args.push("--allow-insecure-permissions".into());
        }
        if policy.allow.is_some() {
            // Even an empty list: then nothing may load, as in the collector.
            args.push("--allow-only".into());
        }
        for sha in policy.allow.iter().flatten() {
            args.push("--allow".into());
            args.push(sha.into());
        }
        let mut runners = HashMap::new();
        for class in &policy.isolate {
            match plugins.get(class) {
                Some(p) => {
                    runners.insert(
                        class.clone(),
                        Isolated {
                            info: p.info.clone(),
                            process: None,
                            starts: 0,
                        },
                    );
                    info!(
                        "plugin {} {} ({}) runs isolated in a runner process (plugins.isolate)",
                        p.info.class_name,
                        p.info.version,
                        p.info.file.display()
                    );
                }
                None => {
                    warn!("plugins.isolate names class {class:?}, which no loaded plugin provides")
                }
            }
        }
        let machines = classes
            .values()
            .filter(|m| runners.contains_key(&m.class_name))
            .map(|m| (m.cnc_id.clone(), m.class_name.clone()))
            .collect();
        let settings = classes
            .values()
            .filter(|m| runners.contains_key(&m.class_name))
            .map(|m| (m.cnc_id.clone(), m.settings.as_ref().map(|s| s.to_string())))
            .collect();
        Ok(Some(Isolation {
            exe,
            args,
            timeout: (policy.call_timeout_ms > 0)
                .then(|| Duration::from_millis(policy.call_timeout_ms)),
            machines,
            settings,
            runners,
            refused: HashMap::new(),
        }))
    }

    /// Uses `exe` as the runner binary rather than this process's own (for
    /// benchmarks and tests, whose executable is not the collector).
    pub fn with_runner_exe(mut self, exe: PathBuf) -> Self {
        self.exe = exe;
        self
    }

    /// Starts `class`'s runner, waits for its hello and ends it: whether the runner
    /// can load the plugin (for `mes-collector check`).
    pub fn probe(&self, class: &str) -> Result<(), String> {
        let isolated = self
            .runners
            .get(class)
            .ok_or_else(|| format!("class {class:?} is not isolated"))?;
        let p = start(&self.exe, &self.args, &isolated.info, MIN_START_TIMEOUT)?;
        p.end(true);
        Ok(())
    }

    /// The class of `cnc_id` if it runs isolated.
    pub fn class_of(&self, cnc_id: &str) -> Option<&str> {
        self.machines.get(cnc_id).map(String::as_str)
    }

    /// Runs one message through its isolated plugin: its writes, or the dead letter
    /// it became.
    pub fn call(
        &mut self,
        req: &Request<'_>,
    ) -> Result<(Arc<PluginInfo>, Vec<WireOp>), DeadLetter> {
        if let Some(dl) = self.refused.get(req.cnc_id) {
            return Err(dl.clone());
        }
        let class = self.machines.get(req.cnc_id).expect("checked by class_of");
        let isolated = self.runners.get_mut(class).expect("every machine's class");
        let info = isolated.info.clone();
        let plugin_dl = |reason: Reason, detail: String| {
            DeadLetter::new(reason, detail)
                .cnc_id(req.cnc_id)
                .plugin(&info.class_name, &info.version)
        };
        let start_timeout = self
            .timeout
            .map_or(MIN_START_TIMEOUT, |t| t.max(MIN_START_TIMEOUT));
        if isolated.process.is_none() {
            match start(&self.exe, &self.args, &info, start_timeout) {
                Ok(p) => {
                    isolated.starts += 1;
                    info!(
                        "plugin {} {} ({}): runner process {} started{}",
                        info.class_name,
                        info.version,
                        info.file.display(),
                        p.child.id(),
                        if isolated.starts > 1 {
                            format!(
                                " (start {}; the instances of its machines are new)",
                                isolated.starts
                            )
                        } else {
                            String::new()
                        }
                    );
                    isolated.process = Some(p);
                }
                Err(why) => {
                    let detail = format!(
                        "plugin {} {} ({}) runs isolated (plugins.isolate), but its runner process could not start for cnc_id {}: {why}",
                        info.class_name,
                        info.version,
                        info.file.display(),
                        req.cnc_id
                    );
                    error!("{detail}");
                    return Err(plugin_dl(Reason::NoPlugin, detail));
                }
            }
        }
        let process = isolated.process.as_mut().expect("started above");
        let introduce = (!process.introduced.contains(req.cnc_id))
            .then(|| self.settings.get(req.cnc_id).cloned().flatten());
        let call = Call {
            cnc_id: req.cnc_id.to_string(),
            introduce,
            topic: req.topic.to_string(),
            part_program: req.part_program.to_string(),
            timestamp: req.timestamp,
            payload: req.payload.to_string(),
        };
        let deadline = self.timeout.map(|t| Instant::now() + t);
        let answer = process.exchange(&call, deadline);
        let broken = match answer {
            Ok(Reply::Done { ops, failure }) => {
                process.introduced.insert(req.cnc_id.to_string());
                return match failure {
                    None => Ok((info, ops)),
                    Some((kind, text)) => {
                        let reason = match kind {
                            mes_plugin_api::FailureKind::Error => Reason::PluginError,
                            mes_plugin_api::FailureKind::Panic => Reason::PluginPanic,
                        };
                        Err(plugin_dl(reason, text))
                    }
                };
            }
            Ok(Reply::Refused { detail }) => {
                process.introduced.insert(req.cnc_id.to_string());
                let dl = plugin_dl(Reason::PluginInit, detail);
                self.refused.insert(req.cnc_id.to_string(), dl.clone());
                return Err(dl);
            }
            Ok(other) => Broken::Garbled(format!("answered a call with {other:?}")),
            Err(b) => b,
        };
        // The runner is finished with: kill it (it may be alive but stuck or
        // confused) and learn how it ended.
        let process = isolated.process.take().expect("in use above");
        let pid = process.child.id();
        let timed_out = matches!(broken, Broken::TimedOut);
        let status = process.end(!matches!(broken, Broken::Gone(_)));
        let place = format!(
            "plugin {} {} ({}) on cnc_id {}{}, running isolated in runner process {pid} (plugins.isolate)",
            info.class_name,
            info.version,
            info.file.display(),
            req.cnc_id,
            req.seq.map(|s| format!(" (spool record {s})")).unwrap_or_default()
        );
        let after = "this message is a dead letter; the collector runs on, and a new runner process (with new instances of the class's machines) starts with the next message";
        let (reason, detail) = if timed_out {
            (
                Reason::PluginHung,
                format!(
                    "{place} HUNG: no answer within {} ms (plugins.call_timeout_ms), so the runner was killed; {after}",
                    self.timeout.map_or(0, |t| t.as_millis())
                ),
            )
        } else {
            let how = match &broken {
                Broken::Garbled(why) => format!("sent an unreadable answer ({why}) and was killed"),
                _ => describe_end(status.as_ref()),
            };
            (
                Reason::PluginCrashed,
                format!("{place} crashed: the runner {how}; {after}"),
            )
        };
        error!("{detail}");
        Err(plugin_dl(reason, detail))
    }
}

/// "was killed by SIGSEGV (invalid memory access)", "exited with status 3".
fn describe_end(status: Option<&ExitStatus>) -> String {
    match status {
        Some(s) => match (s.signal(), s.code()) {
            (Some(libc::SIGABRT), _) => format!(
                "was killed by {} (an abort, or a stack overflow: the runner's log line just before says which)",
                signals::name(libc::SIGABRT)
            ),
            (Some(sig), _) => format!("was killed by {}", signals::name(sig)),
            (None, Some(code)) => format!("exited with status {code}"),
            _ => format!("ended ({s})"),
        },
        None => "closed its pipe and could not be reaped".to_string(),
    }
}

/// Starts a runner for `info` and waits for its hello.
fn start(
    exe: &PathBuf,
    args: &[OsString],
    info: &PluginInfo,
    timeout: Duration,
) -> Result<Process, String> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .arg("--plugin")
        .arg(&info.file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        // The plugin has no business with the collector's passwords.
        .env_remove("MES_DB_PASSWORD")
        .env_remove("MES_MQTT_PASSWORD");
    // A process group of its own: a Ctrl-C in a terminal is meant for the collector,
    // which stops in its own time and then closes the pipe, which ends the runner.
    // (It also ignores SIGINT and SIGTERM, which systemd sends to the whole cgroup.)
    cmd.process_group(0);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {} plugin-runner: {e}", exe.display()))?;
    let to = child.stdin.take().expect("piped");
    let from = child.stdout.take().expect("piped");
    for fd in [to.as_raw_fd(), from.as_raw_fd()] {
        // Non-blocking, so that every wait on the runner is bounded by a poll.
        // SAFETY: fcntl on descriptors this process owns.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
    let mut p = Process {
        child,
        to,
        from,
        introduced: HashSet::new(),
        frame: Vec::new(),
    };
    let hello = p.receive(Some(Instant::now() + timeout));
    let why = match hello {
        Ok(Reply::Hello { class, version }) if class == info.class_name => {
            if version != info.version {
                warn!(
                    "plugin {} in {}: the runner loaded version {version}, the collector {} (the file changed since the start)",
                    info.class_name,
                    info.file.display(),
                    info.version
                );
            }
            return Ok(p);
        }
        Ok(Reply::Hello { class, .. }) => format!(
            "the runner loaded class {class:?} from {}, not {:?} (the file changed since the collector started; restart it)",
            info.file.display(),
            info.class_name
        ),
        Ok(Reply::LoadFailed { reason }) => format!("the plugin was refused: {reason}"),
        Ok(other) => format!("the runner said {other:?} instead of hello"),
        Err(Broken::TimedOut) => format!("no hello within {} ms", timeout.as_millis()),
        Err(Broken::Gone(why)) => {
            let status = p.end(false);
            return Err(format!("{why}; the runner {}", describe_end(status.as_ref())));
        }
        Err(Broken::Garbled(why)) => format!("the runner sent an unreadable hello ({why})"),
    };
    p.end(true);
    Err(why)
}

impl Process {
    fn exchange(&mut self, call: &Call, deadline: Option<Instant>) -> Result<Reply, Broken> {
        let mut e = Enc(std::mem::take(&mut self.frame));
        e.0.clear();
        e.0.extend_from_slice(&[0; 4]);
        call.encode(&mut e);
        let len = (e.0.len() - 4) as u32;
        e.0[..4].copy_from_slice(&len.to_le_bytes());
        let sent = self.send(&e.0, deadline);
        self.frame = e.0;
        sent?;
        self.receive(deadline)
    }

    fn send(&mut self, mut bytes: &[u8], deadline: Option<Instant>) -> Result<(), Broken> {
        while !bytes.is_empty() {
            match self.to.write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait(self.to.as_raw_fd(), libc::POLLOUT, deadline)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Broken::Gone(format!("writing to the runner: {e}"))),
            }
        }
        Ok(())
    }

    fn receive(&mut self, deadline: Option<Instant>) -> Result<Reply, Broken> {
        let mut len = [0u8; 4];
        self.read_exact(&mut len, deadline)?;
        let len = u32::from_le_bytes(len) as usize;
        if len > MAX_FRAME {
            return Err(Broken::Garbled(format!(
                "a frame of {len} bytes, over the limit of {MAX_FRAME}"
            )));
        }
        let mut body = std::mem::take(&mut self.frame);
        body.clear();
        body.resize(len, 0);
        let read = self.read_exact(&mut body, deadline);
        let reply = read.and_then(|()| Reply::decode(&body).map_err(Broken::Garbled));
        self.frame = body;
        reply
    }

    /// Reads exactly `buf.len()` bytes: never past the frame, so nothing is left
    /// over between exchanges.
    fn read_exact(&mut self, buf: &mut [u8], deadline: Option<Instant>) -> Result<(), Broken> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.from.read(&mut buf[filled..]) {
                Ok(0) => return Err(Broken::Gone("the runner closed its pipe".into())),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait(self.from.as_raw_fd(), libc::POLLIN, deadline)?
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Broken::Gone(format!("reading from the runner: {e}"))),
            }
        }
        Ok(())
    }

    /// Ends the runner (killing it first if `kill`) and returns how it ended.
    fn end(mut self, kill: bool) -> Option<ExitStatus> {
        if kill {
            let _ = self.child.kill();
            return self.child.wait().ok();
        }
        // It closed its pipe, so it is exiting or has exited: give it a moment to be
        // reaped with its real status before killing it.
        let until = Instant::now() + Duration::from_secs(2);
        loop {
            match self.child.try_wait() {
                Ok(Some(s)) => return Some(s),
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(2)),
                _ => {
                    let _ = self.child.kill();
                    return self.child.wait().ok();
                }
            }
        }
    }
}

impl Drop for Isolation {
    /// The runners end with the collector: closing their pipe is their signal to
    /// leave; one that does not within a moment is killed.
    fn drop(&mut self) {
        for r in self.runners.values_mut() {
            if let Some(p) = r.process.take() {
                let Process {
                    mut child,
                    to,
                    from,
                    ..
                } = p;
                drop(to);
                drop(from);
                let until = Instant::now() + Duration::from_millis(500);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Waits until `fd` is ready for `events`; the deadline passing is [`Broken::TimedOut`].
fn wait(fd: i32, events: i16, deadline: Option<Instant>) -> Result<(), Broken> {
    loop {
        let ms = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Broken::TimedOut);
                }
                // Rounded up, so that a wait never spins on a zero timeout.
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        };
        let mut p = libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r > 0 {
            // Readable, writable, or hung up/failed: the read or write that follows
            // tells which.
            return Ok(());
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(Broken::Gone(format!("waiting for the runner: {e}")));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::RString;
    use mes_plugin_api::Value;

    use super::wire::WireOp;
    use crate::sink::batch::{Batch, RowKind, Shapes};

    fn row(columns: &[&str], values: Vec<Value>) -> WireOp {
        WireOp::Row {
            kind: RowKind::Insert,
            table: "cnc_data".into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            values,
            order_by: vec![],
        }
    }

    /// What a runner sends is checked again: a runner whose plugin got round its own
    /// checks (or that is not the collector's runner at all) cannot smuggle an
    /// identifier into the SQL or a value MySQL cannot hold.
    #[test]
    fn writes_from_a_runner_are_checked_again() {
        let mut batch = Batch::default();
        let mut shapes = Shapes::default();
        batch.begin("t");
        let mut rec = batch.recorder(&mut shapes);
        let bad_name = rec
            .apply(row(&["cnc_id`; DROP TABLE x; --"], vec![Value::Int(1)]))
            .unwrap_err();
        assert!(bad_name.contains("identifier"), "{bad_name}");
        let nan = rec
            .apply(row(&["spin"], vec![Value::Float(f64::NAN)]))
            .unwrap_err();
        assert!(nan.to_lowercase().contains("nan"), "{nan}");
        let count = rec
            .apply(row(&["a", "b"], vec![Value::Int(1)]))
            .unwrap_err();
        assert!(count.contains('2') && count.contains('1'), "{count}");
        rec.apply(row(&["cnc_id"], vec![Value::Text(RString::from("F1"))]))
            .unwrap();
        rec.apply(WireOp::Exec {
            sql: "DELETE FROM cnc_alarms WHERE cnc_id = ?".into(),
            params: vec![Value::Text(RString::from("F1"))],
        })
        .unwrap();
        assert_eq!(batch.writes.len(), 2, "only the good writes are recorded");
    }
}
