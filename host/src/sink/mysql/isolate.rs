//! Finding the messages behind a statement MySQL refuses: the rows are written again
//! in halves under savepoints until each refused message is alone.

use log::info;
use mysql::{prelude::Queryable, Transaction};

use crate::sink::batch::{Batch, Shapes};

use super::{errors::is_rejection, rows::write_entries, statements::StatementCache};

/// Writes the messages `which` of `batch`; if MySQL refuses, splits them in halves
/// under savepoints until the refused messages are found, and lists them in
/// `refused` with MySQL's error.
pub(super) fn write_isolating(
    tx: &mut Transaction<'_>,
    stmts: &mut StatementCache,
    shapes: &Shapes,
    batch: &Batch,
    which: &[usize],
    refused: &mut Vec<(usize, String)>,
) -> Result<(), mysql::Error> {
    let mut writer = BatchInTransaction {
        tx,
        stmts,
        shapes,
        batch,
    };
    isolate(&mut writer, which, 0, refused)
}

/// What the bisection does in the transaction: run a savepoint statement, write some
/// of the batch's messages.
trait SavepointWriter {
    fn execute(&mut self, sql: &str) -> Result<(), mysql::Error>;
    fn write(&mut self, which: &[usize]) -> Result<(), mysql::Error>;
}

struct BatchInTransaction<'a, 't> {
    tx: &'a mut Transaction<'t>,
    stmts: &'a mut StatementCache,
    shapes: &'a Shapes,
    batch: &'a Batch,
}

impl SavepointWriter for BatchInTransaction<'_, '_> {
    fn execute(&mut self, sql: &str) -> Result<(), mysql::Error> {
        self.tx.query_drop(sql)
    }

    fn write(&mut self, which: &[usize]) -> Result<(), mysql::Error> {
        write_entries(self.tx, self.stmts, self.shapes, self.batch, which)
    }
}

fn isolate(
    w: &mut impl SavepointWriter,
    which: &[usize],
    depth: usize,
    refused: &mut Vec<(usize, String)>,
) -> Result<(), mysql::Error> {
    if which.is_empty() {
        return Ok(());
    }
    w.execute(&format!("SAVEPOINT s{depth}"))?;
    match w.write(which) {
        Ok(()) => Ok(()),
        Err(e) if is_rejection(&e) => {
            w.execute(&format!("ROLLBACK TO SAVEPOINT s{depth}"))?;
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
            isolate(w, a, depth + 1, refused)?;
            isolate(w, b, depth + 1, refused)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use mysql::MySqlError;

    use super::*;

    fn server(code: u16, message: &str) -> mysql::Error {
        mysql::Error::MySqlError(MySqlError {
            state: "HY000".into(),
            message: message.into(),
            code,
        })
    }

    /// Records what the bisection sends; refuses any write that holds a message of
    /// `refuse`, and answers the `conflict_at`-th write with a deadlock.
    #[derive(Default)]
    struct Recording {
        refuse: Vec<usize>,
        conflict_at: Option<usize>,
        writes: usize,
        sent: Vec<String>,
    }

    impl SavepointWriter for Recording {
        fn execute(&mut self, sql: &str) -> Result<(), mysql::Error> {
            self.sent.push(sql.to_string());
            Ok(())
        }

        fn write(&mut self, which: &[usize]) -> Result<(), mysql::Error> {
            self.sent.push(format!("write {which:?}"));
            self.writes += 1;
            if self.conflict_at == Some(self.writes) {
                return Err(server(1213, "Deadlock found"));
            }
            match which.iter().find(|i| self.refuse.contains(i)) {
                Some(i) => Err(server(1406, &format!("Data too long (message {i})"))),
                None => Ok(()),
            }
        }
    }

    fn run(w: &mut Recording, which: &[usize]) -> Result<Vec<(usize, String)>, mysql::Error> {
        let mut refused = Vec::new();
        isolate(w, which, 0, &mut refused)?;
        Ok(refused)
    }

    #[test]
    fn a_batch_mysql_takes_is_written_once_under_one_savepoint() {
        let mut w = Recording::default();
        assert_eq!(run(&mut w, &[0, 1, 3]).unwrap(), []);
        assert_eq!(w.sent, ["SAVEPOINT s0", "write [0, 1, 3]"]);
    }

    #[test]
    fn nothing_is_sent_for_no_messages() {
        let mut w = Recording::default();
        assert_eq!(run(&mut w, &[]).unwrap(), []);
        assert!(w.sent.is_empty());
    }

    #[test]
    fn a_refused_message_is_found_by_halving_under_savepoints() {
        let mut w = Recording {
            refuse: vec![5],
            ..Recording::default()
        };
        assert_eq!(
            run(&mut w, &[0, 2, 5, 7]).unwrap(),
            [(
                5,
                // The driver's text of the error, as the dead letter's detail.
                "MySqlError { ERROR 1406 (HY000): Data too long (message 5) }".to_string()
            )]
        );
        assert_eq!(
            w.sent,
            [
                "SAVEPOINT s0",
                "write [0, 2, 5, 7]",
                "ROLLBACK TO SAVEPOINT s0",
                "SAVEPOINT s1",
                "write [0, 2]",
                "SAVEPOINT s1",
                "write [5, 7]",
                "ROLLBACK TO SAVEPOINT s1",
                "SAVEPOINT s2",
                "write [5]",
                "ROLLBACK TO SAVEPOINT s2",
                "SAVEPOINT s2",
                "write [7]",
            ]
        );
    }

    #[test]
    fn every_refused_message_ends_alone_in_batch_order() {
        let mut w = Recording {
            refuse: vec![0, 1, 2],
            ..Recording::default()
        };
        let refused: Vec<usize> = run(&mut w, &[0, 1, 2])
            .unwrap()
            .into_iter()
            .map(|(i, _)| i)
            .collect();
        assert_eq!(refused, [0, 1, 2]);
        // [0,1,2] → [0] and [1,2] → [1] and [2].
        assert_eq!(w.writes, 5);
    }

    #[test]
    fn a_conflict_while_isolating_fails_the_attempt() {
        let mut w = Recording {
            refuse: vec![1],
            conflict_at: Some(2),
            ..Recording::default()
        };
        let e = run(&mut w, &[0, 1]).unwrap_err();
        assert!(
            matches!(e, mysql::Error::MySqlError(ref se) if se.code == 1213),
            "{e}"
        );
        assert_eq!(
            w.sent,
            [
                "SAVEPOINT s0",
                "write [0, 1]",
                "ROLLBACK TO SAVEPOINT s0",
                "SAVEPOINT s1",
                "write [0]",
            ]
        );
    }
}
