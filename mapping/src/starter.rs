//! `mes-collector new-mapping`: a starter mapping from recorded payloads.
//!
//! It proposes what a plant engineer would write first: the `cnc_data` row every MES
//! page reads, a table of the payload's scalar leaves (nested objects flattened into
//! `outer_inner` columns) with types inferred from the recorded values, and one child
//! table per array of objects, one row per element. The engineer then edits types,
//! missing rules and value maps; the CREATE TABLE statements match the mapping as
//! generated.

use serde_json::Value as J;

use crate::{
    compile::Type,
    spec::{ColumnSpec, Columns, MappingSpec, RowSpec},
};

/// Columns every generated table starts with, and their SQL.
const KEY_COLUMNS: [(&str, &str); 3] = [
    ("cnc_id", "VARCHAR(64) NOT NULL"),
    ("part_program", "VARCHAR(255) NOT NULL"),
    ("timestamp", "BIGINT NOT NULL"),
];
/// Names a payload leaf cannot take, since the generated tables use them.
const RESERVED: [&str; 5] = ["id", "cnc_id", "part_program", "timestamp", "stored_at"];

/// A table the starter mapping writes that `database.sql` does not create.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTable {
    pub name: String,
    pub create: String,
}

/// The starter mapping: its text (the file to write) and the tables to create.
#[derive(Debug, Clone)]
pub struct Starter {
    pub spec: MappingSpec,
    pub text: String,
    pub tables: Vec<NewTable>,
}

/// One leaf (or array of objects) seen in the payloads.
#[derive(Debug, Clone)]
struct Leaf {
    pointer: String,
    /// Path tokens, for the column name.
    tokens: Vec<String>,
    ty: Option<Type>,
    /// In how many of the objects it could appear in it was there (and not null).
    seen: usize,
    /// Seen as an empty array: JSON, unless it is an array of objects elsewhere.
    empty_array: bool,
}

/// What the objects of one level hold: scalar leaves and arrays of objects.
#[derive(Debug, Default)]
struct Shape {
    leaves: Vec<Leaf>,
    arrays: Vec<(Leaf, Shape)>,
    /// How many objects were merged into this shape.
    objects: usize,
}

impl Shape {
    fn add(&mut self, obj: &serde_json::Map<String, J>) {
        self.objects += 1;
        self.walk(obj, &[]);
    }

    fn walk(&mut self, obj: &serde_json::Map<String, J>, prefix: &[String]) {
        for (k, v) in obj {
            let mut tokens = prefix.to_vec();
            tokens.push(k.clone());
            match v {
                J::Object(inner) => self.walk(inner, &tokens),
                J::Array(items) if !items.is_empty() && items.iter().all(J::is_object) => {
                    let pointer = pointer_of(&tokens);
                    let at = match self.arrays.iter().position(|(l, _)| l.pointer == pointer) {
                        Some(i) => i,
                        None => {
                            self.arrays.push((
                                Leaf {
                                    pointer,
                                    tokens,
                                    ty: None,
                                    seen: 0,
                                    empty_array: false,
                                },
                                Shape::default(),
                            ));
                            self.arrays.len() - 1
                        }
                    };
                    let (leaf, shape) = &mut self.arrays[at];
                    leaf.seen += 1;
                    for item in items {
                        shape.add(item.as_object().expect("checked: all objects"));
                    }
                }
                _ => {
                    let pointer = pointer_of(&tokens);
                    let ty = match v {
                        J::Null => None,
                        J::Bool(_) => Some(Type::Boolean),
                        J::Number(n) if n.is_i64() || n.is_u64() => Some(Type::Integer),
                        J::Number(_) => Some(Type::Float),
                        J::String(_) => Some(Type::Text),
                        // An empty array says nothing of its elements (see `settle`).
                        J::Array(items) if items.is_empty() => None,
                        // Arrays of scalars, mixed arrays: kept as JSON.
                        _ => Some(Type::Json),
                    };
                    let leaf = match self.leaves.iter_mut().find(|l| l.pointer == pointer) {
                        Some(l) => l,
                        None => {
                            self.leaves.push(Leaf {
                                pointer,
                                tokens,
                                ty: None,
                                seen: 0,
                                empty_array: false,
                            });
                            self.leaves.last_mut().expect("pushed")
                        }
                    };
                    if matches!(v, J::Array(items) if items.is_empty()) {
                        leaf.empty_array = true;
                        leaf.seen += 1;
                    }
                    if let Some(t) = ty {
                        leaf.seen += 1;
                        leaf.ty = Some(match (leaf.ty, t) {
                            (None, t) => t,
                            (Some(a), b) if a == b => a,
                            (Some(Type::Integer), Type::Float)
                            | (Some(Type::Float), Type::Integer) => Type::Float,
                            _ => Type::Json,
                        });
                    }
                }
            }
        }
    }
}

