//! The batch's dead letters into `dead_letters`, and the rows of replayed dead
//! letters out of it, in the batch's transaction.

use mysql::{prelude::Queryable, Transaction};

use crate::{dead_letter::truncate_payload, sink::batch::Batch};

const DETAIL_LIMIT: usize = 8_000;

pub(super) fn write_dead_letters(
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
pub(super) fn claim_replayed(
    tx: &mut Transaction<'_>,
    batch: &mut Batch,
) -> Result<(), mysql::Error> {
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
