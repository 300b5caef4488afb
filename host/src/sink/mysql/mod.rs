//! Where messages are written: one MySQL transaction per batch.
//!
//! Rows of the same shape from all the batch's messages are coalesced into multi-row
//! statements. A statement MySQL refuses is traced to the message(s) behind it with
//! savepoints, and those become dead letters while the rest of the batch commits. Lost
//! connectivity is retried with capped exponential back-off until MySQL is back; the
//! batch waits in memory while the intake goes on spooling (the MQTT callback waits
//! only once the spool is full).
//!
//! This file holds one attempt at a batch's transaction, the retries around it, and the
//! connection it keeps; the modules beside it hold one concern each.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use log::{debug, error, info, warn};
use mysql::{prelude::Queryable, Conn, TxOpts};

use crate::{
    dead_letter::{DeadLetter, Reason},
    metrics::Metrics,
    shutdown::{Backoff, Shutdown},
    sink::config::DbConfig,
    sink::{
        batch::{Batch, Shapes},
        lease::Lease,
        shares::{position_key, CommittedPositions},
    },
};

mod connection;
mod dead_letters;
mod errors;
mod in_doubt;
mod isolate;
mod literals;
mod position;
mod rows;
mod statements;

pub use connection::{connect, ServerInUse};
pub use statements::rows_statement;

use connection::{
    cluster_view, connect_first, endpoint_name, galera_ready, galera_view, CONNECT_TIMEOUT,
    RETURN_EVERY, RETURN_TIMEOUT,
};
use dead_letters::{claim_replayed, write_dead_letters};
use errors::is_conflict;
use in_doubt::{undecidable, CommitInDoubt};
use isolate::write_isolating;
use position::{reset_positions, select_position, select_positions, write_position};
use statements::StatementCache;

const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Outcome of one committed batch, for logs and counters.
#[derive(Debug, Default, Clone, Copy)]
pub struct Committed {
    pub stored: usize,
    pub dead: usize,
    /// Replayed dead letters another replay took first (see `claim_replayed`).
    pub taken: usize,
    /// An earlier COMMIT of this batch had its answer lost, and the batch ran again:
    /// a dead letter found taken may have been stored by that COMMIT.
    pub answer_lost: bool,
}

/// How an attempt ends: committed, with the spool position it reaches written to
/// `collector_position` if there is one, or rolled back after every statement ran (a
/// dry run, which still finds what MySQL would refuse).
#[derive(Debug, Clone, Copy)]
enum TransactionEnd {
    Commit { position: Option<u64> },
    RollBack,
}

/// Why the sink gave up on a batch before it was committed.
#[derive(Debug)]
pub enum Stopped {
    /// The dispatcher was told to stop while the database was unreachable; the batch
    /// stays in the spool for the next start.
    Asked,
    /// A commit without a position ([`MysqlSink::commit`] with `None`) was sent and its
    /// answer lost: nothing can tell whether it happened, and sending it again could
    /// store the batch twice. What happened, for the user.
    InDoubt(String),
}

pub struct MysqlSink {
    cfg: DbConfig,
    /// The collector's `broker.client_id`, whose rows in `collector_position` tell what
    /// is committed ([`crate::sink::shares`]).
    client_id: String,
    /// The key of this writer's row in `collector_position`, for `layout`.
    position_key: String,
    /// (share, writers) of the rows this sink commits with.
    layout: (usize, usize),
    conn: Option<Conn>,
    /// Which of `cfg.endpoints()` `conn` is connected to.
    endpoint: usize,
    /// When an earlier server than `endpoint` was last tried.
    tried_return: Instant,
    /// The server the collector's writers use, and the last value of it this sink
    /// acted on (followed, or tried to).
    server: ServerInUse,
    followed: usize,
    /// The Galera view as of the last commit, `None` off Galera (see `CommitInDoubt`).
    view: Option<u64>,
    stmts: StatementCache,
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
            position_key: client_id.to_string(),
            layout: (0, 1),
            conn: None,
            endpoint: 0,
            tried_return: Instant::now(),
            server: ServerInUse::default(),
            followed: 0,
            view: None,
            stmts: StatementCache::default(),
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

    /// Writes to the server the other writers of `server` write to, and takes them
    /// along when it fails over or moves back.
    pub fn sharing_server(mut self, server: ServerInUse) -> Self {
        self.server = server;
        self
    }

    /// Commits from now on as writer `share` of `writers`, under that writer's row in
    /// `collector_position`.
    pub fn set_layout(&mut self, share: usize, writers: usize) {
        if self.layout != (share, writers) {
            self.layout = (share, writers);
            self.position_key = position_key(&self.client_id, share, writers);
        }
    }

