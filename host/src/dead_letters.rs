//! `mes-collector dead-letters`: lists the stored dead letters, and replays them once
//! their cause is fixed (a plugin installed, a mapping added, a column widened).
//!
//! A replayed message goes the way a received one does: the same limits check,
//! envelope parse, routing by `cnc_classes.json`, plugin call (isolated where
//! `plugins.isolate` says) and MySQL write with the same dead-letter isolation. It does
//! not need the broker, and it may run while the collector runs: it writes under a
//! client id of its own (never the collector's lease or position), and each dead
//! letter's row is deleted in the transaction that stores the message's rows, so that
//! a message is stored once however many replays run. A message that fails again
//! stays, under its id, with the new reason.

use std::{collections::BTreeMap, fmt::Write as _, io::Write, path::Path, time::Instant};

use mysql::prelude::Queryable;

use crate::{
    check::write_table,
    config::Config,
    crash_guard::state::GuardState,
    dispatch::handler::MessageHandler,
    isolation::Isolation,
    plugins::{trust::digest, Router},
    replay::{load_config, Sink},
    sink::{
        batch::{Batch, RecordedWrite, Replayed, Shapes},
        mysql::connect,
    },
};

/// Which dead letters: every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub reasons: Vec<String>,
    pub cnc_ids: Vec<String>,
    /// Plugin classes.
    pub plugins: Vec<String>,
    /// RFC 3339, or `YYYY-MM-DD HH:MM:SS` in the database's time zone.
    pub since: Option<String>,
    pub until: Option<String>,
    pub ids: Vec<u64>,
    /// At most this many rows (listed, or replayed).
    pub limit: Option<u64>,
}

/// A time bound as SQL: an expression and its parameter.
#[derive(Debug, PartialEq)]
enum TimeBound {
    /// RFC 3339, as Unix seconds: the database converts it to its own time zone.
    Unix(f64),
    /// `YYYY-MM-DD HH:MM:SS[.fff]`, as `received_at` is listed.
    Local(String),
}