impl Shape {
    /// An array empty in some messages and holding objects in others is an array of
    /// objects (no element rows for the empty ones), not also a JSON value; one only
    /// ever empty is JSON.
    fn settle(&mut self) {
        for (array, elements) in &mut self.arrays {
            if let Some(i) = self.leaves.iter().position(|l| l.pointer == array.pointer) {
                array.seen += self.leaves.remove(i).seen;
            }
            elements.settle();
        }
        for leaf in &mut self.leaves {
            if leaf.ty.is_none() && leaf.empty_array {
                leaf.ty = Some(Type::Json);
            }
        }
    }
}

/// RFC 6901: '~' → "~0", '/' → "~1".
fn pointer_of(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// A payload path as a column (or table) name: lowercase ASCII letters, digits and
/// '_', not starting with a digit, at most `max` characters.
pub fn identifier(parts: &[String], max: usize) -> String {
    let mut out = String::new();
    for part in parts {
        if !out.is_empty() {
            out.push('_');
        }
        out.push_str(&snake(part));
    }
    let mut clean = String::with_capacity(out.len());
    for c in out.chars() {
        let c = if c.is_ascii_alphanumeric() {
            c.to_ascii_lowercase()
        } else {
            '_'
        };
        if !(c == '_' && (clean.is_empty() || clean.ends_with('_'))) {
            clean.push(c);
        }
    }
    let mut clean = clean.trim_end_matches('_').to_string();
    if clean.is_empty() {
        clean = "value".into();
    }
    if clean.as_bytes()[0].is_ascii_digit() {
        clean.insert_str(0, "v_");
    }
    clean.truncate(max);
    clean.trim_end_matches('_').to_string()
}

/// CamelCase → snake_case ("CNCTypeC" → "cnc_type_c", "spindleLoad" → "spindle_load").
/// A name that already has separators is only lowercased: in "temp_mC" or "force_kN"
/// the capital is a unit, not a word.
fn snake(s: &str) -> String {
    if s.contains(['_', '-', ' ', '.']) {
        return s.to_ascii_lowercase();
    }
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev = chars[i - 1];
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_lower)
            {
                out.push('_');
            }
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Names unique within a table (MySQL compares them without case), clear of the
/// reserved ones.
fn unique_name(base: String, taken: &mut Vec<String>) -> String {
    let base = if RESERVED.contains(&base.as_str()) {
        format!("payload_{base}")
    } else {
        base
    };
    let mut name = base.clone();
    let mut n = 2;
    while taken.iter().any(|t| t.eq_ignore_ascii_case(&name)) {
        let suffix = format!("_{n}");
        let mut b = base.clone();
        b.truncate(64 - suffix.len());
        name = format!("{b}{suffix}");
        n += 1;
    }
    taken.push(name.clone());
    name
}

fn envelope(field: &str) -> ColumnSpec {
    ColumnSpec {
        envelope: Some(field.into()),
        ..ColumnSpec::default()
    }
}

/// The columns of a table of leaves, after its key columns; with their SQL types.
fn leaf_columns(
    leaves: &[Leaf],
    objects: usize,
    columns: &mut Vec<(String, ColumnSpec)>,
    sql: &mut Vec<String>,
) {
    let mut taken: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
    for leaf in leaves {
        let name = unique_name(identifier(&leaf.tokens, 64), &mut taken);
        // Never seen with a value: text until someone knows better.
        let ty = leaf.ty.unwrap_or(Type::Text);
        columns.push((
            name.clone(),
            ColumnSpec {
                pointer: Some(leaf.pointer.clone()),
                ty: Some(ty.name().into()),
                // A leaf in every recorded message is required: a message without it
                // becomes a dead letter, which shows when the controller changes.
                missing: (leaf.seen < objects).then(|| "null".into()),
                ..ColumnSpec::default()
            },
        ));
        sql.push(format!("    `{name}` {} NULL", ty.sql()));
    }
}

fn create_table(name: &str, columns: &[String]) -> String {
    let mut key = format!("{name}_cnc_time");
    key.truncate(64);
    format!(
        "CREATE TABLE IF NOT EXISTS `{name}` (\n    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,\n{},\n    stored_at DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3),\n    KEY `{key}` (cnc_id, timestamp)\n) ENGINE=InnoDB;",
        columns.join(",\n")
    )
}

/// The starter mapping for `class` from recorded payloads (each a JSON object).
pub fn starter(class: &str, payloads: &[J]) -> Result<Starter, String> {
    if payloads.is_empty() {
        return Err("no payloads to learn from".into());
    }
    let mut shape = Shape::default();
    for p in payloads {
        let obj = p
            .as_object()
            .ok_or_else(|| "a payload is not a JSON object".to_string())?;
        shape.add(obj);
    }
    shape.settle();
    let prefix = identifier(&[class.to_string()], 40);
    let mut rows = vec![RowSpec {
        table: "cnc_data".into(),
        columns: Columns(vec![
            ("cnc_id".into(), envelope("cnc_id")),
            ("part_program".into(), envelope("part_program")),
            ("timestamp".into(), envelope("timestamp")),
            (
                "json_data".into(),
                ColumnSpec {
                    pointer: Some(String::new()),
                    ty: Some("json".into()),
                    ..ColumnSpec::default()
                },
            ),
        ]),
        ..RowSpec::default()
    }];
    let mut tables = Vec::new();
    let mut table_names: Vec<String> = vec!["cnc_data".into()];
    if !shape.leaves.is_empty() {
        let name = unique_name(format!("{prefix}_values"), &mut table_names);
        let mut columns: Vec<(String, ColumnSpec)> = KEY_COLUMNS
            .iter()
            .map(|(c, _)| (c.to_string(), envelope(c)))
            .collect();
        let mut sql: Vec<String> = KEY_COLUMNS
            .iter()
            .map(|(c, t)| format!("    {c} {t}"))
            .collect();
        leaf_columns(&shape.leaves, shape.objects, &mut columns, &mut sql);
        tables.push(NewTable {
            create: create_table(&name, &sql),
            name: name.clone(),
        });
        rows.push(RowSpec {
            table: name,
            columns: Columns(columns),
            ..RowSpec::default()
        });
    }
    for (array, elements) in &shape.arrays {
        let base = identifier(&array.tokens, 63 - prefix.len());
        let name = unique_name(format!("{prefix}_{base}"), &mut table_names);
        // Element rows: the machine and message they belong to, then the element's
        // leaves (its own arrays are kept as JSON).
        let mut columns: Vec<(String, ColumnSpec)> = vec![
            ("cnc_id".into(), envelope("cnc_id")),
            ("timestamp".into(), envelope("timestamp")),
        ];
        let mut sql = vec![
            format!("    cnc_id {}", KEY_COLUMNS[0].1),
            format!("    timestamp {}", KEY_COLUMNS[2].1),
        ];
        let mut leaves = elements.leaves.clone();
        for (nested, _) in &elements.arrays {
            leaves.push(Leaf {
                ty: Some(Type::Json),
                seen: nested.seen,
                ..nested.clone()
            });
        }
        leaf_columns(&leaves, elements.objects, &mut columns, &mut sql);
        tables.push(NewTable {
            create: create_table(&name, &sql),
            name: name.clone(),
        });
        rows.push(RowSpec {
            table: name,
            for_each: Some(array.pointer.clone()),
            columns: Columns(columns),
            ..RowSpec::default()
        });
    }
    let spec = MappingSpec {
        description: Some(format!(
            "Starter mapping for class {class}, generated by `mes-collector new-mapping` from {} recorded message(s). Check each type and missing rule, add value maps and scales, then `mes-collector check`.",
            payloads.len()
        )),
        require: Columns::default(),
        rows,
    };
    let text = render(&spec);
    Ok(Starter { spec, text, tables })
}

/// The mapping as a file people read: one line per column, in order.
pub fn render(spec: &MappingSpec) -> String {
    let s = |v: &str| serde_json::to_string(v).expect("a string serializes");
    let mut out = String::from("{\n");
    if let Some(d) = &spec.description {
        out.push_str(&format!("  \"description\": {},\n", s(d)));
    }
    if !spec.require.is_empty() {
        let entries: Vec<String> = spec
            .require
            .0
            .iter()
            .map(|(k, v)| format!("{}: {}", s(k), s(v)))
            .collect();
        out.push_str(&format!("  \"require\": {{{}}},\n", entries.join(", ")));
    }
    out.push_str("  \"rows\": [\n");
    for (i, row) in spec.rows.iter().enumerate() {
        out.push_str("    {\n");
        out.push_str(&format!("      \"table\": {},\n", s(&row.table)));
        if let Some(w) = &row.write {
            out.push_str(&format!("      \"write\": {},\n", s(w)));
        }
        if let Some(o) = &row.order_by {
            out.push_str(&format!(
                "      \"order_by\": {},\n",
                serde_json::to_string(o).expect("strings serialize")
            ));
        }
        if let Some(f) = &row.for_each {
            out.push_str(&format!("      \"for_each\": {},\n", s(f)));
        }
        if let Some(f) = &row.for_each_missing {
            out.push_str(&format!("      \"for_each_missing\": {},\n", s(f)));
        }
        out.push_str("      \"columns\": {\n");
        let n = row.columns.0.len();
        for (j, (name, col)) in row.columns.0.iter().enumerate() {
            out.push_str(&format!(
                "        {}: {}{}\n",
                s(name),
                serde_json::to_string(col).expect("a column serializes"),
                if j + 1 < n { "," } else { "" }
            ));
        }
        out.push_str("      }\n");
        out.push_str(if i + 1 < spec.rows.len() {
            "    },\n"
        } else {
            "    }\n"
        });
    }
    out.push_str("  ]\n}\n");
    out
}
