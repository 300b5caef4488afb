//! The SQL text that writes rows of a shape: what goes before the rows' values and
//! what after, made once per shape and connection.

use std::collections::HashMap;

use mes_plugin_api::Value;

use crate::{
    fasthash::FxBuild,
    sink::{
        batch::{RowKind, Shape, Shapes},
        merge::MergeKeys,
    },
};

use super::literals::push_row;

/// The text around a shape's rows: `INSERT INTO t (…) VALUES ` before them and, for
/// an upsert, the `ON DUPLICATE KEY UPDATE` list after.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct RowSql {
    pub(super) head: String,
    pub(super) tail: String,
}

impl RowSql {
    pub(super) fn of(shape: &Shape) -> RowSql {
        let cols: Vec<String> = shape.columns.iter().map(|c| format!("`{c}`")).collect();
        let head = format!(
            "INSERT INTO {} ({}) VALUES ",
            quote_table(&shape.table),
            cols.join(",")
        );
        let tail = match shape.kind {
            RowKind::Insert => String::new(),
            RowKind::Upsert => {
                let updates: Vec<String> =
                    cols.iter().map(|c| format!("{c}=VALUES({c})")).collect();
                format!(" ON DUPLICATE KEY UPDATE {}", updates.join(","))
            }
            RowKind::UpsertNewest => format!(
                " ON DUPLICATE KEY UPDATE {}",
                newest_updates(&shape.columns, &shape.order_by)
            ),
        };
        RowSql { head, tail }
    }
}

/// The SQL text per shape, which rows of a shape merge, and the buffer statements are
/// written into.
#[derive(Default)]
pub(super) struct StatementCache {
    /// Learnt per connection, outside the batches' transactions.
    pub(super) merge: MergeKeys,
    sql: HashMap<usize, RowSql, FxBuild>,
    /// Reused from batch to batch: a statement is up to a few MiB of text.
    pub(super) text: String,
}

impl StatementCache {
    /// The text around rows of `shape`, and the buffer to write a statement into.
    pub(super) fn sql(&mut self, shapes: &Shapes, shape: usize) -> (&RowSql, &mut String) {
        let sql = self
            .sql
            .entry(shape)
            .or_insert_with(|| RowSql::of(shapes.get(shape)));
        (sql, &mut self.text)
    }
}

/// The statement that writes `rows` of `shape`, every value a literal: the text a batch
/// sends for them (split only where it would pass 4 MiB).
pub fn rows_statement(shape: &Shape, rows: &[&[Value]]) -> String {
    let sql = RowSql::of(shape);
    let mut text = sql.head.clone();
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        push_row(&mut text, row);
    }
    text.push_str(&sql.tail);
    text
}

/// The `ON DUPLICATE KEY UPDATE` list of `Db::upsert_newest`: every column takes the
/// new row's value only if the new row sorts after the stored one, comparing the
/// `order_by` columns and then the others in turn (NULL first), so that the stored
/// row ends as the greatest of all rows written, in whatever order they came.
///
/// MySQL applies the assignments left to right, each seeing the columns assigned
/// before it, so the comparison could not be evaluated once for all. Assigning in
/// reverse comparison order keeps it right: when the new row is greater, an
/// assignment compares the not-yet-assigned prefix of the order, and where that prefix
/// is equal, the column is equal too and keeping it changes nothing; when the new row
/// is not greater, nothing changes, so every assignment sees the same comparison.
fn newest_updates(columns: &[String], order_by: &[String]) -> String {
    let mut order: Vec<&str> = order_by.iter().map(String::as_str).collect();
    order.extend(
        columns
            .iter()
            .map(String::as_str)
            .filter(|c| !order_by.iter().any(|o| o.eq_ignore_ascii_case(c))),
    );
    // gt(c1) OR (eq(c1) AND (gt(c2) OR (eq(c2) AND ... gt(cn))))
    let mut newer = String::new();
    for (i, c) in order.iter().enumerate() {
        let gt = format!("VALUES(`{c}`)>`{c}` OR (`{c}` IS NULL AND VALUES(`{c}`) IS NOT NULL)");
        if i + 1 == order.len() {
            newer.push_str(&gt);
        } else {
            newer.push_str(&format!("{gt} OR (VALUES(`{c}`)<=>`{c}` AND ("));
        }
    }
    newer.push_str(&"))".repeat(order.len() - 1));
    order
        .iter()
        .rev()
        .map(|c| format!("`{c}`=IF({newer},VALUES(`{c}`),`{c}`)"))
        .collect::<Vec<_>>()
        .join(",")
}

