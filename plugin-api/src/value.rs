//! Values a plugin hands to the database handle.
//!
//! Values are always bound as statement parameters by the host, never spliced into SQL,
//! so a value can hold anything, including text that looks like SQL.

use abi_stable::{
    std_types::{RString, RVec},
    StableAbi,
};

/// One column value of a row.
///
/// Build values with `From`/`Into` rather than naming variants:
///
/// ```
/// use mes_plugin_api::Value;
///
/// let row: Vec<Value> = vec![
///     "CNC001".into(),             // Text
///     1747379028_i64.into(),        // Int
///     200.5_f64.into(),             // Float
///     None::<i64>.into(),           // Null
///     Value::json(&serde_json::json!({"spin": 200})), // Json
/// ];
/// assert_eq!(row[0], Value::Text("CNC001".into()));
/// assert!(row[3].is_null());
/// ```
///
/// Changing this enum is a breaking change of the plugin ABI: new kinds of value need
/// a new major version of `mes-plugin-api`.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, PartialEq)]
pub enum Value {
    /// SQL `NULL`.
    Null,
    /// A signed integer.
    Int(i64),
    /// An unsigned integer (for values above `i64::MAX`).
    UInt(u64),
    /// A double-precision float. NaN and infinities are refused by the host, since
    /// MySQL has no representation for them.
    Float(f64),
    /// UTF-8 text.
    Text(RString),
    /// Raw bytes (for `BLOB`/`VARBINARY` columns).
    Bytes(RVec<u8>),
    /// JSON document text, for `JSON` columns. [`Value::json`] builds it from a
    /// `serde_json::Value`; [`Value::json_text`] takes text that is already JSON.
    Json(RString),
}

impl Value {
    /// A JSON column value from a `serde_json` value.
    ///
    /// ```
    /// use mes_plugin_api::Value;
    /// let v = Value::json(&serde_json::json!({"alarms": []}));
    /// assert_eq!(v, Value::Json(r#"{"alarms":[]}"#.into()));
    /// ```
    pub fn json(value: &serde_json::Value) -> Value {
        Value::Json(RString::from(value.to_string()))
    }

    /// A JSON column value from text that is already a JSON document, such as
    /// [`Message::payload`](crate::Message::payload). It is not re-parsed.
    ///
    /// ```
    /// use mes_plugin_api::Value;
    /// let v = Value::json_text(r#"{"spin":200}"#);
    /// assert!(matches!(v, Value::Json(_)));
    /// ```
    pub fn json_text(text: &str) -> Value {
        Value::Json(RString::from(text))
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "int",
            Value::UInt(_) => "uint",
            Value::Float(_) => "float",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Json(_) => "json",
        }
    }

    /// Converts a JSON scalar to the closest column value: numbers to `Int`, `UInt`
    /// or `Float`, strings to `Text`, booleans to `Int` 0/1, `null` to `Null`, arrays and
    /// objects to `Json`.
    ///
    /// ```
    /// use mes_plugin_api::Value;
    /// use serde_json::json;
    /// assert_eq!(Value::from_json(&json!(200)), Value::Int(200));
    /// assert_eq!(Value::from_json(&json!(2.5)), Value::Float(2.5));
    /// assert_eq!(Value::from_json(&json!("idle")), Value::Text("idle".into()));
    /// assert_eq!(Value::from_json(&json!(true)), Value::Int(1));
    /// assert!(Value::from_json(&json!(null)).is_null());
    /// ```
    pub fn from_json(value: &serde_json::Value) -> Value {
        use serde_json::Value as J;
        match value {
            J::Null => Value::Null,
            J::Bool(b) => Value::Int(i64::from(*b)),
            J::Number(n) => {
                if let Some(i) = n.as_i64() {
                    Value::Int(i)
                } else if let Some(u) = n.as_u64() {
                    Value::UInt(u)
                } else {
                    Value::Float(n.as_f64().unwrap_or(f64::NAN))
                }
            }
            J::String(s) => Value::Text(RString::from(s.as_str())),
            J::Array(_) | J::Object(_) => Value::json(value),
        }
    }
}

macro_rules! from_int {
    ($($t:ty => $variant:ident as $as:ty),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(v: $t) -> Value {
                Value::$variant(<$as>::from(v))
            }
        }
    )*};
}

from_int!(
    i8 => Int as i64, i16 => Int as i64, i32 => Int as i64, i64 => Int as i64,
    u8 => Int as i64, u16 => Int as i64, u32 => Int as i64, u64 => UInt as u64,
    bool => Int as i64,
);

impl From<f32> for Value {
    fn from(v: f32) -> Value {
        Value::Float(f64::from(v))
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(RString::from(v))
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(RString::from(v))
    }
}

impl From<RString> for Value {
    fn from(v: RString) -> Value {
        Value::Text(v)
    }
}

impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Value {
        Value::Bytes(RVec::from(v))
    }
}

impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Value {
        Value::Bytes(RVec::from(v))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_map_to_signed_unless_they_do_not_fit() {
        assert_eq!(Value::from(7_u32), Value::Int(7));
        assert_eq!(Value::from(u64::MAX), Value::UInt(u64::MAX));
        assert_eq!(Value::from(-3_i8), Value::Int(-3));
        assert_eq!(Value::from(true), Value::Int(1));
    }

    #[test]
    fn options_map_none_to_null() {
        assert_eq!(Value::from(Some("x")), Value::Text("x".into()));
        assert_eq!(Value::from(None::<f64>), Value::Null);
    }

    #[test]
    fn json_numbers_keep_their_range() {
        assert_eq!(
            Value::from_json(&json!(18446744073709551615_u64)),
            Value::UInt(u64::MAX)
        );
        assert_eq!(Value::from_json(&json!(-1)), Value::Int(-1));
        assert_eq!(Value::from_json(&json!(1e300)), Value::Float(1e300));
    }

    #[test]
    fn json_containers_become_json_text() {
        assert_eq!(
            Value::from_json(&json!([1, {"a": "b"}])),
            Value::Json(r#"[1,{"a":"b"}]"#.into())
        );
    }

    #[test]
    fn bytes_and_text_stay_distinct() {
        assert_eq!(Value::from(&b"\x00\xff"[..]).kind(), "bytes");
        assert_eq!(Value::from("\u{0}").kind(), "text");
    }
}
