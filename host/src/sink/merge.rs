//! Merging a batch's "latest value" rows: of the rows one statement would upsert
//! into the same key, only those that can end up stored are sent.
//!
//! A batch of 500 messages from 50 machines upserts each machine's `cnc_status` row
//! ten times over, and each of those upserts is an index lookup, a row update and undo
//! log for the server. What the server would keep is known before sending:
//! - `Db::upsert` ([`RowKind::Upsert`]): the last row of a key, in message order;
//! - `Db::upsert_newest` ([`RowKind::UpsertNewest`]): the rows of a key whose ordering
//!   columns are the greatest; a row with a smaller ordering can never be stored.
//!   Between rows tied on the ordering, the statement compares the other columns in
//!   turn. A tied row is also left out where it is certainly not greater than a row
//!   of its key before it: the stored row is at least that row when it comes, so it
//!   changes nothing. Everything else is sent, in order, and the statement decides,
//!   so the stored bytes are the server's in every case, including those of values a
//!   collation calls equal, of which the statement keeps the first to arrive.
//!   (Timestamps in whole seconds tie often: with ties all sent, a batch upserted
//!   each machine's row about once per message; now about once per new greatest.)
//!
//! Rows are merged only where the merge is certain to be what the server would do:
//! - the key must be the table's only unique index that the statement's columns
//!   cover (any other unique index has an AUTO_INCREMENT column, which the statement
//!   leaves to the server, so it never collides), read from `information_schema`;
//! - two rows are the same key only if their key values are equal byte for byte (a
//!   case-insensitive collation may call more rows equal: those are left unmerged,
//!   and the server applies them in order, as before);
//! - the ordering columns must be numeric in the table (a number sent to a VARCHAR
//!   column is compared as text there);
//! - two values are compared only as the server compares what it stores: NULL before
//!   anything else; values identical in type and content are equal; integers in an
//!   integer column whose range holds them, and numbers a plain DOUBLE column holds
//!   exactly, by value. Anything else (text under a collation, a float in an integer
//!   column, which rounds, a FLOAT, DECIMAL or DOUBLE(M,D) column) leaves the rows for
//!   the server.
//!
//! A message whose row is merged away is still stored (its other rows are written):
//! the server would have overwritten that row within the same transaction.

use std::{cmp::Ordering, collections::HashMap};

use mes_plugin_api::Value;
use mysql::{prelude::Queryable, Conn};

use crate::{
    fasthash::FxBuild,
    sink::batch::{RowKind, Shape, Shapes},
};

/// How the rows of one shape merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merge {
    /// Positions, in the shape's columns, of the unique key's columns.
    key: Vec<usize>,
    /// For `upsert_newest`: the columns in the order the statement compares them (the
    /// ordering columns, then the others), with how their values compare.
    compared: Vec<(usize, Exact)>,
    /// How many of `compared` are the ordering columns.
    ordering: usize,
    newest: bool,
}

/// Which values of a column this module compares as the server compares them once
/// stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exact {
    /// An integer column: integers within its range, by value.
    Integer { min: i128, max: i128 },
    /// A DOUBLE column: floats, and integers a double holds exactly, by value.
    Double,
    /// Any other column: only identical values (and NULL against a value).
    Identical,
}

impl Exact {
    /// From `information_schema.COLUMNS`' DATA_TYPE and COLUMN_TYPE.
    pub fn of(data_type: &str, column_type: &str) -> Exact {
        let bits = match data_type.to_ascii_lowercase().as_str() {
            // Not DOUBLE(M,D), which rounds, nor DOUBLE UNSIGNED, which may clip.
            "double" if column_type.trim().eq_ignore_ascii_case("double") => return Exact::Double,
            "tinyint" => 8,
            "smallint" => 16,
            "mediumint" => 24,
            "int" => 32,
            "bigint" => 64,
            _ => return Exact::Identical,
        };
        if column_type.to_ascii_lowercase().contains("unsigned") {
            Exact::Integer {
                min: 0,
                max: (1i128 << bits) - 1,
            }
        } else {
            Exact::Integer {
                min: -(1i128 << (bits - 1)),
                max: (1i128 << (bits - 1)) - 1,
            }
        }
    }