    /// What this collector's rows in `collector_position` say is committed (of every
    /// layout of writers it ran with), waiting for the database if it is unreachable;
    /// `Err` when told to stop.
    pub fn read_committed(&mut self, stop: &Shutdown) -> Result<CommittedPositions, Stopped> {
        self.retrying(stop, 0, |sink| {
            let client_id = sink.client_id.clone();
            let rows = select_positions(sink.connection()?, &client_id)?;
            Ok(CommittedPositions::from_rows(&client_id, rows))
        })
    }

    /// Sets every row of this collector's in `collector_position` to 0 (nothing
    /// committed), when they are beyond the spool's end: the spool was replaced by an
    /// older copy, whose numbers will pass them again.
    pub fn reset_positions(&mut self, stop: &Shutdown) -> Result<(), Stopped> {
        self.retrying(stop, 0, |sink| {
            let client_id = sink.client_id.clone();
            Ok(reset_positions(sink.connection()?, &client_id)?)
        })
    }

    /// Commits the batch, retrying through outages until it is in MySQL. Messages
    /// MySQL refuses become dead letters in the same transaction. `position`, the spool
    /// position the batch reaches, is written to `collector_position` in that
    /// transaction too; it is what tells whether a commit whose answer was lost
    /// happened. With `None` (the replay commands, which have no spool) no position
    /// row is written; a commit whose answer is lost is then sent again only when every
    /// message of the batch is a claimed dead letter (whose claims cannot succeed
    /// twice), and otherwise ends in [`Stopped::InDoubt`].
    pub fn commit(
        &mut self,
        batch: &mut Batch,
        shapes: &Shapes,
        position: Option<u64>,
        stop: &Shutdown,
    ) -> Result<Committed, Stopped> {
        let held = batch.len();
        // Set when a COMMIT with a position was sent but its answer lost: the batch may
        // be in MySQL.
        let mut in_doubt: Option<(Vec<usize>, CommitInDoubt, u64)> = None;
        let mut answer_lost = false;
        let committed = self.retrying(stop, held, |sink| {
            if let Some((marked, doubt, position)) = &in_doubt {
                // The position commits with the rows, so it tells whether they did.
                // Until it can be read, the batch stays in doubt.
                sink.await_view_change(doubt)?;
                if sink.committed_position()? >= Some(*position) {
                    info!("the batch up to spool record {position} was committed before the connection dropped; not writing it again");
                    return Ok(Committed::of(batch));
                }
                unmark(batch, marked);
                in_doubt = None;
            }
            match sink.try_commit(batch, shapes, TransactionEnd::Commit { position }) {
                Ok(committed) => Ok(committed),
                Err(CommitAttemptError::InDoubt(e, marked)) => match position {
                    Some(position) => {
                        let doubt = CommitInDoubt {
                            endpoint: sink.endpoint,
                            view: sink.view,
                            since: Instant::now(),
                        };
                        in_doubt = Some((marked, doubt, position));
                        Err(e.into())
                    }
                    // A second run of a batch that did commit finds its claims gone and
                    // writes nothing for those messages.
                    None if batch.entries.iter().all(|m| m.replay_of.is_some()) => {
                        info!(
                            "the answer to the COMMIT of {held} replayed dead letters was lost ({e}); \
                             running the batch again: a dead letter that COMMIT stored is found \
                             taken and not written twice"
                        );
                        unmark(batch, &marked);
                        answer_lost = true;
                        Err(e.into())
                    }
                    None => {
                        sink.conn = None;
                        Err(AttemptFailed::GiveUp(Stopped::InDoubt(undecidable(
                            &sink.cfg,
                            sink.endpoint,
                            held,
                            &e,
                        ))))
                    }
                },
                Err(CommitAttemptError::LeaseLost(why)) => lease_lost(&why),
                Err(CommitAttemptError::NotCommitted(e)) => Err(e.into()),
            }
        })?;
        Ok(Committed {
            answer_lost,
            ..committed
        })
    }

    /// Runs the batch's statements as [`MysqlSink::commit`] would, then rolls the
    /// transaction back: nothing is written, and the messages MySQL would refuse are
    /// marked as `db_rejected` dead letters in the batch.
    pub fn trial(
        &mut self,
        batch: &mut Batch,
        shapes: &Shapes,
        stop: &Shutdown,
    ) -> Result<Committed, Stopped> {
        self.retrying(stop, batch.len(), |sink| {
            sink.try_commit(batch, shapes, TransactionEnd::RollBack)
                .map_err(|failed| match failed {
                    CommitAttemptError::NotCommitted(e) | CommitAttemptError::InDoubt(e, _) => {
                        AttemptFailed::Retry(e)
                    }
                    // `trial` runs without a lease.
                    CommitAttemptError::LeaseLost(why) => lease_lost(&why),
                })
        })
    }

    fn committed_position(&mut self) -> Result<Option<u64>, mysql::Error> {
        let key = self.position_key.clone();
        select_position(self.connection()?, &key)
    }

