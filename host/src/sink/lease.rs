//! One live collector per `client_id`: a lease row in `collector_lease`.
//!
//! The `client_id` is both the collector's MQTT session at the broker and its key in
//! `collector_position`. Two collectors sharing one would take the broker session from
//! each other and overwrite each other's spool position, so a collector takes the lease
//! before it subscribes, renews it with every commit and while idle, and gives it back
//! when it stops. A holder that dies (kill -9, host gone) stops renewing, and its lease
//! expires after `client_lease_secs`; a holder on this same host whose process is gone
//! is taken over at once.
//!
//! The lease is a row, not `GET_LOCK`, because `GET_LOCK` is local to one node of a
//! Galera cluster, while a row write is certified cluster-wide. Every batch's
//! transaction writes the row too, so a collector that lost its lease (cut off from the
//! database for longer than the lease while another took over) cannot commit: the
//! write conflicts with the new holder's, and the row names the new holder.

use std::time::Duration;

use mysql::prelude::Queryable;

/// Who holds a lease, as stored in `collector_lease.holder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub host: String,
    pub pid: u32,
    /// Unix milliseconds when the process started, to tell two runs apart.
    pub since_ms: u64,
}

impl Holder {
    /// This process.
    pub fn me() -> Holder {
        Holder {
            host: hostname(),
            pid: std::process::id(),
            since_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }

    fn encode(&self) -> String {
        format!(
            "host={};pid={};since={}",
            self.host, self.pid, self.since_ms
        )
    }

    fn decode(text: &str) -> Option<Holder> {
        let mut host = None;
        let mut pid = None;
        let mut since = None;
        for part in text.split(';') {
            match part.split_once('=')? {
                ("host", v) => host = Some(v.to_string()),
                ("pid", v) => pid = v.parse().ok(),
                ("since", v) => since = v.parse().ok(),
                _ => {}
            }
        }
        Some(Holder {
            host: host?,
            pid: pid?,
            since_ms: since?,
        })
    }

    /// On this host, and its process gone: it can no longer renew, so there is no
    /// need to wait for its lease to run out.
    fn is_dead_here(&self) -> bool {
        self.host == hostname()
            && std::fs::read_to_string(format!("/proc/{}/comm", self.pid))
                .map(|comm| comm.trim() != "mes-collector")
                .unwrap_or(true)
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the collector on {} (pid {})", self.host, self.pid)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "unknown-host".into())
}

/// Why the lease is not this collector's.
#[derive(Debug, Clone)]
pub enum Refused {
    /// Another live collector holds it for this much longer.
    HeldBy { holder: String, remaining: Duration },
    /// The database has no `collector_lease` table.
    NoTable(String),
}

impl Refused {
    /// The message for the log, saying what to do.
    pub fn explain(&self, client_id: &str, ttl: Duration) -> String {
        match self {
            Refused::HeldBy { holder, remaining } => format!(
                "broker.client_id {client_id:?} is in use by {holder}, whose lease runs \
                 {:.1} s more and is renewed while it runs: two collectors with one \
                 client_id would take each other's broker session and spool position. Give \
                 this collector its own broker.client_id (each collector of a shared \
                 subscription needs one), or stop the other; if it is gone for good (its \
                 host is down), this one can start once the lease runs out ({} s after its \
                 last renewal)",
                remaining.as_secs_f64(),
                ttl.as_secs()
            ),
            Refused::NoTable(e) => format!(
                "the database has no table collector_lease ({e}); apply database.sql, which \
                 adds what is missing and keeps existing tables and rows"
            ),
        }
    }
}

/// This collector's claim on its `client_id`.
#[derive(Debug, Clone)]
pub struct Lease {
    client_id: String,
    holder: Holder,
    ttl: Duration,
}

impl Lease {
    pub fn new(client_id: &str, ttl: Duration) -> Lease {
        Lease {
            client_id: client_id.to_string(),
            holder: Holder::me(),
            ttl,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Takes the lease, or renews it, through `q` (a connection or the batch's
    /// transaction). `Ok(Err(..))` when another live collector holds it.
    pub fn claim(&self, q: &mut impl Queryable) -> Result<Result<(), Refused>, mysql::Error> {
        let me = self.holder.encode();
        let ttl_us = self.ttl.as_micros() as u64;
        // MySQL assigns left to right, each assignment seeing the ones before it: the
        // holder goes first, and the rest follow whether it is now ours.
        let claimed = q.exec_drop(
            "INSERT INTO collector_lease (client_id, holder, expires_at, renewals) \
             VALUES (?, ?, NOW(3) + INTERVAL ? MICROSECOND, 1) \
             ON DUPLICATE KEY UPDATE \
             holder = IF(holder = VALUES(holder) OR expires_at < NOW(3), VALUES(holder), holder), \
             expires_at = IF(holder = VALUES(holder), VALUES(expires_at), expires_at), \
             renewals = IF(holder = VALUES(holder), renewals + 1, renewals)",
            (self.client_id.as_str(), me.as_str(), ttl_us),
        );
        match claimed {
            Err(mysql::Error::MySqlError(e)) if e.code == 1146 => {
                return Ok(Err(Refused::NoTable(e.message)))
            }
            other => other?,
        }
        let (holder, remaining_us) = self.current(q)?;
        if holder == me {
            return Ok(Ok(()));
        }
        if let Some(other) = Holder::decode(&holder).filter(Holder::is_dead_here) {
            log::warn!(
                "taking over the lease of broker.client_id {:?} from {other}, which is no longer running",
                self.client_id
            );
            q.exec_drop(
                "UPDATE collector_lease SET holder = ?, expires_at = NOW(3) + INTERVAL ? MICROSECOND, \
                 renewals = renewals + 1 WHERE client_id = ? AND holder = ?",
                (me.as_str(), ttl_us, self.client_id.as_str(), holder.as_str()),
            )?;
            if self.current(q)?.0 == me {
                return Ok(Ok(()));
            }
        }
        Ok(Err(Refused::HeldBy {
            holder: Holder::decode(&holder)
                .map(|h| h.to_string())
                .unwrap_or(holder),
            remaining: Duration::from_micros(remaining_us.max(0) as u64),
        }))
    }

    /// Renews the lease inside a batch's transaction: `Ok(false)` when this collector
    /// does not hold it (taken over, or the row is gone), and then [`Lease::claim`],
    /// outside the batch, says by whom.
    ///
    /// One UPDATE, judged by its affected rows, and no SELECT: on a Galera node, a
    /// transaction aborted by a replicated write (a brute-force abort) while a SELECT
    /// of it runs is rolled back after the SELECT's rows have gone out, and the client
    /// is never told; the statements after it then commit one by one. Seen with the
    /// SELECT that `claim` makes: a batch's rows were lost while its position was
    /// stored. A write's abort is reported in its answer, so a batch's transaction
    /// holds writes only.
    pub fn renew(&self, tx: &mut mysql::Transaction<'_>) -> Result<bool, mysql::Error> {
        let renewed = tx.exec_drop(
            "UPDATE collector_lease SET expires_at = NOW(3) + INTERVAL ? MICROSECOND, \
             renewals = renewals + 1 WHERE client_id = ? AND holder = ?",
            (
                self.ttl.as_micros() as u64,
                self.client_id.as_str(),
                self.holder.encode(),
            ),
        );
        match renewed {
            // No table: `claim` explains it.
            Err(mysql::Error::MySqlError(e)) if e.code == 1146 => Ok(false),
            // `renewals` changes on every renewal, so a held row always counts.
            Ok(()) => Ok(tx.affected_rows() == 1),
            Err(e) => Err(e),
        }
    }

    fn current(&self, q: &mut impl Queryable) -> Result<(String, i64), mysql::Error> {
        let row: Option<(String, i64)> = q.exec_first(
            "SELECT holder, TIMESTAMPDIFF(MICROSECOND, NOW(3), expires_at) \
             FROM collector_lease WHERE client_id = ?",
            (self.client_id.as_str(),),
        )?;
        Ok(row.unwrap_or_default())
    }

    /// Gives the lease back, so that a replacement can start at once.
    pub fn release(&self, q: &mut impl Queryable) -> Result<(), mysql::Error> {
        q.exec_drop(
            "DELETE FROM collector_lease WHERE client_id = ? AND holder = ?",
            (self.client_id.as_str(), self.holder.encode()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_reads_back_as_written() {
        let me = Holder::me();
        assert_eq!(Holder::decode(&me.encode()), Some(me.clone()));
        assert_eq!(Holder::decode("garbage"), None);
    }

    #[test]
    fn a_holder_elsewhere_is_never_taken_for_dead() {
        let other = Holder {
            host: "another-host".into(),
            pid: 1,
            since_ms: 0,
        };
        assert!(!other.is_dead_here());
        let gone = Holder {
            host: hostname(),
            pid: u32::MAX - 1,
            since_ms: 0,
        };
        assert!(gone.is_dead_here());
    }
}
