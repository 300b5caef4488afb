//! `cnc-sim`: a stand-in for the plant-side CNC services, for demos, tests and
//! benchmarks of the collector.
//!
//! It publishes the wire format of docs/architecture.md ("Wire format"), either
//! verbatim from a JSON-lines file or generated for a fleet of simulated
//! machines, and it can count what arrives on a topic to measure the raw broker
//! path without the collector in between.
//!
//! stdout carries only machine-parsable lines (the summary, `ready`, the classes
//! JSON); everything meant for humans while running goes to stderr.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use mes_collector::{
    config::{load_broker, read_secret, BrokerConfig, TlsConfig},
    intake::mqtt::secured_connect_options,
};
use paho_mqtt as mqtt;
use serde::Serialize;

const PASSWORD_ENV: &str = "MES_MQTT_PASSWORD";
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long a blocked wait on the broker may go before the connection-lost flag
/// is looked at again; a lost connection never completes pending tokens.
const POLL_SLICE: Duration = Duration::from_millis(200);
/// Every how many messages of one type-B machine an alarm is reported.
const ALARM_EVERY: u64 = 50;

#[derive(Parser)]
#[command(
    name = "cnc-sim",
    version,
    about = "Simulates the plant-side CNC services on MQTT: publishes, generates and counts messages",
    long_about = "Simulates the plant-side CNC services that feed the MES collector.\n\n\
        Publishing is QoS 1 by default and loses nothing: every message waits for its \
        broker acknowledgement, failures are counted, and the exit status is non-zero \
        if any message failed.\n\n\
        stdout carries only machine-parsable output (summary lines, `ready`, the classes \
        JSON); progress goes to stderr once per second.",
    after_help = "Examples:\n  \
        cnc-sim classes --machines 4 > config/cnc_classes.json\n  \
        cnc-sim generate --machines 4 --rate 10 --count 600\n  \
        cnc-sim count --count 20000 --topic bench/cnc &\n  \
        cnc-sim generate --count 20000 --rate 0 --topic bench/cnc\n  \
        cnc-sim publish --file samples.jsonl\n  \
        cnc-sim record --out recorded.jsonl --timeout-secs 60"
)]
struct Cli {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
#[command(next_help_heading = "Connection options")]
struct ConnArgs {
    /// Take the broker URI, topic, user name, password (password_file,
    /// MES_MQTT_PASSWORD) and TLS settings from the broker section of a collector's
    /// collector.json (the file, or its config dir); the options below override them.
    /// The collector's client_id is never used, and a shared subscription
    /// ($share/<group>/<filter>) is subscribed as plain <filter>, so that cnc-sim takes
    /// no message away from the collectors.
    #[arg(long, global = true, value_name = "FILE|DIR")]
    broker_config: Option<PathBuf>,

    /// MQTT broker URI; ssl:// or mqtts:// for TLS [default: tcp://127.0.0.1:1883]
    #[arg(long, global = true, value_name = "URI")]
    broker: Option<String>,

    /// Topic to publish to, or to subscribe to for `count` and `record` (wildcards
    /// allowed there) [default: sensor/CNC]
    #[arg(long, global = true, value_name = "TOPIC")]
    topic: Option<String>,

    /// MQTT client id [default: cnc-sim-<pid>]
    #[arg(long, global = true, value_name = "ID")]
    client_id: Option<String>,

    /// QoS for publishing and subscribing
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(i32).range(0..=2))]
    qos: i32,

    /// User name for the broker (broker.username)
    #[arg(long, global = true, value_name = "USER")]
    username: Option<String>,

    /// Password for the broker [env: MES_MQTT_PASSWORD]; prefer --password-file
    #[arg(long, global = true, value_name = "PASSWORD")]
    password: Option<String>,

    /// A file holding the broker password, readable by its owner only
    /// (broker.password_file)
    #[arg(long, global = true, value_name = "FILE")]
    password_file: Option<PathBuf>,

    /// PEM file of the CA(s) that signed the broker's certificate; without it the
    /// system's trust store is used (broker.tls.ca_file)
    #[arg(long, global = true, value_name = "FILE")]
    ca_file: Option<PathBuf>,

    /// Client certificate (PEM), for brokers that require one (broker.tls.cert_file)
    #[arg(long, global = true, value_name = "FILE")]
    cert_file: Option<PathBuf>,

    /// Client private key (PEM) (broker.tls.key_file)
    #[arg(long, global = true, value_name = "FILE")]
    key_file: Option<PathBuf>,

    /// Check that the broker's certificate names the host connected to
    /// (broker.tls.verify_hostname) [default: true]
    #[arg(long, global = true, value_name = "BOOL", action = clap::ArgAction::Set)]
    verify_hostname: Option<bool>,
}