impl TimeBound {
    fn parse(flag: &str, text: &str) -> Result<TimeBound, String> {
        let t = text.trim();
        let b = t.as_bytes();
        let digits = |r: std::ops::Range<usize>| -> Option<i64> {
            let s = t.get(r)?;
            if s.bytes().all(|c| c.is_ascii_digit()) {
                s.parse().ok()
            } else {
                None
            }
        };
        let bad = || {
            format!(
                "{flag} {text:?}: give a time as RFC 3339 (2026-05-16T08:30:00Z, 2026-05-16T10:30:00+02:00) \
                 or as YYYY-MM-DD HH:MM:SS in the database's time zone (as `dead-letters` lists received_at)"
            )
        };
        if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
            return Err(bad());
        }
        let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(s)) = (
            digits(0..4),
            digits(5..7),
            digits(8..10),
            digits(11..13),
            digits(14..16),
            digits(17..19),
        ) else {
            return Err(bad());
        };
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
            return Err(bad());
        }
        let mut rest = &t[19..];
        let mut fraction = 0.0;
        if let Some(f) = rest.strip_prefix('.') {
            let n = f.bytes().take_while(u8::is_ascii_digit).count();
            if n == 0 {
                return Err(bad());
            }
            fraction = format!("0.{}", &f[..n]).parse().map_err(|_| bad())?;
            rest = &f[n..];
        }
        match (b[10], rest) {
            (b' ', "") => Ok(TimeBound::Local(t.to_string())),
            (b'T' | b't' | b' ', zone) if !zone.is_empty() => {
                let offset = match zone {
                    "Z" | "z" => 0,
                    _ => {
                        let zb = zone.as_bytes();
                        let sign = match zb.first() {
                            Some(b'+') => 1,
                            Some(b'-') => -1,
                            _ => return Err(bad()),
                        };
                        let (Some(oh), Some(om)) = (
                            zone.get(1..3).and_then(|s| s.parse::<i64>().ok()),
                            zone.get(4..6).and_then(|s| s.parse::<i64>().ok()),
                        ) else {
                            return Err(bad());
                        };
                        if zone.len() != 6 || zb[3] != b':' || oh > 23 || om > 59 {
                            return Err(bad());
                        }
                        sign * (oh * 3600 + om * 60)
                    }
                };
                let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s - offset;
                Ok(TimeBound::Unix(secs as f64 + fraction))
            }
            _ => Err(bad()),
        }
    }

    fn sql(&self, column_op: &str) -> (String, mysql::Value) {
        match self {
            TimeBound::Unix(secs) => (
                format!("received_at {column_op} FROM_UNIXTIME(?)"),
                mysql::Value::Double(*secs),
            ),
            TimeBound::Local(text) => (
                format!("received_at {column_op} ?"),
                mysql::Value::from(text.as_str()),
            ),
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl Selection {
    /// The WHERE clause (without the keyword; `1` when nothing is selected) and its
    /// parameters.
    fn condition(&self) -> Result<(String, Vec<mysql::Value>), String> {
        let mut terms = Vec::new();
        let mut params: Vec<mysql::Value> = Vec::new();
        let mut any_of = |column: &str, values: Vec<mysql::Value>| {
            if !values.is_empty() {
                terms.push(format!(
                    "{column} IN ({})",
                    vec!["?"; values.len()].join(",")
                ));
                params.extend(values);
            }
        };
        any_of(
            "reason",
            self.reasons.iter().map(|s| s.as_str().into()).collect(),
        );
        any_of(
            "cnc_id",
            self.cnc_ids.iter().map(|s| s.as_str().into()).collect(),
        );
        any_of(
            "plugin_class",
            self.plugins.iter().map(|s| s.as_str().into()).collect(),
        );
        any_of("id", self.ids.iter().map(|&i| i.into()).collect());
        for (flag, value, op) in [
            ("--since", &self.since, ">="),
            ("--until", &self.until, "<"),
        ] {
            if let Some(text) = value {
                let (term, param) = TimeBound::parse(flag, text)?.sql(op);
                terms.push(term);
                params.push(param);
            }
        }
        if terms.is_empty() {
            terms.push("1".into());
        }
        Ok((terms.join(" AND "), params))
    }

    /// The selection in words, for headings.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        let list = |name: &str, v: &[String]| format!("{name} {}", v.join(" or "));
        if !self.reasons.is_empty() {
            parts.push(list("reason", &self.reasons));
        }
        if !self.cnc_ids.is_empty() {
            parts.push(list("cnc_id", &self.cnc_ids));
        }
        if !self.plugins.is_empty() {
            parts.push(list("plugin", &self.plugins));
        }
        if !self.ids.is_empty() {
            let ids: Vec<String> = self.ids.iter().map(u64::to_string).collect();
            parts.push(list("id", &ids));
        }
        if let Some(s) = &self.since {
            parts.push(format!("since {s}"));
        }
        if let Some(u) = &self.until {
            parts.push(format!("until {u}"));
        }
        if parts.is_empty() {
            "all".into()
        } else {
            parts.join(", ")
        }
    }
}

fn db_error(cfg: &Config, e: mysql::Error) -> String {
    let hint = match &e {
        mysql::Error::MySqlError(se) if se.code == 1054 => {
            "; the table lacks columns of this version: apply database.sql (it adds them and keeps what exists)"
        }
        mysql::Error::MySqlError(se) if se.code == 1142 => {
            "; a replay needs DELETE on dead_letters beyond the collector's grants (docs/dead-letters.md)"
        }
        _ => "",
    };
    format!("database {}: dead_letters: {e}{hint}", cfg.db.target())
}

/// `mes-collector dead-letters [list]`: exit code 0, or 2 when it could not run.
pub fn list_main(config_dir: &Path, selection: &Selection) -> u8 {
    let stdout = std::io::stdout();
    match list(config_dir, selection, &mut stdout.lock()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("dead-letters: {e}");
            2
        }
    }
}

/// Rows listed when `--limit` is not given.
const LIST_DEFAULT: u64 = 100;
/// Characters of `detail` in a listing.
const DETAIL_SHOWN: usize = 80;

