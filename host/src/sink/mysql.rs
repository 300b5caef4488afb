//! Where messages are written: one MySQL transaction per batch.
//!
//! Rows of the same shape from all the batch's messages are coalesced into multi-row
//! statements. A statement MySQL refuses is traced to the message(s) behind it with
//! savepoints, and those become dead letters while the rest of the batch commits. Lost
//! connectivity is retried with capped exponential back-off until MySQL is back; the
//! batch waits in memory, and the MQTT callback behind it waits too.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use log::{debug, error, info, warn};
use mes_plugin_api::Value;
use mysql::{
    prelude::Queryable, ClientIdentity, Conn, Opts, OptsBuilder, SslOpts, Statement, Transaction,
    TxOpts,
};

use crate::{
    config::tls::TlsConfig,
    dead_letter::{truncate_payload, DeadLetter, Reason},
    metrics::Metrics,
    sink::config::DbConfig,
    sink::{
        batch::{Batch, Op, RowKind, Shape, Shapes},
        lease::Lease,
        merge::MergeKeys,
    },
};

/// Most placeholders MySQL accepts in one statement.
const MAX_PLACEHOLDERS: usize = 65_535;
/// Rows per multi-row statement. A few fixed sizes, so the prepared statements are
/// reused rather than one per row count.
const CHUNK_ROWS: [usize; 5] = [256, 64, 16, 4, 1];
/// Keep statements well under MariaDB's default 16 MiB `max_allowed_packet`.
const MAX_STATEMENT_BYTES: usize = 4 << 20;
const MAX_BACKOFF: Duration = Duration::from_secs(10);
const DETAIL_LIMIT: usize = 8_000;

/// The driver's TLS settings: CA verification always, the host name check unless
/// `verify_hostname` is false, a client certificate if given.
fn ssl_opts(tls: &TlsConfig) -> SslOpts {
    let mut ssl = SslOpts::default().with_danger_skip_domain_validation(!tls.verify_hostname);
    if let Some(ca) = &tls.ca_file {
        ssl = ssl.with_root_cert_path(Some(ca.clone()));
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(cert.clone(), key.clone())));
    }
    ssl
}

