//! A batch of messages on its way to MySQL: each message's recorded writes, or the
//! dead letter it became. Plugins write into a batch through [`Recorder`]; nothing
//! touches the database until the sink commits the whole batch.

#![allow(non_local_definitions)] // sabi_trait emits its impls inside a const block

use std::{
    collections::HashMap,
    hash::{Hash, Hasher},
    sync::Arc,
};

use std::cell::Cell;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RSlice, RStr, RString, RVec},
};
use mes_plugin_api::{
    abi::DbServiceV1, check_names, check_order_by, check_params, check_values, RawDatabase,
    RawDatabaseRef, RawDatabase_TO, Value,
};

use crate::{
    dead_letter::DeadLetter,
    fasthash::{FxBuild, FxHasher},
    isolation::wire::WireOp,
    plugins::PluginInfo,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RowKind {
    Insert,
    Upsert,
    /// `Db::upsert_newest`: replaces the existing row only with a newer one.
    UpsertNewest,
}

/// A (kind, table, columns, ordering) combination: rows of one shape share one
/// statement.
#[derive(Debug, Clone)]
pub struct Shape {
    pub kind: RowKind,
    pub table: String,
    pub columns: Vec<String>,
    /// For [`RowKind::UpsertNewest`]: the columns that order rows, as given.
    pub order_by: Vec<String>,
}

/// Shapes seen so far, numbered. Identifiers are checked once, when a shape is first
/// seen; the host keeps the table across batches so statements can be reused.
#[derive(Debug, Default)]
pub struct Shapes {
    list: Vec<Shape>,
    /// Hash of (kind, table, columns) → shapes with that hash.
    index: HashMap<u64, Vec<usize>, FxBuild>,
}

impl Shapes {
    pub fn get(&self, id: usize) -> &Shape {
        &self.list[id]
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
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
        order_by: &[RStr<'_>],
    ) -> Result<usize, String> {
        // Looked up by hash and compared in place: no allocation per row.
        let mut h = FxHasher::default();
        (kind, table).hash(&mut h);
        for c in columns {
            c.as_str().hash(&mut h);
        }
        for c in order_by {
            c.as_str().hash(&mut h);
        }
        let key = h.finish();
        let same_names = |a: &[String], b: &[RStr<'_>]| {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a == b.as_str())
        };
        if let Some(ids) = self.index.get(&key) {
            let same = |s: &Shape| {
                s.kind == kind
                    && s.table == table
                    && same_names(&s.columns, columns)
                    && same_names(&s.order_by, order_by)
            };
            if let Some(&id) = ids.iter().find(|&&id| same(&self.list[id])) {
                return Ok(id);
            }
        }
        // Names are checked once per shape; values with every row.
        check_names(table, columns)?;
        if kind == RowKind::UpsertNewest {
            check_order_by(columns, order_by)?;
        }
        self.list.push(Shape {
            kind,
            table: table.to_string(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            order_by: order_by.iter().map(|c| c.to_string()).collect(),
        });
        self.index.entry(key).or_default().push(self.list.len() - 1);
        Ok(self.list.len() - 1)
    }
}

/// One write a plugin made for a message: a row of a known shape, or a statement
/// through `exec`.
#[derive(Debug)]
pub enum RecordedWrite {
    /// Kept as the plugin's `RVec`: converting to a `Vec` would copy it, since the
    /// plugin's allocation comes with its own vtable.
    Row {
        shape: usize,
        values: RVec<Value>,
    },
    Exec {
        sql: String,
        params: Vec<Value>,
    },
}

/// One message of the batch, with where its writes are and its dead letter, if any.
#[derive(Debug)]
pub struct BatchedMessage {
    pub topic: Arc<str>,
    /// Known once the envelope parsed.
    pub cnc_id: Option<String>,
    /// The plugin that handled it, if any.
    pub plugin: Option<Arc<PluginInfo>>,
    pub raw: Vec<u8>,
    /// Its writes are `writes[first_write..end_write]`.
    pub first_write: usize,
    pub end_write: usize,
    pub dead: Option<DeadLetter>,
    /// Set when the message is a stored dead letter being replayed
    /// (`mes-collector dead-letters replay`).
    pub replay_of: Option<Replayed>,
}

/// The `dead_letters` row a replayed message came from. The sink deletes it in the
/// transaction that stores the message's rows; a message that fails again goes back
/// under the same id with its new reason.
#[derive(Debug, Clone)]
pub struct Replayed {
    pub id: u64,
    /// As stored (`received_at`), kept when the message fails again.
    pub received_at: String,
    /// Replays before this one.
    pub replays: u32,
    /// The row was gone when the sink came to delete it: another replay took it, so
    /// this one writes nothing for the message.
    pub gone: bool,
}

#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<BatchedMessage>,
    pub writes: Vec<RecordedWrite>,
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
        self.writes.clear();
    }

    /// Starts a message; its writes follow through [`Batch::recorder`].
    pub fn begin(&mut self, topic: &str) {
        // Messages mostly share a topic: keep one copy of it per batch.
        let topic: Arc<str> = match self.entries.last() {
            Some(prev) if &*prev.topic == topic => prev.topic.clone(),
            _ => Arc::from(topic),
        };
        let at = self.writes.len();
        self.entries.push(BatchedMessage {
            topic,
            cnc_id: None,
            plugin: None,
            raw: Vec::new(),
            first_write: at,
            end_write: at,
            dead: None,
            replay_of: None,
        });
    }

    /// The message being recorded.
    pub fn current(&mut self) -> &mut BatchedMessage {
        self.entries.last_mut().expect("no message begun")
    }

    /// Ends the current message: kept if `dead` is `None`, otherwise its writes are
    /// dropped and it becomes a dead letter.
    pub fn end(&mut self, raw: Vec<u8>, dead: Option<DeadLetter>) {
        let entry = self.entries.last_mut().expect("end without begin");
        entry.raw = raw;
        if dead.is_some() {
            self.writes.truncate(entry.first_write);
            entry.end_write = entry.first_write;
            entry.dead = dead;
        } else {
            entry.end_write = self.writes.len();
        }
    }

    pub fn recorder<'a>(&'a mut self, shapes: &'a mut Shapes) -> Recorder<'a> {
        Recorder {
            batch: self,
            shapes,
        }
    }

    /// Moves the last message, with its writes, to the end of `to`: the dispatcher
    /// records each message here, and hands it to its writer's batch once its cnc_id
    /// is known.
    pub fn move_last_to(&mut self, to: &mut Batch) {
        let Some(mut entry) = self.entries.pop() else {
            return;
        };
        let at = to.writes.len();
        to.writes.extend(self.writes.drain(entry.first_write..));
        entry.first_write = at;
        entry.end_write = to.writes.len();
        to.entries.push(entry);
    }

    /// Forgets the last message and its writes (one that is committed already).
    pub fn drop_last(&mut self) {
        if let Some(entry) = self.entries.pop() {
            self.writes.truncate(entry.first_write);
        }
    }

    pub fn dead_letters(&self) -> impl Iterator<Item = (&BatchedMessage, &DeadLetter)> {
        self.entries
            .iter()
            .filter(|e| !e.taken_elsewhere())
            .filter_map(|e| e.dead.as_ref().map(|d| (e, d)))
    }
}

impl BatchedMessage {
    /// A replayed dead letter that another replay stored or took first: nothing of it
    /// is written.
    pub fn taken_elsewhere(&self) -> bool {
        self.replay_of.as_ref().is_some_and(|r| r.gone)
    }
}

/// The host's side of the plugin's [`Db`](mes_plugin_api::Db): checks each write and
/// appends it to the batch.
pub struct Recorder<'a> {
    batch: &'a mut Batch,
    shapes: &'a mut Shapes,
}

