//! This collector's row in `collector_position`: the spool position its last commit
//! reached. It is written in the batch's transaction, so it tells after a restart, or
//! after a COMMIT whose answer was lost, what is in MySQL.

use mysql::{prelude::Queryable, Conn, Transaction};

const WRITE_POSITION: &str = "INSERT INTO collector_position (client_id, last_seq) VALUES (?, ?) \
                              ON DUPLICATE KEY UPDATE last_seq = VALUES(last_seq)";
const READ_POSITION: &str = "SELECT last_seq FROM collector_position WHERE client_id = ?";

/// Records, in the batch's transaction, that `client_id` has committed up to spool
/// record `position`.
pub(super) fn write_position(
    tx: &mut Transaction<'_>,
    client_id: &str,
    position: u64,
) -> Result<(), mysql::Error> {
    tx.exec_drop(WRITE_POSITION, (client_id, position))
}

/// The spool position `client_id` committed last; `None` with no row yet.
pub(super) fn select_position(
    conn: &mut Conn,
    client_id: &str,
) -> Result<Option<u64>, mysql::Error> {
    conn.exec_first(READ_POSITION, (client_id,))
}