    /// `a` against `b` as the server compares them stored, where certain.
    fn compare(self, a: &Value, b: &Value) -> Option<Ordering> {
        if same(a, b) {
            return Some(Ordering::Equal);
        }
        match (a, b) {
            (Value::Null, _) => return Some(Ordering::Less),
            (_, Value::Null) => return Some(Ordering::Greater),
            _ => {}
        }
        match self {
            Exact::Integer { min, max } => {
                let int = |v: &Value| {
                    match v {
                        Value::Int(i) => Some(i128::from(*i)),
                        Value::UInt(u) => Some(i128::from(*u)),
                        _ => None,
                    }
                    .filter(|i| (min..=max).contains(i))
                };
                Some(int(a)?.cmp(&int(b)?))
            }
            Exact::Double => {
                let double = |v: &Value| match v {
                    Value::Float(f) => Some(*f),
                    // Integers beyond 2^53 would round.
                    Value::Int(i) if i.unsigned_abs() <= 1 << 53 => Some(*i as f64),
                    Value::UInt(u) if *u <= 1 << 53 => Some(*u as f64),
                    _ => None,
                };
                double(a)?.partial_cmp(&double(b)?)
            }
            Exact::Identical => None,
        }
    }
}

/// What the sink knows of each upserting shape's key, learnt once per connection.
#[derive(Debug, Default)]
pub struct MergeKeys {
    by_shape: HashMap<usize, Option<Merge>>,
}

/// One unique index of a table: its columns, and whether one of them is
/// AUTO_INCREMENT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueIndex {
    pub columns: Vec<String>,
    pub auto_increment: bool,
}

/// What merging needs to know of a table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableInfo {
    pub unique: Vec<UniqueIndex>,
    /// Columns of a numeric type (integers, DECIMAL, FLOAT, DOUBLE).
    pub numeric: Vec<String>,
    /// Columns whose values merging can compare beyond identity.
    pub exact: Vec<(String, Exact)>,
}

impl MergeKeys {
    /// Forgets what was learnt: on a new connection, the tables may have changed.
    pub fn clear(&mut self) {
        self.by_shape.clear();
    }

    /// Learns the keys of the upserting shapes not seen yet. Reads
    /// `information_schema`, so it must run outside a batch's transaction (a batch's
    /// transaction holds writes only: see `Lease::renew`).
    pub fn learn(&mut self, conn: &mut Conn, shapes: &Shapes) -> Result<(), mysql::Error> {
        for id in 0..shapes.len() {
            if self.by_shape.contains_key(&id) {
                continue;
            }
            let shape = shapes.get(id);
            let merge = match shape.kind {
                RowKind::Insert => None,
                RowKind::Upsert | RowKind::UpsertNewest => {
                    merge_for(shape, &table_info(conn, &shape.table)?)
                }
            };
            self.by_shape.insert(id, merge);
        }
        Ok(())
    }

    /// The rows of `shape` that can end up stored, in their order.
    pub fn merge<'b>(&self, shape: usize, rows: Vec<&'b [Value]>) -> Vec<&'b [Value]> {
        match self.by_shape.get(&shape) {
            Some(Some(m)) => m.apply(rows),
            _ => rows,
        }
    }
}

impl Merge {
    /// The rows that can end up stored, in their order.
    pub fn apply<'b>(&self, rows: Vec<&'b [Value]>) -> Vec<&'b [Value]> {
        if rows.len() > 1 {
            merge_rows(self, rows)
        } else {
            rows
        }
    }
}