/// Counts by reason, then the rows.
pub fn list(config_dir: &Path, selection: &Selection, out: &mut dyn Write) -> Result<(), String> {
    let cfg = load_config(config_dir)?;
    let mut conn = connect(&cfg.db)
        .map_err(|e| format!("database {}: cannot connect: {e}", cfg.db.target()))?;
    let (cond, params) = selection.condition()?;
    let counts: Vec<(String, u64)> = conn
        .exec(
            format!(
                "SELECT reason, COUNT(*) FROM dead_letters WHERE {cond} GROUP BY reason ORDER BY COUNT(*) DESC, reason"
            ),
            params.clone(),
        )
        .map_err(|e| db_error(&cfg, e))?;
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let io = |e: std::io::Error| format!("cannot print the output: {e}");
    writeln!(
        out,
        "dead letters in {} ({}): {total}",
        cfg.db.target(),
        selection.describe()
    )
    .map_err(io)?;
    let mut rows: Vec<[String; 2]> = counts
        .iter()
        .map(|(r, n)| [r.clone(), n.to_string()])
        .collect();
    if rows.len() > 1 {
        rows.push(["total".into(), total.to_string()]);
    }
    write_table(out, &["REASON", "COUNT"], &rows);
    if total == 0 {
        return Ok(());
    }
    let limit = selection.limit.unwrap_or(LIST_DEFAULT);
    let mut params = params;
    params.push(limit.into());
    type Row = (
        u64,
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        u32,
        u64,
        u64,
        String,
    );
    let found: Vec<Row> = conn
        .exec(
            format!(
                "SELECT id, CAST(received_at AS CHAR), reason, cnc_id, plugin_class, plugin_version, replays, \
                 LENGTH(payload), payload_bytes, detail FROM dead_letters WHERE {cond} ORDER BY id LIMIT ?"
            ),
            params,
        )
        .map_err(|e| db_error(&cfg, e))?;
    let rows: Vec<[String; 8]> = found
        .into_iter()
        .map(
            |(id, at, reason, cnc, class, version, replays, kept, bytes, detail)| {
                let flat = detail.split_whitespace().collect::<Vec<_>>().join(" ");
                let mut short: String = flat.chars().take(DETAIL_SHOWN).collect();
                if flat.chars().count() > DETAIL_SHOWN {
                    short.push('…');
                }
                let plugin = match (class, version) {
                    (Some(c), Some(v)) => format!("{c} {v}"),
                    (Some(c), None) => c,
                    _ => "-".into(),
                };
                let size = if kept < bytes {
                    format!("{bytes} (cut at {kept})")
                } else {
                    bytes.to_string()
                };
                [
                    id.to_string(),
                    at,
                    reason,
                    cnc.unwrap_or_else(|| "-".into()),
                    plugin,
                    replays.to_string(),
                    size,
                    short,
                ]
            },
        )
        .collect();
    writeln!(out).map_err(io)?;
    write_table(
        out,
        &[
            "ID",
            "RECEIVED_AT",
            "REASON",
            "CNC_ID",
            "PLUGIN",
            "REPLAYS",
            "BYTES",
            "DETAIL",
        ],
        &rows,
    );
    if (rows.len() as u64) < total {
        writeln!(
            out,
            "\n{} of {total} shown; --limit N shows more, --id ID one",
            rows.len()
        )
        .map_err(io)?;
    }
    Ok(())
}

/// Counts of a replay, for its closing summary.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub selected: u64,
    pub stored: u64,
    pub failed_again: u64,
    /// Payload cut at `dead_letter_payload_limit`: not replayed.
    pub refused: u64,
    /// Taken by another replay between the read and the delete.
    pub taken: u64,
    /// A batch's COMMIT had its answer lost and ran again: some of `taken` may be
    /// this replay's own.
    pub answer_lost: bool,
}

impl Summary {
    pub fn line(&self, dry_run: bool) -> String {
        let (stored, failed) = if dry_run {
            ("would be stored", "would fail again")
        } else {
            ("stored", "failed again (still in dead_letters)")
        };
        let mut s = format!(
            "{} dead letters: {} {stored}, {} {failed}, {} not replayable (payload cut)",
            self.selected, self.stored, self.failed_again, self.refused
        );
        if self.taken > 0 {
            let _ = write!(s, ", {} taken {}", self.taken, taken_by(self.answer_lost));
        }
        if dry_run {
            s.push_str("; dry run: nothing was written");
        }
        s
    }
}

/// `mes-collector dead-letters replay`: exit code 0 when every selected dead letter
/// was stored (or would be), 1 when some failed again or could not be replayed, 2 when
/// the replay could not run.
pub fn replay_main(config_dir: &Path, selection: &Selection, dry_run: bool) -> u8 {
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    match replay(
        config_dir,
        selection,
        dry_run,
        &mut stdout.lock(),
        &mut stderr.lock(),
    ) {
        Ok(summary) => {
            eprintln!("{}", summary.line(dry_run));
            u8::from(summary.failed_again + summary.refused > 0)
        }
        Err(e) => {
            eprintln!("dead-letters replay: {e}");
            2
        }
    }
}

