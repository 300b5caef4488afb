//! The SQL text that writes rows of a shape, and the statements prepared from it on
//! the current connection.

use std::collections::HashMap;

use mysql::{prelude::Queryable, Statement, Transaction};

use crate::sink::{
    batch::{RowKind, Shape, Shapes},
    merge::MergeKeys,
};

/// SQL text per (shape, rows), and which rows of a shape merge.
#[derive(Default)]
pub(super) struct StatementCache {
    /// Learnt per connection, outside the batches' transactions.
    pub(super) merge: MergeKeys,
    cache: HashMap<(usize, usize), String>,
    /// Prepared on the current connection: executing a prepared statement skips the
    /// driver's parsing of the SQL text on every call.
    pub(super) prepared: HashMap<(usize, usize), Statement>,
}

impl StatementCache {
    /// The prepared statement for `rows` rows of `shape`.
    pub(super) fn get(
        &mut self,
        tx: &mut Transaction<'_>,
        shapes: &Shapes,
        shape: usize,
        rows: usize,
    ) -> Result<Statement, mysql::Error> {
        if let Some(stmt) = self.prepared.get(&(shape, rows)) {
            return Ok(stmt.clone());
        }
        let stmt = tx.prep(self.sql(shapes, shape, rows))?;
        self.prepared.insert((shape, rows), stmt.clone());
        Ok(stmt)
    }

    fn sql(&mut self, shapes: &Shapes, shape: usize, rows: usize) -> &str {
        self.cache
            .entry((shape, rows))
            .or_insert_with(|| row_statement(shapes.get(shape), rows))
    }
}

/// The statement that writes `rows` rows of `shape`, with `?` for every value.
pub fn row_statement(shape: &Shape, rows: usize) -> String {
    let cols: Vec<String> = shape.columns.iter().map(|c| format!("`{c}`")).collect();
    let one = format!("({})", vec!["?"; cols.len()].join(","));
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        quote_table(&shape.table),
        cols.join(","),
        vec![one.as_str(); rows].join(",")
    );
    match shape.kind {
        RowKind::Insert => {}
        RowKind::Upsert => {
            let updates: Vec<String> = cols.iter().map(|c| format!("{c}=VALUES({c})")).collect();
            sql.push_str(" ON DUPLICATE KEY UPDATE ");
            sql.push_str(&updates.join(","));
        }
        RowKind::UpsertNewest => {
            sql.push_str(" ON DUPLICATE KEY UPDATE ");
            sql.push_str(&newest_updates(&shape.columns, &shape.order_by));
        }
    }
    sql
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
    fn inserts_and_upserts_bind_every_value() {
        assert_eq!(
            row_statement(&shape(RowKind::Insert, &["a", "b"], &[]), 2),
            "INSERT INTO `db1`.`cnc_status` (`a`,`b`) VALUES (?,?),(?,?)"
        );
        assert_eq!(
            row_statement(&shape(RowKind::Upsert, &["a", "b"], &[]), 1),
            "INSERT INTO `db1`.`cnc_status` (`a`,`b`) VALUES (?,?) \
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
        let sql = row_statement(
            &shape(RowKind::UpsertNewest, &["k", "status", "ts"], &["ts"]),
            1,
        );
        assert_eq!(
            sql,
            format!(
                "INSERT INTO `db1`.`cnc_status` (`k`,`status`,`ts`) VALUES (?,?,?) \
                 ON DUPLICATE KEY UPDATE `status`=IF({newer},VALUES(`status`),`status`),\
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
            row_statement(&newest, 2),
            format!(
                "INSERT INTO `plant`.`status` (`k`,`ts`,`seq`) VALUES (?,?,?),(?,?,?) \
                 ON DUPLICATE KEY UPDATE `k`=IF({n},VALUES(`k`),`k`),\
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
    fn the_text_is_made_once_per_shape_number_and_row_count() {
        let mut shapes = Shapes::default();
        shapes.extend(vec![
            shape_of(RowKind::Insert, "a", &["x"], &[]),
            shape_of(RowKind::Upsert, "b", &["y"], &[]),
        ]);
        let mut cache = StatementCache::default();
        assert_eq!(
            cache.sql(&shapes, 0, 2),
            "INSERT INTO `a` (`x`) VALUES (?),(?)"
        );
        assert_eq!(
            cache.sql(&shapes, 1, 1),
            "INSERT INTO `b` (`y`) VALUES (?) ON DUPLICATE KEY UPDATE `y`=VALUES(`y`)"
        );
        // A shape's number stands for it for good: the text is not made again.
        let mut renumbered = Shapes::default();
        renumbered.extend(vec![shape_of(RowKind::Insert, "z", &["x"], &[])]);
        assert_eq!(
            cache.sql(&renumbered, 0, 2),
            "INSERT INTO `a` (`x`) VALUES (?),(?)"
        );
        let mut keys: Vec<_> = cache.cache.keys().copied().collect();
        keys.sort();
        assert_eq!(keys, [(0, 2), (1, 1)]);
    }
}