fn quote_table(table: &str) -> String {
    table
        .split('.')
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kind: RowKind, columns: &[&str], order_by: &[&str]) -> Shape {
        Shape {
            kind,
            table: "db1.cnc_status".into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            order_by: order_by.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn inserts_and_upserts_write_every_value_as_a_literal() {
        let rows: [&[Value]; 2] = [
            &[Value::Int(1), Value::from("it's")],
            &[Value::Null, Value::Float(0.5)],
        ];
        assert_eq!(
            rows_statement(&shape(RowKind::Insert, &["a", "b"], &[]), &rows),
            "INSERT INTO `db1`.`cnc_status` (`a`,`b`) VALUES (1,'it''s'),(NULL,0.5e0)"
        );
        assert_eq!(
            rows_statement(&shape(RowKind::Upsert, &["a", "b"], &[]), &rows[..1]),
            "INSERT INTO `db1`.`cnc_status` (`a`,`b`) VALUES (1,'it''s') \
             ON DUPLICATE KEY UPDATE `a`=VALUES(`a`),`b`=VALUES(`b`)"
        );
    }

    #[test]
    fn upsert_newest_compares_the_order_then_the_rest_and_assigns_in_reverse() {
        let gt = |c: &str| {
            format!("VALUES(`{c}`)>`{c}` OR (`{c}` IS NULL AND VALUES(`{c}`) IS NOT NULL)")
        };
        let eq = |c: &str| format!("VALUES(`{c}`)<=>`{c}`");
        let newer = format!(
            "{} OR ({} AND ({} OR ({} AND ({}))))",
            gt("ts"),
            eq("ts"),
            gt("k"),
            eq("k"),
            gt("status")
        );
        let sql = RowSql::of(&shape(
            RowKind::UpsertNewest,
            &["k", "status", "ts"],
            &["ts"],
        ));
        assert_eq!(
            sql.head,
            "INSERT INTO `db1`.`cnc_status` (`k`,`status`,`ts`) VALUES "
        );
        assert_eq!(
            sql.tail,
            format!(
                " ON DUPLICATE KEY UPDATE `status`=IF({newer},VALUES(`status`),`status`),\
                 `k`=IF({newer},VALUES(`k`),`k`),`ts`=IF({newer},VALUES(`ts`),`ts`)"
            )
        );
        // One column: no nesting.
        assert_eq!(
            newest_updates(&["ts".into()], &["ts".into()]),
            format!("`ts`=IF({},VALUES(`ts`),`ts`)", gt("ts"))
        );
    }

    fn shape_of(kind: RowKind, table: &str, columns: &[&str], order_by: &[&str]) -> Shape {
        Shape {
            table: table.into(),
            ..shape(kind, columns, order_by)
        }
    }

    /// `ON DUPLICATE KEY UPDATE` of `Db::upsert_newest` for columns `k`, `ts`, `seq`
    /// ordered by `ts`, `seq`: is the new row greater by `ts`, then `seq`, then `k`.
    const NEWER_BY_TS_SEQ_K: &str = "VALUES(`ts`)>`ts` OR (`ts` IS NULL AND VALUES(`ts`) IS NOT NULL) \
        OR (VALUES(`ts`)<=>`ts` AND (VALUES(`seq`)>`seq` OR (`seq` IS NULL AND VALUES(`seq`) IS NOT NULL) \
        OR (VALUES(`seq`)<=>`seq` AND (VALUES(`k`)>`k` OR (`k` IS NULL AND VALUES(`k`) IS NOT NULL)))))";

    #[test]
    fn upsert_newest_by_two_columns_compares_both_before_the_rest() {
        let newest = shape_of(
            RowKind::UpsertNewest,
            "plant.status",
            &["k", "ts", "seq"],
            &["ts", "seq"],
        );
        let n = NEWER_BY_TS_SEQ_K;
        assert_eq!(
            RowSql::of(&newest).tail,
            format!(
                " ON DUPLICATE KEY UPDATE `k`=IF({n},VALUES(`k`),`k`),\
                 `seq`=IF({n},VALUES(`seq`),`seq`),`ts`=IF({n},VALUES(`ts`),`ts`)"
            )
        );
    }

    #[test]
    fn upsert_newest_names_an_ordering_column_as_order_by_spells_it_and_once() {
        // MySQL compares column names without case: `Ts` is `ts`, compared first.
        let gt = |c: &str| {
            format!("VALUES(`{c}`)>`{c}` OR (`{c}` IS NULL AND VALUES(`{c}`) IS NOT NULL)")
        };
        let newer = format!("{} OR (VALUES(`ts`)<=>`ts` AND ({}))", gt("ts"), gt("K"));
        assert_eq!(
            newest_updates(&["K".into(), "Ts".into()], &["ts".into()]),
            format!("`K`=IF({newer},VALUES(`K`),`K`),`ts`=IF({newer},VALUES(`ts`),`ts`)")
        );
    }

    #[test]
    fn a_table_is_quoted_part_by_part() {
        assert_eq!(quote_table("cnc_data"), "`cnc_data`");
        assert_eq!(quote_table("db1.cnc_data"), "`db1`.`cnc_data`");
    }

    #[test]
    fn the_text_is_made_once_per_shape_number() {
        let mut shapes = Shapes::default();
        shapes.extend(vec![
            shape_of(RowKind::Insert, "a", &["x"], &[]),
            shape_of(RowKind::Upsert, "b", &["y"], &[]),
        ]);
        let mut cache = StatementCache::default();
        assert_eq!(
            cache.sql(&shapes, 0).0.head,
            "INSERT INTO `a` (`x`) VALUES "
        );
        assert_eq!(
            cache.sql(&shapes, 1).0.tail,
            " ON DUPLICATE KEY UPDATE `y`=VALUES(`y`)"
        );
        // A shape's number stands for it for good: the text is not made again.
        let mut renumbered = Shapes::default();
        renumbered.extend(vec![shape_of(RowKind::Insert, "z", &["x"], &[])]);
        assert_eq!(
            cache.sql(&renumbered, 0).0.head,
            "INSERT INTO `a` (`x`) VALUES "
        );
        let mut keys: Vec<_> = cache.sql.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, [0, 1]);
    }
}
