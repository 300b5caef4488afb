//! Checks a [`MappingSpec`] and turns it into a [`Mapping`] ready to apply: pointers
//! split into tokens, constants and defaults converted once, value maps hashed.
//!
//! Every mistake found is reported, each with the JSON path of the key at fault, so a
//! plant engineer fixes a file in one round rather than one error per run.

use std::collections::HashMap;

use mes_plugin_api::{check_identifier, check_names, check_order_by, Value};

use crate::{
    sparse::{Needed, Route},
    spec::{ColumnSpec, MappingSpec, RowSpec},
};

/// The column types of a mapping, and what each accepts from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// A JSON string.
    Text,
    /// A JSON number without fraction or exponent that fits 64 bits.
    Integer,
    /// Any JSON number.
    Float,
    /// `true`/`false`, stored as 1/0.
    Boolean,
    /// Any JSON value, stored as its JSON text.
    Json,
}

pub const TYPES: [&str; 5] = ["text", "integer", "float", "boolean", "json"];

impl Type {
    pub fn parse(s: &str) -> Option<Type> {
        Some(match s {
            "text" => Type::Text,
            "integer" => Type::Integer,
            "float" => Type::Float,
            "boolean" => Type::Boolean,
            "json" => Type::Json,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        TYPES[self as usize]
    }

    /// The SQL column type `new-mapping` proposes for it.
    pub fn sql(self) -> &'static str {
        match self {
            Type::Text => "VARCHAR(255)",
            Type::Integer => "BIGINT",
            Type::Float => "DOUBLE",
            Type::Boolean => "BOOLEAN",
            Type::Json => "JSON",
        }
    }
}

/// How a row is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    Insert,
    Upsert,
    UpsertNewest,
}

pub const WRITES: [&str; 3] = ["insert", "upsert", "upsert_newest"];

impl Write {
    pub fn name(self) -> &'static str {
        WRITES[self as usize]
    }
}

/// The message fields outside the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Envelope {
    CncId,
    PartProgram,
    Timestamp,
    Topic,
}

pub const ENVELOPE_FIELDS: [&str; 4] = ["cnc_id", "part_program", "timestamp", "topic"];

/// A JSON pointer (RFC 6901), split into its reference tokens.
#[derive(Debug, Clone)]
pub struct Pointer {
    pub text: String,
    pub tokens: Vec<String>,
}

impl Pointer {
    pub fn parse(text: &str) -> Result<Pointer, String> {
        if text.is_empty() {
            return Ok(Pointer {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(format!(
                "JSON pointer {text:?} must start with '/' (\"/spin\", \"/axes/x\"), or be \"\" for the whole value"
            ));
        };
        let mut tokens = Vec::new();
        for raw in rest.split('/') {
            let mut token = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    token.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => token.push('~'),
                    Some('1') => token.push('/'),
                    _ => {
                        return Err(format!(
                        "JSON pointer {text:?}: '~' must be followed by 0 (for '~') or 1 (for '/')"
                    ))
                    }
                }
            }
            tokens.push(token);
        }
        Ok(Pointer {
            text: text.to_string(),
            tokens,
        })
    }

    /// The value the pointer reaches, if any.
    pub fn find<'v>(&self, v: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        walk(v, &self.tokens)
    }
}

/// Follows reference tokens from `v`.
pub(crate) fn walk<'v>(
    mut v: &'v serde_json::Value,
    tokens: &[String],
) -> Option<&'v serde_json::Value> {
    for t in tokens {
        v = match v {
            serde_json::Value::Object(m) => m.get(t.as_str())?,
            serde_json::Value::Array(a) => a.get(array_index(t)?)?,
            _ => return None,
        };
    }
    Some(v)
}

/// RFC 6901: an array index is "0" or digits without a leading zero.
fn array_index(t: &str) -> Option<usize> {
    if t.is_empty() || (t.len() > 1 && t.starts_with('0')) || !t.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    t.parse().ok()
}

#[derive(Debug, Clone)]
pub(crate) enum Source {
    Envelope(Envelope),
    /// A constant, or a machine setting (resolved when the machine's instance is made).
    Const(Value),
    /// Relative to the payload, or to the element in a `for_each` row.
    Pointer(Pointer),
    /// The payload exactly as received, for a `json` column with pointer "".
    WholePayload,
}

