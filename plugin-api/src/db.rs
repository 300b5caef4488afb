//! The database handle: how a plugin writes rows.
//!
//! The host owns the SQL. A plugin says "this row into this table"; the host checks
//! the names, binds every value as a parameter, and coalesces the rows of many messages
//! into multi-row statements inside one transaction. Writes are applied when the host
//! commits the batch the message belongs to, in the order the plugin made them.

#![allow(non_local_definitions)] // sabi_trait emits its impls inside a const block

use abi_stable::{
    sabi_trait,
    sabi_types::RMut,
    std_types::{RResult, RSlice, RStr, RString, RVec},
};

use crate::{abi::DbServiceV1, features, host_link, Error, Value};

/// The host's side of the database handle, as it crosses the ABI boundary.
///
/// Plugins do not use this directly: they get a [`Db`], which wraps it in plain Rust
/// types. Hosts (and the `testing` feature's recorder) implement it.
#[sabi_trait]
pub trait RawDatabase {
    /// Queues one row for `INSERT INTO table (columns) VALUES (values)`.
    fn insert(
        &mut self,
        table: RStr<'_>,
        columns: RSlice<'_, RStr<'_>>,
        values: RVec<Value>,
    ) -> RResult<(), RString>;

    /// Queues one row for `INSERT ... ON DUPLICATE KEY UPDATE` of every given column.
    fn upsert(
        &mut self,
        table: RStr<'_>,
        columns: RSlice<'_, RStr<'_>>,
        values: RVec<Value>,
    ) -> RResult<(), RString>;

    /// Queues one statement with `?` placeholders, run in order with the rows.
    #[sabi(last_prefix_field)]
    fn exec(&mut self, sql: RStr<'_>, params: RVec<Value>) -> RResult<(), RString>;
}

/// The borrowed trait object the host passes across the boundary.
pub type RawDatabaseRef<'a> = RawDatabase_TO<'a, RMut<'a, ()>>;

/// The database handle a plugin writes through, valid for one call of
/// [`Plugin::handle`](crate::Plugin::handle).
///
/// ```
/// use mes_plugin_api::{Db, Error, Message, Value};
///
/// fn store(msg: &Message<'_>, db: &mut Db<'_>) -> Result<(), Error> {
///     db.insert(
///         "cnc_data",
///         &["cnc_id", "part_program", "timestamp", "json_data"],
///         vec![
///             msg.cnc_id().into(),
///             msg.part_program().into(),
///             msg.timestamp().into(),
///             Value::json_text(msg.payload()),
///         ],
///     )?;
///     db.upsert(
///         "cnc_status",
///         &["cnc_id", "status"],
///         vec![msg.cnc_id().into(), "running".into()],
///     )?;
///     Ok(())
/// }
/// # #[cfg(feature = "testing")] {
/// # let mut rec = mes_plugin_api::testing::RecordingDb::new();
/// # let msg = Message::new("t", "CNC001", "p", 1, "{}");
/// # rec.with_db(|db| store(&msg, db)).unwrap();
/// # assert_eq!(rec.writes().len(), 2);
/// # }
/// ```
pub struct Db<'a> {
    raw: RawDatabaseRef<'a>,
    /// Methods added after 1.0, from the host (see [`abi`](crate::abi)).
    added: Option<&'static DbServiceV1>,
}

impl<'a> Db<'a> {
    /// Wraps the host's handle. Hosts and test harnesses call this; plugins are handed a
    /// ready `Db`.
    pub fn from_raw(raw: RawDatabaseRef<'a>) -> Self {
        Db {
            raw,
            added: host_link::attached().and_then(|a| a.db),
        }
    }

    /// A handle whose methods added after 1.0 are served by `added` rather than by the
    /// host (the `testing` recorder serves them itself).
    #[cfg(feature = "testing")]
    pub(crate) fn with_added(raw: RawDatabaseRef<'a>, added: &'static DbServiceV1) -> Self {
        Db {
            raw,
            added: Some(added),
        }
    }

    /// Inserts one row. `columns` and `values` pair up by position.
    ///
    /// Fails at once if a name is not a plain identifier (see
    /// [`check_identifier`](crate::check_identifier)) or the counts differ; errors
    /// from MySQL itself surface when the host commits, and turn the message into a
    /// dead letter.
    pub fn insert(
        &mut self,
        table: &str,
        columns: &[&str],
        values: Vec<Value>,
    ) -> Result<(), Error> {
        with_rstrs(columns, |cols| {
            self.raw
                .insert(RStr::from_str(table), cols, RVec::from(values))
                .into_result()
        })
        .map_err(|e| Error::new(e.into_string()))
    }

