//! Table and column names are checked before the host puts them into SQL.
//!
//! Values are bound as parameters, but identifiers cannot be: they are quoted with
//! backticks, and only names that need no escaping at all are accepted, so that a
//! plugin fed hostile payloads can never turn a key into SQL.

use crate::Value;

/// The longest identifier MySQL and MariaDB accept.
pub const MAX_IDENTIFIER_LEN: usize = 64;

/// Checks that `name` is a plain SQL identifier: 1 to 64 ASCII letters, digits or
/// underscores, not starting with a digit. A dot separates an optional database name
/// (`db.table`); each part follows the same rule.
///
/// ```
/// use mes_plugin_api::check_identifier;
/// assert!(check_identifier("cnc_data").is_ok());
/// assert!(check_identifier("cnc_database.cnc_data").is_ok());
/// assert!(check_identifier("X-Axis").is_err());
/// assert!(check_identifier("t`; DROP TABLE cnc_data; --").is_err());
/// ```
pub fn check_identifier(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("identifier is empty".into());
    }
    let mut parts = name.split('.');
    let (first, second, third) = (parts.next(), parts.next(), parts.next());
    if third.is_some() {
        return Err(format!(
            "identifier {name:?} has more than one dot; use `table` or `database.table`"
        ));
    }
    for part in [first, second].into_iter().flatten() {
        check_part(name, part)?;
    }
    Ok(())
}

