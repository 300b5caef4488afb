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
    /// List the plugin libraries with class, version, ABI status and SHA-256, under a
    /// collector's plugin policy (allow list, permission checks) as `run` applies it,
    /// without starting anything; `plugins allow-entry FILE` prints a file's
    /// plugins.allow entry.
    #[command(args_conflicts_with_subcommands = true)]
    Plugins {
        #[command(subcommand)]
        action: Option<PluginsAction>,
        /// A plugins directory to list instead of the collector's plugins_dir. Without
        /// --config-dir it is checked under the default policy (no allow list).
        dir: Option<PathBuf>,
        /// Directory holding collector.json, db_config.json and cnc_classes.json, whose
        /// plugins section (and plugins_dir) applies [default: config, unless DIR is given]
        #[arg(long)]
        config_dir: Option<PathBuf>,
    },
    /// Create a plugin crate for a new machine type: Cargo.toml, src/lib.rs with a
    /// handler and its unit test, README.md. Inside a Cargo workspace the crate is
    /// added to its members.
    NewPlugin {
        /// The crate's name, e.g. cnc-lathe; the library is lib<name>.so.
        name: String,
        /// The class name machines are mapped to in cnc_classes.json, e.g. CNCTypeC.
        #[arg(long)]
        class: String,
        /// Directory the crate's directory is created in.
        #[arg(long, default_value = "plugins")]
        dir: PathBuf,
        /// Depend on the mes-plugin-api at this path (the plugin-api directory of a
        /// clone of the collector) rather than the workspace's or version "1".
        #[arg(long, value_name = "DIR", conflicts_with = "api_git")]
        api_path: Option<PathBuf>,
        /// Depend on the mes-plugin-api of this git repository (the collector's, or a
        /// plant's mirror of it) rather than version "1" of a registry.
        #[arg(long, value_name = "URL")]
        api_git: Option<String>,
        /// With --api-git: the tag to build against, e.g. mes-plugin-api-v1.1.0.
        #[arg(long, value_name = "TAG", requires = "api_git")]
        api_tag: Option<String>,
        /// Make a crate of its own (its own workspace, .gitignore), for a repository of
        /// its own, even when --dir is inside a Cargo workspace.
        #[arg(long)]
        standalone: bool,
    },
    /// Plugin classes quarantined after repeated crashes: list them, or lift one
    /// (takes effect at the collector's next start).
    Quarantine {
        #[command(subcommand)]
        action: QuarantineAction,
        /// Directory holding collector.json, db_config.json and cnc_classes.json.
        #[arg(long, default_value = "config", global = true)]
        config_dir: PathBuf,
    },
    /// Write a starter mapping (a class without Rust) from recorded messages: a
    /// cnc_data row, a table of the payload's values with inferred types, a child table
    /// per array of objects; and the CREATE TABLE statements for the new tables.
    NewMapping {
        /// The class name machines are mapped to in cnc_classes.json; the file is
        /// <dir>/<class>.json.
        class: String,
        /// Recorded messages: JSON lines, one MQTT message each (`cnc-sim record`).
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The mappings directory (mappings_dir of collector.json).
        #[arg(long, default_value = "config/mappings")]
        dir: PathBuf,
        /// Replace <class>.json and <class>.sql if they exist.
        #[arg(long)]
        force: bool,
    },
    /// Run recorded messages (JSON lines, one MQTT payload each) through one plugin as
    /// the collector would, and print each write and dead letter; --write commits them.
    /// Exits 0 if every message was stored, 1 if some became dead letters, 2 on errors.
    Replay {
        /// The plugin library (with --mapping: the mapping plugin, libcnc_mapping.so).
        #[arg(long, value_name = "FILE")]
        plugin: PathBuf,
        /// A mapping file (<Class>.json) to run on the mapping plugin.
        #[arg(long, value_name = "FILE")]
        mapping: Option<PathBuf>,
        /// A machine mapped to the plugin's class; repeat for several. Messages from
        /// other machines are dead letters (unknown_cnc_id), as in the collector.
        #[arg(long = "cnc-id", value_name = "ID", required = true)]
        cnc_ids: Vec<String>,
        /// The machines' settings object, as in cnc_classes.json.
        #[arg(long, value_name = "JSON")]
        settings: Option<String>,
        /// The topic the plugin is told the messages arrived on.
        #[arg(long, default_value = "sensor/CNC")]
        topic: String,
        /// Only print what would be written (the default).
        #[arg(long, conflicts_with = "write")]
        dry_run: bool,
        /// Commit through the collector's MySQL sink to the database of --config-dir.
        #[arg(long, requires = "config_dir")]
        write: bool,
        /// Directory holding collector.json, db_config.json and cnc_classes.json.
        #[arg(long, requires = "write")]
        config_dir: Option<PathBuf>,
        /// The messages: a JSON-lines file, as `cnc-sim record` writes.
        messages: PathBuf,
        /// Run the plugin in a child process, as `plugins.isolate` does: a message
        /// that crashes or hangs it (5 s) is a dead letter and the replay goes on.
        #[arg(long)]
        isolate: bool,
    },
    /// The messages the collector could not store (`dead_letters`): counts by reason
    /// and the rows; `replay` sends them through the collector's plugins and database
    /// again once their cause is fixed.
    DeadLetters {
        #[command(subcommand)]
        action: Option<DeadLettersAction>,
        #[command(flatten)]
        filters: DeadLetterFilters,
        /// Directory holding collector.json, db_config.json and cnc_classes.json.
        #[arg(long, default_value = "config", global = true)]
        config_dir: PathBuf,
    },
    /// Runs one plugin in a child process for the collector (`plugins.isolate`),
    /// talking frames over stdin and stdout; not for use by hand.
    #[command(hide = true)]
    PluginRunner {
        #[arg(long, value_name = "FILE")]
        plugin: PathBuf,
        /// `plugins.allow` was given: only the --allow digests may load.
        #[arg(long)]
        allow_only: bool,
        #[arg(long, value_name = "SHA256")]
        allow: Vec<String>,
        #[arg(long)]
        allow_insecure_permissions: bool,
        #[arg(long, default_value_t = 20)]
        log_records_per_second: u32,
        #[arg(long, default_value_t = 100)]
        metric_series_per_class: u32,
    },
}

