//! What a MySQL error means for the batch: a conflict to run again, a refusal of what
//! a statement contained (traced to its messages, which become dead letters), or,
//! anything else, the server being unavailable (retried with back-off).

/// A write conflict: a deadlock, a lock wait timeout, or a Galera certification
/// failure (reported as a deadlock, at any statement or at COMMIT). The sink gives up
/// the whole transaction and runs it again (a lock wait timeout alone would roll back
/// only its statement).
pub(super) fn is_conflict(e: &mysql::Error) -> bool {
    matches!(e, mysql::Error::MySqlError(se) if se.code == 1213 || se.code == 1205)
}

/// An error a Galera node answers COMMIT with when it has left the primary component
/// ("WSREP has not yet prepared node for application use"; "Error while appending
/// streaming replication fragment ... Not connected to Primary Component"): unlike a
/// certification failure, it does not say that the rest of the cluster did not
/// commit the write set.
pub(super) fn left_primary_at_commit(e: &mysql::Error) -> bool {
    matches!(e, mysql::Error::MySqlError(se) if se.code == 1047 || se.code == 1180)
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
            // prepared node for application use"; "Error while appending streaming
            // replication fragment", 1180): another node is tried (an answer to
            // COMMIT leaves the commit in doubt first: `left_primary_at_commit`)
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

#[cfg(test)]
mod tests {
    use mysql::{DriverError, MySqlError};

    use super::*;

    #[test]
    fn leaving_the_primary_component_at_commit_is_in_doubt_and_a_conflict_is_not() {
        assert!(left_primary_at_commit(&server(1180)));
        assert!(left_primary_at_commit(&server(1047)));
        // A certification failure at COMMIT: rolled back everywhere.
        assert!(!left_primary_at_commit(&server(1213)));
        assert!(!left_primary_at_commit(&server(1062)));
    }

    fn server(code: u16) -> mysql::Error {
        mysql::Error::MySqlError(MySqlError {
            state: "HY000".into(),
            message: format!("error {code}"),
            code,
        })
    }

    /// Refusals of what a statement contained: the messages behind it become dead
    /// letters. Duplicate key, data too long, incorrect value, NULL into NOT NULL,
    /// out of range, unknown table, unknown column, syntax, check constraint.
    const REFUSALS: [u16; 9] = [1062, 1406, 1366, 1048, 1264, 1146, 1054, 1064, 4025];

    /// Everything the error list names as the server or the connection, never the
    /// statement: retried, never dead-lettered.
    const NOT_REFUSALS: [u16; 14] = [
        1205, 1213, 1053, 1927, 1040, 1290, 1836, 1047, 1180, 1317, 1037, 1041, 1021, 1243,
    ];

    #[test]
    fn a_deadlock_or_lock_wait_timeout_is_a_conflict_and_nothing_else_is() {
        assert!(is_conflict(&server(1213)));
        assert!(is_conflict(&server(1205)));
        for code in REFUSALS
            .into_iter()
            .chain(NOT_REFUSALS)
            .filter(|c| ![1205, 1213].contains(c))
        {
            assert!(!is_conflict(&server(code)), "{code}");
        }
        assert!(!is_conflict(&std::io::Error::other("reset").into()));
    }

    #[test]
    fn what_a_statement_contained_is_a_rejection_and_the_server_being_unavailable_is_not() {
        for code in REFUSALS {
            assert!(is_rejection(&server(code)), "{code}");
        }
        for code in NOT_REFUSALS {
            assert!(!is_rejection(&server(code)), "{code}");
        }
    }

    #[test]
    fn the_driver_refusing_a_statement_is_a_rejection_and_losing_the_connection_is_not() {
        for e in [
            DriverError::MismatchedStmtParams(2, 3),
            DriverError::PacketTooLarge,
            DriverError::MixedParams,
        ] {
            assert!(is_rejection(&mysql::Error::DriverError(e.clone())), "{e:?}");
        }
        for e in [
            DriverError::ConnectTimeout,
            DriverError::PacketOutOfSync,
            DriverError::Timeout,
        ] {
            assert!(
                !is_rejection(&mysql::Error::DriverError(e.clone())),
                "{e:?}"
            );
        }
        assert!(!is_rejection(&std::io::Error::other("broken pipe").into()));
    }
}