/// Where and how to connect, resolved from the options and `--broker-config`.
struct Conn {
    broker: String,
    topic: String,
    qos: i32,
    /// The collector's own broker settings type, so that both connect through the
    /// same code ([`secured_connect_options`]).
    cfg: BrokerConfig,
}

const DEFAULT_BROKER: &str = "tcp://127.0.0.1:1883";
const DEFAULT_TOPIC: &str = "sensor/CNC";

/// `$share/<group>/<filter>` → `<filter>`: a member of the collectors' share group
/// would receive (and take from them) only some of the messages.
fn unshared(topic: &str) -> &str {
    topic
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(topic, |(_, filter)| filter)
}

impl ConnArgs {
    fn resolve(&self) -> Result<Conn> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let mut cfg = match &self.broker_config {
            Some(path) => load_broker(path, &env).or_else(|e| fail(e.to_string()))?,
            None => BrokerConfig {
                uri: DEFAULT_BROKER.into(),
                client_id: String::new(),
                topic: DEFAULT_TOPIC.into(),
                qos: 1,
                username: None,
                password: env.get(PASSWORD_ENV).cloned(),
                password_file: None,
                tls: None,
                keep_alive_secs: 30,
            },
        };
        // Never the collector's: connecting with its client id would end its session.
        cfg.client_id = client_id(self);
        cfg.qos = self.qos;
        if let Some(uri) = &self.broker {
            cfg.uri = uri.clone();
        }
        cfg.topic = match &self.topic {
            Some(t) => t.clone(),
            None => {
                let t = unshared(&cfg.topic);
                if t != cfg.topic {
                    eprintln!(
                        "cnc-sim: using topic {t} of the collectors' shared subscription {}",
                        cfg.topic
                    );
                }
                t.to_string()
            }
        };
        if let Some(user) = &self.username {
            cfg.username = Some(user.clone());
        }
        if let Some(file) = &self.password_file {
            cfg.password = Some(read_secret(file).or_else(fail)?);
        }
        if let Some(pw) = &self.password {
            cfg.password = Some(pw.clone());
        }
        if self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.verify_hostname.is_some()
        {
            let tls = cfg.tls.get_or_insert(TlsConfig {
                ca_file: None,
                cert_file: None,
                key_file: None,
                verify_hostname: true,
            });
            for (from, to) in [
                (&self.ca_file, &mut tls.ca_file),
                (&self.cert_file, &mut tls.cert_file),
                (&self.key_file, &mut tls.key_file),
            ] {
                if from.is_some() {
                    to.clone_from(from);
                }
            }
            if let Some(v) = self.verify_hostname {
                tls.verify_hostname = v;
            }
        }
        Ok(Conn {
            broker: cfg.uri.clone(),
            topic: cfg.topic.clone(),
            qos: cfg.qos,
            cfg,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Publish each non-empty line of a JSON-lines file, verbatim, as one message
    Publish {
        /// JSON-lines file; lines are not validated, so bad messages can be sent on purpose
        #[arg(long, value_name = "FILE")]
        file: PathBuf,

        #[command(flatten)]
        send: SendArgs,
    },

    /// Generate realistic messages for a fleet of simulated machines
    ///
    /// Machine i (1-based) is `SIM-A-{i:04}` (class CNCTypeA) for odd i and
    /// `SIM-B-{i:04}` (class CNCTypeB) for even i; messages go round-robin over
    /// the machines. Every payload also carries `seq` (unique sequence number of
    /// the message) and `sent_at_us` (publish time, Unix epoch microseconds) so
    /// that consumers can check for loss and duplicates and measure latency.
    Generate {
        /// Number of simulated machines
        #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=9999))]
        machines: u32,

        /// Total number of messages to send
        #[arg(long, default_value_t = 1000, value_name = "C")]
        count: u64,

        /// First `seq` value, so that several runs can produce disjoint ranges
        #[arg(long, default_value_t = 0, value_name = "S")]
        start_seq: u64,

        /// Seed of the simulated machine behaviour (same seed, same values)
        #[arg(long, default_value_t = 1, value_name = "SEED")]
        seed: u64,

        #[command(flatten)]
        send: SendArgs,
    },

    /// Print the cnc_classes.json content that maps the generated machines
    Classes {
        /// Number of simulated machines, as given to `generate`
        #[arg(long, default_value_t = 10, value_name = "N", value_parser = clap::value_parser!(u32).range(0..=9999))]
        machines: u32,
    },

    /// Subscribe and only count messages: the raw broker path benchmark
    ///
    /// Prints `ready` on stdout once the subscription is confirmed (start the
    /// publisher after that), then a summary when --count messages have arrived
    /// or when none came for --timeout-secs seconds (exit status 1 if short).
    Count {
        /// Number of messages to wait for
        #[arg(long, value_name = "C")]
        count: u64,

        /// Give up after this many seconds without a message
        #[arg(long, default_value_t = 30, value_name = "T")]
        timeout_secs: u64,
    },

    /// Subscribe and append each message, verbatim, as one line of a JSON-lines file
    ///
    /// The file is what `publish --file` sends and `mes-collector replay` reads.
    /// Messages that are not UTF-8 or contain a line break cannot be one line: they
    /// are skipped with a warning on stderr and counted. Prints `ready` on stdout once
    /// subscribed, and a summary when --count messages have arrived, when none came
    /// for --timeout-secs seconds, or on Ctrl-C.
    Record {
        /// The file to append to (created if missing)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,

        /// Stop after this many messages (skipped ones included); exit status 1 if
        /// fewer arrive
        #[arg(long, value_name = "N")]
        count: Option<u64>,

        /// Stop after this many seconds without a message
        #[arg(long, default_value_t = 30, value_name = "T")]
        timeout_secs: u64,
    },
}

#[derive(Args)]
struct SendArgs {
    /// Messages per second overall; 0 sends as fast as the broker acknowledges
    #[arg(long, default_value_t = 0.0, value_name = "R", value_parser = parse_rate)]
    rate: f64,

    /// Most messages awaiting acknowledgement at once
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65000))]
    window: u32,
}