    /// While idle, checks now and then that the database is still reachable, so that
    /// `/readyz` and the logs tell of an outage before the next message does.
    pub fn check_alive(&mut self) {
        const EVERY: Duration = Duration::from_secs(2);
        if self.last_check.elapsed() < EVERY {
            return;
        }
        self.last_check = Instant::now();
        self.follow_other_writers();
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

    /// Moves to the server another writer moved to, once per move, if it answers this
    /// one. Only between transactions and outside the decision on a commit in doubt,
    /// whose reads must stay on one server.
    fn follow_other_writers(&mut self) {
        let shared = self.server.get();
        if self.conn.is_none() || shared == self.endpoint || shared == self.followed {
            return;
        }
        self.followed = shared;
        if let Ok((conn, i)) = connect_first(&self.cfg, shared..shared + 1, RETURN_TIMEOUT) {
            info!(
                "database server {}: writing to it from {} as the collector's other writers do",
                endpoint_name(&self.cfg, i),
                endpoint_name(&self.cfg, self.endpoint)
            );
            self.use_connection(conn, i);
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
        self.server.set(endpoint);
        self.followed = endpoint;
        // The tables may have changed while it was away.
        self.stmts.merge.clear();
    }

    /// Runs `attempt` until it succeeds, backing off (capped) while the database is
    /// unreachable, logging once when it goes and once when it comes back.
    fn retrying<T>(
        &mut self,
        stop: &Shutdown,
        held: usize,
        mut attempt: impl FnMut(&mut Self) -> Result<T, AttemptFailed>,
    ) -> Result<T, Stopped> {
        let mut backoff = Backoff::new(Duration::from_millis(100), MAX_BACKOFF);
        let mut attempts = 0u64;
        loop {
            attempts += 1;
            match attempt(self) {
                Ok(done) => {
                    self.mark_up(&format!(" and {attempts} attempts; resuming"));
                    return Ok(done);
                }
                Err(AttemptFailed::GiveUp(why)) => return Err(why),
                Err(AttemptFailed::Retry(e)) if is_conflict(&e) && !self.left_primary(&e) => {
                    // The server answered: no outage, and no back-off beyond a moment
                    // for the other writer to finish.
                    info!("write conflict ({e}); running the batch of {held} messages again");
                    std::thread::sleep(Duration::from_millis(10 * attempts.min(50)));
                }
                Err(AttemptFailed::Retry(e)) => {
                    let consequence = format!(
                        "{held} messages wait in the spool, retrying with back-off up to {} s",
                        backoff.max().as_secs()
                    );
                    self.mark_down(&e, &consequence);
                    if !backoff.wait(stop) {
                        return Err(Stopped::Asked);
                    }
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
        end: TransactionEnd,
    ) -> Result<Committed, CommitAttemptError> {
        let mut claimed = false;
        loop {
            if let Some(committed) = self.try_transaction(batch, shapes, end)? {
                return Ok(committed);
            }
            // The lease is not ours any more, or its row is gone: the claim, outside
            // the batch, takes it back where the holder is gone, or names the holder.
            let lease = self.lease.clone().expect("renewed only with a lease");
            if claimed {
                return Err(CommitAttemptError::NotCommitted(mysql::Error::from(
                    std::io::Error::other("the lease just claimed could not be renewed"),
                )));
            }
            let conn = self
                .connection()
                .map_err(CommitAttemptError::NotCommitted)?;
            match lease.claim(conn) {
                Ok(Ok(())) => claimed = true,
                Ok(Err(refused)) => {
                    return Err(CommitAttemptError::LeaseLost(
                        refused.explain(lease.client_id(), lease.ttl()),
                    ))
                }
                Err(e) => return Err(CommitAttemptError::NotCommitted(e)),
            }
        }
    }

    /// The batch's transaction, once: `None` when the lease could not be renewed in it
    /// (rolled back, with its dead-letter marks undone).
    fn try_transaction(
        &mut self,
        batch: &mut Batch,
        shapes: &Shapes,
        end: TransactionEnd,
    ) -> Result<Option<Committed>, CommitAttemptError> {
        let position_key = self.position_key.clone();
        let payload_limit = self.payload_limit;
        self.follow_other_writers();
        self.connection()
            .map_err(CommitAttemptError::NotCommitted)?;
        let conn = self.conn.as_mut().expect("connected above");
        self.stmts
            .merge
            .learn(conn, shapes)
            .map_err(CommitAttemptError::NotCommitted)?;
        let mut tx = conn
            .start_transaction(TxOpts::default())
            .map_err(CommitAttemptError::NotCommitted)?;
        claim_replayed(&mut tx, batch).map_err(CommitAttemptError::NotCommitted)?;
        let live: Vec<usize> = (0..batch.len())
            .filter(|&i| batch.entries[i].dead.is_none() && !batch.entries[i].taken_elsewhere())
            .collect();
        let mut refused = Vec::new();
        write_isolating(&mut tx, &mut self.stmts, shapes, batch, &live, &mut refused)
            .map_err(CommitAttemptError::NotCommitted)?;
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
        let position = match end {
            TransactionEnd::Commit { position } => position,
            TransactionEnd::RollBack => {
                let written = write_dead_letters(&mut tx, batch, payload_limit);
                let rolled_back = written.and_then(|()| tx.rollback());
                if let Err(e) = rolled_back {
                    unmark(batch, &marked);
                    return Err(CommitAttemptError::NotCommitted(e));
                }
                return Ok(Some(Committed::of(batch)));
            }
        };
        if let Err(e) = write_dead_letters(&mut tx, batch, payload_limit) {
            unmark(batch, &marked);
            return Err(CommitAttemptError::NotCommitted(e));
        }
        // The lease row last: every writer's transaction updates it, and holds its lock
        // from here to its COMMIT, so parallel writers wait on each other only that long.
        if let Some(lease) = &self.lease {
            match lease.renew(&mut tx) {
                Ok(true) => self.last_renewal = Instant::now(),
                Ok(false) => {
                    unmark(batch, &marked);
                    return Ok(None);
                }
                Err(e) => {
                    unmark(batch, &marked);
                    return Err(CommitAttemptError::NotCommitted(e));
                }
            }
        }
        if let Some(position) = position {
            if let Err(e) = write_position(&mut tx, &position_key, position) {
                unmark(batch, &marked);
                return Err(CommitAttemptError::NotCommitted(e));
            }
        }
        match tx.commit() {
            Ok(()) => {
                // The view this commit was made in: a later commit in doubt is decided
                // elsewhere only once the cluster has moved past it (`CommitInDoubt`).
                if self.view.is_some() {
                    if let Some(conn) = self.conn.as_mut() {
                        self.view = cluster_view(conn).ok().flatten().or(self.view);
                    }
                }
                Ok(Some(Committed::of(batch)))
            }
            // A Galera node that leaves the primary component while committing answers
            // with an error, but the write set may have reached the rest of the cluster
            // before it left and be committed there: as much in doubt as a lost answer.
            // (galera.rs's isolated-node test stored a batch of 19 messages twice when
            // this was taken for a rollback.)
            Err(e) if self.view.is_some() && errors::left_primary_at_commit(&e) => {
                Err(CommitAttemptError::InDoubt(e, marked))
            }
            // The server answered COMMIT with an error (a certification failure, say):
            // it rolled the transaction back.
            Err(e @ mysql::Error::MySqlError(_)) => {
                unmark(batch, &marked);
                Err(CommitAttemptError::NotCommitted(e))
            }
            // The server may have committed before the connection broke.
            Err(e) => Err(CommitAttemptError::InDoubt(e, marked)),
        }
    }
}

/// Why an attempt to commit failed.
enum CommitAttemptError {
    NotCommitted(mysql::Error),
    /// COMMIT was sent and its answer lost; the indices are the messages the attempt
    /// marked as refused by MySQL.
    InDoubt(mysql::Error, Vec<usize>),
    /// Another collector holds this one's client_id now; nothing was committed.
    LeaseLost(String),
}

/// How one attempt inside [`MysqlSink::retrying`] failed.
enum AttemptFailed {
    /// An outage or a conflict: worth another attempt.
    Retry(mysql::Error),
    /// Not worth another: the caller is told this.
    GiveUp(Stopped),
}

impl From<mysql::Error> for AttemptFailed {
    fn from(e: mysql::Error) -> Self {
        AttemptFailed::Retry(e)
    }
}

/// Takes back the dead letters an attempt marked, before the batch runs again.
fn unmark(batch: &mut Batch, marked: &[usize]) {
    for &i in marked {
        batch.entries[i].dead = None;
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
            answer_lost: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::batch::Replayed;

    #[test]
    fn a_committed_batch_counts_stored_dead_and_taken_messages_once_each() {
        let replayed = |gone| Replayed {
            id: 1,
            received_at: String::new(),
            replays: 0,
            gone,
        };
        let mut batch = Batch::default();
        // stored; dead; taken by another replay; taken, though it failed again;
        // replayed and stored.
        for (dead, replay_of) in [
            (false, None),
            (true, None),
            (false, Some(replayed(true))),
            (true, Some(replayed(true))),
            (false, Some(replayed(false))),
        ] {
            batch.begin("t");
            batch.current().replay_of = replay_of;
            let dl = dead.then(|| DeadLetter::new(Reason::DbRejected, "refused"));
            batch.end(Vec::new(), dl);
        }
        let c = Committed::of(&batch);
        assert_eq!((c.stored, c.dead, c.taken), (2, 1, 2));
    }
}
