//! `mes-collector replay`: recorded messages through one plugin, exactly as the
//! collector would run them (same envelope parsing, same recorder and identifier
//! checks, same dead letters), so that a plugin can be tried on real traffic without
//! a plant, a broker or, by default, a database.
//!
//! The messages are a JSON-lines file, one MQTT payload per line (what `cnc-sim record`
//! writes). By default each write is printed as one line; with `--write` the messages
//! are committed through the collector's own MySQL sink, batch by batch.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::File,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
};

use mes_plugin_api::Value;

use crate::{
    config::{ClassMapping, Config},
    dead_letter::Reason,
    dispatch::handler::MessageHandler,
    isolation::Isolation,
    metrics::Metrics,
    plugins::{load_file, trust::PluginPolicy, Router},
    shutdown::Shutdown,
    sink::{
        batch::{Batch, RecordedWrite, RowKind, Shapes},
        mysql::{connect, Committed, MysqlSink, Stopped},
    },
};

/// What to replay, and where to.
#[derive(Debug, Clone)]
pub struct Options {
    /// The plugin library.
    pub plugin: PathBuf,
    /// A mapping file run by `plugin`, the mapping plugin; its class is the file name.
    pub mapping: Option<PathBuf>,
    /// The machines mapped to the plugin's class; messages from any other cnc_id are
    /// dead letters (`unknown_cnc_id`), as in the collector.
    pub cnc_ids: Vec<String>,
    /// The machines' `settings` object, as in `cnc_classes.json`.
    pub settings: Option<String>,
    /// The topic the plugin is told the messages came on.
    pub topic: String,
    /// `Some(config dir)`: commit to the database of its `db_config.json`.
    pub write: Option<PathBuf>,
    /// The JSON-lines file.
    pub messages: PathBuf,
    /// Run the plugin in a runner process, as `plugins.isolate` does: a crash or
    /// hang is a dead letter of its message and the replay goes on.
    pub isolate: bool,
}

/// Counts for the closing summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub messages: usize,
    pub stored: usize,
    pub writes: usize,
    pub dead: usize,
}

impl Summary {
    pub fn line(&self, wrote: bool) -> String {
        format!(
            "{} messages: {} {} ({} writes), {} dead letters{}",
            self.messages,
            self.stored,
            if wrote { "stored" } else { "would be stored" },
            self.writes,
            self.dead,
            if wrote {
                " (in the dead_letters table)"
            } else {
                ""
            }
        )
    }
}

/// `mes-collector replay`: the exit code. 0: every message stored (or would be), 1:
/// some became dead letters, 2: the replay could not run.
pub fn main(opts: &Options) -> u8 {
    let stdout = std::io::stdout();
    match replay(opts, &mut stdout.lock()) {
        Ok(summary) => {
            eprintln!("{}", summary.line(opts.write.is_some()));
            u8::from(summary.dead > 0)
        }
        Err(e) => {
            eprintln!("replay: {e}");
            2
        }
    }
}