fn parse_rate(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!("expected a non-negative number, got `{s}`")),
    }
}

/// Every failure ends up here so that main can print one line naming what
/// failed and exit non-zero.
struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

type Result<T> = std::result::Result<T, Failure>;

fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(Failure(msg.into()))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("error")).init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cnc-sim: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    if let Command::Classes { machines } = cli.command {
        return print_classes(machines);
    }
    let conn = cli.conn.resolve()?;
    match cli.command {
        Command::Classes { .. } => unreachable!("handled above"),
        Command::Publish { file, send } => publish_file(&conn, &send, &file),
        Command::Generate {
            machines,
            count,
            start_seq,
            seed,
            send,
        } => generate(&conn, &send, machines, count, start_seq, seed),
        Command::Count {
            count,
            timeout_secs,
        } => count_messages(&conn, count, Duration::from_secs(timeout_secs)),
        Command::Record {
            out,
            count,
            timeout_secs,
        } => record_messages(&conn, &out, count, Duration::from_secs(timeout_secs)),
    }
}

// ---------------------------------------------------------------------------
// Connection

fn client_id(conn: &ConnArgs) -> String {
    conn.client_id
        .clone()
        .unwrap_or_else(|| format!("cnc-sim-{}", std::process::id()))
}

/// Connects with a clean session: the simulator must not pick up messages
/// queued for an earlier run under the same client id, or counts would be off.
/// TLS and authentication are set up by the collector's own code.
fn connect(conn: &Conn, window: u32) -> Result<mqtt::AsyncClient> {
    let create = mqtt::CreateOptionsBuilder::new_v3()
        .server_uri(&conn.broker)
        .client_id(&conn.cfg.client_id)
        .persistence(mqtt::PersistenceType::None)
        // The C library counts publishes waiting behind max_inflight as
        // "buffered" even while connected, and rejects them past this limit
        // (default 100), so it must hold the whole window.
        .max_buffered_messages(window as i32)
        .finalize();
    let cli = mqtt::AsyncClient::new(create).or_else(|e| {
        fail(format!(
            "cannot create an MQTT client for {}: {e}",
            conn.broker
        ))
    })?;

    let mut opts = secured_connect_options(&conn.cfg).or_else(|e| {
        fail(format!(
            "cannot connect to the broker at {}: {e}",
            conn.broker
        ))
    })?;
    opts.clean_session(true)
        .keep_alive_interval(Duration::from_secs(conn.cfg.keep_alive_secs))
        .connect_timeout(Duration::from_secs(10))
        .max_inflight(window as i32);
    if let Err(e) = cli.connect(opts.finalize()).wait() {
        return fail(format!(
            "cannot connect to the broker at {}: {e}",
            conn.broker
        ));
    }
    Ok(cli)
}

