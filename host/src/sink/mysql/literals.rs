//! Plugin values written as SQL literals, for the multi-row statements a batch sends
//! as text.
//!
//! The text protocol, not prepared statements: a prepared statement fixes its row
//! count, so a batch's rows went out in chunks of a few fixed sizes, about 28
//! statements per 500-message batch where one per shape does, and the server's cost
//! per row in a 1- to 16-row statement is 2 to 12 times that in a 500-row one.
//!
//! The encoding does not depend on the session's `NO_BACKSLASH_ESCAPES` (which a
//! plugin's own SQL could change mid-batch): a quote is doubled, which both modes
//! read as one quote, and a string holding a backslash or a NUL is sent as hex with
//! its character set named, so no backslash ever appears in a literal. Floats are
//! written in E notation, which MySQL reads as a double, not as an exact decimal.
//! Numbers are formatted with `itoa` and `zmij` (serde_json's own): `std::fmt` took
//! about 1,600 instructions per message in the writer.

use mes_plugin_api::Value;

/// Appends `v` as a literal MySQL reads back as the same value. Floats are finite:
/// the host refuses NaN and infinity before a row reaches a batch.
pub(super) fn push_literal(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("NULL"),
        Value::Int(i) => out.push_str(itoa::Buffer::new().format(*i)),
        Value::UInt(u) => out.push_str(itoa::Buffer::new().format(*u)),
        Value::Float(f) => {
            // The shortest digits that read back as the same double, always with an
            // exponent: `1.5e0`, `1e300`, `-2.5e-7`.
            let mut buffer = zmij::Buffer::new();
            let digits = buffer.format_finite(*f);
            out.push_str(digits);
            if !digits.contains('e') {
                out.push_str("e0");
            }
        }
        Value::Text(s) | Value::Json(s) => push_text(out, s),
        Value::Bytes(b) => push_hex(out, "X'", b),
    }
}

/// Appends `(v1,v2,…)`.
pub(super) fn push_row(out: &mut String, row: &[Value]) {
    out.push('(');
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_literal(out, v);
    }
    out.push(')');
}

fn push_text(out: &mut String, s: &str) {
    let bytes = s.as_bytes();
    if memchr::memchr2(b'\\', 0, bytes).is_some() {
        // utf8mb4, as the connection's own strings are: the column converts it as it
        // would a parameter's value.
        push_hex(out, "_utf8mb4 X'", bytes);
        return;
    }
    out.reserve(s.len() + 2);
    out.push('\'');
    let mut rest = s;
    while let Some(i) = memchr::memchr(b'\'', rest.as_bytes()) {
        out.push_str(&rest[..=i]);
        out.push('\'');
        rest = &rest[i + 1..];
    }
    out.push_str(rest);
    out.push('\'');
}

fn push_hex(out: &mut String, open: &str, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(open.len() + 2 * bytes.len() + 1);
    out.push_str(open);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn literal(v: Value) -> String {
        let mut out = String::new();
        push_literal(&mut out, &v);
        out
    }

    #[test]
    fn numbers_and_null_are_written_as_mysql_reads_them() {
        assert_eq!(literal(Value::Null), "NULL");
        assert_eq!(literal(Value::Int(i64::MIN)), "-9223372036854775808");
        assert_eq!(literal(Value::UInt(u64::MAX)), "18446744073709551615");
        assert_eq!(literal(Value::Float(284.709)), "284.709e0");
        assert_eq!(literal(Value::Float(1.0)), "1.0e0");
        assert_eq!(literal(Value::Float(-0.0)), "-0.0e0");
        assert_eq!(literal(Value::Float(-2.5e-7)), "-2.5e-7");
        assert_eq!(
            literal(Value::Float(f64::MAX)),
            "1.7976931348623157e+308",
            "E notation: MySQL reads it as a double, not a 309-digit decimal"
        );
    }

    #[test]
    fn a_quote_is_doubled_and_nothing_else_is_escaped() {
        assert_eq!(literal(Value::from("läuft")), "'läuft'");
        assert_eq!(literal(Value::from("it's 'x'")), "'it''s ''x'''");
        assert_eq!(
            literal(Value::from("a\"b\nc\r\u{1a}%_")),
            "'a\"b\nc\r\u{1a}%_'"
        );
        assert_eq!(literal(Value::json_text(r#"{"a":"b"}"#)), r#"'{"a":"b"}'"#);
        assert_eq!(literal(Value::from("")), "''");
    }

    #[test]
    fn a_backslash_or_nul_sends_the_string_as_hex_whatever_the_sql_mode() {
        assert_eq!(literal(Value::from(r"a\'")), "_utf8mb4 X'615C27'");
        assert_eq!(literal(Value::from("a\0")), "_utf8mb4 X'6100'");
        assert_eq!(
            literal(Value::json_text(r#"{"q":"\""}"#)),
            "_utf8mb4 X'7B2271223A225C22227D'"
        );
    }

    #[test]
    fn bytes_are_a_binary_hex_literal() {
        assert_eq!(
            literal(Value::from(&b"\x00\xff\x27\x5c"[..])),
            "X'00FF275C'"
        );
        assert_eq!(literal(Value::from(&b""[..])), "X''");
    }

    #[test]
    fn a_row_is_its_literals_in_parentheses() {
        let mut out = String::new();
        push_row(&mut out, &[Value::Int(1), Value::Null, Value::from("x")]);
        assert_eq!(out, "(1,NULL,'x')");
    }
}
