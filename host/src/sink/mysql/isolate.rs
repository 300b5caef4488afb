//! Finding the messages behind a statement MySQL refuses: the rows are written again
//! in halves under savepoints until each refused message is alone.

use log::info;
use mysql::{prelude::Queryable, Transaction};

use crate::sink::batch::{Batch, Shapes};

use super::{errors::is_rejection, rows::write_entries, statements::StatementCache};

/// Writes `which`; if MySQL refuses, splits it in halves under savepoints until the
/// refused messages are found, and lists them in `refused`.
pub(super) fn write_isolating(
    tx: &mut Transaction<'_>,
    stmts: &mut StatementCache,
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