fn connection_lost_flag(cli: &mqtt::AsyncClient) -> Arc<AtomicBool> {
    let lost = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&lost);
    cli.set_connection_lost_callback(move |_| {
        flag.store(true, Ordering::SeqCst);
    });
    lost
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn rate_of(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------
// Publishing

/// Publishes with a bounded window of unacknowledged messages so that memory
/// stays flat at full speed while the broker still gets enough in flight to
/// be the bottleneck, not the round trip.
struct Publisher {
    cli: mqtt::AsyncClient,
    broker: String,
    topic: String,
    qos: i32,
    window: usize,
    pending: VecDeque<mqtt::Token>,
    lost: Arc<AtomicBool>,
    rate: f64,
    sent: u64,
    acked: u64,
    failed: u64,
    first_error: Option<String>,
    /// Set when sending stopped before the input ran out.
    cut_short: bool,
    start: Option<Instant>,
    last_progress: Instant,
    acked_at_last_progress: u64,
}

impl Publisher {
    fn new(conn: &Conn, send: &SendArgs) -> Result<Self> {
        if conn.topic.contains(['+', '#']) {
            return fail(format!(
                "cannot publish to {}: a topic filter with wildcards (a collector's broker.topic?); give --topic with a plain topic",
                conn.topic
            ));
        }
        let cli = connect(conn, send.window)?;
        let lost = connection_lost_flag(&cli);
        Ok(Publisher {
            cli,
            broker: conn.broker.clone(),
            topic: conn.topic.clone(),
            qos: conn.qos,
            window: send.window as usize,
            pending: VecDeque::with_capacity(send.window as usize),
            lost,
            rate: send.rate,
            sent: 0,
            acked: 0,
            failed: 0,
            first_error: None,
            cut_short: false,
            start: None,
            last_progress: Instant::now(),
            acked_at_last_progress: 0,
        })
    }

    fn elapsed(&self) -> Duration {
        self.start.map(|s| s.elapsed()).unwrap_or_default()
    }

    /// Sleeps until the scheduled time of the next message. The schedule is
    /// absolute (start + k/R) so that sleep overshoot does not accumulate into
    /// a rate below the one asked for.
    fn wait_for_slot(&mut self) {
        let start = *self.start.get_or_insert_with(Instant::now);
        if self.rate <= 0.0 {
            return;
        }
        let due = start + Duration::from_secs_f64(self.sent as f64 / self.rate);
        loop {
            let now = Instant::now();
            if now >= due {
                return;
            }
            // Sliced so that acks and progress keep flowing at low rates.
            thread::sleep((due - now).min(POLL_SLICE));
            self.reap_ready();
            self.progress();
        }
    }

    /// Sends one message; the payload is built by the caller only now so that
    /// any send time in it is taken after the rate limiter and the window.
    /// Returns false once the connection is lost: there is no reconnect, so
    /// every further message would only fail.
    fn send(&mut self, make_payload: impl FnOnce() -> Vec<u8>) -> bool {
        if self.lost.load(Ordering::SeqCst) {
            self.cut_short = true;
            return false;
        }
        self.wait_for_slot();
        while self.pending.len() >= self.window {
            self.settle_oldest();
        }
        let msg = mqtt::Message::new(self.topic.as_str(), make_payload(), self.qos);
        self.pending.push_back(self.cli.publish(msg).into());
        self.sent += 1;
        self.reap_ready();
        self.progress();
        true
    }

    fn record(&mut self, res: std::result::Result<mqtt::ServerResponse, mqtt::Error>) {
        match res {
            Ok(_) => self.acked += 1,
            Err(e) => {
                self.failed += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e.to_string());
                }
            }
        }
    }

    /// Collects acknowledgements that have already arrived, without blocking.
    fn reap_ready(&mut self) {
        while let Some(tok) = self.pending.front_mut() {
            match tok.try_wait() {
                Some(res) => {
                    self.pending.pop_front();
                    self.record(res);
                }
                None => break,
            }
        }
    }

    /// Blocks until the oldest message is acknowledged or failed. A lost
    /// connection leaves tokens pending forever, so once it is lost whatever
    /// is not complete counts as failed without waiting: a full window would
    /// otherwise take a wait slice per message to drain.
    fn settle_oldest(&mut self) {
        let Some(mut tok) = self.pending.pop_front() else {
            return;
        };
        loop {
            if let Some(res) = tok.try_wait() {
                self.record(res);
                return;
            }
            if self.lost.load(Ordering::SeqCst) {
                self.record(Err(mqtt::Error::General("connection to the broker lost")));
                return;
            }
            // Waiting on a clone leaves `tok` usable if the slice runs out.
            match tok.clone().wait_for(POLL_SLICE) {
                Err(mqtt::Error::Timeout) => self.progress(),
                res => {
                    self.record(res);
                    return;
                }
            }
        }
    }

    fn progress(&mut self) {
        let now = Instant::now();
        let since = now.duration_since(self.last_progress);
        if since < PROGRESS_EVERY {
            return;
        }
        let recent = rate_of(
            self.acked - self.acked_at_last_progress,
            since.as_secs_f64(),
        );
        eprintln!(
            "[{:6.1} s] sent {} acked {} failed {} ({:.0} msg/s)",
            self.elapsed().as_secs_f64(),
            self.sent,
            self.acked,
            self.failed,
            recent
        );
        self.last_progress = now;
        self.acked_at_last_progress = self.acked;
    }

    /// Waits for every outstanding acknowledgement, disconnects and prints the
    /// summary; fails if any message did not make it.
    fn finish(mut self) -> Result<()> {
        while !self.pending.is_empty() {
            self.settle_oldest();
        }
        let elapsed = self.elapsed().as_secs_f64();
        if !self.lost.load(Ordering::SeqCst) {
            // The acks are all in, so a failed disconnect loses nothing: warn only.
            if let Err(e) = self.cli.disconnect(None).wait() {
                eprintln!(
                    "cnc-sim: warning: disconnect from {} failed: {e}",
                    self.broker
                );
            }
        }
        println!(
            "published {} messages in {:.2} s ({:.0} msg/s), {} failed",
            self.sent,
            elapsed,
            rate_of(self.sent, elapsed),
            self.failed
        );
        if self.cut_short {
            return fail(format!(
                "connection to the broker at {} lost: stopped after {} messages, {} failed",
                self.broker, self.sent, self.failed
            ));
        }
        if self.failed > 0 {
            return fail(format!(
                "{} of {} messages failed to publish to {} (first error: {})",
                self.failed,
                self.sent,
                self.broker,
                self.first_error.as_deref().unwrap_or("unknown")
            ));
        }
        Ok(())
    }
}

