//! The batch's dead letters into `dead_letters`, and the rows of replayed dead
//! letters out of it, in the batch's transaction.

use mysql::{prelude::Queryable, Params, Transaction};

use crate::{
    dead_letter::{truncate_payload, DeadLetter},
    sink::batch::{Batch, BatchedMessage},
};

/// `topic` and `cnc_id` are cut to their columns' sizes; `detail` (TEXT, 64 KiB) at a
/// number of characters that fits it even at 4 bytes each.
const DETAIL_LIMIT: usize = 8_000;
const TOPIC_LIMIT: usize = 255;
const CNC_ID_LIMIT: usize = 64;

const INSERT_DEAD_LETTER: &str = "INSERT INTO dead_letters (topic, cnc_id, plugin_class, plugin_version, reason, detail, payload, payload_bytes) VALUES (?,?,?,?,?,?,?,?)";
/// A replayed message that failed again goes back under its id, with the time it was
/// first received and its new reason.
const INSERT_REPLAYED_DEAD_LETTER: &str = "INSERT INTO dead_letters (id, received_at, topic, cnc_id, plugin_class, plugin_version, reason, detail, payload, payload_bytes, replays, last_replayed_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,NOW(3))";
const CLAIM_REPLAYED: &str = "DELETE FROM dead_letters WHERE id = ? AND replays = ?";

pub(super) fn write_dead_letters(
    tx: &mut Transaction<'_>,
    batch: &Batch,
    payload_limit: usize,
) -> Result<(), mysql::Error> {
    for (entry, dl) in batch.dead_letters() {
        let (sql, params) = dead_letter_row(entry, dl, payload_limit);
        tx.exec_drop(sql, params)?;
    }
    Ok(())
}

/// The statement that stores `entry` as the dead letter `dl`, and its parameters.
fn dead_letter_row(
    entry: &BatchedMessage,
    dl: &DeadLetter,
    payload_limit: usize,
) -> (&'static str, Params) {
    let detail: String = dl.detail.chars().take(DETAIL_LIMIT).collect();
    let (class, version) = match &dl.plugin {
        Some((c, v)) => (Some(c.as_str()), Some(v.as_str())),
        None => (None, None),
    };
    let topic: String = entry.topic.chars().take(TOPIC_LIMIT).collect();
    let cnc_id: Option<String> = dl
        .cnc_id
        .as_ref()
        .map(|c| c.chars().take(CNC_ID_LIMIT).collect());
    let payload = truncate_payload(&entry.raw, payload_limit);
    match &entry.replay_of {
        None => (
            INSERT_DEAD_LETTER,
            Params::from((
                topic,
                cnc_id,
                class,
                version,
                dl.reason.as_str(),
                detail,
                payload,
                entry.raw.len() as u64,
            )),
        ),
        Some(r) => (
            INSERT_REPLAYED_DEAD_LETTER,
            Params::Positional(vec![
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
        ),
    }
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
            tx.exec_drop(CLAIM_REPLAYED, (r.id, r.replays))?;
            r.gone = tx.affected_rows() == 0;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use mysql::Value as V;

    use super::*;
    use crate::{dead_letter::Reason, sink::batch::Replayed};

    fn text(s: &str) -> V {
        V::Bytes(s.as_bytes().to_vec())
    }

    /// A batch of one message that became `dl`.
    fn batch_of(topic: &str, raw: &[u8], dl: DeadLetter, replay_of: Option<Replayed>) -> Batch {
        let mut batch = Batch::default();
        batch.begin(topic);
        batch.current().replay_of = replay_of;
        batch.end(raw.to_vec(), Some(dl));
        batch
    }

    fn row(batch: &Batch, payload_limit: usize) -> (&'static str, Params) {
        let (entry, dl) = batch.dead_letters().next().expect("one dead letter");
        dead_letter_row(entry, dl, payload_limit)
    }

    #[test]
    fn a_dead_letter_is_inserted_with_every_column_cut_to_its_size() {
        let topic = format!("cnc/{}", "é".repeat(300));
        let mut dl = DeadLetter::new(Reason::PluginError, "ü".repeat(DETAIL_LIMIT + 5))
            .cnc_id(&"C".repeat(70));
        dl.plugin = Some(("CNCTypeA".into(), "1.0.0".into()));
        let batch = batch_of(&topic, &[b'x'; 100], dl, None);
        let (sql, params) = row(&batch, 10);
        assert_eq!(
            sql,
            "INSERT INTO dead_letters (topic, cnc_id, plugin_class, plugin_version, reason, \
             detail, payload, payload_bytes) VALUES (?,?,?,?,?,?,?,?)"
        );
        let cut_topic: String = topic.chars().take(255).collect();
        assert_eq!(
            params,
            Params::Positional(vec![
                text(&cut_topic),
                text(&"C".repeat(64)),
                text("CNCTypeA"),
                text("1.0.0"),
                text("plugin_error"),
                text(&"ü".repeat(8_000)),
                V::Bytes(vec![b'x'; 10]),
                V::UInt(100),
            ])
        );
    }

    #[test]
    fn what_is_not_known_of_a_dead_letter_is_null() {
        let batch = batch_of("cnc/a", b"{", DeadLetter::new(Reason::NotJson, "EOF"), None);
        let (_, params) = row(&batch, 1 << 20);
        assert_eq!(
            params,
            Params::Positional(vec![
                text("cnc/a"),
                V::NULL,
                V::NULL,
                V::NULL,
                text("not_json"),
                text("EOF"),
                text("{"),
                V::UInt(1),
            ])
        );
    }

    #[test]
    fn a_replayed_message_that_fails_again_goes_back_under_its_id_with_one_more_replay() {
        let replayed = Replayed {
            id: 42,
            received_at: "2025-05-16 08:23:48.123".into(),
            replays: 2,
            gone: false,
        };
        let dl = DeadLetter::new(Reason::DbRejected, "Data too long").cnc_id("CNC001");
        let batch = batch_of("cnc/b", b"{}", dl, Some(replayed));
        let (sql, params) = row(&batch, 1 << 20);
        assert_eq!(
            sql,
            "INSERT INTO dead_letters (id, received_at, topic, cnc_id, plugin_class, \
             plugin_version, reason, detail, payload, payload_bytes, replays, last_replayed_at) \
             VALUES (?,?,?,?,?,?,?,?,?,?,?,NOW(3))"
        );
        assert_eq!(
            params,
            Params::Positional(vec![
                V::UInt(42),
                text("2025-05-16 08:23:48.123"),
                text("cnc/b"),
                text("CNC001"),
                V::NULL,
                V::NULL,
                text("db_rejected"),
                text("Data too long"),
                text("{}"),
                V::UInt(2),
                V::UInt(3),
            ])
        );
    }
}
