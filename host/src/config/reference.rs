//! The configuration reference, `docs/configuration.md`, checked against the code both
//! ways: every key the page documents is accepted, with the default the page gives (or
//! required where the page says so), and every key the code accepts is documented.
//!
//! The code's side comes from the code itself: a file with only the required keys is
//! deserialized and serialized back, which yields every key with its default. A key
//! that is unset by default (`None`) is tried once more as `{}`: if that makes an
//! object with keys (a section such as `broker.tls`), its keys are walked too.

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::{Map, Value};

use super::{ClassMapping, CollectorConfig, DbConfig};

const DOC: &str = include_str!("../../../docs/configuration.md");
const DOC_PATH: &str = "docs/configuration.md";

/// What a table row says of a key's default, or what the code does without it.
#[derive(Debug, Clone, PartialEq)]
enum KeyDefault {
    Required,
    /// "none": unset unless given.
    Unset,
    Value(Value),
}

impl std::fmt::Display for KeyDefault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyDefault::Required => f.write_str("(required)"),
            KeyDefault::Unset => f.write_str("none"),
            KeyDefault::Value(v) => write!(f, "`{v}`"),
        }
    }
}

impl KeyDefault {
    fn matches(&self, code: &KeyDefault) -> bool {
        match (self, code) {
            // The code leaves a key unset as None, or as an empty string or list.
            (KeyDefault::Unset, KeyDefault::Value(v)) => {
                v.is_null() || v == &Value::from("") || v == &Value::Array(vec![])
            }
            (doc, code) => doc == code,
        }
    }
}

/// The files the page documents, each with the `## ` heading naming it.
const FILES: [&str; 3] = ["collector.json", "db_config.json", "cnc_classes.json"];

/// file → key → default, from every `| key | default | meaning |` table of the page.
fn documented(doc: &str) -> Result<BTreeMap<&'static str, BTreeMap<String, KeyDefault>>, String> {
    let mut files: BTreeMap<&'static str, BTreeMap<String, KeyDefault>> = BTreeMap::new();
    let mut file = None;
    let mut in_table = false;
    for (n, line) in doc.lines().enumerate() {
        let at = || format!("{DOC_PATH}:{}", n + 1);
        if let Some(heading) = line.strip_prefix("## ") {
            file = FILES.iter().copied().find(|f| heading.contains(f));
            in_table = false;
            continue;
        }
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.first() == Some(&"key") {
            in_table = cells.get(1) == Some(&"default");
            if in_table && file.is_none() {
                return Err(format!(
                    "{}: a key table outside the sections of {FILES:?}",
                    at()
                ));
            }
            continue;
        }
        let Some(file) = file.filter(|_| in_table) else {
            continue;
        };
        if cells[0].starts_with("---") {
            continue;
        }
        let key = cells[0]
            .strip_prefix('`')
            .and_then(|k| k.strip_suffix('`'))
            .filter(|k| !k.contains('`'))
            .ok_or_else(|| format!("{}: the key cell {:?} is not one `key`", at(), cells[0]))?;
        let default = parse_default(cells.get(1).copied().unwrap_or(""))
            .map_err(|e| format!("{}: `{key}`: {e}", at()))?;
        if files
            .entry(file)
            .or_default()
            .insert(key.to_string(), default)
            .is_some()
        {
            return Err(format!("{}: `{key}` is documented twice in {file}", at()));
        }
    }
    Ok(files)
}

/// `(required)`, `none ...`, or a value in backticks: JSON if it parses, else text.
fn parse_default(cell: &str) -> Result<KeyDefault, String> {
    if cell.starts_with("(required)") {
        return Ok(KeyDefault::Required);
    }
    if cell.starts_with("none") {
        return Ok(KeyDefault::Unset);
    }
    let text = cell
        .strip_prefix('`')
        .and_then(|c| c.split_once('`'))
        .map(|(v, _)| v)
        .ok_or_else(|| {
            format!("default {cell:?} is neither (required), none, nor a `value` in backticks")
        })?;
    Ok(KeyDefault::Value(
        serde_json::from_str(text).unwrap_or_else(|_| Value::from(text)),
    ))
}