fn publish_file(conn: &Conn, send: &SendArgs, path: &Path) -> Result<()> {
    // Opened before connecting so that a wrong path is reported as such.
    let file = File::open(path)
        .or_else(|e| fail(format!("cannot open the file {}: {e}", path.display())))?;
    // Opening a directory succeeds on Unix; only reading it fails.
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return fail(format!(
            "cannot open the file {}: it is a directory",
            path.display()
        ));
    }
    let mut publisher = Publisher::new(conn, send)?;
    let mut read_error = None;
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let mut line = match line {
            Ok(line) => line,
            Err(e) => {
                read_error = Some(format!(
                    "cannot read the file {} at line {}: {e}",
                    path.display(),
                    n + 1
                ));
                break;
            }
        };
        // Bytes rather than String: invalid UTF-8 is a bad message the
        // collector must cope with, so it must be sendable as is.
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if !publisher.send(|| line) {
            break;
        }
    }
    let sent = publisher.finish();
    match read_error {
        // The file error is the cause; report it even if publishing went fine.
        Some(e) => fail(e),
        None => sent,
    }
}

// ---------------------------------------------------------------------------
// Generated machines

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    A,
    B,
}

fn machine_id(i: u32) -> (String, Kind) {
    let kind = if i % 2 == 1 { Kind::A } else { Kind::B };
    let letter = match kind {
        Kind::A => 'A',
        Kind::B => 'B',
    };
    (format!("SIM-{letter}-{i:04}"), kind)
}

fn class_name(kind: Kind) -> &'static str {
    match kind {
        Kind::A => "CNCTypeA",
        Kind::B => "CNCTypeB",
    }
}

