use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mes-collector",
    version = long_version(),
    about = "Collects CNC machine data from MQTT and stores it in MySQL through plugins"
)]
struct Cli {
    /// Log lines as text, or as one JSON object per line for log shippers.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: mes_collector::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector until SIGINT or SIGTERM.
    Run {
        /// Directory holding collector.json, db_config.json and cnc_classes.json.
        #[arg(long, default_value = "config")]
        config_dir: PathBuf,
    },
    /// Check the configuration, the plugins, the database and the broker; exits
    /// non-zero naming each problem.
    Check {
        /// Directory holding collector.json, db_config.json and cnc_classes.json.
        #[arg(long, default_value = "config")]
        config_dir: PathBuf,
    },
    /// List the plugin libraries in a directory with class, version and ABI status,
    /// without starting anything.
    Plugins {
        /// The plugins directory.
        #[arg(default_value = "run/plugins")]
        dir: PathBuf,
    },
}

/// clap wants a `'static` string; this runs once per process.
fn long_version() -> &'static str {
    let line = mes_collector::version_line();
    Box::leak(
        line.trim_start_matches("mes-collector ")
            .to_string()
            .into_boxed_str(),
    )
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mes_collector::logging::init(cli.log_format);
    match cli.command {
        Command::Run { config_dir } => ExitCode::from(mes_collector::run::run(&config_dir) as u8),
        Command::Plugins { dir } => match mes_collector::check::list_plugins(&dir) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Check { config_dir } => {
            let problems = mes_collector::check::check(&config_dir);
            if problems.is_empty() {
                println!("\nall checks passed");
                ExitCode::SUCCESS
            } else {
                println!("\n{} problem(s):", problems.len());
                for p in &problems {
                    println!("  - {}", p.replace('\n', "\n    "));
                }
                ExitCode::FAILURE
            }
        }
    }
}
