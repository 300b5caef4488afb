//! A writer's row in `collector_position`: the spool position its last commit
//! reached. It is written in the batch's transaction, so it tells after a restart, or
//! after a COMMIT whose answer was lost, what is in MySQL. A collector with several
//! writers has a row for each ([`crate::sink::shares`]).

use mysql::{prelude::Queryable, Conn, Transaction};

use crate::sink::shares::writer_keys_prefix;

const WRITE_POSITION: &str = "INSERT INTO collector_position (client_id, last_seq) VALUES (?, ?) \
                              ON DUPLICATE KEY UPDATE last_seq = VALUES(last_seq)";
const READ_POSITION: &str = "SELECT last_seq FROM collector_position WHERE client_id = ?";
/// The collector's rows: its own key, and its writers' (`<client_id>#writer-…`). LEFT
/// rather than LIKE, whose escape character depends on the sql_mode.
const READ_POSITIONS: &str = "SELECT client_id, last_seq FROM collector_position \
                              WHERE client_id = ? OR LEFT(client_id, CHAR_LENGTH(?)) = ?";
const RESET_POSITIONS: &str = "UPDATE collector_position SET last_seq = 0 \
                               WHERE client_id = ? OR LEFT(client_id, CHAR_LENGTH(?)) = ?";

/// Records, in the batch's transaction, that the writer keyed `key` has committed up
/// to spool record `position`.
pub(super) fn write_position(
    tx: &mut Transaction<'_>,
    key: &str,
    position: u64,
) -> Result<(), mysql::Error> {
    tx.exec_drop(WRITE_POSITION, (key, position))
}

/// The spool position the writer keyed `key` committed last; `None` with no row yet.
pub(super) fn select_position(conn: &mut Conn, key: &str) -> Result<Option<u64>, mysql::Error> {
    conn.exec_first(READ_POSITION, (key,))
}

/// Every row of `client_id`'s, as (key, position).
pub(super) fn select_positions(
    conn: &mut Conn,
    client_id: &str,
) -> Result<Vec<(String, u64)>, mysql::Error> {
    conn.exec(READ_POSITIONS, rows_of(client_id))
}

/// Sets every row of `client_id`'s to 0.
pub(super) fn reset_positions(conn: &mut Conn, client_id: &str) -> Result<(), mysql::Error> {
    conn.exec_drop(RESET_POSITIONS, rows_of(client_id))
}

/// The parameters of the WHERE clause that picks `client_id`'s rows.
fn rows_of(client_id: &str) -> (&str, String, String) {
    let writers = writer_keys_prefix(client_id);
    (client_id, writers.clone(), writers)
}
