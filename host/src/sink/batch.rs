//! A batch of messages on its way to MySQL: each message's recorded writes, or the
//! dead letter it became. Plugins write into a batch through [`Recorder`]; nothing
//! touches the database until the sink commits the whole batch.

#![allow(non_local_definitions)] // sabi_trait emits its impls inside a const block

use std::{collections::HashMap, sync::Arc};

use abi_stable::std_types::{RResult, RSlice, RStr, RString, RVec};
use mes_plugin_api::{check_row, RawDatabase, Value};

use crate::{dead_letter::DeadLetter, plugins::PluginInfo};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowKind {
    Insert,
    Upsert,
}

/// A (kind, table, columns) combination: rows of one shape share one statement.
#[derive(Debug, Clone)]
pub struct Shape {
    pub kind: RowKind,
    pub table: String,
    pub columns: Vec<String>,
}

/// Shapes seen so far, numbered. Identifiers are checked once, when a shape is first
/// seen; the host keeps the table across batches so statements can be reused.
#[derive(Debug, Default)]
pub struct Shapes {
    list: Vec<Shape>,
    index: HashMap<String, usize>,
}

impl Shapes {
    pub fn get(&self, id: usize) -> &Shape {
        &self.list[id]
    }

    /// The shapes numbered `from` and up, for a mirror in another thread.
    pub fn since(&self, from: usize) -> Vec<Shape> {
        self.list[from..].to_vec()
    }

    /// Appends shapes numbered from the mirror's current length on.
    pub fn extend(&mut self, more: Vec<Shape>) {
        self.list.extend(more);
    }

    fn intern(
        &mut self,
        kind: RowKind,
        table: &str,
        columns: &[RStr<'_>],
    ) -> Result<usize, String> {
        let mut key = String::with_capacity(64);
        key.push(if kind == RowKind::Insert { 'i' } else { 'u' });
        key.push_str(table);
        for c in columns {
            key.push('\0');
            key.push_str(c.as_str());
        }
        if let Some(&id) = self.index.get(&key) {
            return Ok(id);
        }
        let cols: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
        check_row(table, &cols, cols.len())?;
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = cols.iter().find(|c| !seen.insert(c.to_ascii_lowercase())) {
            return Err(format!(
                "column `{dup}` appears twice in a row for table `{table}`"
            ));
        }
        self.list.push(Shape {
            kind,
            table: table.to_string(),
            columns: cols.into_iter().map(String::from).collect(),
        });
        self.index.insert(key, self.list.len() - 1);
        Ok(self.list.len() - 1)
    }
}

#[derive(Debug)]
pub enum Op {
    Row { shape: usize, values: Vec<Value> },
    Exec { sql: String, params: Vec<Value> },
}

/// One message of the batch.
#[derive(Debug)]
pub struct Entry {
    pub topic: String,
    /// Known once the envelope parsed.
    pub cnc_id: Option<String>,
    /// The plugin that handled it, if any.
    pub plugin: Option<Arc<PluginInfo>>,
    pub raw: Vec<u8>,
    /// Its writes are `ops[first_op..end_op]`.
    pub first_op: usize,
    pub end_op: usize,
    pub dead: Option<DeadLetter>,
}

#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<Entry>,
    pub ops: Vec<Op>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.ops.clear();
    }

    /// Starts a message; its writes follow through [`Batch::recorder`].
    pub fn begin(&mut self, topic: &str) {
        let at = self.ops.len();
        self.entries.push(Entry {
            topic: topic.to_string(),
            cnc_id: None,
            plugin: None,
            raw: Vec::new(),
            first_op: at,
            end_op: at,
            dead: None,
        });
    }

    /// The message being recorded.
    pub fn current(&mut self) -> &mut Entry {
        self.entries.last_mut().expect("no message begun")
    }

    /// Ends the current message: kept if `dead` is `None`, otherwise its writes are
    /// dropped and it becomes a dead letter.
    pub fn end(&mut self, raw: Vec<u8>, dead: Option<DeadLetter>) {
        let entry = self.entries.last_mut().expect("end without begin");
        entry.raw = raw;
        if dead.is_some() {
            self.ops.truncate(entry.first_op);
            entry.end_op = entry.first_op;
            entry.dead = dead;
        } else {
            entry.end_op = self.ops.len();
        }
    }

    pub fn recorder<'a>(&'a mut self, shapes: &'a mut Shapes) -> Recorder<'a> {
        Recorder {
            batch: self,
            shapes,
        }
    }

    pub fn dead_letters(&self) -> impl Iterator<Item = (&Entry, &DeadLetter)> {
        self.entries
            .iter()
            .filter_map(|e| e.dead.as_ref().map(|d| (e, d)))
    }
}

/// The host's side of the plugin's [`Db`](mes_plugin_api::Db): checks each write and
/// appends it to the batch.
pub struct Recorder<'a> {
    batch: &'a mut Batch,
    shapes: &'a mut Shapes,
}

impl Recorder<'_> {
    fn row(
        &mut self,
        kind: RowKind,
        table: RStr<'_>,
        columns: RSlice<'_, RStr<'_>>,
        values: RVec<Value>,
    ) -> RResult<(), RString> {
        if columns.len() != values.len() {
            return RResult::RErr(
                format!(
                    "row for table `{table}` has {} columns but {} values",
                    columns.len(),
                    values.len()
                )
                .into(),
            );
        }
        let shape = match self.shapes.intern(kind, table.as_str(), columns.as_slice()) {
            Ok(id) => id,
            Err(e) => return RResult::RErr(e.into()),
        };
        if let Err(e) = check_values(&values) {
            let column = &self.shapes.get(shape).columns[e];
            return RResult::RErr(
                format!("column `{column}` of table `{table}`: NaN and infinity cannot be stored")
                    .into(),
            );
        }
        self.batch.ops.push(Op::Row {
            shape,
            values: values.into_vec(),
        });
        RResult::ROk(())
    }
}

/// Index of the first value MySQL cannot represent.
fn check_values(values: &[Value]) -> Result<(), usize> {
    match values
        .iter()
        .position(|v| matches!(v, Value::Float(f) if !f.is_finite()))
    {
        Some(i) => Err(i),
        None => Ok(()),
    }
}

impl RawDatabase for Recorder<'_> {
    fn insert(
        &mut self,
        table: RStr<'_>,
        columns: RSlice<'_, RStr<'_>>,
        values: RVec<Value>,
    ) -> RResult<(), RString> {
        self.row(RowKind::Insert, table, columns, values)
    }

    fn upsert(
        &mut self,
        table: RStr<'_>,
        columns: RSlice<'_, RStr<'_>>,
        values: RVec<Value>,
    ) -> RResult<(), RString> {
        self.row(RowKind::Upsert, table, columns, values)
    }

    fn exec(&mut self, sql: RStr<'_>, params: RVec<Value>) -> RResult<(), RString> {
        if let Err(i) = check_values(&params) {
            return RResult::RErr(
                format!("parameter {i}: NaN and infinity cannot be stored").into(),
            );
        }
        self.batch.ops.push(Op::Exec {
            sql: sql.to_string(),
            params: params.into_vec(),
        });
        RResult::ROk(())
    }
}