/// key → default, as the code has them, for a file whose required keys are `required`.
fn in_code<T: DeserializeOwned + Serialize>(
    file: &str,
    required: &[&str],
) -> Result<BTreeMap<String, KeyDefault>, Vec<String>> {
    // Every required key of the configuration is text today; a required key of another
    // type makes the parse below fail with serde's "invalid type", naming the key.
    let mut minimal = Value::Object(Map::new());
    for key in required {
        set(&mut minimal, key, Value::from("x"));
    }
    let parsed: T = serde_json::from_value(minimal.clone()).map_err(|e| {
        vec![format!(
            "{file}: the code does not accept a file with only the keys {DOC_PATH} marks (required), {required:?}: {e} \
             (a key the code requires must be marked (required); a documented key must exist)"
        )]
    })?;
    let mut errors = Vec::new();
    let mut keys = BTreeMap::new();
    let serialized = serde_json::to_value(&parsed).expect("config serializes");
    walk::<T>(&minimal, &serialized, "", &mut keys);
    for key in required {
        // Required in the code means: leaving it out is refused as missing.
        let mut without = minimal.clone();
        remove(&mut without, key);
        match serde_json::from_value::<T>(without) {
            Err(e) if e.to_string().contains("missing field") => {
                keys.insert(key.to_string(), KeyDefault::Required);
            }
            Err(e) => errors.push(format!("{file}: `{key}` left out: {e}")),
            Ok(t) => {
                let v = serde_json::to_value(&t).expect("config serializes");
                errors.push(format!(
                    "{file}: {DOC_PATH} says `{key}` is (required), but the code has the default {}",
                    get(&v, key).cloned().unwrap_or(Value::Null)
                ));
            }
        }
    }
    if errors.is_empty() {
        Ok(keys)
    } else {
        Err(errors)
    }
}

/// Records the leaf keys of `node` (the serialized value at `prefix`) with their values.
fn walk<T: DeserializeOwned + Serialize>(
    input: &Value,
    node: &Value,
    prefix: &str,
    keys: &mut BTreeMap<String, KeyDefault>,
) {
    let Some(fields) = node.as_object() else {
        return;
    };
    for (name, value) in fields {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match value {
            Value::Object(m) if !m.is_empty() => walk::<T>(input, value, &path, keys),
            Value::Null => {
                keys.insert(path.clone(), KeyDefault::Value(Value::Null));
                // An optional section: given as `{}`, does it have keys of its own?
                let mut probe = input.clone();
                set(&mut probe, &path, Value::Object(Map::new()));
                if let Ok(t) = serde_json::from_value::<T>(probe.clone()) {
                    let v = serde_json::to_value(&t).expect("config serializes");
                    if let Some(section) = get(&v, &path).filter(|s| s.is_object()) {
                        walk::<T>(&probe, section, &path, keys);
                    }
                }
            }
            _ => {
                keys.insert(path, KeyDefault::Value(value.clone()));
            }
        }
    }
}

