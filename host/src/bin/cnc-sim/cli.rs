//! The command line: every flag, its default and its help text. Tests and scripts
//! (host/tests, scripts/*.sh) run cnc-sim with these flags, so a flag changes
//! only together with them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
pub struct Cli {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args)]
#[command(next_help_heading = "Connection options")]
pub struct ConnectionArgs {
    /// Take the broker URI, topic, user name, password (password_file,
    /// MES_MQTT_PASSWORD) and TLS settings from the broker section of a collector's
    /// collector.json (the file, or its config dir); the options below override them.
    /// The collector's client_id is never used, and a shared subscription
    /// ($share/<group>/<filter>) is subscribed as plain <filter>, so that cnc-sim takes
    /// no message away from the collectors.
    #[arg(long, global = true, value_name = "FILE|DIR")]
    pub broker_config: Option<PathBuf>,

    /// MQTT broker URI; ssl:// or mqtts:// for TLS [default: tcp://127.0.0.1:1883]
    #[arg(long, global = true, value_name = "URI")]
    pub broker: Option<String>,

    /// Topic to publish to, or to subscribe to for `count` and `record` (wildcards
    /// allowed there) [default: sensor/CNC]
    #[arg(long, global = true, value_name = "TOPIC")]
    pub topic: Option<String>,

    /// MQTT client id [default: cnc-sim-<pid>]
    #[arg(long, global = true, value_name = "ID")]
    pub client_id: Option<String>,

    /// QoS for publishing and subscribing
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(i32).range(0..=2))]
    pub qos: i32,

    /// User name for the broker (broker.username)
    #[arg(long, global = true, value_name = "USER")]
    pub username: Option<String>,

    /// Password for the broker [env: MES_MQTT_PASSWORD]; prefer --password-file
    #[arg(long, global = true, value_name = "PASSWORD")]
    pub password: Option<String>,

    /// A file holding the broker password, readable by its owner only
    /// (broker.password_file)
    #[arg(long, global = true, value_name = "FILE")]
    pub password_file: Option<PathBuf>,

    /// PEM file of the CA(s) that signed the broker's certificate; without it the
    /// system's trust store is used (broker.tls.ca_file)
    #[arg(long, global = true, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Client certificate (PEM), for brokers that require one (broker.tls.cert_file)
    #[arg(long, global = true, value_name = "FILE")]
    pub cert_file: Option<PathBuf>,

    /// Client private key (PEM) (broker.tls.key_file)
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// Check that the broker's certificate names the host connected to
    /// (broker.tls.verify_hostname) [default: true]
    #[arg(long, global = true, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub verify_hostname: Option<bool>,
}

#[derive(Subcommand)]
pub enum Command {
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
pub struct SendArgs {
    /// Messages per second overall; 0 sends as fast as the broker acknowledges
    #[arg(long, default_value_t = 0.0, value_name = "R", value_parser = parse_rate)]
    pub rate: f64,

    /// Most messages awaiting acknowledgement at once
    #[arg(long, default_value_t = 1000, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65000))]
    pub window: u32,
}

fn parse_rate(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 0.0 => Ok(r),
        _ => Err(format!("expected a non-negative number, got `{s}`")),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::{parse_rate, Cli};

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_rate_is_a_finite_non_negative_number() {
        assert_eq!(parse_rate("0"), Ok(0.0));
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        for bad in ["-0.5", "nan", "inf", "ten"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }
}