fn check_part(whole: &str, part: &str) -> Result<(), String> {
    if part.is_empty() {
        return Err(format!("identifier {whole:?} has an empty part"));
    }
    if part.len() > MAX_IDENTIFIER_LEN {
        return Err(format!(
            "identifier {:?} is longer than {MAX_IDENTIFIER_LEN} characters",
            truncate(part)
        ));
    }
    if part.as_bytes()[0].is_ascii_digit() {
        return Err(format!("identifier {whole:?} starts with a digit"));
    }
    if let Some(bad) = part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!(
            "identifier {:?} contains {bad:?}; only ASCII letters, digits and '_' are allowed",
            truncate(whole)
        ));
    }
    Ok(())
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::check_identifier;

    #[test]
    fn accepts_plain_names() {
        for ok in ["a", "cnc_data", "_x", "T1", "db.tbl", &"a".repeat(64)] {
            assert!(check_identifier(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_everything_that_would_need_quoting() {
        for bad in [
            "",
            "1abc",
            "a b",
            "a`b",
            "a'b",
            "a\"b",
            "a;b",
            "a-b",
            "a.b.c",
            ".a",
            "a.",
            "a\0b",
            "tablé",
            "a/*",
            &"a".repeat(65),
        ] {
            assert!(check_identifier(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn error_names_the_identifier() {
        let err = check_identifier("X-Axis").unwrap_err();
        assert!(err.contains("X-Axis") && err.contains("'-'"), "{err}");
    }
}

/// Checks one row handed to `insert`/`upsert`: its names ([`check_names`]) and its
/// values ([`check_values`]). The host and the `testing` recorder both use these, so a
/// plugin's tests fail exactly where the host would refuse the row.
///
/// ```
/// use mes_plugin_api::{check_row, Value};
/// assert!(check_row("cnc_data", &["cnc_id", "spin"], &["CNC001".into(), 200.into()]).is_ok());
/// assert!(check_row("cnc_data", &["spin"], &[Value::Float(f64::NAN)]).is_err());
/// ```
pub fn check_row<S: AsRef<str>>(
    table: &str,
    columns: &[S],
    values: &[Value],
) -> Result<(), String> {
    check_names(table, columns)?;
    check_values(table, columns, values)
}

/// The ordering columns of [`Db::upsert_newest`](crate::Db::upsert_newest): at least
/// one, each one of the row's columns, none twice.
///
/// ```
/// use mes_plugin_api::check_order_by;
/// assert!(check_order_by(&["cnc_id", "timestamp"], &["timestamp"]).is_ok());
/// assert!(check_order_by(&["cnc_id"], &["timestamp"]).is_err());
/// assert!(check_order_by(&["cnc_id"], &[] as &[&str]).is_err());
/// ```
pub fn check_order_by<S: AsRef<str>, O: AsRef<str>>(
    columns: &[S],
    order_by: &[O],
) -> Result<(), String> {
    if order_by.is_empty() {
        return Err("upsert_newest needs at least one column to order by".into());
    }
    for (i, o) in order_by.iter().map(AsRef::as_ref).enumerate() {
        if !columns.iter().any(|c| c.as_ref().eq_ignore_ascii_case(o)) {
            return Err(format!(
                "upsert_newest orders by `{o}`, which is not one of the row's columns; \
                 give it in the columns too"
            ));
        }
        if order_by[..i]
            .iter()
            .any(|p| p.as_ref().eq_ignore_ascii_case(o))
        {
            return Err(format!("upsert_newest orders by `{o}` twice"));
        }
    }
    Ok(())
}

/// The table and every column are plain identifiers (a column may not be qualified
/// with a table or database), there is at least one column, and no column appears twice
/// (MySQL compares column names without case).
pub fn check_names<S: AsRef<str>>(table: &str, columns: &[S]) -> Result<(), String> {
    check_identifier(table).map_err(|e| format!("table name: {e}"))?;
    if columns.is_empty() {
        return Err(format!("row for table `{table}` has no columns"));
    }
    for (i, column) in columns.iter().map(AsRef::as_ref).enumerate() {
        let checked = if column.contains('.') {
            Err(format!(
                "identifier {column:?} contains '.'; a column name cannot be qualified"
            ))
        } else {
            check_identifier(column)
        };
        checked.map_err(|e| format!("column name in table `{table}`: {e}"))?;
        if columns[..i]
            .iter()
            .any(|c| c.as_ref().eq_ignore_ascii_case(column))
        {
            return Err(format!(
                "column `{column}` appears twice in a row for table `{table}`"
            ));
        }
    }
    Ok(())
}

/// There are as many values as columns, and none is a float MySQL cannot store (NaN
/// or an infinity).
pub fn check_values<S: AsRef<str>>(
    table: &str,
    columns: &[S],
    values: &[Value],
) -> Result<(), String> {
    if columns.len() != values.len() {
        return Err(format!(
            "row for table `{table}` has {} columns but {} values",
            columns.len(),
            values.len()
        ));
    }
    match first_unstorable(values) {
        Some(i) => Err(format!(
            "column `{}` of table `{table}`: NaN and infinity cannot be stored",
            columns[i].as_ref()
        )),
        None => Ok(()),
    }
}

/// The parameters of an `exec` statement are storable values.
pub fn check_params(params: &[Value]) -> Result<(), String> {
    match first_unstorable(params) {
        Some(i) => Err(format!("parameter {i}: NaN and infinity cannot be stored")),
        None => Ok(()),
    }
}

fn first_unstorable(values: &[Value]) -> Option<usize> {
    values
        .iter()
        .position(|v| matches!(v, Value::Float(f) if !f.is_finite()))
}

#[cfg(test)]
mod row_tests {
    use super::{check_params, check_row};
    use crate::Value;

    fn vals(n: usize) -> Vec<Value> {
        vec![Value::Int(1); n]
    }

    #[test]
    fn counts_must_match() {
        assert!(check_row("t", &["a", "b"], &vals(2)).is_ok());
        let err = check_row("t", &["a", "b"], &vals(3)).unwrap_err();
        assert!(err.contains("2 columns but 3 values"), "{err}");
        assert!(check_row::<&str>("t", &[], &[]).is_err());
    }

    #[test]
    fn duplicate_columns_and_unstorable_floats_are_refused() {
        let err = check_row("t", &["a", "A"], &vals(2)).unwrap_err();
        assert!(err.contains("appears twice"), "{err}");
        let err = check_row(
            "t",
            &["a", "b"],
            &[Value::Int(1), Value::Float(f64::INFINITY)],
        )
        .unwrap_err();
        assert!(
            err.contains("column `b`") && err.contains("NaN and infinity"),
            "{err}"
        );
        assert!(check_params(&[Value::Float(f64::NAN)])
            .unwrap_err()
            .starts_with("parameter 0"));
        assert!(check_params(&[Value::Float(1.5)]).is_ok());
    }

    #[test]
    fn names_the_bad_part() {
        let err = check_row("cnc_data", &["ok", "X-Axis"], &vals(2)).unwrap_err();
        assert!(err.contains("column name in table `cnc_data`"), "{err}");
        let err = check_row("t", &["db.col"], &vals(1)).unwrap_err();
        assert!(err.contains("cannot be qualified"), "{err}");
        let err = check_row("bad table", &["a"], &vals(1)).unwrap_err();
        assert!(err.starts_with("table name"), "{err}");
    }
}
