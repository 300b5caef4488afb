//! Merging a batch's "latest value" rows: of the rows one statement would upsert
//! into the same key, only those that can end up stored are sent.
//!
//! A batch of 500 messages from 50 machines upserts each machine's `cnc_status` row
//! ten times over, and each of those upserts is an index lookup, a row update and undo
//! log for the server. What the server would keep is known before sending:
//! - `Db::upsert` ([`RowKind::Upsert`]): the last row of a key, in message order;
//! - `Db::upsert_newest` ([`RowKind::UpsertNewest`]): the rows of a key whose ordering
//!   columns are the greatest; a row with a smaller ordering can never be stored.
//!   Rows tied on the ordering are all sent, in order, and the statement's own
//!   comparison decides between them, so the result is the server's in every case.
//!
//! Rows are merged only where the merge is certain to be what the server would do:
//! - the key must be the table's only unique index that the statement's columns
//!   cover (any other unique index has an AUTO_INCREMENT column, which the statement
//!   leaves to the server, so it never collides), read from `information_schema`;
//! - two rows are the same key only if their key values are equal byte for byte (a
//!   case-insensitive collation may call more rows equal: those are left unmerged,
//!   and the server applies them in order, as before);
//! - ordering values are compared only when they are numbers or NULL (NULL first, as
//!   in the statement) and the ordering columns are numeric in the table (a number
//!   sent to a VARCHAR column is compared as text there); a key with a text ordering
//!   value is left unmerged.
//!
//! A message whose row is merged away is still stored (its other rows are written):
//! the server would have overwritten that row within the same transaction.

use std::collections::HashMap;

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
    /// For `upsert_newest`: positions of the ordering columns.
    order: Vec<usize>,
    newest: bool,
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
    let numeric: Vec<String> = conn.exec(
        "SELECT COLUMN_NAME FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? \
           AND DATA_TYPE IN ('tinyint','smallint','mediumint','int','bigint','decimal', \
                             'float','double')",
        (schema.clone(), name.clone()),
    )?;
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
    let order = if newest {
        shape
            .order_by
            .iter()
            .map(|c| position(c))
            .collect::<Option<Vec<_>>>()?
    } else {
        Vec::new()
    };
    Some(Merge {
        key: key.columns.iter().filter_map(|c| position(c)).collect(),
        order,
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

/// An ordering value as the statement compares it: NULL before every number.
/// `None` for a value this module does not compare (text, bytes).
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Rank {
    Null,
    Number(f64),
}

fn rank(v: &Value) -> Option<Rank> {
    match v {
        Value::Null => Some(Rank::Null),
        // Integers beyond 2^53 would compare inexactly as doubles: not merged.
        Value::Int(i) if i.unsigned_abs() <= 1 << 53 => Some(Rank::Number(*i as f64)),
        Value::UInt(u) if *u <= 1 << 53 => Some(Rank::Number(*u as f64)),
        Value::Float(f) if f.is_finite() => Some(Rank::Number(*f)),
        _ => None,
    }
}

/// Whether `a` sorts before, with or after `b` by the ordering columns; `None` when a
/// value cannot be ranked.
fn compare(a: &[Value], b: &[Value], order: &[usize]) -> Option<std::cmp::Ordering> {
    for &i in order {
        match rank(&a[i])?.partial_cmp(&rank(&b[i])?)? {
            std::cmp::Ordering::Equal => continue,
            unequal => return Some(unequal),
        }
    }
    Some(std::cmp::Ordering::Equal)
}

fn merge_rows<'b>(m: &Merge, rows: Vec<&'b [Value]>) -> Vec<&'b [Value]> {
    // Bounded by the batch, and keys are compared in place after a lookup: a fast
    // hash is safe here although senders choose the keys.
    let mut index: HashMap<Key<'_>, Best, FxBuild> =
        HashMap::with_capacity_and_hasher(rows.len(), FxBuild::default());
    // Per key: for `upsert`, its last row; for `upsert_newest`, a row with the
    // greatest ordering, or none once a row of the key cannot be ranked.
    #[derive(Clone, Copy)]
    enum Best {
        Row(usize),
        Unranked,
    }
    for (i, row) in rows.iter().enumerate() {
        let k = Key { row, key: &m.key };
        match index.get_mut(&k) {
            None => {
                let ranked = !m.newest || m.order.iter().all(|&c| rank(&row[c]).is_some());
                index.insert(k, if ranked { Best::Row(i) } else { Best::Unranked });
            }
            Some(best) => {
                *best = match *best {
                    Best::Unranked => Best::Unranked,
                    Best::Row(_) if !m.newest => Best::Row(i),
                    Best::Row(j) => match compare(row, rows[j], &m.order) {
                        Some(std::cmp::Ordering::Greater) => Best::Row(i),
                        Some(_) => Best::Row(j),
                        None => Best::Unranked,
                    },
                }
            }
        }
    }
    rows.iter()
        .enumerate()
        .filter(|&(i, row)| match index[&Key { row, key: &m.key }] {
            Best::Unranked => true,
            Best::Row(j) if !m.newest => i == j,
            Best::Row(j) => compare(row, rows[j], &m.order) == Some(std::cmp::Ordering::Equal),
        })
        .map(|(_, r)| *r)
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
        }
    }

    fn text(s: &str) -> Value {
        Value::Text(s.into())
    }

    const COLS: [&str; 3] = ["cnc_id", "status", "timestamp"];

    #[test]
    fn the_key_is_the_one_covered_unique_index() {
        let s = shape(RowKind::UpsertNewest, &COLS, &["timestamp"]);
        let m = merge_for(&s, &table(vec![unique(&["CNC_ID"], false)])).expect("merges");
        assert_eq!((m.key, m.order, m.newest), (vec![0], vec![2], true));
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

    fn rows(list: &[[Value; 3]]) -> Vec<&[Value]> {
        list.iter().map(|r| r.as_slice()).collect()
    }

    #[test]
    fn upsert_keeps_the_last_row_of_each_key() {
        let m = Merge {
            key: vec![0],
            order: vec![],
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
            order: vec![2],
            newest: true,
        };
        let list = [
            [text("A"), text("run"), Value::Int(5)],
            [text("A"), text("idle"), Value::Int(9)],
            [text("B"), text("run"), Value::Null],
            [text("A"), text("stop"), Value::Int(9)],
            [text("A"), text("old"), Value::Int(3)],
            [text("B"), text("run"), Value::Float(0.5)],
            [text("C"), text("run"), text("not a number")],
            [text("C"), text("run"), Value::Int(1)],
        ];
        let merged = merge_rows(&m, rows(&list));
        // A: both rows tied at 9 go, in order, for the statement to decide; B: a
        // number beats NULL; C: a text ordering value is not compared here.
        assert_eq!(
            merged,
            vec![
                &list[1][..],
                &list[3][..],
                &list[5][..],
                &list[6][..],
                &list[7][..]
            ]
        );
    }

    #[test]
    fn numbers_beyond_exact_doubles_are_not_compared() {
        let m = Merge {
            key: vec![0],
            order: vec![2],
            newest: true,
        };
        let list = [
            [text("A"), text("x"), Value::Int(i64::MAX)],
            [text("A"), text("y"), Value::Int(i64::MAX - 1)],
        ];
        assert_eq!(merge_rows(&m, rows(&list)).len(), 2);
    }
}
