//! The mapping file as written: serde structures that refuse unknown keys.
//!
//! Words with a fixed set of values (`type`, `write`, `envelope`, `missing`, ...) are
//! read as plain strings here and checked in [`crate::compile`], so that the error can
//! say "unknown type" in the mapping's own terms rather than serde's "unknown variant".

use std::fmt;

use serde::{
    de::{MapAccess, Visitor},
    ser::SerializeMap,
    Deserialize, Deserializer, Serialize, Serializer,
};

/// A whole mapping file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSpec {
    /// Free text for people; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Payload values that must be present with this type, though no row stores them
    /// (as a compiled plugin's schema can require a key): JSON pointer → type.
    #[serde(default, skip_serializing_if = "Columns::is_empty")]
    pub require: Columns<String>,
    /// The rows written for each message, in order.
    pub rows: Vec<RowSpec>,
}

/// One row written per message (or per array element, with `for_each`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RowSpec {
    pub table: String,
    /// `insert` (default), `upsert` or `upsert_newest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<String>,
    /// `upsert_newest` only: the columns that say which row is newer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_by: Option<Vec<String>>,
    /// A JSON pointer to an array of the payload: one row per element.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each: Option<String>,
    /// With `for_each`: what an absent (or null) array means, `empty` (default: no
    /// rows) or `error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub for_each_missing: Option<String>,
    /// Column name → where its value comes from, in the order written.
    pub columns: Columns<ColumnSpec>,
}

/// Where one column's value comes from and how it is converted.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// A JSON pointer into the payload (into the element, in a `for_each` row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// `cnc_id`, `part_program`, `timestamp` or `topic`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envelope: Option<String>,
    /// A JSON pointer into the machine's `settings` in `cnc_classes.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub setting: Option<String>,
    /// A constant. `null` is a constant too, hence [`present`].
    #[serde(
        default,
        rename = "const",
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub constant: Option<serde_json::Value>,
    /// `text`, `integer`, `float`, `boolean` or `json`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub ty: Option<String>,
    /// `error` (default), `null` or `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub missing: Option<String>,
    /// With `"missing": "default"`: the value used instead.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub default: Option<serde_json::Value>,
    /// Value map: the source value (as text: `"0"`, `"true"`, `"E12"`) → the value
    /// stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<serde_json::Map<String, serde_json::Value>>,
    /// With `map`: what a value not in the map becomes, `error` (default), `null`,
    /// `keep` or `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmapped: Option<String>,
    /// With `"unmapped": "default"`: the value used instead.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub unmapped_default: Option<serde_json::Value>,
    /// A factor the number is multiplied by (0.001 for µm → mm).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale: Option<f64>,
}

/// `Some` for any value that is there, `null` included, so that `"const": null` and
/// `"default": null` mean NULL rather than "not given".
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// A JSON object read as a list of entries in the file's order: the column order of
/// the statements follows the file, and a key written twice is seen (and refused)
/// rather than silently overwritten.
#[derive(Debug, Clone)]
pub struct Columns<T>(pub Vec<(String, T)>);

impl<T> Default for Columns<T> {
    fn default() -> Self {
        Columns(Vec::new())
    }
}

impl<T> Columns<T> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<T: Serialize> Serialize for Columns<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Columns<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Entries<T> {
            type Value = Columns<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(Columns(out))
            }
        }
        d.deserialize_map(Entries(std::marker::PhantomData))
    }
}

/// Parses mapping text; the error starts with the JSON path of the mistake.
pub fn parse(text: &str) -> Result<MappingSpec, String> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let spec: MappingSpec = serde_path_to_error::deserialize(&mut *de).map_err(path_error)?;
    // Trailing characters after the object.
    de.end().map_err(|e| format!("(top level): {e}"))?;
    Ok(spec)
}

fn path_error<E: fmt::Display>(e: serde_path_to_error::Error<E>) -> String {
    let path = e.path().to_string();
    let path = if path == "." { "(top level)" } else { &path };
    let inner = e.into_inner().to_string();
    format!("{path}: {inner}")
}
