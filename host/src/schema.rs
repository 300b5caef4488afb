//! What `mes-collector check` expects of the tables beyond their presence: the columns
//! this version writes, and the layout of `cnc_data`, which the original Python
//! service created with narrower types that `database.sql` (CREATE TABLE IF NOT
//! EXISTS) leaves as they are.

use mysql::{prelude::Queryable, Conn};

/// The migration that brings the original service's `cnc_data` to the current layout,
/// as installed by the package and as found in the source tree.
pub const MIGRATION: &str = "/usr/share/mes-collector/migrations/001-from-python-service.sql";
pub const MIGRATION_IN_SOURCE: &str = "migrations/001-from-python-service.sql";

/// One column as `information_schema.COLUMNS` describes it.
#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    pub data_type: String,
    pub column_type: String,
    pub max_chars: Option<u64>,
    pub charset: Option<String>,
    pub nullable: bool,
}

/// A row of `information_schema.COLUMNS`, as selected by [`columns`].
type ColumnRow = (String, String, String, Option<u64>, Option<String>, String);

fn columns(conn: &mut Conn, table: &str) -> Result<Vec<Column>, mysql::Error> {
    let rows: Vec<ColumnRow> = conn.exec(
        "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE, CHARACTER_MAXIMUM_LENGTH, CHARACTER_SET_NAME, IS_NULLABLE \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
        (table,),
    )?;
    Ok(rows
        .into_iter()
        .map(
            |(name, data_type, column_type, max_chars, charset, nullable)| Column {
                name: name.to_ascii_lowercase(),
                data_type: data_type.to_ascii_lowercase(),
                column_type,
                max_chars,
                charset,
                nullable: nullable == "YES",
            },
        )
        .collect())
}

/// What `check` found wrong with the tables' layout.
#[derive(Debug, Default)]
pub struct Findings {
    /// `cnc_data` has the original Python service's layout (INT timestamp).
    pub python_layout: bool,
    /// Each difference of `cnc_data` from `database.sql`, with what it breaks.
    pub cnc_data: Vec<String>,
    /// Columns of this version missing from other tables (`database.sql` adds them).
    pub missing: Vec<String>,
}

/// Compares the tables with `database.sql`.
pub fn inspect(conn: &mut Conn) -> Result<Findings, mysql::Error> {
    let data = columns(conn, "cnc_data")?;
    let mut f = Findings {
        cnc_data: cnc_data_differences(&data),
        ..Findings::default()
    };
    f.python_layout = data
        .iter()
        .any(|c| c.name == "timestamp" && c.data_type == "int");
    let indexed: Option<String> = conn.query_first(
        "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() \
         AND TABLE_NAME = 'cnc_data' AND SEQ_IN_INDEX = 1 AND COLUMN_NAME = 'cnc_id' LIMIT 1",
    )?;
    if !data.is_empty() && indexed.is_none() {
        f.cnc_data.push(
            "no index on (cnc_id, timestamp): reading one machine's rows by time scans the whole table".into(),
        );
    }
    let charset: Option<String> = conn.query_first(
        "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = DATABASE()",
    )?;
    if let Some(cs) = charset.filter(|cs| cs != "utf8mb4") {
        f.cnc_data.push(format!(
            "the database defaults to {cs}: tables created in it later (a mapping's) cannot hold 4-byte characters"
        ));
    }
    let dead = columns(conn, "dead_letters")?;
    for want in ["replays", "last_replayed_at"] {
        if !dead.is_empty() && !dead.iter().any(|c| c.name == want) {
            f.missing.push(format!("dead_letters.{want}"));
        }
    }
    Ok(f)
}

