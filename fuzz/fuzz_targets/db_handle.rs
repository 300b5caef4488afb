//! The database handle, driven exactly as a plugin drives it: a `Db` over the host's
//! batch recorder (as in `dispatch/handler.rs`), fed structured sequences of `insert`,
//! `upsert` and `exec` calls with hostile table names, column names and values.
//!
//! Checked after every call:
//! - `check_identifier` agrees with an independent reference predicate on every name;
//! - a row is accepted exactly when the reference rules say it should be (names,
//!   at least one column, equal counts, no duplicate column, finite floats);
//! - an accepted row is recorded once, with the very table, columns and values given,
//!   and those names hold only `[A-Za-z0-9_.]`, so they can be put into SQL in
//!   backticks; a refused one records nothing;
//! - every recorded row has as many values as its shape has columns;
//! - nothing panics.

#![no_main]

use abi_stable::{sabi_trait::TD_Opaque, std_types::RString};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use mes_collector::{
    dead_letter::{DeadLetter, Reason},
    sink::batch::{Batch, RecordedWrite, RowKind, Shapes},
};
use mes_plugin_api::{check_identifier, Db, RawDatabase_TO, Value, MAX_IDENTIFIER_LEN};

/// Pieces names are built from: mostly plausible words, and the separators and
/// characters an identifier check must refuse.
#[derive(Arbitrary, Debug)]
enum Frag {
    Word(u8),
    Sep(u8),
    Digit(u8),
    /// A run of letters around the 64-character limit.
    Long(u8),
    Raw(String),
}

const WORDS: &[&str] = &[
    "t",
    "a",
    "b",
    "cnc_data",
    "cnc_status",
    "db",
    "_",
    "X",
    "id",
    "A",
];
const SEPS: &[&str] = &[
    ".", "\0", "`", " ", "-", "é", ";", "'", "\"", "\n", "..", "/*", "\u{200b}", "ß", "K",
];

#[derive(Arbitrary, Debug)]
struct Name(Vec<Frag>);

impl Name {
    fn build(&self) -> String {
        let mut s = String::new();
        for f in self.0.iter().take(8) {
            match f {
                Frag::Word(i) => s.push_str(WORDS[*i as usize % WORDS.len()]),
                Frag::Sep(i) => s.push_str(SEPS[*i as usize % SEPS.len()]),
                Frag::Digit(d) => s.push(char::from(b'0' + d % 10)),
                Frag::Long(n) => s.push_str(&"a".repeat(56 + *n as usize % 16)),
                Frag::Raw(r) => s.push_str(r),
            }
        }
        s
    }
}

#[derive(Arbitrary, Debug)]
enum FValue {
    Null,
    Int(i64),
    UInt(u64),
    Float(f64),
    Special(u8),
    Text(String),
    Bytes(Vec<u8>),
    Json(String),
}

