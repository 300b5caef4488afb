//! What a MySQL error means for the batch: a conflict to run again, a refusal of what
//! a statement contained (traced to its messages, which become dead letters), or,
//! anything else, the server being unavailable (retried with back-off).

/// A write conflict: a deadlock, a lock wait timeout, or a Galera certification
/// failure (reported as a deadlock, at any statement or at COMMIT). Nothing of the
/// transaction was kept; running it again is the cure.
pub(super) fn is_conflict(e: &mysql::Error) -> bool {
    matches!(e, mysql::Error::MySqlError(se) if se.code == 1213 || se.code == 1205)
}

/// Whether MySQL refused the statement because of what it contained, as opposed to
/// the connection or the server being unavailable, or a transient conflict.
pub(super) fn is_rejection(e: &mysql::Error) -> bool {
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