/// The driver's options for server `endpoint` of `cfg.endpoints()`.
pub fn opts(cfg: &DbConfig, endpoint: usize, connect_timeout: Duration) -> Opts {
    let (host, port) = cfg.endpoints().swap_remove(endpoint);
    OptsBuilder::new()
        .ssl_opts(cfg.tls.as_ref().map(ssl_opts))
        .ip_or_hostname(Some(host))
        .tcp_port(port)
        .user(Some(cfg.user.clone()))
        .pass(Some(cfg.password.clone()))
        .db_name(Some(cfg.database.clone()))
        .stmt_cache_size(Some(256))
        // Connect where the configuration says; the driver would otherwise switch to
        // the server's unix socket for 127.0.0.1, past any proxy or TLS setting.
        .prefer_socket(false)
        .tcp_connect_timeout(Some(connect_timeout))
        // Detects a silently dead connection (a cut network) instead of hanging.
        .read_timeout(Some(Duration::from_secs(30)))
        .write_timeout(Some(Duration::from_secs(30)))
        .into()
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// While on a later server of `hosts`, how often an earlier one is tried again, and
/// how long such a try may take: it holds up the batch in hand.
const RETURN_EVERY: Duration = Duration::from_secs(30);
const RETURN_TIMEOUT: Duration = Duration::from_secs(1);

/// Connects to the first server of `cfg` that answers.
pub fn connect(cfg: &DbConfig) -> Result<Conn, mysql::Error> {
    connect_first(cfg, 0..cfg.endpoints().len(), CONNECT_TIMEOUT).map(|(conn, _)| conn)
}

/// Connects to the first of `endpoints` (indices into `cfg.endpoints()`) that
/// answers; the error is the last server's.
fn connect_first(
    cfg: &DbConfig,
    endpoints: std::ops::Range<usize>,
    timeout: Duration,
) -> Result<(Conn, usize), mysql::Error> {
    let mut last = None;
    for i in endpoints {
        match connect_to(cfg, i, timeout) {
            Ok(conn) => return Ok((conn, i)),
            Err(e) => {
                debug!("database server {} unreachable: {e}", endpoint_name(cfg, i));
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no database server configured").into()))
}

fn connect_to(cfg: &DbConfig, endpoint: usize, timeout: Duration) -> Result<Conn, mysql::Error> {
    let mut conn = Conn::new(opts(cfg, endpoint, timeout))?;
    // Strict mode: a value that does not fit is refused (and dead-lettered), never
    // silently truncated.
    conn.query_drop("SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")?;
    // On a Galera node, reads wait until the node has applied every write the cluster
    // certified before them: after failing over from a node that died while
    // committing, the position read then tells whether that commit happened.
    let galera: Option<(String, String)> = conn.query_first("SHOW VARIABLES LIKE 'wsrep_on'")?;
    if galera.is_some_and(|(_, on)| on.eq_ignore_ascii_case("ON")) {
        // A node outside the primary component (cut off from the others, or still
        // receiving its state transfer when it rejoins) accepts connections and
        // answers SET and SHOW, but refuses every transaction (1047). Taking it for
        // reachable would keep the collector on it, retrying, while the rest of the
        // cluster works: count it as unreachable, so the next server is tried.
        if !galera_ready(&mut conn)? {
            return Err(std::io::Error::other(format!(
                "Galera node {} is not ready (wsrep_ready OFF: outside the primary component, or joining)",
                endpoint_name(cfg, endpoint)
            ))
            .into());
        }
        conn.query_drop("SET SESSION wsrep_sync_wait = 1")?;
    }
    Ok(conn)
}

/// The Galera cluster's view (`wsrep_cluster_conf_id`, which grows with every change
/// of membership), or `None` off Galera.
fn galera_view(conn: &mut Conn) -> Result<Option<u64>, mysql::Error> {
    let on: Option<(String, String)> = conn.query_first("SHOW VARIABLES LIKE 'wsrep_on'")?;
    if !on.is_some_and(|(_, v)| v.eq_ignore_ascii_case("ON")) {
        return Ok(None);
    }
    cluster_view(conn)
}

/// `wsrep_cluster_conf_id` of a connection known to be to a Galera node: after each
/// commit, one query where `galera_view` needs two.
fn cluster_view(conn: &mut Conn) -> Result<Option<u64>, mysql::Error> {
    let view: Option<(String, u64)> =
        conn.query_first("SHOW STATUS LIKE 'wsrep_cluster_conf_id'")?;
    Ok(view.map(|(_, v)| v))
}

/// How long an in-doubt commit waits for the cluster to drop the node it was sent to,
/// before the position is read on another node anyway.
const VIEW_CHANGE_WAIT: Duration = Duration::from_secs(60);

/// Where a COMMIT whose answer was lost was sent, to decide it on another node.
#[derive(Debug, Clone, Copy)]
struct Doubt {
    endpoint: usize,
    /// The Galera view at the last commit before it, if on Galera.
    view: Option<u64>,
    since: Instant,
}

/// Whether the server takes transactions: `wsrep_ready` on a Galera node, always
/// elsewhere.
fn galera_ready(conn: &mut Conn) -> Result<bool, mysql::Error> {
    let ready: Option<(String, String)> = conn.query_first("SHOW STATUS LIKE 'wsrep_ready'")?;
    Ok(ready.is_none_or(|(_, on)| on.eq_ignore_ascii_case("ON")))
}

fn endpoint_name(cfg: &DbConfig, endpoint: usize) -> String {
    let (host, port) = cfg.endpoints().swap_remove(endpoint);
    crate::sink::config::endpoint_text(&host, port)
}

/// A write conflict: a deadlock, a lock wait timeout, or a Galera certification
/// failure (reported as a deadlock, at any statement or at COMMIT). Nothing of the
/// transaction was kept; running it again is the cure.
fn is_conflict(e: &mysql::Error) -> bool {
    matches!(e, mysql::Error::MySqlError(se) if se.code == 1213 || se.code == 1205)
}

/// Whether MySQL refused the statement because of what it contained, as opposed to
/// the connection or the server being unavailable, or a transient conflict.
fn is_rejection(e: &mysql::Error) -> bool {
    match e {
        mysql::Error::MySqlError(se) => !matches!(
            se.code,
            // lock wait timeout, deadlock: the whole transaction is retried
            1205 | 1213
            // server shutting down, connection killed, too many connections, read-only
            | 1053 | 1927 | 1040 | 1290 | 1836
            // a Galera node that left the primary component ("WSREP has not yet
            // prepared node for application use"; at COMMIT, "Error while appending
            // streaming replication fragment", 1180): another node is tried
            | 1047 | 1180
            // query interrupted, out of memory or disk
            | 1317 | 1037 | 1041 | 1021
            // unknown prepared statement: prepared again on a new connection
            | 1243
        ),
        // Refused by the driver before it reached the server: a statement whose
        // parameters do not fit it, or one larger than a packet may be. Retrying would
        // fail the same way forever.
        mysql::Error::DriverError(
            mysql::DriverError::MismatchedStmtParams(..)
            | mysql::DriverError::PacketTooLarge
            | mysql::DriverError::MixedParams,
        ) => true,
        _ => false,
    }
}

/// SQL text per (shape, rows), and which rows of a shape merge.
#[derive(Default)]
struct Statements {
    /// Learnt per connection, outside the batches' transactions.
    merge: MergeKeys,
    cache: HashMap<(usize, usize), String>,
    /// Prepared on the current connection: executing a prepared statement skips the
    /// driver's parsing of the SQL text on every call.
    prepared: HashMap<(usize, usize), Statement>,
}

impl Statements {
    /// The prepared statement for `rows` rows of `shape`.
    fn get(
        &mut self,
        tx: &mut Transaction<'_>,
        shapes: &Shapes,
        shape: usize,
        rows: usize,
    ) -> Result<Statement, mysql::Error> {
        if let Some(stmt) = self.prepared.get(&(shape, rows)) {
            return Ok(stmt.clone());
        }
        let stmt = tx.prep(self.sql(shapes, shape, rows))?;
        self.prepared.insert((shape, rows), stmt.clone());
        Ok(stmt)
    }

    fn sql(&mut self, shapes: &Shapes, shape: usize, rows: usize) -> &str {
        self.cache
            .entry((shape, rows))
            .or_insert_with(|| row_statement(shapes.get(shape), rows))
    }
}

/// The statement that writes `rows` rows of `shape`, with `?` for every value.
pub fn row_statement(shape: &Shape, rows: usize) -> String {
    let cols: Vec<String> = shape.columns.iter().map(|c| format!("`{c}`")).collect();
    let one = format!("({})", vec!["?"; cols.len()].join(","));
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES {}",
        quote_table(&shape.table),
        cols.join(","),
        vec![one.as_str(); rows].join(",")
    );
    match shape.kind {
        RowKind::Insert => {}
        RowKind::Upsert => {
            let updates: Vec<String> = cols.iter().map(|c| format!("{c}=VALUES({c})")).collect();
            sql.push_str(" ON DUPLICATE KEY UPDATE ");
            sql.push_str(&updates.join(","));
        }
        RowKind::UpsertNewest => {
            sql.push_str(" ON DUPLICATE KEY UPDATE ");
            sql.push_str(&newest_updates(&shape.columns, &shape.order_by));
        }
    }
    sql
}

/// The `ON DUPLICATE KEY UPDATE` list of `Db::upsert_newest`: every column takes the
/// new row's value only if the new row sorts after the stored one, comparing the
/// `order_by` columns and then the others in turn (NULL first), so that the stored
/// row ends as the greatest of all rows written, in whatever order they came.
///
/// MySQL applies the assignments left to right, each seeing the columns assigned
/// before it, so the comparison could not be evaluated once for all. Assigning in
/// reverse comparison order keeps it right: when the new row is greater, an
/// assignment compares the not-yet-assigned prefix of the order, and where that prefix
/// is equal, the column is equal too and keeping it changes nothing; when the new row
/// is not greater, nothing changes, so every assignment sees the same comparison.
fn newest_updates(columns: &[String], order_by: &[String]) -> String {
    let mut order: Vec<&str> = order_by.iter().map(String::as_str).collect();
    order.extend(
        columns
            .iter()
            .map(String::as_str)
            .filter(|c| !order_by.iter().any(|o| o.eq_ignore_ascii_case(c))),
    );
    // gt(c1) OR (eq(c1) AND (gt(c2) OR (eq(c2) AND ... gt(cn))))
    let mut newer = String::new();
    for (i, c) in order.iter().enumerate() {
        let gt = format!("VALUES(`{c}`)>`{c}` OR (`{c}` IS NULL AND VALUES(`{c}`) IS NOT NULL)");
        if i + 1 == order.len() {
            newer.push_str(&gt);
        } else {
            newer.push_str(&format!("{gt} OR (VALUES(`{c}`)<=>`{c}` AND ("));
        }
    }
    newer.push_str(&"))".repeat(order.len() - 1));
    order
        .iter()
        .rev()
        .map(|c| format!("`{c}`=IF({newer},VALUES(`{c}`),`{c}`)"))
        .collect::<Vec<_>>()
        .join(",")
}

fn quote_table(table: &str) -> String {
    table
        .split('.')
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(".")
}

fn to_mysql(v: &Value) -> mysql::Value {
    match v {
        Value::Null => mysql::Value::NULL,
        Value::Int(i) => mysql::Value::Int(*i),
        Value::UInt(u) => mysql::Value::UInt(*u),
        Value::Float(f) => mysql::Value::Double(*f),
        Value::Text(s) | Value::Json(s) => mysql::Value::Bytes(s.as_bytes().to_vec()),
        Value::Bytes(b) => mysql::Value::Bytes(b.to_vec()),
    }
}

/// Parameters as the driver takes them: given a `Vec<mysql::Value>`, its
/// `Params::from` would move every value into a new vector grown one push at a time
/// (about 1,000 instructions per message in the writer).
fn positional(params: Vec<mysql::Value>) -> mysql::Params {
    if params.is_empty() {
        mysql::Params::Empty
    } else {
        mysql::Params::Positional(params)
    }
}

fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Text(s) | Value::Json(s) => s.len() + 8,
        Value::Bytes(b) => b.len() + 8,
        _ => 9,
    }
}

/// How many of `rows` to put in the next statement: the largest fixed chunk size
/// that fits the placeholder and size limits.
fn next_chunk(rows: &[&[Value]]) -> usize {
    let cols = rows[0].len().max(1);
    let mut fit = rows.len().min(MAX_PLACEHOLDERS / cols);
    let mut bytes = 0;
    for (i, row) in rows.iter().take(fit).enumerate() {
        bytes += row.iter().map(value_bytes).sum::<usize>();
        if bytes > MAX_STATEMENT_BYTES && i > 0 {
            fit = i;
            break;
        }
    }
    CHUNK_ROWS.into_iter().find(|&c| c <= fit).unwrap_or(1)
}

/// Rows waiting to be written, grouped by shape in order of first appearance.
struct Pending<'b> {
    groups: Vec<(usize, Vec<&'b [Value]>)>,
    slot: HashMap<usize, usize>,
}

impl<'b> Pending<'b> {
    fn new() -> Self {
        Pending {
            groups: Vec::new(),
            slot: HashMap::new(),
        }
    }

    fn push(&mut self, shape: usize, values: &'b [Value]) {
        let i = *self.slot.entry(shape).or_insert_with(|| {
            self.groups.push((shape, Vec::new()));
            self.groups.len() - 1
        });
        self.groups[i].1.push(values);
    }

    fn flush(
        &mut self,
        tx: &mut Transaction<'_>,
        stmts: &mut Statements,
        shapes: &Shapes,
    ) -> Result<(), mysql::Error> {
        for (shape, rows) in self.groups.drain(..) {
            let rows = stmts.merge.merge(shape, rows);
            let mut rest: &[&[Value]] = &rows;
            while !rest.is_empty() {
                let n = next_chunk(rest);
                // Sized up front: collecting a flat_map grows the vector step by step.
                let mut params = Vec::with_capacity(rest[..n].iter().map(|r| r.len()).sum());
                params.extend(rest[..n].iter().flat_map(|row| row.iter().map(to_mysql)));
                let stmt = stmts.get(tx, shapes, shape, n)?;
                tx.exec_drop(&stmt, positional(params))?;
                rest = &rest[n..];
            }
        }
        self.slot.clear();
        Ok(())
    }
}

/// Writes the listed messages' rows, coalesced; `exec` statements are barriers.
fn write_entries(
    tx: &mut Transaction<'_>,
    stmts: &mut Statements,
    shapes: &Shapes,
    batch: &Batch,
    which: &[usize],
) -> Result<(), mysql::Error> {
    let mut pending = Pending::new();
    for &i in which {
        let e = &batch.entries[i];
        for op in &batch.ops[e.first_op..e.end_op] {
            match op {
                Op::Row { shape, values } => pending.push(*shape, values),
                Op::Exec { sql, params } => {
                    pending.flush(tx, stmts, shapes)?;
                    let params: Vec<mysql::Value> = params.iter().map(to_mysql).collect();
                    tx.exec_drop(sql.as_str(), positional(params))?;
                }
            }
        }
    }
    pending.flush(tx, stmts, shapes)
}

/// Writes `which`; if MySQL refuses, splits it in halves under savepoints until the
/// refused messages are found, and lists them in `refused`.
fn write_isolating(
    tx: &mut Transaction<'_>,
    stmts: &mut Statements,
    shapes: &Shapes,
    batch: &Batch,
    which: &[usize],
    depth: usize,
    refused: &mut Vec<(usize, String)>,
) -> Result<(), mysql::Error> {
    if which.is_empty() {
        return Ok(());
    }
    tx.query_drop(format!("SAVEPOINT s{depth}"))?;
    match write_entries(tx, stmts, shapes, batch, which) {
        Ok(()) => Ok(()),
        Err(e) if is_rejection(&e) => {
            tx.query_drop(format!("ROLLBACK TO SAVEPOINT s{depth}"))?;
            if depth == 0 {
                info!(
                    "MySQL refused a statement of a batch of {} messages ({e}); isolating the messages responsible",
                    which.len()
                );
            }
            if which.len() == 1 {
                refused.push((which[0], e.to_string()));
                return Ok(());
            }
            let (a, b) = which.split_at(which.len() / 2);
            write_isolating(tx, stmts, shapes, batch, a, depth + 1, refused)?;
            write_isolating(tx, stmts, shapes, batch, b, depth + 1, refused)
        }
        Err(e) => Err(e),
    }
}

fn write_dead_letters(
    tx: &mut Transaction<'_>,
    batch: &Batch,
    payload_limit: usize,
) -> Result<(), mysql::Error> {
    for (entry, dl) in batch.dead_letters() {
        let detail: String = dl.detail.chars().take(DETAIL_LIMIT).collect();
        let (class, version) = match &dl.plugin {
            Some((c, v)) => (Some(c.as_str()), Some(v.as_str())),
            None => (None, None),
        };
        let topic: String = entry.topic.chars().take(255).collect();
        let cnc_id: Option<String> = dl.cnc_id.as_ref().map(|c| c.chars().take(64).collect());
        let payload = truncate_payload(&entry.raw, payload_limit);
        match &entry.replay_of {
            None => tx.exec_drop(
                "INSERT INTO dead_letters (topic, cnc_id, plugin_class, plugin_version, reason, detail, payload, payload_bytes) VALUES (?,?,?,?,?,?,?,?)",
                (
                    topic,
                    cnc_id,
                    class,
                    version,
                    dl.reason.as_str(),
                    detail,
                    payload,
                    entry.raw.len() as u64,
                ),
            )?,
            // A replayed message that failed again goes back under its id, with the
            // time it was first received and its new reason.
            Some(r) => tx.exec_drop(
                "INSERT INTO dead_letters (id, received_at, topic, cnc_id, plugin_class, plugin_version, reason, detail, payload, payload_bytes, replays, last_replayed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,NOW(3))",
                mysql::Params::Positional(vec![
                    r.id.into(),
                    r.received_at.as_str().into(),
                    topic.into(),
                    cnc_id.into(),
                    class.into(),
                    version.into(),
                    dl.reason.as_str().into(),
                    detail.into(),
                    payload.into(),
                    (entry.raw.len() as u64).into(),
                    (r.replays + 1).into(),
                ]),
            )?,
        }
    }
    Ok(())
}

/// Deletes the `dead_letters` row of each replayed message of the batch, so that the
/// row leaves in the transaction that stores the message. A row already gone, or
/// replayed meanwhile (its `replays` moved on), was taken by another replay: that
/// message is left out. The delete locks the row until the end of the transaction, so
/// two replays of one row cannot both store it.
fn claim_replayed(tx: &mut Transaction<'_>, batch: &mut Batch) -> Result<(), mysql::Error> {
    for entry in &mut batch.entries {
        if let Some(r) = entry.replay_of.as_mut() {
            tx.exec_drop(
                "DELETE FROM dead_letters WHERE id = ? AND replays = ?",
                (r.id, r.replays),
            )?;
            r.gone = tx.affected_rows() == 0;
        }
    }
    Ok(())
}

/// Outcome of one committed batch, for logs and counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Committed {
    pub stored: usize,
    pub dead: usize,
    /// Replayed dead letters another replay took first (see `claim_replayed`).
    pub taken: usize,
}