/// Loads the collector's plugins and mappings and its isolation and quarantine, as
/// `run` does, so that a replayed message meets what a received one would.
fn router(cfg: &mut Config) -> Result<Router, String> {
    let plugins = crate::run::load_plugins(cfg)?;
    let isolation = Isolation::new(&cfg.collector.plugins, &cfg.classes, &plugins.by_class)?;
    let mut router =
        Router::new(cfg.classes.clone(), plugins.by_class.clone()).with_isolation(isolation);
    // The collector's quarantine, read only: a class quarantined at its installed
    // build stays so; its messages fail again as `plugin_quarantined`.
    match GuardState::load(&cfg.collector.spool.dir) {
        Ok(state) => {
            for q in &state.quarantined {
                let installed = plugins
                    .by_class
                    .get(&q.class)
                    .and_then(|p| digest(&p.info.file).ok());
                if installed.as_deref() == Some(q.sha256.as_str()) {
                    router.quarantine(
                        &q.class,
                        format!(
                            "{}; install a different build or run `mes-collector quarantine lift {}`, then replay",
                            q.describe(),
                            q.class
                        ),
                    );
                }
            }
        }
        Err(e) => log::warn!("{e}; replaying as if no plugin class were quarantined"),
    }
    Ok(router)
}

/// One row of `dead_letters` as the replay reads it.
type Stored = (u64, String, String, String, Vec<u8>, u64, u32);

/// Replays the selected dead letters in batches of `batch.max_messages`, printing one
/// line per dead letter to `out` and progress to `progress`.
pub fn replay(
    config_dir: &Path,
    selection: &Selection,
    dry_run: bool,
    out: &mut dyn Write,
    progress: &mut dyn Write,
) -> Result<Summary, String> {
    let (cond, params) = selection.condition()?;
    let mut sink = Sink::open(config_dir)?;
    let mut reader = connect(&sink.cfg.db)
        .map_err(|e| format!("database {}: cannot connect: {e}", sink.cfg.db.target()))?;
    let total: u64 = reader
        .exec_first(
            format!("SELECT COUNT(*) FROM dead_letters WHERE {cond}"),
            params.clone(),
        )
        .map_err(|e| db_error(&sink.cfg, e))?
        .unwrap_or(0);
    let total = selection.limit.map_or(total, |l| total.min(l));
    // The sink retries what fails as if the database were down, which a missing
    // grant would make forever: find that out here, where it can be said.
    reader
        .query_drop("START TRANSACTION")
        .and_then(|()| reader.query_drop("DELETE FROM dead_letters WHERE 1 = 0"))
        .and_then(|()| reader.query_drop("ROLLBACK"))
        .map_err(|e| db_error(&sink.cfg, e))?;
    let router = router(&mut sink.cfg)?;
    let limits = sink.cfg.collector.limits;
    let payload_limit = sink.cfg.collector.dead_letter_payload_limit;
    let io = |e: std::io::Error| format!("cannot print the output: {e}");
    writeln!(
        out,
        "{} {total} dead letters ({}) from {}",
        if dry_run { "dry run of" } else { "replaying" },
        selection.describe(),
        sink.cfg.db.target()
    )
    .map_err(io)?;
    let mut handler = MessageHandler::new(router, limits);
    let mut batch = Batch::default();
    let mut summary = Summary::default();
    let mut after = 0u64;
    let started = Instant::now();
    while summary.selected < total {
        let want = (total - summary.selected).min(sink.batch_size as u64);
        let mut page = params.clone();
        page.push(after.into());
        page.push(want.into());
        // Read outside the replaying transaction: a row another replay takes between
        // this read and the delete is found then, and skipped.
        let rows: Vec<Stored> = reader
            .exec(
                format!(
                    "SELECT id, CAST(received_at AS CHAR), reason, topic, payload, payload_bytes, replays \
                     FROM dead_letters WHERE ({cond}) AND id > ? ORDER BY id LIMIT ?"
                ),
                page,
            )
            .map_err(|e| db_error(&sink.cfg, e))?;
        let Some(last) = rows.last() else {
            break;
        };
        after = last.0;
        summary.selected += rows.len() as u64;
        // Previous reasons, by position in the batch.
        let mut was = Vec::with_capacity(rows.len());
        for (id, received_at, reason, topic, payload, payload_bytes, replays) in rows {
            if (payload.len() as u64) < payload_bytes {
                summary.refused += 1;
                writeln!(
                    out,
                    "id {id} ({reason}): NOT REPLAYED: its payload was cut at {} of {payload_bytes} bytes \
                     (dead_letter_payload_limit {payload_limit}), so it cannot be replayed faithfully; \
                     left in dead_letters",
                    payload.len()
                )
                .map_err(io)?;
                continue;
            }
            handler.handle(&topic, payload, &mut batch);
            batch.current().replay_of = Some(Replayed {
                id,
                received_at,
                replays,
                gone: false,
            });
            was.push(reason);
        }
        if batch.is_empty() {
            continue;
        }
        let answer_lost = if dry_run {
            sink.trial(&mut batch, handler.shapes())?.answer_lost
        } else {
            sink.commit(&mut batch, handler.shapes())?.answer_lost
        };
        summary.answer_lost |= answer_lost;
        report(
            &batch,
            handler.shapes(),
            &was,
            dry_run,
            answer_lost,
            &mut summary,
            out,
        )?;
        batch.clear();
        if total > sink.batch_size as u64 {
            let _ = writeln!(
                progress,
                "{} of {total} in {:.1} s: {} {}, {} failing again, {} not replayable",
                summary.selected,
                started.elapsed().as_secs_f64(),
                summary.stored,
                if dry_run { "would be stored" } else { "stored" },
                summary.failed_again,
                summary.refused
            );
        }
    }
    Ok(summary)
}

