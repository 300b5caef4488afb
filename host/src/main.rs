use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "mes-collector",
    version = long_version(),
    about = "Collects CNC machine data from MQTT and stores it in MySQL through plugins"
)]
struct Cli {
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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config_dir } => ExitCode::from(mes_collector::run::run(&config_dir) as u8),
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