/// Runs the replay, printing writes (dry run) and dead letters to `out`. `Err` is a
/// problem with the inputs (plugin, file, settings, database) rather than with a
/// message.
pub fn replay(opts: &Options, out: &mut dyn Write) -> Result<Summary, String> {
    if opts.cnc_ids.is_empty() {
        return Err("give at least one --cnc-id: the machine the messages are from".into());
    }
    let settings = match &opts.settings {
        None => None,
        Some(text) => {
            let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
                format!("--settings is not JSON ({e}); give an object like '{{\"key\": 1}}'")
            })?;
            if !v.is_object() {
                return Err(
                    "--settings must be a JSON object, as `settings` in cnc_classes.json".into(),
                );
            }
            Some(v)
        }
    };
    let mut plugin = load_file(&opts.plugin).map_err(|e| e.to_string())?;
    // A mapping runs as its own class on the mapping plugin, with the settings the
    // collector would give it.
    let mapping = opts
        .mapping
        .as_deref()
        .map(|path| crate::mappings::load_file(path).map_err(|f| f.to_string()))
        .transpose()?;
    let is_engine = plugin.info.class_name == mes_mapping::ENGINE_CLASS;
    match (&mapping, is_engine) {
        (Some(m), true) => plugin = crate::mappings::backed_by(&plugin, m),
        (Some(_), false) => {
            return Err(format!(
            "--mapping runs on the mapping plugin (class {}, libcnc_mapping.so); {} is class {}",
            mes_mapping::ENGINE_CLASS,
            opts.plugin.display(),
            plugin.info.class_name
        ))
        }
        (None, true) => {
            return Err(format!(
                "{} is the mapping plugin: give the mapping to run with --mapping FILE",
                opts.plugin.display()
            ))
        }
        (None, false) => {}
    }
    let class = plugin.info.class_name.clone();
    let classes: BTreeMap<String, ClassMapping> = opts
        .cnc_ids
        .iter()
        .map(|id| {
            let settings = match &mapping {
                Some(m) => Some(crate::mappings::engine_settings(m, settings.as_ref())),
                None => settings.clone(),
            };
            let mapping = ClassMapping {
                cnc_id: id.clone(),
                class_name: class.clone(),
                settings,
            };
            (id.clone(), mapping)
        })
        .collect();
    let file = File::open(&opts.messages)
        .map_err(|e| format!("cannot open {}: {e}", opts.messages.display()))?;
    let mut sink = match &opts.write {
        Some(dir) => Some(Sink::open(dir)?),
        None => None,
    };
    // The message limits of the collector being written for, else its defaults.
    let limits = sink
        .as_ref()
        .map(|s| s.cfg.collector.limits)
        .unwrap_or_default();
    let plugins = BTreeMap::from([(class.clone(), plugin)]);
    let isolation = if opts.isolate {
        // The file was loaded above without the trust checks, as replay always
        // does; the runner skips them likewise.
        let policy = PluginPolicy {
            isolate: vec![class.clone()],
            allow_insecure_permissions: true,
            ..PluginPolicy::default()
        };
        Isolation::new(&policy, &classes, &plugins)?
    } else {
        None
    };
    let router = Router::new(classes, plugins).with_isolation(isolation);
    // Dry runs report message by message; writes commit in the collector's batches.
    let batch_size = sink.as_ref().map_or(1, |s| s.batch_size);
    let mut messages = BufReader::new(file)
        .split(b'\n')
        .enumerate()
        .filter_map(|(i, line)| match line {
            Err(e) => Some(Err(format!(
                "cannot read {} at line {}: {e}",
                opts.messages.display(),
                i + 1
            ))),
            Ok(mut line) => {
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                let blank = line.iter().all(u8::is_ascii_whitespace);
                (!blank).then_some(Ok((i + 1, line)))
            }
        });
    let mut handler = MessageHandler::new(router, limits);
    let mut batch = Batch::default();
    // The file line of each message of the batch, for the dead-letter lines.
    let mut lines: Vec<usize> = Vec::new();
    let mut summary = Summary::default();
    loop {
        while batch.len() < batch_size {
            let Some(message) = messages.next() else {
                break;
            };
            let (line, payload) = message?;
            handler.handle(&opts.topic, payload, &mut batch);
            lines.push(line);
        }
        if lines.is_empty() {
            break;
        }
        if let Some(sink) = sink.as_mut() {
            sink.commit(&mut batch, handler.shapes())?;
        }
        report(
            &batch,
            &lines,
            handler.shapes(),
            opts,
            sink.is_none(),
            &mut summary,
            out,
        )?;
        batch.clear();
        lines.clear();
    }
    Ok(summary)
}

/// Prints the batch's writes (dry run only) and dead letters, and counts them.
fn report(
    batch: &Batch,
    lines: &[usize],
    shapes: &Shapes,
    opts: &Options,
    dry_run: bool,
    summary: &mut Summary,
    out: &mut dyn Write,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot print the output: {e}");
    for (entry, &line) in batch.entries.iter().zip(lines) {
        summary.messages += 1;
        match &entry.dead {
            None => {
                summary.stored += 1;
                summary.writes += entry.end_write - entry.first_write;
                if dry_run {
                    for op in &batch.writes[entry.first_write..entry.end_write] {
                        writeln!(out, "{}", statement(op, shapes)).map_err(io)?;
                    }
                }
            }
            Some(dl) => {
                summary.dead += 1;
                let mut text = format!("DEAD LETTER line {line} ({})", dl.reason.as_str());
                if let Some(id) = &dl.cnc_id {
                    let _ = write!(text, " cnc_id={id}");
                }
                if let Some((class, version)) = &dl.plugin {
                    let _ = write!(text, " plugin={class} {version}");
                }
                let _ = write!(text, ": {}", dl.detail.replace('\n', " "));
                if dl.reason == Reason::UnknownCncId {
                    let _ = write!(
                        text,
                        " (replay maps only --cnc-id {} to the plugin)",
                        opts.cnc_ids.join(", ")
                    );
                }
                writeln!(out, "{text}").map_err(io)?;
            }
        }
    }
    Ok(())
}