/// Each way `cnc_data` differs from `database.sql`, with what it breaks. Wider than
/// required is fine.
pub fn cnc_data_differences(cols: &[Column]) -> Vec<String> {
    let mut out = Vec::new();
    if cols.is_empty() {
        return out;
    }
    let col = |name: &str| cols.iter().find(|c| c.name == name);
    let int_kind = |c: &Column| c.data_type.clone();
    if let Some(c) = col("timestamp") {
        if int_kind(c) != "bigint" {
            out.push(format!(
                "timestamp is {}, not BIGINT: epoch seconds past {} are refused, so every message becomes a db_rejected dead letter from {}",
                c.column_type,
                if c.column_type.contains("unsigned") { "4294967295" } else { "2147483647" },
                if c.column_type.contains("unsigned") { "2106-02-07 06:28:15 UTC" } else { "2038-01-19 03:14:07 UTC" },
            ));
        }
    }
    if let Some(c) = col("id") {
        if int_kind(c) != "bigint" {
            out.push(format!(
                "id is {}, not BIGINT UNSIGNED: the table takes at most {} rows, then every insert is refused",
                c.column_type,
                if c.column_type.contains("unsigned") { "4,294,967,295" } else { "2,147,483,647" }
            ));
        }
    }
    for (name, want) in [("cnc_id", 64), ("part_program", 255)] {
        if let Some(c) = col(name) {
            if c.max_chars.is_some_and(|n| n < want) {
                out.push(format!(
                    "{name} is {}, not VARCHAR({want}): a longer {name} is refused, the message a db_rejected dead letter",
                    c.column_type
                ));
            }
        }
    }
    if let Some(c) = col("json_data") {
        if !matches!(c.data_type.as_str(), "longtext" | "json") {
            out.push(format!(
                "json_data is {}, not JSON: {}",
                c.column_type,
                match c.data_type.as_str() {
                    "text" => "a payload over 65,535 bytes is refused (db_rejected)",
                    "tinytext" => "a payload over 255 bytes is refused (db_rejected)",
                    "mediumtext" => "nothing checks it holds JSON",
                    _ => "the collector writes JSON text",
                }
            ));
        }
    }
    let narrow: Vec<&str> = cols
        .iter()
        .filter(|c| c.charset.as_deref().is_some_and(|cs| cs != "utf8mb4"))
        .map(|c| c.name.as_str())
        .collect();
    if !narrow.is_empty() {
        let charset = cols
            .iter()
            .find_map(|c| c.charset.as_deref().filter(|cs| *cs != "utf8mb4"))
            .unwrap_or("?");
        out.push(format!(
            "{} {} {charset}, not utf8mb4: a character outside the Basic Multilingual Plane (an emoji, rarer CJK) is refused (db_rejected)",
            narrow.join(", "),
            if narrow.len() == 1 { "is" } else { "are" }
        ));
    }
    let nullable: Vec<&str> = ["cnc_id", "part_program", "timestamp", "json_data"]
        .into_iter()
        .filter(|n| col(n).is_some_and(|c| c.nullable))
        .collect();
    if !nullable.is_empty() {
        out.push(format!(
            "{} may be NULL (NOT NULL in database.sql): the migration makes them NOT NULL, and stops without changing anything if a row holds NULL there",
            nullable.join(", ")
        ));
    }
    if col("stored_at").is_none() {
        out.push(
            "no stored_at column: rows carry no commit time, so end-to-end latency (stored_at - timestamp) cannot be measured"
                .into(),
        );
    }
    out
}

/// The fix for what [`inspect`] found, for `check`'s report. The migration names its
/// database in a `USE` line, as `database.sql` does.
pub fn remedy(database: &str) -> String {
    let run = if database == "cnc_database" {
        format!("mariadb -u root -p < {MIGRATION}")
    } else {
        format!("sed 's/cnc_database/{database}/g' {MIGRATION} | mariadb -u root -p")
    };
    format!(
        "stop the collector, back up the database, then `{run}` ({MIGRATION_IN_SOURCE} in the source): \
         it converts cnc_data keeping every row and value, and may be run again; see docs/migrating-from-python.md"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(name: &str, data_type: &str, column_type: &str, max: Option<u64>) -> Column {
        Column {
            name: name.into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            max_chars: max,
            charset: max.map(|_| "utf8mb4".to_string()),
            nullable: false,
        }
    }

    fn current() -> Vec<Column> {
        vec![
            column("id", "bigint", "bigint(20) unsigned", None),
            column("cnc_id", "varchar", "varchar(64)", Some(64)),
            column("part_program", "varchar", "varchar(255)", Some(255)),
            column("timestamp", "bigint", "bigint(20)", None),
            column("json_data", "longtext", "longtext", Some(4_294_967_295)),
            column("stored_at", "datetime", "datetime(3)", None),
        ]
    }

    #[test]
    fn the_current_layout_and_wider_columns_differ_in_nothing() {
        assert!(cnc_data_differences(&current()).is_empty());
        let mut wider = current();
        wider[2] = column("part_program", "varchar", "varchar(512)", Some(512));
        assert!(cnc_data_differences(&wider).is_empty());
    }

    #[test]
    fn each_difference_of_the_python_layout_is_named() {
        let mut old = vec![
            column("id", "int", "int(11)", None),
            column("cnc_id", "varchar", "varchar(45)", Some(45)),
            column("timestamp", "int", "int(11)", None),
            column("part_program", "varchar", "varchar(45)", Some(45)),
            column("json_data", "text", "text", Some(65_535)),
        ];
        for c in &mut old {
            if c.charset.is_some() {
                c.charset = Some("utf8mb3".into());
            }
            c.nullable = c.name != "id";
        }
        let found = cnc_data_differences(&old).join("\n");
        for want in [
            "timestamp is int(11), not BIGINT",
            "2038-01-19 03:14:07 UTC",
            "id is int(11)",
            "cnc_id is varchar(45), not VARCHAR(64)",
            "part_program is varchar(45), not VARCHAR(255)",
            "json_data is text, not JSON",
            "cnc_id, part_program, json_data are utf8mb3",
            "cnc_id, part_program, timestamp, json_data may be NULL",
            "no stored_at column",
        ] {
            assert!(found.contains(want), "{want:?} not in:\n{found}");
        }
    }
}
