//! Test a plugin without MySQL (feature `testing`): a database handle that records
//! every write, checked exactly as the host checks it.
//!
//! ```
//! use mes_plugin_api::testing::{RecordingDb, Write};
//! use mes_plugin_api::{Db, Error, Message, Plugin, Value};
//!
//! struct Counter;
//! impl Plugin for Counter {
//!     const CLASS_NAME: &'static str = "Counter";
//!     fn new(_: &str, _: Option<&str>) -> Result<Self, Error> { Ok(Counter) }
//!     fn handle(&mut self, m: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error> {
//!         db.insert("hits", &["cnc_id"], vec![m.cnc_id().into()])
//!     }
//! }
//!
//! let mut db = RecordingDb::new();
//! let mut plugin = Counter::new("CNC001", None).unwrap();
//! let msg = Message::new("sensor/CNC", "CNC001", "p", 0, "{}");
//! db.handle(&mut plugin, &msg).unwrap();
//! assert_eq!(
//!     db.writes(),
//!     &[Write::Insert {
//!         table: "hits".into(),
//!         columns: vec!["cnc_id".into()],
//!         values: vec![Value::from("CNC001")],
//!     }]
//! );
//! ```

#![allow(non_local_definitions)] // sabi_trait emits its impls inside a const block

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RResult, RSlice, RStr, RString, RVec},
};

use crate::{
    abi::DbServiceV1, check_order_by, check_params, check_row, Db, Error, Message, Plugin,
    RawDatabase, RawDatabaseRef, RawDatabase_TO, Value,
};

/// One write a plugin made. New `Db` methods add variants in minor versions: match
/// with a `_` arm.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Write {
    /// [`Db::insert`].
    Insert {
        table: String,
        columns: Vec<String>,
        values: Vec<Value>,
    },
    /// [`Db::upsert`].
    Upsert {
        table: String,
        columns: Vec<String>,
        values: Vec<Value>,
    },
    /// [`Db::exec`].
    Exec { sql: String, params: Vec<Value> },
    /// [`Db::upsert_newest`].
    UpsertNewest {
        table: String,
        columns: Vec<String>,
        values: Vec<Value>,
        order_by: Vec<String>,
    },
}

/// A database handle that records writes instead of running them.
#[derive(Debug, Default)]
pub struct RecordingDb {
    writes: Vec<Write>,
}

impl RecordingDb {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every write so far, in order.
    pub fn writes(&self) -> &[Write] {
        &self.writes
    }

    /// Forgets the writes so far.
    pub fn clear(&mut self) {
        self.writes.clear();
    }

    /// Lends a [`Db`] backed by this recorder to `f`.
    pub fn with_db<R>(&mut self, f: impl FnOnce(&mut Db<'_>) -> R) -> R {
        static ADDED: DbServiceV1 = DbServiceV1 {
            upsert_newest: record_upsert_newest,
        };
        let raw = RawDatabase_TO::from_ptr(self, TD_Opaque);
        f(&mut Db::with_added(raw, &ADDED))
    }

    /// Calls `plugin.handle(message, db)` as the host would, with this recorder as the
    /// database.
    pub fn handle<P: Plugin>(
        &mut self,
        plugin: &mut P,
        message: &Message<'_>,
    ) -> Result<(), Error> {
        self.with_db(|db| plugin.handle(message, db))
    }

    fn row(
        table: RStr<'_>,
        columns: RSlice<'_, RStr<'_>>,
        values: &RVec<Value>,
    ) -> Result<(String, Vec<String>), RString> {
        check_row(table.as_str(), columns.as_slice(), values).map_err(RString::from)?;
        Ok((
            table.to_string(),
            columns.iter().map(|c| c.to_string()).collect(),
        ))
    }
}

impl RawDatabase for RecordingDb {
    fn insert(
        &mut self,
        table: RStr<'_>,
        columns: RSlice<'_, RStr<'_>>,
        values: RVec<Value>,
    ) -> RResult<(), RString> {
        Self::row(table, columns, &values)
            .map(|(table, columns)| {
                self.writes.push(Write::Insert {
                    table,
                    columns,
                    values: values.into_vec(),
                })
            })
            .into()
    }

    fn upsert(
        &mut self,
        table: RStr<'_>,
        columns: RSlice<'_, RStr<'_>>,
        values: RVec<Value>,
    ) -> RResult<(), RString> {
        Self::row(table, columns, &values)
            .map(|(table, columns)| {
                self.writes.push(Write::Upsert {
                    table,
                    columns,
                    values: values.into_vec(),
                })
            })
            .into()
    }

    fn exec(&mut self, sql: RStr<'_>, params: RVec<Value>) -> RResult<(), RString> {
        if let Err(e) = check_params(&params) {
            return RResult::RErr(e.into());
        }
        self.writes.push(Write::Exec {
            sql: sql.to_string(),
            params: params.into_vec(),
        });
        RResult::ROk(())
    }
}

/// The recorder's own `upsert_newest`, as a host serves it.
extern "C" fn record_upsert_newest(
    db: &mut RawDatabaseRef<'_>,
    table: RStr<'_>,
    columns: RSlice<'_, RStr<'_>>,
    values: RVec<Value>,
    order_by: RSlice<'_, RStr<'_>>,
) -> RResult<(), RString> {
    // SAFETY: only `RecordingDb::with_db` hands out this table, with a handle made from
    // a `&mut RecordingDb`, which `db` borrows uniquely.
    let recorder = unsafe { &mut *(db.obj.sabi_as_rmut().into_raw() as *mut RecordingDb) };
    let checked = RecordingDb::row(table, columns, &values).and_then(|(table, columns)| {
        check_order_by(&columns, order_by.as_slice()).map_err(RString::from)?;
        Ok((table, columns))
    });
    checked
        .map(|(table, columns)| {
            recorder.writes.push(Write::UpsertNewest {
                table,
                columns,
                values: values.into_vec(),
                order_by: order_by.iter().map(|o| o.to_string()).collect(),
            })
        })
        .into()
}

std::thread_local! {
    static COUNTS: std::cell::RefCell<Vec<(String, String, u64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Where [`metrics::add`](crate::metrics::add) counts outside a host, in tests.
pub(crate) fn record_count(event: &str, label: &str, n: u64) {
    COUNTS.with(|c| {
        let mut c = c.borrow_mut();
        match c.iter_mut().find(|(e, l, _)| e == event && l == label) {
            Some(slot) => slot.2 += n,
            None => c.push((event.to_string(), label.to_string(), n)),
        }
    });
}

/// What this test thread counted with [`metrics::count`](crate::metrics::count) so far,
/// as `(event, label, total)` in the order first counted, and forgets it.
///
/// ```
/// use mes_plugin_api::{metrics, testing};
///
/// metrics::count("alarms", "E1002");
/// metrics::count("alarms", "E1002");
/// metrics::count("alarms", "E77");
/// assert_eq!(
///     testing::counts(),
///     vec![("alarms".to_string(), "E1002".to_string(), 2), ("alarms".into(), "E77".into(), 1)]
/// );
/// assert!(testing::counts().is_empty());
/// ```
pub fn counts() -> Vec<(String, String, u64)> {
    COUNTS.with(|c| std::mem::take(&mut *c.borrow_mut()))
}