impl FValue {
    fn build(&self) -> Value {
        match self {
            FValue::Null => Value::Null,
            FValue::Int(i) => Value::Int(*i),
            FValue::UInt(u) => Value::UInt(*u),
            FValue::Float(f) => Value::Float(*f),
            FValue::Special(i) => Value::Float(
                [
                    f64::NAN,
                    f64::INFINITY,
                    f64::NEG_INFINITY,
                    -0.0,
                    f64::MIN_POSITIVE,
                    f64::MAX,
                    -f64::NAN,
                ][*i as usize % 7],
            ),
            FValue::Text(s) => Value::Text(RString::from(s.as_str())),
            FValue::Bytes(b) => Value::from(b.clone()),
            FValue::Json(s) => Value::json_text(s),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Call {
    Insert {
        table: Name,
        columns: Vec<Name>,
        values: Vec<FValue>,
        /// Otherwise the values are padded or cut to the number of columns.
        keep_count: bool,
    },
    Upsert {
        table: Name,
        columns: Vec<Name>,
        values: Vec<FValue>,
        keep_count: bool,
    },
    Exec {
        sql: String,
        params: Vec<FValue>,
    },
    /// Repeats an earlier row's names, the same or slightly changed, to reach the
    /// shape cache with names close to ones it already holds.
    Again {
        which: u8,
        tweak: Tweak,
        upsert: bool,
        values: Vec<FValue>,
        keep_count: bool,
    },
    /// Ends the message (kept or dead-lettered) and begins the next one.
    Next {
        dead: bool,
    },
}

#[derive(Arbitrary, Debug)]
enum Tweak {
    Same,
    /// Joins column `at` and the next one with a separator.
    JoinColumns {
        at: u8,
        sep: u8,
    },
    /// Joins the table and the first column with a separator.
    JoinTable {
        sep: u8,
    },
    /// Splits column `at` at byte `pos` (when that is a character boundary).
    SplitColumn {
        at: u8,
        pos: u8,
    },
    /// Changes the case of column `at`.
    Case {
        at: u8,
    },
    /// Appends a separator to the table name.
    SuffixTable {
        sep: u8,
    },
}

impl Tweak {
    fn apply(&self, table: &mut String, columns: &mut Vec<String>) {
        let n = columns.len();
        match self {
            Tweak::Same => {}
            Tweak::JoinColumns { at, sep } if n >= 2 => {
                let at = *at as usize % (n - 1);
                let next = columns.remove(at + 1);
                columns[at] = format!("{}{}{next}", columns[at], SEPS[*sep as usize % SEPS.len()]);
            }
            Tweak::JoinTable { sep } if n >= 1 => {
                let first = columns.remove(0);
                table.push_str(SEPS[*sep as usize % SEPS.len()]);
                table.push_str(&first);
            }
            Tweak::SplitColumn { at, pos } if n >= 1 => {
                let at = *at as usize % n;
                let pos = *pos as usize % (columns[at].len() + 1);
                if columns[at].is_char_boundary(pos) {
                    let tail = columns[at].split_off(pos);
                    columns.insert(at + 1, tail);
                }
            }
            Tweak::Case { at } if n >= 1 => {
                let at = *at as usize % n;
                columns[at] = columns[at].to_ascii_uppercase();
            }
            Tweak::SuffixTable { sep } => table.push_str(SEPS[*sep as usize % SEPS.len()]),
            _ => {}
        }
    }
}

/// The rule `check_identifier` documents, written out independently.
fn reference_identifier(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.is_empty() || parts.len() > 2 {
        return false;
    }
    parts.iter().all(|p| {
        let b = p.as_bytes();
        !b.is_empty()
            && b.len() <= MAX_IDENTIFIER_LEN
            && !b[0].is_ascii_digit()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
    })
}

fn sql_safe(name: &str) -> bool {
    name.bytes()
        .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
}

fn checked_name(name: &str) -> bool {
    let ok = check_identifier(name).is_ok();
    assert_eq!(
        ok,
        reference_identifier(name),
        "check_identifier({name:?}) = {ok}, reference disagrees"
    );
    ok
}

/// Names of the rows tried so far, for `Call::Again`.
type History = Vec<(String, Vec<String>)>;

#[allow(clippy::too_many_arguments)]
fn row(
    batch: &mut Batch,
    shapes: &mut Shapes,
    history: &mut History,
    kind: RowKind,
    table: String,
    columns: Vec<String>,
    values: &[FValue],
    keep_count: bool,
) {
    history.push((table.clone(), columns.clone()));
    let mut values: Vec<Value> = values.iter().take(40).map(FValue::build).collect();
    if !keep_count {
        values.resize(columns.len(), Value::Null);
    }

    // What the host should decide, from the documented rules.
    let names_ok = checked_name(&table) & columns.iter().fold(true, |ok, c| checked_name(c) & ok);
    let mut lower: Vec<String> = columns.iter().map(|c| c.to_ascii_lowercase()).collect();
    lower.sort();
    lower.dedup();
    let expect_ok = names_ok
        && !columns.is_empty()
        && columns.len() == values.len()
        && lower.len() == columns.len()
        && values
            .iter()
            .all(|v| !matches!(v, Value::Float(f) if !f.is_finite()));

    let before = batch.writes.len();
    let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
    let result = {
        let mut rec = batch.recorder(shapes);
        let mut db = Db::from_raw(RawDatabase_TO::from_ptr(&mut rec, TD_Opaque));
        match kind {
            RowKind::Insert => db.insert(&table, &cols, values.clone()),
            RowKind::Upsert => db.upsert(&table, &cols, values.clone()),
            // Served by a host service, not the 1.0 handle; the fuzzer makes the others.
            RowKind::UpsertNewest => unreachable!("the fuzzer makes inserts and upserts only"),
        }
    };

    match result {
        Ok(()) => {
            assert!(
                expect_ok,
                "{kind:?} accepted a row the rules refuse: table {table:?}, columns {columns:?}, {} values",
                values.len()
            );
            assert!(sql_safe(&table), "accepted table name {table:?}");
            for c in &columns {
                assert!(sql_safe(c), "accepted column name {c:?}");
            }
            assert_eq!(
                batch.writes.len(),
                before + 1,
                "an accepted row recorded {} ops",
                batch.writes.len() - before
            );
            let Some(RecordedWrite::Row { shape, values: got }) = batch.writes.last() else {
                panic!("an accepted row recorded something else");
            };
            let s = shapes.get(*shape);
            assert_eq!(s.kind, kind);
            assert_eq!(s.table, table, "recorded under another table");
            assert_eq!(s.columns, columns, "recorded with other columns");
            assert_eq!(got, &values, "recorded other values");
        }
        Err(e) => {
            assert!(
                !expect_ok,
                "{kind:?} refused a valid row ({e}): table {table:?}, columns {columns:?}"
            );
            assert!(!e.to_string().is_empty());
            assert_eq!(batch.writes.len(), before, "a refused row recorded something");
        }
    }
}

fn exec(batch: &mut Batch, shapes: &mut Shapes, sql: &str, params: &[FValue]) {
    let params: Vec<Value> = params.iter().take(40).map(FValue::build).collect();
    let expect_ok = params
        .iter()
        .all(|v| !matches!(v, Value::Float(f) if !f.is_finite()));
    let before = batch.writes.len();
    let result = {
        let mut rec = batch.recorder(shapes);
        let mut db = Db::from_raw(RawDatabase_TO::from_ptr(&mut rec, TD_Opaque));
        db.exec(sql, params.clone())
    };
    assert_eq!(result.is_ok(), expect_ok, "exec: {result:?}");
    if expect_ok {
        assert_eq!(batch.writes.len(), before + 1);
        match batch.writes.last() {
            Some(RecordedWrite::Exec { sql: s, params: p }) => {
                assert_eq!(s, sql);
                assert_eq!(p, &params);
            }
            other => panic!("exec recorded {other:?}"),
        }
    } else {
        assert_eq!(batch.writes.len(), before);
    }
}

fuzz_target!(|calls: Vec<Call>| {
    let mut batch = Batch::default();
    // Kept for the whole run, as the host keeps it across batches.
    let mut shapes = Shapes::default();
    let mut history = History::new();
    batch.begin("t");
    for call in calls.iter().take(64) {
        match call {
            Call::Insert {
                table,
                columns,
                values,
                keep_count,
            } => row(
                &mut batch,
                &mut shapes,
                &mut history,
                RowKind::Insert,
                table.build(),
                columns.iter().take(40).map(Name::build).collect(),
                values,
                *keep_count,
            ),
            Call::Upsert {
                table,
                columns,
                values,
                keep_count,
            } => row(
                &mut batch,
                &mut shapes,
                &mut history,
                RowKind::Upsert,
                table.build(),
                columns.iter().take(40).map(Name::build).collect(),
                values,
                *keep_count,
            ),
            Call::Exec { sql, params } => exec(&mut batch, &mut shapes, sql, params),
            Call::Again {
                which,
                tweak,
                upsert,
                values,
                keep_count,
            } => {
                if history.is_empty() {
                    continue;
                }
                let (mut table, mut columns) = history[*which as usize % history.len()].clone();
                tweak.apply(&mut table, &mut columns);
                let kind = if *upsert {
                    RowKind::Upsert
                } else {
                    RowKind::Insert
                };
                row(
                    &mut batch,
                    &mut shapes,
                    &mut history,
                    kind,
                    table,
                    columns,
                    values,
                    *keep_count,
                );
            }
            Call::Next { dead } => {
                let dl = dead.then(|| DeadLetter::new(Reason::PluginError, "fuzz"));
                batch.end(Vec::new(), dl);
                batch.begin("t");
            }
        }
    }
    batch.end(Vec::new(), None);

    // What the sink relies on when it builds statements from the batch.
    let mut at = 0;
    for e in &batch.entries {
        assert_eq!(e.first_write, at, "entries do not tile the writes");
        assert!(e.end_write >= e.first_write && e.end_write <= batch.writes.len());
        if e.dead.is_some() {
            assert_eq!(e.first_write, e.end_write, "a dead letter kept its writes");
        }
        at = e.end_write;
    }
    assert_eq!(at, batch.writes.len());
    for op in &batch.writes {
        if let RecordedWrite::Row { shape, values } = op {
            let s = shapes.get(*shape);
            assert_eq!(s.columns.len(), values.len(), "row does not fit its shape");
            assert!(check_identifier(&s.table).is_ok() && sql_safe(&s.table));
            for c in &s.columns {
                assert!(check_identifier(c).is_ok() && sql_safe(c));
            }
        }
    }
});