/// The unique indexes and numeric columns of `table` (`schema.table`, or in the
/// connection's database).
pub fn table_info(conn: &mut Conn, table: &str) -> Result<TableInfo, mysql::Error> {
    let (schema, name) = match table.split_once('.') {
        Some((s, t)) => (Some(s.to_string()), t.to_string()),
        None => (None, table.to_string()),
    };
    let numeric: Vec<(String, String, String)> = conn.exec(
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
           AND DATA_TYPE IN ('tinyint','smallint','mediumint','int','bigint','decimal', \
                             'float','double')",
        (schema.clone(), name.clone()),
    )?;
    let exact = numeric
        .iter()
        .map(|(c, data, column)| (c.clone(), Exact::of(data, column)))
        .filter(|(_, e)| *e != Exact::Identical)
        .collect();
    let numeric = numeric.into_iter().map(|(c, _, _)| c).collect();
    let rows: Vec<(String, String, String)> = conn.exec(
        "SELECT s.INDEX_NAME, s.COLUMN_NAME, c.EXTRA \
         FROM information_schema.STATISTICS s JOIN information_schema.COLUMNS c \
           ON c.TABLE_SCHEMA = s.TABLE_SCHEMA AND c.TABLE_NAME = s.TABLE_NAME \
          AND c.COLUMN_NAME = s.COLUMN_NAME \
         WHERE s.TABLE_SCHEMA = COALESCE(?, DATABASE()) AND s.TABLE_NAME = ? \
           AND s.NON_UNIQUE = 0 \
         ORDER BY s.INDEX_NAME, s.SEQ_IN_INDEX",
        (schema, name),
    )?;
    let mut indexes: Vec<(String, UniqueIndex)> = Vec::new();
    for (index, column, extra) in rows {
        let auto = extra.to_ascii_lowercase().contains("auto_increment");
        match indexes.last_mut() {
            Some((name, u)) if *name == index => {
                u.columns.push(column);
                u.auto_increment |= auto;
            }
            _ => indexes.push((
                index,
                UniqueIndex {
                    columns: vec![column],
                    auto_increment: auto,
                },
            )),
        }
    }
    Ok(TableInfo {
        unique: indexes.into_iter().map(|(_, u)| u).collect(),
        numeric,
        exact,
    })
}

/// The merge for `shape` given its table's unique indexes, if one is certain.
pub fn merge_for(shape: &Shape, table: &TableInfo) -> Option<Merge> {
    let indexes = &table.unique;
    let position = |c: &str| shape.columns.iter().position(|s| s.eq_ignore_ascii_case(c));
    let mut covered = indexes
        .iter()
        .filter(|u| u.columns.iter().all(|c| position(c).is_some()));
    let key = covered.next()?;
    if covered.next().is_some() {
        return None;
    }
    // An index the statement does not cover could still collide, unless the server
    // fills it with a fresh AUTO_INCREMENT value.
    let others_safe = indexes
        .iter()
        .filter(|u| !u.columns.iter().all(|c| position(c).is_some()))
        .all(|u| u.auto_increment);
    if !others_safe {
        return None;
    }
    let newest = shape.kind == RowKind::UpsertNewest;
    let numeric = |c: &String| table.numeric.iter().any(|n| n.eq_ignore_ascii_case(c));
    if newest && !shape.order_by.iter().all(numeric) {
        return None;
    }
    let compared = if newest {
        // As `statements::newest_updates` compares: the ordering, then the rest.
        let exact = |c: &str| {
            table
                .exact
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(c))
                .map_or(Exact::Identical, |(_, e)| *e)
        };
        let mut compared = Vec::with_capacity(shape.columns.len());
        for c in &shape.order_by {
            compared.push((position(c)?, exact(c)));
        }
        for (i, c) in shape.columns.iter().enumerate() {
            if !shape.order_by.iter().any(|o| o.eq_ignore_ascii_case(c)) {
                compared.push((i, exact(c)));
            }
        }
        compared
    } else {
        Vec::new()
    };
    Some(Merge {
        key: key.columns.iter().filter_map(|c| position(c)).collect(),
        compared,
        ordering: if newest { shape.order_by.len() } else { 0 },
        newest,
    })
}

/// A row seen through its key columns: equal only if every key value is equal in type
/// and content (floats by their bits), hashed the same way. Borrowed, so a batch's
/// merge allocates nothing per row.
#[derive(Clone, Copy)]
struct Key<'a> {
    row: &'a [Value],
    key: &'a [usize],
}

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.key.iter().all(|&i| same(&self.row[i], &other.row[i]))
    }
}

impl Eq for Key<'_> {}

impl std::hash::Hash for Key<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        for &i in self.key {
            match &self.row[i] {
                Value::Null => h.write_u8(0),
                Value::Int(v) => h.write_i64(*v),
                Value::UInt(v) => h.write_u64(*v),
                Value::Float(v) => h.write_u64(v.to_bits()),
                Value::Text(s) | Value::Json(s) => h.write(s.as_bytes()),
                Value::Bytes(b) => h.write(b),
            }
        }
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::UInt(x), Value::UInt(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Text(x), Value::Text(y)) | (Value::Json(x), Value::Json(y)) => {
            x.as_str() == y.as_str()
        }
        (Value::Bytes(x), Value::Bytes(y)) => x.as_slice() == y.as_slice(),
        _ => false,
    }
}

/// How many of a key's kept rows a new row is compared with.
const MAX_COMPARED: usize = 32;

