//! A COMMIT whose answer was lost: the batch may be in MySQL or not. The position
//! row, committed with the rows, tells which; on a Galera cluster it is read on
//! another node only once the cluster has dropped the node the COMMIT went to.

use std::time::{Duration, Instant};

use log::warn;

use crate::sink::config::DbConfig;

use super::{
    connection::{endpoint_name, galera_view},
    MysqlSink,
};

/// How long an in-doubt commit waits for the cluster to drop the node it was sent to,
/// before the position is read on another node anyway.
const VIEW_CHANGE_WAIT: Duration = Duration::from_secs(60);

/// Where a COMMIT whose answer was lost was sent, to decide it on another node.
#[derive(Debug, Clone, Copy)]
pub(super) struct CommitInDoubt {
    pub(super) endpoint: usize,
    /// The Galera view at the last commit before it, if on Galera.
    pub(super) view: Option<u64>,
    pub(super) since: Instant,
}

impl MysqlSink {
    /// On a Galera cluster, before a commit sent to one node is decided on another:
    /// waits until the cluster has dropped the first node (its view changed since the
    /// last commit). Galera delivers every write set of a view before the view change,
    /// so a commit the dead node had sent out is then known to the node read here (and
    /// `wsrep_sync_wait` makes the read wait until it is applied); read earlier, it
    /// could still be on its way, and the batch would be written twice.
    pub(super) fn await_view_change(&mut self, doubt: &CommitInDoubt) -> Result<(), mysql::Error> {
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
}

/// What is said of a COMMIT of `held` messages, sent to `endpoint`, whose answer was
/// lost, when no position row was written with it: nothing can tell whether it
/// happened.
pub(super) fn undecidable(
    cfg: &DbConfig,
    endpoint: usize,
    held: usize,
    e: &mysql::Error,
) -> String {
    format!(
        "the COMMIT of a batch of {held} messages was sent to {} but its answer was lost ({e}): \
         the batch may or may not be stored, and with no position row nothing tells which; \
         not sent again, since that could store it twice",
        endpoint_name(cfg, endpoint)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_undecidable_commit_is_told_with_where_it_went_and_what_was_not_done() {
        let cfg = DbConfig {
            host: String::new(),
            port: 3306,
            hosts: vec!["db1".into(), "db2:3307".into()],
            user: "mes".into(),
            password: String::new(),
            password_file: None,
            database: "cnc_database".into(),
            tls: None,
        };
        let lost = mysql::Error::from(std::io::Error::other("connection reset"));
        assert_eq!(
            undecidable(&cfg, 1, 500, &lost),
            "the COMMIT of a batch of 500 messages was sent to db2:3307 but its answer was \
             lost (IoError { connection reset }): the batch may or may not be stored, \
             and with no position row nothing tells which; not sent again, since that could \
             store it twice"
        );
    }
}
