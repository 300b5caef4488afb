//! A checked mapping applied to one message: the rows it becomes.

use mes_plugin_api::{Db, Error, Message, Value};
use serde_json::Value as J;

use crate::compile::{
    convert, describe, Column, Envelope, Mapping, Missing, Row, Source, Type, Unmapped, ValueMap,
    Write,
};
use crate::sparse::Part;

impl Mapping {
    /// Writes the message's rows. Every row is worked out before the first is written,
    /// so a message either writes all of its rows or, with an error naming the mapping,
    /// the JSON path in it and the payload pointer, none.
    pub fn apply(&self, msg: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error> {
        let rows = self
            .rows_for(msg)
            .map_err(|e| Error::new(format!("{}: {e}", self.origin)))?;
        for (row, values) in rows {
            // Column names live in the mapping; Db wants them as &str. Up to 32
            // columns go on the stack, since this runs for every message.
            let mut stack = [""; 32];
            let heap: Vec<&str>;
            let cols: &[&str] = if row.names.len() <= stack.len() {
                for (slot, n) in stack.iter_mut().zip(&row.names) {
                    *slot = n;
                }
                &stack[..row.names.len()]
            } else {
                heap = row.names.iter().map(String::as_str).collect();
                &heap
            };
            let written = match row.write {
                Write::Insert => db.insert(&row.table, cols, values),
                Write::Upsert => db.upsert(&row.table, cols, values),
                Write::UpsertNewest => {
                    let order: Vec<&str> = row.order_by.iter().map(String::as_str).collect();
                    db.upsert_newest(&row.table, cols, values, &order)
                }
            };
            written.map_err(|e| {
                Error::new(format!(
                    "{}: {} ({} {}): {}",
                    self.origin,
                    row.path,
                    row.write.name(),
                    row.table,
                    e.message()
                ))
            })?;
        }
        Ok(())
    }

    /// The rows `msg` becomes, in order, as (row, values); `Err` says what is wrong,
    /// starting with the JSON path in the mapping.
    pub fn rows_for<'m>(&'m self, msg: &Message<'_>) -> Result<Vec<(&'m Row, Vec<Value>)>, String> {
        let parsed: Part;
        let payload = if self.needs_payload {
            parsed = self
                .needed
                .parse(msg.payload())
                .map_err(|e| format!("the payload is not JSON: {e}"))?;
            Some(&parsed)
        } else {
            None
        };
        for req in &self.require {
            match payload
                .and_then(|p| req.route.find(p))
                .filter(|v| !v.is_null())
            {
                None => {
                    return Err(format!(
                        "{}: {} is missing from the payload",
                        req.path, req.pointer.text
                    ))
                }
                Some(v) => {
                    convert(v, req.ty).map_err(|e| format!("{}: {e}", req.path))?;
                }
            }
        }
        let mut out = Vec::with_capacity(self.rows.len());
        for row in &self.rows {
            let Some(each) = &row.for_each else {
                let scope = payload.map(Scope::Payload);
                out.push((row, values(row, msg, scope, None)?));
                continue;
            };
            let found = payload
                .and_then(|p| each.route.find(p))
                .filter(|v| !v.is_null());
            match found {
                None if each.error_if_missing => {
                    return Err(format!(
                        "{}.for_each: {} is missing from the payload",
                        row.path, each.pointer.text
                    ))
                }
                None => {}
                Some(J::Array(items)) => {
                    for (i, item) in items.iter().enumerate() {
                        let at = (each.pointer.text.as_str(), i);
                        let scope = Some(Scope::Element(item));
                        out.push((row, values(row, msg, scope, Some(at))?));
                    }
                }
                Some(other) => {
                    return Err(format!(
                        "{}.for_each: {} is {}, not an array",
                        row.path,
                        each.pointer.text,
                        describe(other)
                    ))
                }
            }
        }
        Ok(out)
    }
}

/// What a row's pointers are relative to.
#[derive(Clone, Copy)]
enum Scope<'p> {
    /// The payload, as parsed for the mapping: pointers follow their routes.
    Payload(&'p Part),
    /// An element of a `for_each` array.
    Element(&'p J),
}

/// One row's values. `scope` is the payload, or the element of a `for_each` row, whose
/// pointer and index `element` gives for errors.
fn values(
    row: &Row,
    msg: &Message<'_>,
    scope: Option<Scope<'_>>,
    element: Option<(&str, usize)>,
) -> Result<Vec<Value>, String> {
    row.columns
        .iter()
        .map(|c| value(c, msg, scope, element))
        .collect()
}

fn value(
    c: &Column,
    msg: &Message<'_>,
    scope: Option<Scope<'_>>,
    element: Option<(&str, usize)>,
) -> Result<Value, String> {
    let p = match &c.source {
        Source::Envelope(e) => {
            return Ok(match e {
                Envelope::CncId => msg.cnc_id().into(),
                Envelope::PartProgram => msg.part_program().into(),
                Envelope::Timestamp => msg.timestamp().into(),
                Envelope::Topic => msg.topic().into(),
            })
        }
        Source::Const(v) => return Ok(v.clone()),
        // The text as received, not re-serialized: rows identical to a compiled
        // plugin's `Value::json_text(msg.payload())`.
        Source::WholePayload => return Ok(Value::json_text(msg.payload())),
        Source::Pointer(p) => p,
    };
    // Where in the payload, for errors: "/alarms/1/code".
    let at = || match element {
        Some((array, i)) => format!("{array}/{i}{}", p.text),
        None if p.text.is_empty() => "the payload".to_string(),
        None => p.text.clone(),
    };
    let found = scope.and_then(|s| match s {
        Scope::Payload(part) => c.route.find(part),
        Scope::Element(e) => p.find(e),
    });
    let Some(raw) = found.filter(|v| !v.is_null()) else {
        return match &c.missing {
            Missing::Error => Err(format!("{}: {} is missing from the payload", c.path, at())),
            Missing::Value(v) => Ok(v.clone()),
        };
    };
    let mut keep_as_text = false;
    let v = match &c.map {
        None => raw,
        Some(m) => match lookup(m, raw) {
            Some(mapped) => mapped,
            None => match &m.unmapped {
                Unmapped::Error => {
                    return Err(format!(
                        "{}: {} is {}, which the map does not list; add it to map, or set unmapped",
                        c.path,
                        at(),
                        describe(raw)
                    ))
                }
                Unmapped::Null => return Ok(Value::Null),
                Unmapped::Keep => {
                    keep_as_text = true;
                    raw
                }
                Unmapped::Value(v) => v,
            },
        },
    };
    if let Some(scale) = c.scale {
        return match v.as_f64() {
            Some(f) => Ok(Value::Float(f * scale)),
            None => Err(format!(
                "{}: {}: expected a number to scale, found {}",
                c.path,
                at(),
                describe(v)
            )),
        };
    }
    // An unmapped status code kept in a text column is stored as its digits.
    if keep_as_text && c.ty == Type::Text {
        if let J::Number(n) = v {
            return Ok(Value::from(n.to_string()));
        }
    }
    convert(v, c.ty).map_err(|e| format!("{}: {}: {e}", c.path, at()))
}

/// A value map's keys are text: a string is its own key, a number or boolean its JSON
/// text ("0", "2.5", "true").
fn lookup<'m>(m: &'m ValueMap, v: &J) -> Option<&'m J> {
    match v {
        J::String(s) => m.entries.get(s.as_str()),
        J::Number(n) => m.entries.get(&n.to_string()),
        J::Bool(b) => m.entries.get(if *b { "true" } else { "false" }),
        _ => None,
    }
}