    /// Inserts one row, or, when it collides with an existing row on a primary or
    /// unique key, updates that row's other given columns to these values. This
    /// keeps "one row per machine" tables such as `cnc_status` current.
    pub fn upsert(
        &mut self,
        table: &str,
        columns: &[&str],
        values: Vec<Value>,
    ) -> Result<(), Error> {
        with_rstrs(columns, |cols| {
            self.raw
                .upsert(RStr::from_str(table), cols, RVec::from(values))
                .into_result()
        })
        .map_err(|e| Error::new(e.into_string()))
    }

    /// Inserts one row, or, when it collides with an existing row on a primary or
    /// unique key, replaces that row's given columns only if this row is newer: if it
    /// sorts after the existing row by the `order_by` columns, compared in turn (NULL
    /// before any value). When those are equal, the other given columns decide, in the
    /// order given, so that the same rows leave the same row behind whatever order
    /// they are committed in: by several collectors, or replayed after an outage.
    ///
    /// Use it for "latest value" tables such as `cnc_status`, ordered by the machine's
    /// own timestamp, where a late or redelivered message must not overwrite a newer
    /// state. Each name in `order_by` must be one of `columns`. (Values compare as
    /// MySQL compares them: text by the column's collation.)
    ///
    /// Needs a host with plugin API 1.1 ([`features::UPSERT_NEWEST`]); on an older one
    /// it returns an error, which makes the message a dead letter. A plugin that uses it
    /// should list it in [`Plugin::REQUIRES`](crate::Plugin::REQUIRES) to be refused
    /// at load instead.
    ///
    /// ```
    /// use mes_plugin_api::{Db, Error, Message};
    ///
    /// fn store_status(msg: &Message<'_>, db: &mut Db<'_>, status: &str) -> Result<(), Error> {
    ///     db.upsert_newest(
    ///         "cnc_status",
    ///         &["cnc_id", "status", "timestamp"],
    ///         vec![msg.cnc_id().into(), status.into(), msg.timestamp().into()],
    ///         &["timestamp"],
    ///     )
    /// }
    /// # #[cfg(feature = "testing")] {
    /// # let mut rec = mes_plugin_api::testing::RecordingDb::new();
    /// # let msg = Message::new("t", "CNC001", "p", 1, "{}");
    /// # rec.with_db(|db| store_status(&msg, db, "idle")).unwrap();
    /// # assert_eq!(rec.writes().len(), 1);
    /// # }
    /// ```
    pub fn upsert_newest(
        &mut self,
        table: &str,
        columns: &[&str],
        values: Vec<Value>,
        order_by: &[&str],
    ) -> Result<(), Error> {
        let Some(added) = self.added else {
            return Err(Error::new(format!(
                "Db::upsert_newest needs a host with plugin API {} or later (feature `{}`); \
                 this host is older",
                features::UPSERT_NEWEST.since(),
                features::UPSERT_NEWEST.name()
            )));
        };
        let raw = &mut self.raw;
        with_rstrs(columns, |cols| {
            with_rstrs(order_by, |order| {
                (added.upsert_newest)(raw, RStr::from_str(table), cols, RVec::from(values), order)
                    .into_result()
            })
        })
        .map_err(|e| Error::new(e.into_string()))
    }

    /// Runs one statement of the plugin's own, with `?` placeholders bound to
    /// `params`. Use it for what `insert`/`upsert` cannot say, such as an `UPDATE` or
    /// `DELETE`. It runs in order with the rows before and after it, inside the
    /// batch's transaction; it cannot return rows.
    ///
    /// ```
    /// # use mes_plugin_api::{Db, Error};
    /// fn clear_alarms(db: &mut Db<'_>, cnc_id: &str) -> Result<(), Error> {
    ///     db.exec("DELETE FROM cnc_alarms WHERE cnc_id = ?", vec![cnc_id.into()])
    /// }
    /// ```
    pub fn exec(&mut self, sql: &str, params: Vec<Value>) -> Result<(), Error> {
        self.raw
            .exec(RStr::from_str(sql), RVec::from(params))
            .into_result()
            .map_err(|e| Error::new(e.into_string()))
    }
}

/// Lends `&[&str]` to the ABI as `RSlice<RStr>` without a heap allocation for the
/// usual handful of columns.
fn with_rstrs<R>(items: &[&str], f: impl FnOnce(RSlice<'_, RStr<'_>>) -> R) -> R {
    const INLINE: usize = 24;
    if items.len() <= INLINE {
        let mut buf = [RStr::from_str(""); INLINE];
        for (slot, item) in buf.iter_mut().zip(items) {
            *slot = RStr::from_str(item);
        }
        f(RSlice::from_slice(&buf[..items.len()]))
    } else {
        let buf: Vec<RStr<'_>> = items.iter().map(|s| RStr::from_str(s)).collect();
        f(RSlice::from_slice(&buf))
    }
}