/// How an attempt ends: committed with the spool position it reaches, or rolled back
/// after every statement ran (a dry run, which still finds what MySQL would refuse).
#[derive(Debug, Clone, Copy)]
enum Ending {
    Commit { position: u64 },
    RollBack,
}

/// The dispatcher was told to stop while the database was unreachable; the batch
/// stays in the spool for the next start.
#[derive(Debug)]
pub struct Stopped;

pub struct MysqlSink {
    cfg: DbConfig,
    /// The key of this collector's row in `collector_position`.
    client_id: String,
    conn: Option<Conn>,
    /// Which of `cfg.endpoints()` `conn` is connected to.
    endpoint: usize,
    /// When an earlier server than `endpoint` was last tried.
    tried_return: Instant,
    /// The Galera view as of the last commit, `None` off Galera (see `Doubt`).
    view: Option<u64>,
    stmts: Statements,
    payload_limit: usize,
    /// Since when the database has been unreachable, for logging state changes once.
    down_since: Option<Instant>,
    last_check: Instant,
    /// The collector's claim on its client_id, renewed with every commit and while
    /// idle; `None` for `replay`, which writes under a client_id of its own.
    lease: Option<Lease>,
    last_renewal: Instant,
    metrics: Arc<Metrics>,
}

impl MysqlSink {
    pub fn new(
        cfg: DbConfig,
        client_id: &str,
        payload_limit: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        MysqlSink {
            cfg,
            client_id: client_id.to_string(),
            conn: None,
            endpoint: 0,
            tried_return: Instant::now(),
            view: None,
            stmts: Statements::default(),
            payload_limit,
            down_since: None,
            last_check: Instant::now(),
            lease: None,
            last_renewal: Instant::now(),
            metrics,
        }
    }

