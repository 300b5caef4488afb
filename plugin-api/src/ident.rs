//! Table and column names are checked before the host puts them into SQL.
//!
//! Values are bound as parameters, but identifiers cannot be: they are quoted with
//! backticks, and only names that need no escaping at all are accepted, so that a
//! plugin fed hostile payloads can never turn a key into SQL.

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

/// Checks one row handed to `insert`/`upsert`: the table and every column are plain
/// identifiers, there is at least one column, and there are as many values as columns.
/// The host and the `testing` recorder both use it, so a plugin's tests fail exactly
/// where the host would refuse the row.
pub fn check_row(table: &str, columns: &[&str], values: usize) -> Result<(), String> {
    check_identifier(table).map_err(|e| format!("table name: {e}"))?;
    if columns.is_empty() {
        return Err(format!("row for table `{table}` has no columns"));
    }
    for column in columns {
        // A column is a single name; only tables may be qualified with a database.
        let checked = if column.contains('.') {
            Err(format!(
                "identifier {column:?} contains '.'; a column name cannot be qualified"
            ))
        } else {
            check_identifier(column)
        };
        checked.map_err(|e| format!("column name in table `{table}`: {e}"))?;
    }
    if columns.len() != values {
        return Err(format!(
            "row for table `{table}` has {} columns but {values} values",
            columns.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod row_tests {
    use super::check_row;

    #[test]
    fn counts_must_match() {
        assert!(check_row("t", &["a", "b"], 2).is_ok());
        let err = check_row("t", &["a", "b"], 3).unwrap_err();
        assert!(err.contains("2 columns but 3 values"), "{err}");
        assert!(check_row("t", &[], 0).is_err());
    }

    #[test]
    fn names_the_bad_part() {
        let err = check_row("cnc_data", &["ok", "X-Axis"], 2).unwrap_err();
        assert!(err.contains("column name in table `cnc_data`"), "{err}");
        let err = check_row("t", &["db.col"], 1).unwrap_err();
        assert!(err.contains("cannot be qualified"), "{err}");
        let err = check_row("bad table", &["a"], 1).unwrap_err();
        assert!(err.starts_with("table name"), "{err}");
    }
}