#[derive(Subcommand)]
enum PluginsAction {
    /// Print the plugins.allow entry (JSON) for a plugin file, e.g. the new build of a
    /// pinned plugin, after checking that `run` would otherwise load it; on stderr,
    /// its class and version and the entry it replaces.
    AllowEntry {
        /// The plugin library.
        file: PathBuf,
        /// Directory holding the collector's configuration, whose plugins section
        /// applies; without it, the default policy.
        #[arg(long)]
        config_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DeadLettersAction {
    /// Counts by reason, then the rows (the default).
    List,
    /// Run the selected dead letters through the collector's plugins and write their
    /// rows; each stored one leaves dead_letters in the same transaction, those that
    /// fail again stay with the new reason. Exits 0 if every one was stored, 1 if some
    /// failed again or could not be replayed, 2 on errors.
    Replay {
        /// Run everything, the database writes included, and roll back: print what
        /// would happen, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which dead letters; each filter may be repeated (any of its values matches), and
/// all filters given must hold.
#[derive(clap::Args)]
struct DeadLetterFilters {
    /// A reason, e.g. unknown_cnc_id, db_rejected.
    #[arg(long = "reason", value_name = "REASON", global = true)]
    reasons: Vec<String>,
    #[arg(long = "cnc-id", value_name = "ID", global = true)]
    cnc_ids: Vec<String>,
    /// A plugin class.
    #[arg(long = "plugin", value_name = "CLASS", global = true)]
    plugins: Vec<String>,
    /// Received at or after: RFC 3339 (2026-05-16T08:30:00Z) or YYYY-MM-DD HH:MM:SS in
    /// the database's time zone.
    #[arg(long, value_name = "TIME", global = true)]
    since: Option<String>,
    /// Received before; same forms as --since.
    #[arg(long, value_name = "TIME", global = true)]
    until: Option<String>,
    /// A dead letter's id.
    #[arg(long = "id", value_name = "ID", global = true)]
    ids: Vec<u64>,
    /// At most this many (listing: default 100).
    #[arg(long, value_name = "N", global = true)]
    limit: Option<u64>,
}

#[derive(Subcommand)]
enum QuarantineAction {
    /// Quarantined classes and the crashes still counted.
    List,
    /// Lift the quarantine of CLASS and forget its crashes; exits 1 if it was not
    /// quarantined.
    Lift { class: String },
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

/// The exit status of a command that checks something: 0 all good, 1 problems found
/// (listed by the command), 2 it could not check (the reason on stderr).
fn verdict(done: Result<bool, String>) -> ExitCode {
    match done {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    mes_collector::logging::init(cli.log_format);
    match cli.command {
        Command::Run { config_dir } => mes_collector::run::run(&config_dir),
        Command::Plugins {
            action,
            dir,
            config_dir,
        } => {
            use mes_collector::check::{allow_entry, list_plugins, PolicySource};
            let done = match action {
                Some(PluginsAction::AllowEntry { file, config_dir }) => {
                    PolicySource::new(config_dir.as_deref())
                        .and_then(|source| allow_entry(&file, &source))
                        .map(|()| true)
                }
                None => {
                    // As `check` and `run`: the collector in ./config, unless a bare
                    // directory is named.
                    let config_dir =
                        config_dir.or_else(|| dir.is_none().then(|| PathBuf::from("config")));
                    PolicySource::new(config_dir.as_deref())
                        .and_then(|source| list_plugins(dir.as_deref(), &source))
                }
            };
            verdict(done)
        }
        Command::NewPlugin {
            name,
            class,
            dir,
            api_path,
            api_git,
            api_tag,
            standalone,
        } => mes_collector::scaffold::main(&mes_collector::scaffold::Request {
            name,
            class,
            dir,
            api_path,
            api_git: api_git.map(|url| mes_collector::scaffold::GitSource { url, tag: api_tag }),
            standalone,
        }),
        Command::NewMapping {
            class,
            from,
            dir,
            force,
        } => mes_collector::mappings::new_mapping_main(&mes_collector::mappings::NewMapping {
            class,
            from,
            dir,
            force,
        }),
        Command::Replay {
            plugin,
            mapping,
            cnc_ids,
            settings,
            topic,
            dry_run: _,
            write,
            config_dir,
            messages,
            isolate,
        } => ExitCode::from(mes_collector::replay::main(
            &mes_collector::replay::Options {
                plugin,
                mapping,
                cnc_ids,
                settings,
                topic,
                write: config_dir.filter(|_| write),
                messages,
                isolate,
            },
        )),
        Command::DeadLetters {
            action,
            filters,
            config_dir,
        } => {
            let selection = mes_collector::dead_letters::Selection {
                reasons: filters.reasons,
                cnc_ids: filters.cnc_ids,
                plugins: filters.plugins,
                since: filters.since,
                until: filters.until,
                ids: filters.ids,
                limit: filters.limit,
            };
            ExitCode::from(match action {
                None | Some(DeadLettersAction::List) => {
                    mes_collector::dead_letters::list_main(&config_dir, &selection)
                }
                Some(DeadLettersAction::Replay { dry_run }) => {
                    mes_collector::dead_letters::replay_main(&config_dir, &selection, dry_run)
                }
            })
        }
        Command::Quarantine { action, config_dir } => {
            let done = match action {
                QuarantineAction::List => {
                    mes_collector::quarantine::list(&config_dir).map(|()| true)
                }
                QuarantineAction::Lift { class } => {
                    mes_collector::quarantine::lift(&config_dir, &class)
                }
            };
            verdict(done)
        }
        Command::PluginRunner {
            plugin,
            allow_only,
            allow,
            allow_insecure_permissions,
            log_records_per_second,
            metric_series_per_class,
        } => mes_collector::isolation::runner::main(
            &mes_collector::isolation::runner::RunnerOptions {
                plugin,
                allow: allow_only.then_some(allow),
                allow_insecure_permissions,
                log_records_per_second,
                metric_series_per_class,
            },
        ),
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