    /// Commits only while holding `lease` (see `sink::lease`).
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The spool position this collector committed last, waiting for the database
    /// if it is unreachable. `None` with no row yet; `Err` when told to stop.
    pub fn read_position(&mut self, stop: &AtomicBool) -> Result<Option<u64>, Stopped> {
        self.retrying(stop, 0, |sink| sink.committed_position())
    }

    /// Commits the batch with the spool position it reaches, retrying through outages
    /// until it is in MySQL. Messages MySQL refuses become dead letters in the same
    /// transaction.
    pub fn commit(
        &mut self,
        batch: &mut Batch,
        shapes: &Shapes,
        position: u64,
        stop: &AtomicBool,
    ) -> Result<Committed, Stopped> {
        let held = batch.len();
        // Set when a COMMIT was sent but its answer lost: the batch may be in MySQL.
        let mut marked_in_doubt: Option<(Vec<usize>, Doubt)> = None;
        self.retrying(stop, held, |sink| {
            if let Some((marked, doubt)) = &marked_in_doubt {
                // The position commits with the rows, so it tells whether they did.
                // Until it can be read, the batch stays in doubt.
                sink.await_view_change(doubt)?;
                if sink.committed_position()? >= Some(position) {
                    info!("the batch up to spool record {position} was committed before the connection dropped; not writing it again");
                    return Ok(Committed::of(batch));
                }
                for &i in marked {
                    batch.entries[i].dead = None;
                }
                marked_in_doubt = None;
            }
            sink.try_commit(batch, shapes, Ending::Commit { position }).map_err(|failure| {
                match &failure {
                    Failure::InDoubt(_, marked) => {
                        let doubt = Doubt {
                            endpoint: sink.endpoint,
                            view: sink.view,
                            since: Instant::now(),
                        };
                        marked_in_doubt = Some((marked.clone(), doubt));
                    }
                    Failure::LeaseLost(why) => lease_lost(why),
                    Failure::NotCommitted(_) => {}
                }
                failure.into_error()
            })
        })
    }