#[derive(Debug, Clone)]
pub(crate) enum Missing {
    Error,
    Value(Value),
}

#[derive(Debug, Clone)]
pub(crate) enum Unmapped {
    Error,
    Null,
    Keep,
    Value(serde_json::Value),
}

#[derive(Debug, Clone)]
pub(crate) struct ValueMap {
    pub entries: HashMap<String, serde_json::Value>,
    pub unmapped: Unmapped,
}

#[derive(Debug, Clone)]
pub(crate) struct Column {
    /// `rows[1].columns.spin`, for errors.
    pub path: String,
    pub source: Source,
    /// A pointer's route in the parsed payload (rows without `for_each`).
    pub route: Route,
    pub ty: Type,
    pub missing: Missing,
    pub map: Option<ValueMap>,
    pub scale: Option<f64>,
}

#[derive(Debug, Clone)]
pub(crate) struct ForEach {
    pub pointer: Pointer,
    pub route: Route,
    pub error_if_missing: bool,
}

/// One row of a mapping, checked.
#[derive(Debug, Clone)]
pub struct Row {
    pub(crate) path: String,
    pub(crate) table: String,
    pub(crate) write: Write,
    pub(crate) order_by: Vec<String>,
    pub(crate) for_each: Option<ForEach>,
    pub(crate) names: Vec<String>,
    pub(crate) columns: Vec<Column>,
}