/// One recorded write as one line of SQL-like text, values inline for reading (the
/// collector binds them as parameters).
pub fn statement(op: &RecordedWrite, shapes: &Shapes) -> String {
    match op {
        RecordedWrite::Row { shape, values } => {
            let s = shapes.get(*shape);
            let verb = match s.kind {
                RowKind::Insert => "INSERT".to_string(),
                RowKind::Upsert => "UPSERT".to_string(),
                RowKind::UpsertNewest => format!("UPSERT NEWEST BY ({})", s.order_by.join(", ")),
            };
            format!(
                "{verb} {} ({}) VALUES ({})",
                s.table,
                s.columns.join(", "),
                values.iter().map(literal).collect::<Vec<_>>().join(", ")
            )
        }
        RecordedWrite::Exec { sql, params } => format!(
            "EXEC {} PARAMS ({})",
            sql.split_whitespace().collect::<Vec<_>>().join(" "),
            params.iter().map(literal).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A value as SQL would write it; JSON as `json'...'`, so that it stands out from text.
fn literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        // Debug keeps the decimal point: 200.0 is a float, 200 an integer.
        Value::Float(f) => format!("{f:?}"),
        Value::Text(s) => quoted(s),
        Value::Json(s) => format!("json{}", quoted(s)),
        Value::Bytes(b) => {
            let mut hex = String::with_capacity(b.len() * 2 + 3);
            hex.push_str("x'");
            for byte in b.iter() {
                let _ = write!(hex, "{byte:02x}");
            }
            hex.push('\'');
            hex
        }
    }
}

/// Single-quoted, with the quote doubled and line breaks escaped so that each write
/// stays on one line.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The collector's configuration in `dir`, every problem named in the error.
pub(crate) fn load_config(dir: &Path) -> Result<Config, String> {
    Config::load(dir).map_err(|errors| {
        let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        format!(
            "--config-dir {}: {}; `mes-collector check --config-dir {}` says more",
            dir.display(),
            list.join("; "),
            dir.display()
        )
    })
}

/// `--write`: the collector's MySQL sink without its lease, and committing no spool
/// position (a replay has no spool), so that the running collector's position is
/// never touched and nothing is left behind. `mes-collector dead-letters replay` writes
/// through it too.
pub(crate) struct Sink {
    sink: MysqlSink,
    pub(crate) cfg: Config,
    pub(crate) batch_size: usize,
    stop: Shutdown,
}

impl Sink {
    pub(crate) fn open(dir: &Path) -> Result<Sink, String> {
        let cfg = load_config(dir)?;
        // Fails fast here, rather than in the sink, which waits for the database.
        connect(&cfg.db)
            .map_err(|e| format!("database {}: cannot connect: {e}", cfg.db.target()))?;
        // Only named in the sink: with no position and no lease, nothing is written
        // under it.
        let client_id = format!("mes-collector-replay-{}", std::process::id());
        let metrics = Metrics::new(std::iter::empty(), std::iter::empty());
        let sink = MysqlSink::new(
            cfg.db.clone(),
            &client_id,
            cfg.collector.dead_letter_payload_limit,
            metrics,
        );
        Ok(Sink {
            sink,
            batch_size: cfg.collector.batch.max_messages,
            cfg,
            stop: Shutdown::default(),
        })
    }

    /// Commits the batch. A commit whose answer was lost is an error: with no
    /// position row, nothing tells whether it happened.
    pub(crate) fn commit(
        &mut self,
        batch: &mut Batch,
        shapes: &Shapes,
    ) -> Result<Committed, String> {
        self.sink
            .commit(batch, shapes, None, &self.stop)
            .map_err(stopped)
    }

    /// Runs the batch's statements and rolls them back (see [`MysqlSink::trial`]).
    pub(crate) fn trial(
        &mut self,
        batch: &mut Batch,
        shapes: &Shapes,
    ) -> Result<Committed, String> {
        self.sink.trial(batch, shapes, &self.stop).map_err(stopped)
    }
}

fn stopped(why: Stopped) -> String {
    match why {
        Stopped::Asked => "stopped while the database was unreachable".to_string(),
        Stopped::InDoubt(what) => what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_stay_on_one_line_and_keep_their_kind() {
        assert_eq!(literal(&Value::Float(200.0)), "200.0");
        assert_eq!(literal(&Value::Int(200)), "200");
        assert_eq!(literal(&Value::from("it's\na")), "'it''s\\na'");
        assert_eq!(literal(&Value::json_text(r#"{"a":1}"#)), r#"json'{"a":1}'"#);
        assert_eq!(literal(&Value::from(&b"\x00\xff"[..])), "x'00ff'");
        assert_eq!(literal(&Value::Null), "NULL");
    }
}