    /// Runs the batch's statements as [`MysqlSink::commit`] would, then rolls the
    /// transaction back: nothing is written, and the messages MySQL would refuse are
    /// marked as `db_rejected` dead letters in the batch.
    pub fn trial(
        &mut self,
        batch: &mut Batch,
        shapes: &Shapes,
        stop: &AtomicBool,
    ) -> Result<Committed, Stopped> {
        self.retrying(stop, batch.len(), |sink| {
            sink.try_commit(batch, shapes, Ending::RollBack)
                .map_err(Failure::into_error)
        })
    }

    /// On a Galera cluster, before a commit sent to one node is decided on another:
    /// waits until the cluster has dropped the first node (its view changed since the
    /// last commit). Galera delivers every write set of a view before the view change,
    /// so a commit the dead node had sent out is then known to the node read here (and
    /// `wsrep_sync_wait` makes the read wait until it is applied); read earlier, it
    /// could still be on its way, and the batch would be written twice.
    fn await_view_change(&mut self, doubt: &Doubt) -> Result<(), mysql::Error> {
        self.connection()?;
        let Some(before) = doubt.view else {
            return Ok(());
        };
        if self.endpoint == doubt.endpoint {
            return Ok(());
        }
        let conn = self.conn.as_mut().expect("connected above");
        let now = galera_view(conn)?.unwrap_or(before);
        if now > before {
            return Ok(());
        }
        if doubt.since.elapsed() >= VIEW_CHANGE_WAIT {
            warn!(
                "the cluster still lists the node the last commit went to after {} s; deciding it on {} all the same",
                VIEW_CHANGE_WAIT.as_secs(),
                endpoint_name(&self.cfg, self.endpoint)
            );
            return Ok(());
        }
        Err(std::io::Error::other(format!(
            "a commit sent to {} is in doubt; waiting for the cluster to drop that node before reading whether it happened",
            endpoint_name(&self.cfg, doubt.endpoint)
        ))
        .into())
    }