thread_local! {
    /// The recorder lent to the plugin call in progress on this thread, for the `Db`
    /// methods that arrive as host services (which are handed the handle back).
    static LENT: Cell<*const ()> = const { Cell::new(std::ptr::null()) };
}

/// The recorder, as the handle a plugin's `handle` is given; the `Db` methods added
/// after 1.0 ([`DB_SERVICE`]) reach it while the returned guard lives.
pub fn lend<'r>(recorder: &'r mut Recorder<'_>) -> (RawDatabaseRef<'r>, LentRecorder) {
    let address = recorder as *mut Recorder<'_> as *const ();
    let previous = LENT.with(|l| l.replace(address));
    (
        RawDatabase_TO::from_ptr(recorder, TD_Opaque),
        LentRecorder { previous },
    )
}

pub struct LentRecorder {
    previous: *const (),
}

impl Drop for LentRecorder {
    fn drop(&mut self) {
        LENT.with(|l| l.set(self.previous));
    }
}

/// The `Db` methods added after 1.0 (`mes_plugin_api::abi::DbServiceV1`).
pub static DB_SERVICE: DbServiceV1 = DbServiceV1 {
    upsert_newest: upsert_newest_service,
};

extern "C" fn upsert_newest_service(
    db: &mut RawDatabaseRef<'_>,
    table: RStr<'_>,
    columns: RSlice<'_, RStr<'_>>,
    values: RVec<Value>,
    order_by: RSlice<'_, RStr<'_>>,
) -> RResult<(), RString> {
    let address: *mut () = db.obj.sabi_as_rmut().into_raw();
    if address.is_null() || !std::ptr::eq(LENT.with(Cell::get), address) {
        return RResult::RErr(
            "Db::upsert_newest was called with a handle the host did not lend to this call".into(),
        );
    }
    // SAFETY: the address is that of the recorder lent by `lend` on this thread, whose
    // guard still lives; `db` borrows it uniquely for this call.
    let recorder = unsafe { &mut *(address as *mut Recorder<'_>) };
    recorder.row(
        RowKind::UpsertNewest,
        table,
        columns,
        values,
        order_by.as_slice(),
    )
}

impl Recorder<'_> {
    /// Records a write an isolated plugin made in its runner process, with the same
    /// checks as one made in process: the runner runs code the collector does not
    /// trust, so what it sends is not taken as checked.
    pub fn apply(&mut self, op: WireOp) -> Result<(), String> {
        let done = match op {
            WireOp::Row {
                kind,
                table,
                columns,
                values,
                order_by,
            } => {
                let columns: Vec<RStr<'_>> = columns.iter().map(|c| RStr::from_str(c)).collect();
                let order_by: Vec<RStr<'_>> = order_by.iter().map(|c| RStr::from_str(c)).collect();
                self.row(
                    kind,
                    RStr::from_str(&table),
                    RSlice::from_slice(&columns),
                    RVec::from(values),
                    &order_by,
                )
            }
            WireOp::Exec { sql, params } => self.exec(RStr::from_str(&sql), RVec::from(params)),
        };
        done.into_result().map_err(RString::into_string)
    }

    fn row(
        &mut self,
        kind: RowKind,
        table: RStr<'_>,
        columns: RSlice<'_, RStr<'_>>,
        values: RVec<Value>,
        order_by: &[RStr<'_>],
    ) -> RResult<(), RString> {
        if let Err(e) = check_values(table.as_str(), columns.as_slice(), &values) {
            return RResult::RErr(e.into());
        }
        let shape = match self
            .shapes
            .intern(kind, table.as_str(), columns.as_slice(), order_by)
        {
            Ok(id) => id,
            Err(e) => return RResult::RErr(e.into()),
        };
        self.batch.writes.push(RecordedWrite::Row { shape, values });
        RResult::ROk(())
    }
}

impl RawDatabase for Recorder<'_> {
    fn insert(
        &mut self,
        table: RStr<'_>,
        columns: RSlice<'_, RStr<'_>>,
        values: RVec<Value>,
    ) -> RResult<(), RString> {
        self.row(RowKind::Insert, table, columns, values, &[])
    }

    fn upsert(
        &mut self,
        table: RStr<'_>,
        columns: RSlice<'_, RStr<'_>>,
        values: RVec<Value>,
    ) -> RResult<(), RString> {
        self.row(RowKind::Upsert, table, columns, values, &[])
    }

    fn exec(&mut self, sql: RStr<'_>, params: RVec<Value>) -> RResult<(), RString> {
        if let Err(e) = check_params(&params) {
            return RResult::RErr(e.into());
        }
        self.batch.writes.push(RecordedWrite::Exec {
            sql: sql.to_string(),
            params: params.into_vec(),
        });
        RResult::ROk(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_moves_to_its_writers_batch_with_its_writes() {
        let exec = |sql: &str| RecordedWrite::Exec {
            sql: sql.into(),
            params: Vec::new(),
        };
        let sqls = |b: &Batch, e: &BatchedMessage| -> Vec<String> {
            b.writes[e.first_write..e.end_write]
                .iter()
                .map(|w| match w {
                    RecordedWrite::Exec { sql, .. } => sql.clone(),
                    RecordedWrite::Row { .. } => unreachable!(),
                })
                .collect()
        };
        let (mut staging, mut to) = (Batch::default(), Batch::default());
        to.begin("t");
        to.writes.push(exec("kept"));
        to.end(b"0".to_vec(), None);
        staging.begin("t");
        staging.writes.extend([exec("a1"), exec("a2")]);
        staging.end(b"1".to_vec(), None);
        staging.move_last_to(&mut to);
        assert!(staging.is_empty() && staging.writes.is_empty());
        assert_eq!(to.len(), 2);
        assert_eq!(sqls(&to, &to.entries[0]), ["kept"]);
        assert_eq!(sqls(&to, &to.entries[1]), ["a1", "a2"]);
        assert_eq!(to.entries[1].raw, b"1");
        staging.begin("t");
        staging.writes.push(exec("b"));
        staging.end(b"2".to_vec(), None);
        staging.drop_last();
        assert!(staging.is_empty() && staging.writes.is_empty());
    }

    #[test]
    fn shapes_are_the_same_only_when_kind_table_columns_and_order_agree() {
        let mut shapes = Shapes::default();
        let cols = |names: &[&'static str]| -> Vec<RStr<'static>> {
            names.iter().map(|n| RStr::from_str(n)).collect()
        };
        let (ab, ba, abc) = (cols(&["a", "b"]), cols(&["b", "a"]), cols(&["a", "bc"]));
        let first = shapes.intern(RowKind::Insert, "t", &ab, &[]).unwrap();
        // An equal shape built from other strings is found, not added.
        let again = cols(&["a", "b"]);
        assert_eq!(shapes.intern(RowKind::Insert, "t", &again, &[]), Ok(first));
        let others = [
            shapes.intern(RowKind::Upsert, "t", &ab, &[]).unwrap(),
            shapes.intern(RowKind::Insert, "u", &ab, &[]).unwrap(),
            shapes.intern(RowKind::Insert, "t", &ba, &[]).unwrap(),
            // The same bytes split differently between names.
            shapes.intern(RowKind::Insert, "t", &abc, &[]).unwrap(),
            shapes
                .intern(RowKind::Insert, "t", &cols(&["ab", "c"]), &[])
                .unwrap(),
            shapes
                .intern(RowKind::UpsertNewest, "t", &ab, &cols(&["a"]))
                .unwrap(),
            shapes
                .intern(RowKind::UpsertNewest, "t", &ab, &cols(&["b"]))
                .unwrap(),
        ];
        let mut ids: Vec<usize> = others.to_vec();
        ids.push(first);
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), others.len() + 1, "{ids:?}");
        for (id, want) in others.iter().zip([
            shapes.intern(RowKind::Upsert, "t", &ab, &[]),
            shapes.intern(RowKind::Insert, "u", &ab, &[]),
            shapes.intern(RowKind::Insert, "t", &ba, &[]),
        ]) {
            assert_eq!(Ok(*id), want);
        }
    }
}