fn print_classes(machines: u32) -> Result<()> {
    #[derive(Serialize)]
    struct Mapping {
        cnc_id: String,
        class_name: &'static str,
    }
    let rows: Vec<String> = (1..=machines)
        .map(|i| {
            let (cnc_id, kind) = machine_id(i);
            let row = Mapping {
                cnc_id,
                class_name: class_name(kind),
            };
            serde_json::to_string(&row).expect("a mapping always serializes")
        })
        .collect();
    // One mapping per line, like the hand-written config file, so that it
    // diffs and greps well.
    let text = if rows.is_empty() {
        "[]\n".to_string()
    } else {
        format!("[\n  {}\n]\n", rows.join(",\n  "))
    };
    io::stdout()
        .write_all(text.as_bytes())
        .or_else(|e| fail(format!("cannot write to stdout: {e}")))
}

/// SplitMix64: a tiny, good-enough PRNG so that runs are reproducible from a
/// seed without pulling in a dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Status {
    Running,
    Idle,
    Error,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Idle => "idle",
            Status::Error => "error",
        }
    }
}

const ALARMS: &[(&str, &str)] = &[
    ("EX1001", "Spindle overload"),
    ("EX1012", "Coolant level low"),
    ("EX2003", "Servo following error on X axis"),
    ("EX2004", "Servo following error on Y axis"),
    ("EX3100", "Tool life expired"),
    ("EX4020", "Door interlock open"),
];

/// One simulated machine. State carries over between its messages (a program
/// runs for a while, axes move along a path, parts accumulate) so that the
/// data looks like a machine rather than noise.
struct Machine {
    cnc_id: String,
    kind: Kind,
    status: Status,
    program: u32,
    /// Messages left before the current part is finished.
    cycle_left: u32,
    target_spin: u32,
    feed: f64,
    x: f64,
    y: f64,
    dx: f64,
    dy: f64,
    part_count: u64,
    messages: u64,
}

const AXIS_MAX: f64 = 500.0;

impl Machine {
    fn new(i: u32, rng: &mut Rng) -> Self {
        let (cnc_id, kind) = machine_id(i);
        let mut m = Machine {
            cnc_id,
            kind,
            status: Status::Running,
            program: 1,
            cycle_left: 0,
            target_spin: 0,
            feed: 0.0,
            x: rng.range(0.0, AXIS_MAX),
            y: rng.range(0.0, AXIS_MAX),
            dx: 0.0,
            dy: 0.0,
            part_count: rng.below(500),
            messages: 0,
        };
        m.load_program(rng);
        m
    }

    fn load_program(&mut self, rng: &mut Rng) {
        self.program = 1 + rng.below(20) as u32;
        self.cycle_left = 10 + rng.below(30) as u32;
        self.target_spin = 100 * (8 + rng.below(113) as u32);
        self.feed = (rng.range(100.0, 2000.0) * 10.0).round() / 10.0;
        self.dx = rng.range(-12.0, 12.0);
        self.dy = rng.range(-12.0, 12.0);
    }

    /// Advances the machine by one reporting interval.
    fn step(&mut self, rng: &mut Rng) {
        self.messages += 1;
        // Sticky states with rare transitions: mostly running, short idle
        // spells between jobs, and errors that get cleared by an operator.
        self.status = match self.status {
            Status::Running if rng.chance(0.02) => Status::Idle,
            Status::Running if rng.chance(0.005) => Status::Error,
            Status::Idle if rng.chance(0.25) => Status::Running,
            Status::Error if rng.chance(0.15) => Status::Idle,
            s => s,
        };
        if self.status != Status::Running {
            return;
        }
        self.x += self.dx + rng.range(-1.0, 1.0);
        self.y += self.dy + rng.range(-1.0, 1.0);
        // Bounce off the travel limits so the tool path stays on the table.
        if !(0.0..=AXIS_MAX).contains(&self.x) {
            self.dx = -self.dx;
            self.x = self.x.clamp(0.0, AXIS_MAX);
        }
        if !(0.0..=AXIS_MAX).contains(&self.y) {
            self.dy = -self.dy;
            self.y = self.y.clamp(0.0, AXIS_MAX);
        }
        self.cycle_left = self.cycle_left.saturating_sub(1);
        if self.cycle_left == 0 {
            self.part_count += 1;
            if rng.chance(0.2) {
                self.load_program(rng);
            } else {
                self.cycle_left = 10 + rng.below(30) as u32;
            }
        }
    }