    fn committed_position(&mut self) -> Result<Option<u64>, mysql::Error> {
        let client_id = self.client_id.clone();
        self.connection()?.exec_first(
            "SELECT last_seq FROM collector_position WHERE client_id = ?",
            (client_id,),
        )
    }

    /// While idle, checks now and then that the database is still reachable, so that
    /// `/readyz` and the logs tell of an outage before the next message does.
    pub fn check_alive(&mut self) {
        const EVERY: Duration = Duration::from_secs(2);
        if self.last_check.elapsed() < EVERY {
            return;
        }
        self.last_check = Instant::now();
        match self.connection().and_then(|c| c.query_drop("SELECT 1")) {
            Ok(()) => self.mark_up(""),
            Err(e) => return self.mark_down(&e, "messages wait in the spool"),
        }
        // A quiet line commits nothing for a while: renew the lease anyway.
        let Some(lease) = self.lease.clone() else {
            return;
        };
        if self.last_renewal.elapsed() < lease.ttl() / 3 {
            return;
        }
        match self.connection().and_then(|c| lease.claim(c)) {
            Ok(Ok(())) => self.last_renewal = Instant::now(),
            Ok(Err(refused)) => lease_lost(&refused.explain(lease.client_id(), lease.ttl())),
            Err(e) => self.mark_down(&e, "messages wait in the spool"),
        }
    }

    /// Records that the database answered; logs the end of an outage once.
    fn mark_up(&mut self, how: &str) {
        self.metrics.set_db_up(true);
        if let Some(since) = self.down_since.take() {
            info!(
                "database {} reachable again after {:.1} s{how}",
                self.cfg.target(),
                since.elapsed().as_secs_f64()
            );
        }
    }