impl Row {
    /// `rows[i]`.
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn table(&self) -> &str {
        &self.table
    }
    pub fn write(&self) -> Write {
        self.write
    }
    pub fn columns(&self) -> &[String] {
        &self.names
    }
    pub fn order_by(&self) -> &[String] {
        &self.order_by
    }
    /// The array pointer of a `for_each` row.
    pub fn for_each(&self) -> Option<&str> {
        self.for_each.as_ref().map(|f| f.pointer.text.as_str())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Required {
    pub path: String,
    pub pointer: Pointer,
    pub route: Route,
    pub ty: Type,
}

/// A checked mapping, ready to apply to messages.
#[derive(Debug, Clone)]
pub struct Mapping {
    /// Says which mapping an error comes from: "mapping X.json (class X)".
    pub(crate) origin: String,
    pub(crate) require: Vec<Required>,
    pub(crate) rows: Vec<Row>,
    /// Whether any value comes from inside the payload, so that it must be parsed.
    pub(crate) needs_payload: bool,
    /// The parts of the payload the pointers read.
    pub(crate) needed: Needed,
}

/// Which machine a mapping is compiled for.
#[derive(Debug, Clone, Copy)]
pub enum Machine<'a> {
    /// No particular machine (`check`): `setting` sources are checked for syntax only.
    Any,
    /// One machine, with its `settings` object from `cnc_classes.json`, if any.
    Settings(Option<&'a serde_json::Value>),
}

impl Mapping {
    /// Checks `spec`; `origin` prefixes the errors `apply` returns. `Err` lists every
    /// mistake, each as `path: what is wrong`.
    pub fn compile(
        spec: &MappingSpec,
        origin: &str,
        machine: Machine<'_>,
    ) -> Result<Mapping, Vec<String>> {
        let mut errors = Vec::new();
        let mut require = Vec::new();
        for (pointer, ty) in &spec.require.0 {
            let path = format!("require.{pointer}");
            let p = Pointer::parse(pointer).map_err(|e| errors.push(format!("{path}: {e}")));
            let t = parse_type(ty, &path, &mut errors);
            if let (Ok(pointer), Some(ty)) = (p, t) {
                require.push(Required {
                    path,
                    pointer,
                    ty,
                    route: Route::default(),
                });
            }
        }
        if spec.rows.is_empty() {
            errors.push("rows: no rows; a mapping writes at least one row".into());
        }
        let mut rows = Vec::new();
        for (i, r) in spec.rows.iter().enumerate() {
            if let Some(row) = compile_row(r, &format!("rows[{i}]"), machine, &mut errors) {
                rows.push(row);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let needs_payload = !require.is_empty()
            || rows.iter().any(|r| {
                r.for_each.is_some()
                    || r.columns
                        .iter()
                        .any(|c| matches!(c.source, Source::Pointer(_)))
            });
        let mut needed = Needed::default();
        for r in &require {
            needed.add(&r.pointer.tokens);
        }
        for row in &rows {
            match &row.for_each {
                // Elements are read whole: their pointers are relative to each.
                Some(each) => needed.add(&each.pointer.tokens),
                None => {
                    for c in &row.columns {
                        if let Source::Pointer(p) = &c.source {
                            needed.add(&p.tokens);
                        }
                    }
                }
            }
        }
        // Routes once the tree is complete: a later pointer can make a node whole.
        for r in &mut require {
            r.route = needed.route(&r.pointer.tokens);
        }
        for row in &mut rows {
            match &mut row.for_each {
                Some(each) => each.route = needed.route(&each.pointer.tokens),
                None => {
                    for c in &mut row.columns {
                        if let Source::Pointer(p) = &c.source {
                            c.route = needed.route(&p.tokens);
                        }
                    }
                }
            }
        }
        Ok(Mapping {
            origin: origin.to_string(),
            require,
            rows,
            needs_payload,
            needed,
        })
    }

    /// The rows, for checks against the database.
    pub fn rows(&self) -> &[Row] {
        &self.rows
    }
}

fn parse_type(s: &str, path: &str, errors: &mut Vec<String>) -> Option<Type> {
    let t = Type::parse(s);
    if t.is_none() {
        errors.push(format!(
            "{path}: unknown type {s:?}; expected one of {}",
            TYPES.join(", ")
        ));
    }
    t
}

fn compile_row(
    r: &RowSpec,
    path: &str,
    machine: Machine<'_>,
    errors: &mut Vec<String>,
) -> Option<Row> {
    let before = errors.len();
    let table_ok = check_identifier(&r.table)
        .map_err(|e| errors.push(format!("{path}.table: {e}")))
        .is_ok();
    let write = match r.write.as_deref().unwrap_or("insert") {
        "insert" => Write::Insert,
        "upsert" => Write::Upsert,
        "upsert_newest" => Write::UpsertNewest,
        other => {
            errors.push(format!(
                "{path}.write: unknown write {other:?}; expected one of {}",
                WRITES.join(", ")
            ));
            Write::Insert
        }
    };
    let names: Vec<String> = r.columns.0.iter().map(|(n, _)| n.clone()).collect();
    if names.is_empty() {
        errors.push(format!("{path}.columns: no columns; give at least one"));
    } else if let Err(e) = check_names(if table_ok { &r.table } else { "t" }, &names) {
        errors.push(format!("{path}.columns: {e}"));
    }
    let order_by = match (&r.order_by, write) {
        (Some(o), Write::UpsertNewest) => {
            if let Err(e) = check_order_by(&names, o) {
                errors.push(format!("{path}.order_by: {e}"));
            }
            o.clone()
        }
        (None, Write::UpsertNewest) => {
            errors.push(format!(
                "{path}.order_by: upsert_newest needs order_by, the columns that say which row is newer (e.g. [\"timestamp\"])"
            ));
            Vec::new()
        }
        (Some(_), _) => {
            errors.push(format!(
                "{path}.order_by: only an upsert_newest row has order_by; set \"write\": \"upsert_newest\" or remove it"
            ));
            Vec::new()
        }
        (None, _) => Vec::new(),
    };
    let for_each = match &r.for_each {
        None => {
            if r.for_each_missing.is_some() {
                errors.push(format!(
                    "{path}.for_each_missing: only a for_each row has for_each_missing"
                ));
            }
            None
        }
        Some(p) => {
            let pointer = Pointer::parse(p)
                .and_then(|p| {
                    if p.tokens.is_empty() {
                        Err("the payload is an object, not an array; point at an array in it (\"/alarms\")".into())
                    } else {
                        Ok(p)
                    }
                })
                .map_err(|e| errors.push(format!("{path}.for_each: {e}")))
                .ok();
            let error_if_missing = match r.for_each_missing.as_deref().unwrap_or("empty") {
                "empty" => false,
                "error" => true,
                other => {
                    errors.push(format!(
                        "{path}.for_each_missing: unknown value {other:?}; expected empty or error"
                    ));
                    false
                }
            };
            pointer.map(|pointer| ForEach {
                pointer,
                error_if_missing,
                route: Route::default(),
            })
        }
    };
    let mut columns = Vec::new();
    for (name, c) in &r.columns.0 {
        let cpath = format!("{path}.columns.{name}");
        if let Some(col) = compile_column(c, &cpath, r.for_each.is_some(), machine, errors) {
            columns.push(col);
        }
    }
    (errors.len() == before).then(|| Row {
        path: path.to_string(),
        table: r.table.clone(),
        write,
        order_by,
        for_each,
        names,
        columns,
    })
}

fn compile_column(
    c: &ColumnSpec,
    path: &str,
    in_for_each: bool,
    machine: Machine<'_>,
    errors: &mut Vec<String>,
) -> Option<Column> {
    let before = errors.len();
    let given: Vec<&str> = [
        c.pointer.as_ref().map(|_| "pointer"),
        c.envelope.as_ref().map(|_| "envelope"),
        c.setting.as_ref().map(|_| "setting"),
        c.constant.as_ref().map(|_| "const"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() != 1 {
        errors.push(format!(
            "{path}: give exactly one source (pointer, envelope, setting or const); found {}",
            if given.is_empty() {
                "none".to_string()
            } else {
                given.join(" and ")
            }
        ));
        return None;
    }
    let ty =
        c.ty.as_deref()
            .and_then(|t| parse_type(t, &format!("{path}.type"), errors));
    // Keys that only make sense for a value read from the payload.
    let payload_only = |errors: &mut Vec<String>, what: &str| {
        for (key, set) in [
            ("map", c.map.is_some()),
            ("unmapped", c.unmapped.is_some()),
            ("unmapped_default", c.unmapped_default.is_some()),
            ("scale", c.scale.is_some()),
        ] {
            if set {
                errors.push(format!(
                    "{path}.{key}: only a value read with \"pointer\" can have {key}; this column's value is {what}"
                ));
            }
        }
    };
    let column = |source, ty, missing, map, scale| Column {
        path: path.to_string(),
        route: Route::default(),
        source,
        ty,
        missing,
        map,
        scale,
    };

    if let Some(field) = &c.envelope {
        payload_only(errors, "an envelope field");
        for (key, set) in [
            ("type", c.ty.is_some()),
            ("missing", c.missing.is_some()),
            ("default", c.default.is_some()),
        ] {
            if set {
                errors.push(format!(
                    "{path}.{key}: an envelope field is always there and has its own type (cnc_id, part_program, topic: text; timestamp: integer); remove {key}"
                ));
            }
        }
        let (env, ty) = match field.as_str() {
            "cnc_id" => (Envelope::CncId, Type::Text),
            "part_program" => (Envelope::PartProgram, Type::Text),
            "timestamp" => (Envelope::Timestamp, Type::Integer),
            "topic" => (Envelope::Topic, Type::Text),
            other => {
                errors.push(format!(
                    "{path}.envelope: unknown envelope field {other:?}; expected one of {}",
                    ENVELOPE_FIELDS.join(", ")
                ));
                return None;
            }
        };
        return (errors.len() == before)
            .then(|| column(Source::Envelope(env), ty, Missing::Error, None, None));
    }

    if let Some(value) = &c.constant {
        payload_only(errors, "a constant");
        for (key, set) in [
            ("missing", c.missing.is_some()),
            ("default", c.default.is_some()),
        ] {
            if set {
                errors.push(format!(
                    "{path}.{key}: a constant is never missing; remove {key}"
                ));
            }
        }
        let ty = ty.unwrap_or_else(|| infer_type(value));
        let v = convert_const(value, ty, &format!("{path}.const"), errors)?;
        return (errors.len() == before)
            .then(|| column(Source::Const(v), ty, Missing::Error, None, None));
    }

    let missing = missing_value(c, ty, path, errors);

    if let Some(pointer) = &c.setting {
        payload_only(errors, "a machine setting");
        let p = Pointer::parse(pointer)
            .map_err(|e| errors.push(format!("{path}.setting: {e}")))
            .ok()?;
        let source = match machine {
            // Syntax only: any machine may have it.
            Machine::Any => Source::Const(Value::Null),
            Machine::Settings(settings) => {
                match settings.and_then(|s| p.find(s)).filter(|v| !v.is_null()) {
                    Some(v) => {
                        let ty = ty.unwrap_or_else(|| infer_type(v));
                        Source::Const(convert_const(
                            v,
                            ty,
                            &format!("{path}.setting ({pointer} in the machine's settings)"),
                            errors,
                        )?)
                    }
                    None => match &missing {
                        Some(Missing::Value(v)) => Source::Const(v.clone()),
                        _ => {
                            errors.push(format!(
                                "{path}.setting: {pointer:?} is not in this machine's settings in cnc_classes.json; add it, or set \"missing\": \"null\" or \"default\""
                            ));
                            return None;
                        }
                    },
                }
            }
        };
        return (errors.len() == before)
            .then(|| column(source, ty.unwrap_or(Type::Json), Missing::Error, None, None));
    }

    let pointer = c.pointer.as_deref().expect("one source given");
    let Some(ty) = ty else {
        if c.ty.is_none() {
            errors.push(format!(
                "{path}.type: a value read with \"pointer\" needs a type: one of {}",
                TYPES.join(", ")
            ));
        }
        return None;
    };
    let p = Pointer::parse(pointer)
        .map_err(|e| errors.push(format!("{path}.pointer: {e}")))
        .ok()?;
    let map = match &c.map {
        None => {
            for (key, set) in [
                ("unmapped", c.unmapped.is_some()),
                ("unmapped_default", c.unmapped_default.is_some()),
            ] {
                if set {
                    errors.push(format!("{path}.{key}: only a column with map has {key}"));
                }
            }
            None
        }
        Some(entries) => {
            let mut checked = HashMap::new();
            for (k, v) in entries {
                // Checked now, so that a map to "running" for an integer column is
                // found by `check`, not by the first message.
                if c.scale.is_none() {
                    let _ = convert_const(v, ty, &format!("{path}.map.{k}"), errors);
                }
                checked.insert(k.clone(), v.clone());
            }
            let unmapped = match (
                c.unmapped.as_deref().unwrap_or("error"),
                &c.unmapped_default,
            ) {
                ("error", None) => Unmapped::Error,
                ("null", None) => Unmapped::Null,
                ("keep", None) => Unmapped::Keep,
                ("default", Some(v)) => {
                    if c.scale.is_none() {
                        let _ = convert_const(v, ty, &format!("{path}.unmapped_default"), errors);
                    }
                    Unmapped::Value(v.clone())
                }
                ("default", None) => {
                    errors.push(format!(
                        "{path}.unmapped: \"default\" needs \"unmapped_default\": the value stored for a value not in the map"
                    ));
                    Unmapped::Error
                }
                ("error" | "null" | "keep", Some(_)) => {
                    errors.push(format!(
                        "{path}.unmapped_default: used only with \"unmapped\": \"default\""
                    ));
                    Unmapped::Error
                }
                (other, _) => {
                    errors.push(format!(
                        "{path}.unmapped: unknown value {other:?}; expected one of error, null, keep, default"
                    ));
                    Unmapped::Error
                }
            };
            Some(ValueMap {
                entries: checked,
                unmapped,
            })
        }
    };
    if let Some(s) = c.scale {
        if ty != Type::Float {
            errors.push(format!(
                "{path}.scale: a scaled value is a float; set \"type\": \"float\" (found {:?})",
                ty.name()
            ));
        }
        if !s.is_finite() {
            errors.push(format!("{path}.scale: must be a finite number"));
        }
    }
    let source = if p.tokens.is_empty() && !in_for_each && ty == Type::Json && map.is_none() {
        Source::WholePayload
    } else {
        Source::Pointer(p)
    };
    (errors.len() == before)
        .then(|| column(source, ty, missing.unwrap_or(Missing::Error), map, c.scale))
}

/// The `missing` rule of a pointer or setting column, with its default converted.
fn missing_value(
    c: &ColumnSpec,
    ty: Option<Type>,
    path: &str,
    errors: &mut Vec<String>,
) -> Option<Missing> {
    match (c.missing.as_deref().unwrap_or("error"), &c.default) {
        ("error", None) => Some(Missing::Error),
        ("null", None) => Some(Missing::Value(Value::Null)),
        ("default", Some(v)) => {
            let ty = ty.unwrap_or_else(|| infer_type(v));
            let v = if c.scale.is_some() {
                // A default is stored as given, not scaled.
                v.as_f64().map(Value::Float).ok_or_else(|| {
                    errors.push(format!(
                        "{path}.default: a scaled column's default must be a number"
                    ))
                })
            } else {
                convert_const(v, ty, &format!("{path}.default"), errors).ok_or(())
            };
            v.ok().map(Missing::Value)
        }
        ("default", None) => {
            errors.push(format!(
                "{path}.missing: \"default\" needs \"default\": the value stored when the source is missing"
            ));
            None
        }
        ("error" | "null", Some(_)) => {
            errors.push(format!(
                "{path}.default: used only with \"missing\": \"default\""
            ));
            None
        }
        (other, _) => {
            errors.push(format!(
                "{path}.missing: unknown value {other:?}; expected one of error, null, default"
            ));
            None
        }
    }
}

/// The type a constant has when the mapping gives none.
pub fn infer_type(v: &serde_json::Value) -> Type {
    match v {
        serde_json::Value::String(_) => Type::Text,
        serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => Type::Integer,
        serde_json::Value::Number(_) => Type::Float,
        serde_json::Value::Bool(_) => Type::Boolean,
        // null is NULL whatever the type; arrays and objects are JSON.
        _ => Type::Json,
    }
}

fn convert_const(
    v: &serde_json::Value,
    ty: Type,
    path: &str,
    errors: &mut Vec<String>,
) -> Option<Value> {
    if v.is_null() {
        return Some(Value::Null);
    }
    convert(v, ty)
        .map_err(|e| errors.push(format!("{path}: {e}")))
        .ok()
}

/// A JSON value as a column value of type `ty`; as strict as serde is for the same
/// Rust types (a text column refuses a number, an integer column refuses 2.5).
pub fn convert(v: &serde_json::Value, ty: Type) -> Result<Value, String> {
    use serde_json::Value as J;
    match (ty, v) {
        (Type::Text, J::String(s)) => Ok(Value::from(s.as_str())),
        (Type::Integer, J::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Value::Int(i))
            } else if let Some(u) = n.as_u64() {
                Ok(Value::UInt(u))
            } else {
                Err(format!("expected an integer, found {n}"))
            }
        }
        (Type::Float, J::Number(n)) => n
            .as_f64()
            .map(Value::Float)
            .ok_or_else(|| format!("expected a float, found {n}")),
        (Type::Boolean, J::Bool(b)) => Ok(Value::Int(i64::from(*b))),
        (Type::Json, v) => Ok(Value::Json(v.to_string().into())),
        (ty, v) => Err(format!(
            "expected {}, found {}",
            match ty {
                Type::Text => "text (a JSON string)",
                Type::Integer => "an integer",
                Type::Float => "a number",
                Type::Boolean => "true or false",
                Type::Json => unreachable!("json takes any value"),
            },
            describe(v)
        )),
    }
}

/// A short description of a JSON value for an error message.
pub fn describe(v: &serde_json::Value) -> String {
    use serde_json::Value as J;
    let text = v.to_string();
    let short: String = text.chars().take(40).collect();
    let ell = if short.len() < text.len() { "…" } else { "" };
    match v {
        J::Null => "null".into(),
        J::Bool(_) => format!("boolean {short}"),
        J::Number(_) => format!("number {short}"),
        J::String(_) => format!("text {short}{ell}"),
        J::Array(_) => format!("an array {short}{ell}"),
        J::Object(_) => format!("an object {short}{ell}"),
    }
}