impl Merge {
    /// Whether row `a` sorts before, with or after row `b` in the statement's
    /// comparison; `None` where the server's answer is not certain here.
    fn compare(&self, a: &[Value], b: &[Value]) -> Option<Ordering> {
        Self::compare_by(&self.compared, a, b)
    }

    /// The same, by the ordering columns alone.
    fn compare_ordering(&self, a: &[Value], b: &[Value]) -> Option<Ordering> {
        Self::compare_by(&self.compared[..self.ordering], a, b)
    }

    fn compare_by(columns: &[(usize, Exact)], a: &[Value], b: &[Value]) -> Option<Ordering> {
        for &(i, exact) in columns {
            match exact.compare(&a[i], &b[i])? {
                Ordering::Equal => continue,
                unequal => return Some(unequal),
            }
        }
        Some(Ordering::Equal)
    }
}

fn merge_rows<'b>(m: &Merge, rows: Vec<&'b [Value]>) -> Vec<&'b [Value]> {
    let mut keep = vec![false; rows.len()];
    // Bounded by the batch, and keys are compared in place after a lookup: a fast
    // hash is safe here although senders choose the keys.
    if m.newest {
        // Per key, the rows no other row is known to equal or beat. A row equal to an
        // earlier one would change nothing: the statement assigns only a greater one.
        let mut best: HashMap<Key<'_>, Vec<usize>, FxBuild> =
            HashMap::with_capacity_and_hasher(rows.len(), FxBuild::default());
        for (i, &row) in rows.iter().enumerate() {
            let kept = best.entry(Key { row, key: &m.key }).or_default();
            // Not greater than a row kept before it: the stored row is already at least
            // that row when it comes, so it changes nothing. (Only the latest few are
            // looked at: keeping a row is always safe, and the work stays linear.)
            let beaten = |j: &usize| {
                matches!(
                    m.compare(row, rows[*j]),
                    Some(Ordering::Less | Ordering::Equal)
                )
            };
            if kept.iter().rev().take(MAX_COMPARED).any(beaten) {
                continue;
            }
            // Rows it beats on the ordering columns can go: whatever came between, this
            // one then sets every other column. Beaten only on a later column, a row
            // stays: the statement sets only the columns from the deciding one on, the
            // others keep the bytes of whichever row came first among those a
            // collation calls equal (`Run`, `run`; and keys `A`, `a` are one row to
            // the server but two here), so leaving a row out could change them.
            kept.retain(|&j| m.compare_ordering(row, rows[j]) != Some(Ordering::Greater));
            kept.push(i);
        }
        for i in best.into_values().flatten() {
            keep[i] = true;
        }
    } else {
        let mut last: HashMap<Key<'_>, usize, FxBuild> =
            HashMap::with_capacity_and_hasher(rows.len(), FxBuild::default());
        for (i, &row) in rows.iter().enumerate() {
            last.insert(Key { row, key: &m.key }, i);
        }
        for i in last.into_values() {
            keep[i] = true;
        }
    }
    rows.into_iter()
        .zip(keep)
        .filter_map(|(row, kept)| kept.then_some(row))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kind: RowKind, columns: &[&str], order_by: &[&str]) -> Shape {
        Shape {
            kind,
            table: "cnc_status".into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            order_by: order_by.iter().map(|c| c.to_string()).collect(),
        }
    }

    fn unique(columns: &[&str], auto_increment: bool) -> UniqueIndex {
        UniqueIndex {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            auto_increment,
        }
    }

    fn table(unique: Vec<UniqueIndex>) -> TableInfo {
        TableInfo {
            unique,
            numeric: vec!["id".into(), "timestamp".into()],
            exact: vec![("timestamp".into(), BIGINT)],
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    const COLS: [&str; 3] = ["cnc_id", "status", "timestamp"];
    const BIGINT: Exact = Exact::Integer {
        min: i64::MIN as i128,
        max: i64::MAX as i128,
    };
    /// Compared as `upsert_newest` by `timestamp` compares `COLS`.
    const BY_TIMESTAMP: [(usize, Exact); 3] =
        [(2, BIGINT), (0, Exact::Identical), (1, Exact::Identical)];

    #[test]
    fn the_key_is_the_one_covered_unique_index() {
        let s = shape(RowKind::UpsertNewest, &COLS, &["timestamp"]);
        let m = merge_for(&s, &table(vec![unique(&["CNC_ID"], false)])).expect("merges");
        assert_eq!(
            (m.key, m.compared, m.newest),
            (vec![0], BY_TIMESTAMP.to_vec(), true)
        );
        // An auto-increment id beside it never collides.
        assert!(merge_for(
            &s,
            &table(vec![unique(&["id"], true), unique(&["cnc_id"], false)])
        )
        .is_some());
    }

    #[test]
    fn no_merge_where_the_server_could_match_another_key() {
        let s = shape(RowKind::Upsert, &COLS, &[]);
        // Two covered unique indexes: which one collides depends on the stored rows.
        assert_eq!(
            merge_for(
                &s,
                &table(vec![unique(&["cnc_id"], false), unique(&["status"], false)])
            ),
            None
        );
        // An uncovered unique index without AUTO_INCREMENT takes its default: it could
        // collide.
        assert_eq!(
            merge_for(
                &s,
                &table(vec![unique(&["cnc_id"], false), unique(&["slot"], false)])
            ),
            None
        );
        // No unique index covered: plain inserts as far as merging goes.
        assert_eq!(merge_for(&s, &table(vec![unique(&["slot"], false)])), None);
        assert_eq!(merge_for(&s, &table(vec![])), None);
        // Ordered by a column the table holds as text: compared as text there.
        let by_status = shape(RowKind::UpsertNewest, &COLS, &["status"]);
        assert_eq!(
            merge_for(&by_status, &table(vec![unique(&["cnc_id"], false)])),
            None
        );
    }

    fn rows<const N: usize>(list: &[[Value; N]]) -> Vec<&[Value]> {
        list.iter().map(|r| r.as_slice()).collect()
    }

    #[test]
    fn upsert_keeps_the_last_row_of_each_key() {
        let m = Merge {
            key: vec![0],
            compared: vec![],
            ordering: 0,
            newest: false,
        };
        let list = [
            [text("A"), text("idle"), Value::Int(1)],
            [text("B"), text("idle"), Value::Int(1)],
            [text("A"), text("run"), Value::Int(0)],
            [text("a"), text("run"), Value::Int(0)],
        ];
        let merged = merge_rows(&m, rows(&list));
        // "a" may be the same key under the table's collation: left for the server.
        assert_eq!(merged, vec![&list[1][..], &list[2][..], &list[3][..]]);
    }

    #[test]
    fn upsert_newest_keeps_the_rows_with_the_greatest_ordering() {
        let m = Merge {
            key: vec![0],
            compared: BY_TIMESTAMP.to_vec(),
            ordering: 1,
            newest: true,
        };
        let list = [
            [text("A"), text("run"), Value::Int(5)],
            [text("A"), text("idle"), Value::Int(9)],
            [text("B"), text("run"), Value::Null],
            [text("A"), text("stop"), Value::Int(9)],
            [text("A"), text("old"), Value::Int(3)],
            [text("B"), text("run"), Value::Int(0)],
            [text("C"), text("run"), text("not a number")],
            [text("C"), text("run"), Value::Int(1)],
            [text("D"), text("run"), Value::Float(1.5)],
            [text("D"), text("run"), Value::Float(1.7)],
            [text("E"), text("run"), Value::Int(4)],
            [text("E"), text("run"), Value::Int(4)],
        ];
        let merged = merge_rows(&m, rows(&list));
        // A: both rows tied at 9 go, in order, for the statement to compare their
        // status under the table's collation; B: a number beats NULL; C: a text
        // ordering value is not compared here; D: a BIGINT column stores both floats
        // as 2, so the statement decides by status; E: a row identical to an earlier
        // one changes nothing.
        assert_eq!(
            merged,
            [1, 3, 5, 6, 7, 8, 9, 10].map(|i| &list[i][..]).to_vec()
        );
    }

    #[test]
    fn ties_are_broken_where_the_server_would_break_them_the_same_way() {
        let m = by_timestamp_with_spin();
        let row = |status: &str, spin: Value| [text("A"), text(status), spin, Value::Int(9)];
        let list = [
            row("run", Value::Float(2.5)),
            row("run", Value::Float(1.5)),
            row("run", Value::Int(3)),
            row("idle", Value::Float(0.5)),
            row("run", Value::Float(3.0)),
            row("run", Value::Null),
        ];
        let merged = merge_rows(&m, rows(&list));
        // The same status: 1.5 is below the 2.5 before it, and 3.0 equals the 3 before
        // it (an integer is exact in a DOUBLE), so neither can change the stored row;
        // 2.5 stays, since 3 beats it only after the ordering. Another status: the
        // collation decides, so it goes too.
        assert_eq!(merged, vec![&list[0][..], &list[2][..], &list[3][..]]);
    }

    /// cnc_id, status, spin DOUBLE, timestamp BIGINT; ordered by timestamp.
    fn by_timestamp_with_spin() -> Merge {
        Merge {
            key: vec![0],
            compared: vec![
                (3, BIGINT),
                (0, Exact::Identical),
                (1, Exact::Identical),
                (2, Exact::Double),
            ],
            ordering: 1,
            newest: true,
        }
    }

    #[test]
    fn a_tied_row_stays_although_a_later_one_beats_it_after_the_ordering() {
        let m = by_timestamp_with_spin();
        let row = |status: &str, spin: f64| {
            [text("A"), text(status), Value::Float(spin), Value::Int(100)]
        };
        // Under a case-insensitive collation the statement stores `Running` then only
        // updates spin: the status bytes are those of the first row. Without the first
        // row, the second's `running` would stay.
        let list = [
            row("Running", 1.0),
            row("running", 2.0),
            row("Running", 3.0),
        ];
        assert_eq!(merge_rows(&m, rows(&list)).len(), 3);
        // The same holds with nothing between them here: another key's row (`a` for
        // `A`) may be the same row to the server.
        let list = [row("Running", 1.0), row("Running", 3.0)];
        assert_eq!(merge_rows(&m, rows(&list)).len(), 2);
        // Beaten on the ordering, a row goes whatever came between.
        let mut later = row("running", 0.0);
        later[3] = Value::Int(101);
        let list = [row("Running", 1.0), row("running", 2.0), later];
        assert_eq!(merge_rows(&m, rows(&list)), vec![&list[2][..]]);
    }

    #[test]
    fn numbers_are_compared_only_as_exactly_as_their_column_stores_them() {
        let compare = |exact: Exact, a: Value, b: Value| exact.compare(&a, &b);
        use Ordering::*;
        // BIGINT: every 64-bit integer exactly.
        assert_eq!(
            compare(BIGINT, Value::Int(i64::MAX), Value::Int(i64::MAX - 1)),
            Some(Greater)
        );
        assert_eq!(compare(BIGINT, Value::UInt(5), Value::Int(5)), Some(Equal));
        // A float in an integer column is rounded there.
        assert_eq!(compare(BIGINT, Value::Float(1.5), Value::Float(1.7)), None);
        // Beyond an INT column's range: an error or a clipped value, not compared.
        let int = Exact::of("int", "int(11)");
        assert_eq!(
            int,
            Exact::Integer {
                min: -(1 << 31),
                max: (1 << 31) - 1
            }
        );
        assert_eq!(compare(int, Value::Int(1 << 31), Value::Int(0)), None);
        let unsigned = Exact::of("tinyint", "tinyint(3) unsigned");
        assert_eq!(unsigned, Exact::Integer { min: 0, max: 255 });
        assert_eq!(compare(unsigned, Value::Int(-1), Value::Int(0)), None);
        // DOUBLE: integers beyond 2^53 would round.
        let double = Exact::of("double", "double");
        assert_eq!(
            compare(double, Value::Int(i64::MAX), Value::Int(i64::MAX - 1)),
            None
        );
        assert_eq!(
            compare(double, Value::Float(-0.0), Value::Float(0.0)),
            Some(Equal)
        );
        // FLOAT, DECIMAL, a rounding or unsigned DOUBLE, text: identical values and NULL
        // only.
        for other in [
            Exact::of("float", "float"),
            Exact::of("decimal", "decimal(10,2)"),
            Exact::of("double", "double(6,1)"),
            Exact::of("double", "double unsigned"),
        ] {
            assert_eq!(other, Exact::Identical);
        }
        assert_eq!(compare(Exact::Identical, text("a"), text("a")), Some(Equal));
        assert_eq!(compare(Exact::Identical, text("a"), text("b")), None);
        assert_eq!(
            compare(Exact::Identical, Value::Null, text("b")),
            Some(Less)
        );
        assert_eq!(
            compare(Exact::Identical, text("b"), Value::Null),
            Some(Greater)
        );
    }
}