    /// Records that the database did not answer; logs the start of an outage once.
    fn mark_down(&mut self, e: &mysql::Error, consequence: &str) {
        self.conn = None;
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            self.metrics.set_db_up(false);
            self.metrics.db_outages.inc();
            warn!(
                "database {} unavailable ({e}); {consequence}",
                self.cfg.target()
            );
        } else {
            debug!("database still unavailable: {e}");
        }
    }

    fn connection(&mut self) -> Result<&mut Conn, mysql::Error> {
        if self.conn.is_some() && self.endpoint > 0 && self.tried_return.elapsed() >= RETURN_EVERY {
            self.tried_return = Instant::now();
            if let Ok((conn, i)) = connect_first(&self.cfg, 0..self.endpoint, RETURN_TIMEOUT) {
                info!(
                    "database server {} answers again; moving back to it from {}",
                    endpoint_name(&self.cfg, i),
                    endpoint_name(&self.cfg, self.endpoint)
                );
                self.use_connection(conn, i);
            }
        }
        if self.conn.is_none() {
            let (conn, i) =
                connect_first(&self.cfg, 0..self.cfg.endpoints().len(), CONNECT_TIMEOUT)?;
            if i != self.endpoint {
                warn!(
                    "database server {} unreachable; writing to {}{}",
                    endpoint_name(&self.cfg, self.endpoint),
                    endpoint_name(&self.cfg, i),
                    if i > 0 {
                        ", trying earlier servers again every 30 s"
                    } else {
                        ""
                    }
                );
            }
            self.use_connection(conn, i);
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    fn use_connection(&mut self, mut conn: Conn, endpoint: usize) {
        self.view = galera_view(&mut conn).unwrap_or(None);
        self.conn = Some(conn);
        self.endpoint = endpoint;
        self.tried_return = Instant::now();
        // Statements belong to the connection they were prepared on; the tables may
        // have changed while it was away.
        self.stmts.prepared.clear();
        self.stmts.merge.clear();
    }

    /// Runs `attempt` until it succeeds, backing off (capped) while the database is
    /// unreachable, logging once when it goes and once when it comes back.
    fn retrying<T>(
        &mut self,
        stop: &AtomicBool,
        held: usize,
        mut attempt: impl FnMut(&mut Self) -> Result<T, mysql::Error>,
    ) -> Result<T, Stopped> {
        let mut backoff = Duration::from_millis(100);
        let mut attempts = 0u64;
        loop {
            attempts += 1;
            match attempt(self) {
                Ok(done) => {
                    self.mark_up(&format!(" and {attempts} attempts; resuming"));
                    return Ok(done);
                }
                Err(e) if is_conflict(&e) && !self.left_primary(&e) => {
                    // The server answered: no outage, and no back-off beyond a moment
                    // for the other writer to finish.
                    info!("write conflict ({e}); running the batch of {held} messages again");
                    std::thread::sleep(Duration::from_millis(10 * attempts.min(50)));
                }
                Err(e) => {
                    let consequence = format!(
                        "{held} messages wait in the spool, retrying with back-off up to {} s",
                        MAX_BACKOFF.as_secs()
                    );
                    self.mark_down(&e, &consequence);
                    let until = Instant::now() + backoff;
                    while Instant::now() < until {
                        if stop.load(Ordering::Relaxed) {
                            return Err(Stopped);
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Whether `e`, a lock wait timeout, came from a Galera node that has left the
    /// primary component: there a read waiting for `wsrep_sync_wait` fails with 1205,
    /// as a conflict would, but running it again on that node fails forever. Then the
    /// connection is given up (the caller's outage path drops it) and the next
    /// attempt connects to a node that is ready.
    fn left_primary(&mut self, e: &mysql::Error) -> bool {
        if !matches!(e, mysql::Error::MySqlError(se) if se.code == 1205) {
            return false;
        }
        match self.conn.as_mut() {
            Some(conn) => !galera_ready(conn).unwrap_or(false),
            None => false,
        }
    }

    /// One attempt. The messages it finds MySQL refusing are marked as dead letters;
    /// the marks are undone if the attempt surely did not commit.
    fn try_commit(
        &mut self,
        batch: &mut Batch,
        shapes: &Shapes,
        ending: Ending,
    ) -> Result<Committed, Failure> {
        let client_id = self.client_id.clone();
        let payload_limit = self.payload_limit;
        self.connection().map_err(Failure::NotCommitted)?;
        let conn = self.conn.as_mut().expect("connected above");
        self.stmts
            .merge
            .learn(conn, shapes)
            .map_err(Failure::NotCommitted)?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .map_err(Failure::NotCommitted)?;
        if let Some(lease) = &self.lease {
            if !lease.renew(&mut tx).map_err(Failure::NotCommitted)? {
                // Not ours any more, or the row is gone: the claim, outside the batch,
                // takes it back where the holder is gone, or names the holder.
                drop(tx);
                match lease.claim(conn) {
                    Ok(Ok(())) => {}
                    Ok(Err(refused)) => {
                        return Err(Failure::LeaseLost(
                            refused.explain(lease.client_id(), lease.ttl()),
                        ))
                    }
                    Err(e) => return Err(Failure::NotCommitted(e)),
                }
                tx = conn
                    .start_transaction(TxOpts::default())
                    .map_err(Failure::NotCommitted)?;
                if !lease.renew(&mut tx).map_err(Failure::NotCommitted)? {
                    return Err(Failure::NotCommitted(mysql::Error::from(
                        std::io::Error::other("the lease just claimed could not be renewed"),
                    )));
                }
            }
            self.last_renewal = Instant::now();
        }
        claim_replayed(&mut tx, batch).map_err(Failure::NotCommitted)?;
        let live: Vec<usize> = (0..batch.len())
            .filter(|&i| batch.entries[i].dead.is_none() && !batch.entries[i].taken_elsewhere())
            .collect();
        let mut refused = Vec::new();
        write_isolating(
            &mut tx,
            &mut self.stmts,
            shapes,
            batch,
            &live,
            0,
            &mut refused,
        )
        .map_err(Failure::NotCommitted)?;
        let mut marked = Vec::with_capacity(refused.len());
        for (i, reason) in refused {
            let e = &mut batch.entries[i];
            let mut dl = DeadLetter::new(Reason::DbRejected, reason);
            dl.cnc_id = e.cnc_id.clone();
            dl.plugin = e
                .plugin
                .as_ref()
                .map(|p| (p.class_name.clone(), p.version.clone()));
            e.dead = Some(dl);
            marked.push(i);
        }
        let unmark = |batch: &mut Batch, marked: Vec<usize>| {
            for i in marked {
                batch.entries[i].dead = None;
            }
        };
        let position = match ending {
            Ending::Commit { position } => position,
            Ending::RollBack => {
                let written = write_dead_letters(&mut tx, batch, payload_limit);
                let rolled_back = written.and_then(|()| tx.rollback());
                if let Err(e) = rolled_back {
                    unmark(batch, marked);
                    return Err(Failure::NotCommitted(e));
                }
                return Ok(Committed::of(batch));
            }
        };
        let written = write_dead_letters(&mut tx, batch, payload_limit).and_then(|()| {
            tx.exec_drop(
                "INSERT INTO collector_position (client_id, last_seq) VALUES (?, ?) \
                 ON DUPLICATE KEY UPDATE last_seq = VALUES(last_seq)",
                (client_id.as_str(), position),
            )
        });
        if let Err(e) = written {
            unmark(batch, marked);
            return Err(Failure::NotCommitted(e));
        }
        match tx.commit() {
            Ok(()) => {
                // The view this commit was made in: a later commit in doubt is decided
                // elsewhere only once the cluster has moved past it (`Doubt`).
                if self.view.is_some() {
                    if let Some(conn) = self.conn.as_mut() {
                        self.view = cluster_view(conn).ok().flatten().or(self.view);
                    }
                }
                Ok(Committed::of(batch))
            }
            // The server answered COMMIT with an error (a certification failure, say):
            // it rolled the transaction back.
            Err(e @ mysql::Error::MySqlError(_)) => {
                unmark(batch, marked);
                Err(Failure::NotCommitted(e))
            }
            // The server may have committed before the connection broke.
            Err(e) => Err(Failure::InDoubt(e, marked)),
        }
    }
}

/// Why an attempt to commit failed.
enum Failure {
    NotCommitted(mysql::Error),
    /// COMMIT was sent and its answer lost; the indices are the messages the attempt
    /// marked as refused by MySQL.
    InDoubt(mysql::Error, Vec<usize>),
    /// Another collector holds this one's client_id now; nothing was committed.
    LeaseLost(String),
}

impl Failure {
    fn into_error(self) -> mysql::Error {
        match self {
            Failure::NotCommitted(e) | Failure::InDoubt(e, _) => e,
            Failure::LeaseLost(why) => mysql::Error::from(std::io::Error::other(why)),
        }
    }
}

/// Another collector took over this one's client_id while it could not renew its
/// lease (cut off from the database for longer than the lease). Nothing more may be
/// committed under that client_id from here; what this collector spooled stays in its
/// spool, and the broker redelivers what it had not acknowledged. The exit code tells
/// the supervisor this was no crash.
fn lease_lost(why: &str) -> ! {
    error!("stopping: lease lost: {why}");
    std::process::exit(3)
}

impl Committed {
    fn of(batch: &Batch) -> Committed {
        let dead = batch.dead_letters().count();
        let taken = batch.entries.iter().filter(|e| e.taken_elsewhere()).count();
        Committed {
            stored: batch.len() - dead - taken,
            dead,
            taken,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(kind: RowKind, columns: &[&str], order_by: &[&str]) -> Shape {
        Shape {
            kind,
            table: "db1.cnc_status".into(),
            columns: columns.iter().map(|c| c.to_string()).collect(),
            order_by: order_by.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn inserts_and_upserts_bind_every_value() {
        assert_eq!(
            row_statement(&shape(RowKind::Insert, &["a", "b"], &[]), 2),
            "INSERT INTO `db1`.`cnc_status` (`a`,`b`) VALUES (?,?),(?,?)"
        );
        assert_eq!(
            row_statement(&shape(RowKind::Upsert, &["a", "b"], &[]), 1),
            "INSERT INTO `db1`.`cnc_status` (`a`,`b`) VALUES (?,?) \
             ON DUPLICATE KEY UPDATE `a`=VALUES(`a`),`b`=VALUES(`b`)"
        );
    }

    #[test]
    fn upsert_newest_compares_the_order_then_the_rest_and_assigns_in_reverse() {
        let gt = |c: &str| {
            format!("VALUES(`{c}`)>`{c}` OR (`{c}` IS NULL AND VALUES(`{c}`) IS NOT NULL)")
        };
        let eq = |c: &str| format!("VALUES(`{c}`)<=>`{c}`");
        let newer = format!(
            "{} OR ({} AND ({} OR ({} AND ({}))))",
            gt("ts"),
            eq("ts"),
            gt("k"),
            eq("k"),
            gt("status")
        );
        let sql = row_statement(
            &shape(RowKind::UpsertNewest, &["k", "status", "ts"], &["ts"]),
            1,
        );
        assert_eq!(
            sql,
            format!(
                "INSERT INTO `db1`.`cnc_status` (`k`,`status`,`ts`) VALUES (?,?,?) \
                 ON DUPLICATE KEY UPDATE `status`=IF({newer},VALUES(`status`),`status`),\
                 `k`=IF({newer},VALUES(`k`),`k`),`ts`=IF({newer},VALUES(`ts`),`ts`)"
            )
        );
        // One column: no nesting.
        assert_eq!(
            newest_updates(&["ts".into()], &["ts".into()]),
            format!("`ts`=IF({},VALUES(`ts`),`ts`)", gt("ts"))
        );
    }
}