/// Who took a dead letter that a replay found gone.
fn taken_by(answer_lost: bool) -> &'static str {
    if answer_lost {
        "meanwhile, by another replay or by this one's COMMIT whose answer was lost"
    } else {
        "by another replay meanwhile"
    }
}

/// One line per replayed dead letter: where its rows went, or why it failed again.
fn report(
    batch: &Batch,
    shapes: &Shapes,
    was: &[String],
    dry_run: bool,
    answer_lost: bool,
    summary: &mut Summary,
    out: &mut dyn Write,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("cannot print the output: {e}");
    for (entry, was) in batch.entries.iter().zip(was) {
        let r = entry.replay_of.as_ref().expect("every entry is a replay");
        let mut line = format!("id {} ({was}", r.id);
        if let Some(cnc) = &entry.cnc_id {
            let _ = write!(line, ", cnc_id {cnc}");
        }
        line.push_str("): ");
        if r.gone {
            summary.taken += 1;
            let _ = write!(
                line,
                "taken {}; nothing written for it here",
                taken_by(answer_lost)
            );
        } else if let Some(dl) = &entry.dead {
            summary.failed_again += 1;
            let _ = write!(
                line,
                "{} again: {}: {}",
                if dry_run { "would fail" } else { "failed" },
                dl.reason.as_str(),
                dl.detail.replace('\n', " ")
            );
        } else {
            summary.stored += 1;
            let mut tables: BTreeMap<&str, usize> = BTreeMap::new();
            for op in &batch.writes[entry.first_write..entry.end_write] {
                let table = match op {
                    RecordedWrite::Row { shape, .. } => shapes.get(*shape).table.as_str(),
                    RecordedWrite::Exec { .. } => "exec",
                };
                *tables.entry(table).or_default() += 1;
            }
            let into: Vec<String> = tables.iter().map(|(t, n)| format!("{t} {n}")).collect();
            let _ = write!(
                line,
                "{} ({})",
                if dry_run { "would be stored" } else { "stored" },
                if into.is_empty() {
                    "no rows".to_string()
                } else {
                    into.join(", ")
                }
            );
        }
        writeln!(out, "{line}").map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_becomes_unix_seconds_and_local_time_stays_text() {
        assert_eq!(
            TimeBound::parse("--since", "1970-01-01T00:00:00Z"),
            Ok(TimeBound::Unix(0.0))
        );
        assert_eq!(
            TimeBound::parse("--since", "2026-05-16T10:30:00+02:00"),
            Ok(TimeBound::Unix(1_778_920_200.0))
        );
        assert_eq!(
            TimeBound::parse("--since", "2038-01-19T03:14:07.5Z"),
            Ok(TimeBound::Unix(2_147_483_647.5))
        );
        assert_eq!(
            TimeBound::parse("--until", "2026-05-16 08:30:00"),
            Ok(TimeBound::Local("2026-05-16 08:30:00".into()))
        );
        for bad in [
            "yesterday",
            "2026-05-16",
            "2026-13-16 08:30:00",
            "2026-05-16T08:30:00",
            "2026-05-16T08:30:00+2",
        ] {
            let e = TimeBound::parse("--since", bad).unwrap_err();
            assert!(e.contains("RFC 3339") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_condition_binds_every_value() {
        let sel = Selection {
            reasons: vec!["unknown_cnc_id".into(), "db_rejected".into()],
            cnc_ids: vec!["CNC'1".into()],
            ids: vec![7],
            since: Some("2026-05-16 08:30:00".into()),
            ..Selection::default()
        };
        let (cond, params) = sel.condition().unwrap();
        assert_eq!(
            cond,
            "reason IN (?,?) AND cnc_id IN (?) AND id IN (?) AND received_at >= ?"
        );
        assert_eq!(params.len(), 5);
        assert_eq!(Selection::default().condition().unwrap().0, "1");
    }
}