fn get<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn set(v: &mut Value, path: &str, value: Value) {
    let mut node = v;
    let mut parts = path.split('.').peekable();
    while let Some(k) = parts.next() {
        let obj = node.as_object_mut().expect("an object on the way");
        if parts.peek().is_none() {
            obj.insert(k.to_string(), value);
            return;
        }
        node = obj
            .entry(k.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
}

fn remove(v: &mut Value, path: &str) {
    let (parent, last) = match path.rsplit_once('.') {
        Some((p, l)) => (get_mut(v, p), l),
        None => (Some(v), path),
    };
    if let Some(Value::Object(m)) = parent {
        m.remove(last);
    }
}

fn get_mut<'a>(v: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    path.split('.').try_fold(v, |v, k| v.get_mut(k))
}

/// Every difference between the page `doc` and the code, as a sentence each.
fn differences(doc: &str) -> Vec<String> {
    let documented = match documented(doc) {
        Ok(d) => d,
        Err(e) => return vec![e],
    };
    let mut out = Vec::new();
    for file in FILES {
        let empty = BTreeMap::new();
        let doc_keys = documented.get(file).unwrap_or(&empty);
        let required: Vec<&str> = doc_keys
            .iter()
            .filter(|(_, d)| **d == KeyDefault::Required)
            .map(|(k, _)| k.as_str())
            .collect();
        let code = match file {
            "collector.json" => in_code::<CollectorConfig>(file, &required),
            "db_config.json" => in_code::<DbConfig>(file, &required),
            _ => in_code::<ClassMapping>(file, &required),
        };
        let code = match code {
            Ok(c) => c,
            Err(e) => {
                out.extend(e);
                continue;
            }
        };
        for (key, doc_default) in doc_keys {
            match code.get(key) {
                None => out.push(format!(
                    "{file}: {DOC_PATH} documents `{key}`, which the code does not accept"
                )),
                Some(code_default) if !doc_default.matches(code_default) => out.push(format!(
                    "{file}: `{key}`: {DOC_PATH} gives the default {doc_default}, the code {code_default}"
                )),
                Some(_) => {}
            }
        }
        for (key, code_default) in &code {
            if !doc_keys.contains_key(key) {
                out.push(format!(
                    "{file}: the code accepts `{key}` (default {code_default}), which {DOC_PATH} does not document"
                ));
            }
        }
    }
    out
}

#[test]
fn the_configuration_reference_matches_the_code() {
    let diffs = differences(DOC);
    assert!(
        diffs.is_empty(),
        "{DOC_PATH} and the configuration structs differ; fix the page (or the code):\n{}",
        diffs.join("\n")
    );
}

/// The check itself: each kind of drift is reported, naming the key.
#[test]
fn drift_between_the_page_and_the_code_is_reported() {
    let cases = [
        (
            "| `batch.max_messages` | `500` |",
            "| `batch.max_messages` | `501` |",
            "`batch.max_messages`: docs/configuration.md gives the default `501`, the code `500`",
        ),
        (
            "| `broker.tls.verify_hostname` | `true` |",
            "| `broker.tls.verify_hostname` | `false` |",
            "`broker.tls.verify_hostname`",
        ),
        (
            "| `spool.fsync` | `never` |",
            "| `spool.fsync` | `always` |",
            "`spool.fsync`",
        ),
        (
            "| `broker.topic` | `sensor/CNC` |",
            "| `broker.topic` | (required) |",
            "says `broker.topic` is (required), but the code has the default \"sensor/CNC\"",
        ),
        (
            "| `plugins_dir` | (required) |",
            "| `plugins_dir` | none |",
            "missing field `plugins_dir`",
        ),
        (
            "| `port` | `3306` |",
            "| `prot` | `3306` |",
            "db_config.json: docs/configuration.md documents `prot`",
        ),
        (
            "| `tls.key_file` | none |",
            "| `tls.keyfile` | none |",
            "db_config.json: the code accepts `tls.key_file`",
        ),
        (
            "| `settings` | none |",
            "| `settings` | `{}` |",
            "cnc_classes.json: `settings`",
        ),
    ];
    for (row, changed, want) in cases {
        assert!(DOC.contains(row), "{row} not in {DOC_PATH}");
        let diffs = differences(&DOC.replacen(row, changed, 1));
        assert!(
            diffs.iter().any(|d| d.contains(want)),
            "changing {row} to {changed} was not reported as {want:?}; got {diffs:#?}"
        );
    }
    // A key missing from the page, the other way round.
    let without: String = DOC
        .lines()
        .filter(|l| !l.starts_with("| `limits.max_json_depth`"))
        .map(|l| format!("{l}\n"))
        .collect();
    let diffs = differences(&without);
    assert!(
        diffs
            .iter()
            .any(|d| d.contains("the code accepts `limits.max_json_depth` (default `32`)")),
        "{diffs:#?}"
    );
}

/// Every environment variable the collector's code reads (a `"MES_..."` literal, or
/// `RUST_LOG`) has a row in the page's Environment table.
#[test]
fn every_environment_variable_the_code_reads_is_documented() {
    let section = &DOC[DOC
        .find("\n## Environment\n")
        .expect("an Environment section")..];
    let documented: Vec<&str> = section
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .collect();
    let mut read = std::collections::BTreeSet::new();
    let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with(file!()) {
                let text = std::fs::read_to_string(&path).unwrap();
                for (i, _) in text
                    .match_indices("\"MES_")
                    .chain(text.match_indices("\"RUST_LOG\""))
                {
                    let name = text[i + 1..].split('"').next().unwrap();
                    read.insert((name.to_string(), path.clone()));
                }
            }
        }
    }
    assert!(
        read.iter().any(|(n, _)| n == "MES_DB_PASSWORD"),
        "the scan found nothing: {read:?}"
    );
    let missing: Vec<String> = read
        .iter()
        .filter(|(n, _)| !documented.contains(&n.as_str()))
        .map(|(n, p)| format!("{n} (read in {})", p.display()))
        .collect();
    assert!(
        missing.is_empty(),
        "{DOC_PATH} has no row for these environment variables: {missing:?}"
    );
}
