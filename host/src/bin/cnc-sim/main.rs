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

mod broker_settings;
mod classes;
mod cli;
mod connection;
mod count;
mod failure;
mod generate;
mod machine;
mod message;
mod progress;
mod publish;
mod publisher;
mod record;
mod split_mix;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use cli::{Cli, Command};
use failure::Result;

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
    // `classes` needs no broker, so bad connection options must not stop it.
    if let Command::Classes { machines } = cli.command {
        return classes::print(machines);
    }
    let env = std::env::vars().collect();
    let broker = broker_settings::resolve(&cli.connection, &env)?;
    match cli.command {
        Command::Classes { .. } => unreachable!("handled above"),
        Command::Publish { file, send } => publish::publish_file(&broker, &send, &file),
        Command::Generate {
            machines,
            count,
            start_seq,
            seed,
            send,
        } => generate::generate(&broker, &send, machines, count, start_seq, seed),
        Command::Count {
            count,
            timeout_secs,
        } => count::count_messages(&broker, count, Duration::from_secs(timeout_secs)),
        Command::Record {
            out,
            count,
            timeout_secs,
        } => record::record_messages(&broker, &out, count, Duration::from_secs(timeout_secs)),
    }
}