    fn spin(&self, rng: &mut Rng) -> u32 {
        match self.status {
            Status::Running => {
                let jitter = rng.range(-0.02, 0.02) * self.target_spin as f64;
                (self.target_spin as f64 + jitter).round() as u32
            }
            Status::Idle | Status::Error => 0,
        }
    }
}

#[derive(Serialize)]
struct Envelope<'a> {
    cnc_id: &'a str,
    part_program: String,
    timestamp: String,
    payload: Payload,
}

#[derive(Serialize)]
struct Alarm {
    code: &'static str,
    message: &'static str,
}

#[derive(Serialize)]
struct Payload {
    status: &'static str,
    spin: u32,
    #[serde(rename = "X-Axis")]
    x_axis: f64,
    #[serde(rename = "Y-Axis")]
    y_axis: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    feed_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    part_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alarms: Option<Vec<Alarm>>,
    seq: u64,
    sent_at_us: u64,
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn message_for(m: &Machine, rng: &mut Rng, seq: u64) -> Vec<u8> {
    let sent_at_us = now_us();
    let spin = m.spin(rng);
    let type_b = m.kind == Kind::B;
    let alarms = type_b.then(|| {
        if m.messages.is_multiple_of(ALARM_EVERY) {
            let (code, message) = ALARMS[rng.below(ALARMS.len() as u64) as usize];
            vec![Alarm { code, message }]
        } else {
            Vec::new()
        }
    });
    let feed = match m.status {
        Status::Running => m.feed,
        Status::Idle | Status::Error => 0.0,
    };
    let env = Envelope {
        cnc_id: &m.cnc_id,
        part_program: format!("program_{:02}", m.program),
        timestamp: (sent_at_us / 1_000_000).to_string(),
        payload: Payload {
            status: m.status.as_str(),
            spin,
            x_axis: round3(m.x),
            y_axis: round3(m.y),
            feed_rate: type_b.then_some(feed),
            part_count: type_b.then_some(m.part_count),
            alarms,
            seq,
            sent_at_us,
        },
    };
    serde_json::to_vec(&env).expect("a generated message always serializes")
}

fn generate(
    conn: &Conn,
    send: &SendArgs,
    machines: u32,
    count: u64,
    start_seq: u64,
    seed: u64,
) -> Result<()> {
    if start_seq.checked_add(count).is_none() {
        return fail("--start-seq plus --count overflows the sequence number");
    }
    let mut rng = Rng(seed);
    let mut fleet: Vec<Machine> = (1..=machines).map(|i| Machine::new(i, &mut rng)).collect();
    let mut publisher = Publisher::new(conn, send)?;
    for k in 0..count {
        let m = &mut fleet[(k % machines as u64) as usize];
        m.step(&mut rng);
        if !publisher.send(|| message_for(m, &mut rng, start_seq + k)) {
            break;
        }
    }
    publisher.finish()
}

// ---------------------------------------------------------------------------
// Counting

/// Connects, subscribes, and prints `ready` once the broker confirmed the
/// subscription: what `count` and `record` share.
fn subscribe(
    conn: &Conn,
) -> Result<(mqtt::AsyncClient, mqtt::SyncReceiver<Option<mqtt::Message>>)> {
    let cli = connect(conn, 100)?;
    // Consuming starts before subscribing so that nothing published right
    // after the subscription is confirmed can slip past the receiver.
    let rx = cli.start_consuming();
    let granted = match cli.subscribe(conn.topic.as_str(), conn.qos).wait() {
        Ok(rsp) => rsp.subscribe_response(),
        Err(e) => {
            return fail(format!(
                "cannot subscribe to {} on {}: {e}",
                conn.topic, conn.broker
            ))
        }
    };
    if let Some(q) = granted {
        if !(0..=2).contains(&q) {
            return fail(format!(
                "the broker at {} refused the subscription to {} (code {q})",
                conn.broker, conn.topic
            ));
        }
        if q < conn.qos {
            eprintln!(
                "cnc-sim: warning: broker granted QoS {q} instead of {}",
                conn.qos
            );
        }
    }
    println!("ready");
    io::stdout()
        .flush()
        .or_else(|e| fail(format!("cannot write to stdout: {e}")))?;
    Ok((cli, rx))
}

fn disconnect(cli: &mqtt::AsyncClient, conn: &Conn) {
    if let Err(e) = cli.disconnect(None).wait() {
        eprintln!(
            "cnc-sim: warning: disconnect from {} failed: {e}",
            conn.broker
        );
    }
}

fn count_messages(conn: &Conn, count: u64, idle_timeout: Duration) -> Result<()> {
    let (cli, rx) = subscribe(conn)?;

    let mut received: u64 = 0;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut last_progress = Instant::now();
    let mut at_last_progress: u64 = 0;
    let mut lost = false;
    while received < count {
        match rx.recv_timeout(PROGRESS_EVERY.min(idle_timeout)) {
            Ok(Some(_)) => {
                last = Instant::now();
                first.get_or_insert(last);
                received += 1;
            }
            Ok(None) => {
                lost = true;
                break;
            }
            Err(_) => {
                if last.elapsed() >= idle_timeout {
                    break;
                }
            }
        }
        let since = last_progress.elapsed();
        if since >= PROGRESS_EVERY {
            eprintln!(
                "received {received} of {count} ({:.0} msg/s)",
                rate_of(received - at_last_progress, since.as_secs_f64())
            );
            last_progress = Instant::now();
            at_last_progress = received;
        }
    }
    let elapsed = first
        .map(|f| last.duration_since(f).as_secs_f64())
        .unwrap_or(0.0);
    println!(
        "received {received} messages in {elapsed:.2} s ({:.0} msg/s)",
        rate_of(received, elapsed)
    );
    if lost {
        return fail(format!(
            "connection to the broker at {} lost after {received} of {count} messages",
            conn.broker
        ));
    }
    disconnect(&cli, conn);
    if received < count {
        return fail(format!(
            "no message for {} s on {}: received {received} of {count}",
            idle_timeout.as_secs(),
            conn.topic
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Recording

fn record_messages(
    conn: &Conn,
    out: &Path,
    count: Option<u64>,
    idle_timeout: Duration,
) -> Result<()> {
    // Opened before connecting so that a wrong path is reported as such.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .or_else(|e| fail(format!("cannot open {} for appending: {e}", out.display())))?;
    let mut file = io::BufWriter::new(file);
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    // Ctrl-C ends the recording like the timeout does, with the file flushed.
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
        eprintln!("cnc-sim: warning: Ctrl-C will not flush the file: {e}");
    }
    let (cli, rx) = subscribe(conn)?;

    let wanted = count.unwrap_or(u64::MAX);
    let (mut received, mut recorded, mut skipped) = (0u64, 0u64, 0u64);
    let mut last = Instant::now();
    let mut lost = false;
    let write_error = |e: io::Error| fail::<()>(format!("cannot write to {}: {e}", out.display()));
    while received < wanted && !interrupted.load(Ordering::SeqCst) {
        match rx.recv_timeout(POLL_SLICE.min(idle_timeout)) {
            Ok(Some(msg)) => {
                last = Instant::now();
                received += 1;
                let payload = msg.payload();
                match std::str::from_utf8(payload) {
                    Ok(text) if !text.contains('\n') => {
                        if let Err(e) = file.write_all(payload).and_then(|()| file.write_all(b"\n"))
                        {
                            return write_error(e);
                        }
                        recorded += 1;
                    }
                    Ok(_) => {
                        skipped += 1;
                        eprintln!(
                            "cnc-sim: warning: skipped message {received} ({} bytes on {}): it contains a line break",
                            payload.len(),
                            msg.topic()
                        );
                    }
                    Err(e) => {
                        skipped += 1;
                        eprintln!(
                            "cnc-sim: warning: skipped message {received} ({} bytes on {}): not UTF-8 ({e})",
                            payload.len(),
                            msg.topic()
                        );
                    }
                }
            }
            Ok(None) => {
                lost = true;
                break;
            }
            Err(_) => {
                if last.elapsed() >= idle_timeout {
                    break;
                }
            }
        }
    }
    if let Err(e) = file.flush() {
        return write_error(e);
    }
    println!(
        "recorded {recorded} messages to {} ({skipped} skipped: not UTF-8 or containing a line break)",
        out.display()
    );
    if lost {
        return fail(format!(
            "connection to the broker at {} lost after {received} messages",
            conn.broker
        ));
    }
    disconnect(&cli, conn);
    if let Some(n) = count {
        if received < n && !interrupted.load(Ordering::SeqCst) {
            return fail(format!(
                "no message for {} s on {}: received {received} of {n}",
                idle_timeout.as_secs(),
                conn.topic
            ));
        }
    }
    Ok(())
}
