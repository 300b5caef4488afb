//! Recognises a broker's redelivery of messages that were already spooled.
//!
//! paho acknowledges a QoS 1 message when the callback that spooled it returns. If the
//! collector dies, or the connection drops, between the append and the broker reading
//! that acknowledgement, the broker sends the message again after the reconnect, first
//! of all, in the original order. Those redeliveries are therefore a suffix of the last
//! records appended before the reconnect, arriving first: after each connect, the
//! first messages that repeat the end of the spool byte for byte are dropped (and
//! acknowledged), and the check ends at the first message that does not.
//!
//! paho's Rust API exposes neither the packet id nor the DUP flag, so content is all
//! there is to compare. The one case this drops wrongly: a machine that sends a
//! byte-identical message (same cnc_id, timestamp second and values) twice, the first
//! spooled just before a crash or disconnect, the second the first delivered after the
//! reconnect. The rows it would have produced are identical to the stored ones.

use std::collections::VecDeque;

use crate::spool::{Record, TAIL_RECORDS};

#[derive(Debug, Default)]
pub struct Redelivery {
    /// The last records appended, oldest first.
    recent: VecDeque<(String, Vec<u8>)>,
    /// Set after a connect until the first message that is not a redelivery.
    armed: Option<Matcher>,
    /// The previous run closed its connection cleanly: only this many of the last
    /// records may come again at the first connect (those spooled while it closed).
    unsure_at_start: Option<usize>,
    pub dropped: u64,
}

#[derive(Debug)]
struct Matcher {
    snapshot: Vec<(String, Vec<u8>)>,
    /// Index in `snapshot` the next redelivery must equal, once the first matched.
    next: Option<usize>,
}

impl Redelivery {
    /// Starts with the spool's tail from before a restart. `acknowledged_before` when
    /// that run closed its broker connection cleanly: the records before it were
    /// acknowledged, and only the ones from it on may come again.
    pub fn new(tail: Vec<Record>, acknowledged_before: Option<u64>) -> Self {
        let unsure_at_start =
            acknowledged_before.map(|from| tail.iter().filter(|r| r.seq >= from).count());
        Redelivery {
            recent: tail.into_iter().map(|r| (r.topic, r.payload)).collect(),
            armed: None,
            unsure_at_start,
            dropped: 0,
        }
    }

    /// A (re)connect: the next messages may be redeliveries.
    pub fn connected(&mut self) {
        let unsure = self.unsure_at_start.take().unwrap_or(self.recent.len());
        let from = self.recent.len() - unsure.min(self.recent.len());
        self.armed = (unsure > 0).then(|| Matcher {
            snapshot: self.recent.iter().skip(from).cloned().collect(),
            next: None,
        });
    }

    /// Whether this message repeats an already spooled one (and must not be spooled
    /// again). Otherwise the caller spools it and calls [`Redelivery::appended`].
    pub fn is_redelivery(&mut self, topic: &str, payload: &[u8]) -> bool {
        let Some(m) = &mut self.armed else {
            return false;
        };
        let same = |(t, p): &(String, Vec<u8>)| t == topic && p == payload;
        let hit = match m.next {
            None => m
                .snapshot
                .iter()
                .rposition(same)
                .map(|j| m.next = Some(j + 1))
                .is_some(),
            Some(j) => {
                let hit = m.snapshot.get(j).is_some_and(same);
                m.next = Some(j + 1);
                hit
            }
        };
        if hit {
            self.dropped += 1;
        } else {
            self.armed = None;
            if self.dropped > 0 {
                log::info!(
                    "dropped {} redelivered messages that were already spooled before the reconnect",
                    self.dropped
                );
                self.dropped = 0;
            }
        }
        hit
    }

    pub fn appended(&mut self, topic: &str, payload: &[u8]) {
        // Reuses the oldest entry's buffers once the ring is full: no allocation per
        // message.
        let (mut t, mut p) = if self.recent.len() == TAIL_RECORDS {
            self.recent.pop_front().expect("full")
        } else {
            (String::new(), Vec::new())
        };
        t.clear();
        t.push_str(topic);
        p.clear();
        p.extend_from_slice(payload);
        self.recent.push_back((t, p));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn after_a_clean_stop_the_first_connect_expects_nothing() {
        let mut d = super::Redelivery::new(vec![rec("a")], Some(1));
        d.connected();
        assert!(!d.is_redelivery("t", b"a"));
        // A later reconnect (a dropped connection) is checked again.
        d.connected();
        assert!(d.is_redelivery("t", b"a"));
    }

    /// Records spooled while the connection closed may not have had their
    /// acknowledgements read; the ones before surely had.
    #[test]
    fn after_a_clean_stop_only_the_records_spooled_while_closing_are_expected_again() {
        let tail = || {
            let seqs = 10..;
            seqs.zip(["a", "b", "c", "d"])
                .map(|(seq, p)| Record { seq, ..rec(p) })
                .collect()
        };
        let mut d = Redelivery::new(tail(), Some(12));
        d.connected();
        assert!(!d.is_redelivery("t", b"b"), "acknowledged before the stop");
        let mut d = Redelivery::new(tail(), Some(12));
        d.connected();
        assert!(d.is_redelivery("t", b"c"));
        assert!(d.is_redelivery("t", b"d"));
        assert!(!d.is_redelivery("t", b"d"), "past the end: a new message");
    }

    use super::*;

    fn rec(p: &str) -> Record {
        Record {
            seq: 0,
            topic: "t".into(),
            payload: p.as_bytes().to_vec(),
        }
    }

    #[test]
    fn drops_the_redelivered_suffix_then_stops_checking() {
        let mut d = Redelivery::new(vec![rec("a"), rec("b"), rec("c")], None);
        d.connected();
        assert!(d.is_redelivery("t", b"b"));
        assert!(d.is_redelivery("t", b"c"));
        assert_eq!(d.dropped, 2);
        // Past the end of what was spooled: new messages, even ones equal to old ones.
        assert!(!d.is_redelivery("t", b"a"));
        assert!(!d.is_redelivery("t", b"b"));
    }

    /// Redeliveries far longer than the broker's in-flight window were seen after a
    /// kill -9 (138 and 1,422 messages against Mosquitto's max_inflight_messages 100
    /// in `tests/delivery.rs`); with a tail of 64 records the first of them was not in
    /// it, and all were spooled a second time.
    #[test]
    fn a_redelivery_of_a_thousand_and_more_is_recognised() {
        let spooled: Vec<String> = (0..3000).map(|i| format!("m{i}")).collect();
        let mut d = Redelivery::new(Vec::new(), None);
        for p in &spooled {
            d.appended("t", p.as_bytes());
        }
        d.connected();
        for p in &spooled[3000 - 1500..] {
            assert!(d.is_redelivery("t", p.as_bytes()), "{p}");
        }
        assert!(!d.is_redelivery("t", b"m3000"));
        // The same after a restart, from the spool's tail.
        let tail = spooled[3000 - TAIL_RECORDS.min(3000)..]
            .iter()
            .map(|p| rec(p))
            .collect();
        let mut d = Redelivery::new(tail, None);
        d.connected();
        assert!(spooled[1500..]
            .iter()
            .all(|p| d.is_redelivery("t", p.as_bytes())));
    }

    #[test]
    fn a_first_message_that_is_new_ends_the_check() {
        let mut d = Redelivery::new(vec![rec("a"), rec("b")], None);
        d.connected();
        assert!(!d.is_redelivery("t", b"z"));
        assert!(!d.is_redelivery("t", b"b"));
    }

    #[test]
    fn only_after_a_connect_and_topic_counts() {
        let mut d = Redelivery::new(vec![rec("a")], None);
        assert!(!d.is_redelivery("t", b"a"), "not armed before a connect");
        d.appended("t", b"x");
        d.connected();
        assert!(!d.is_redelivery("other/topic", b"x"));
        d.connected();
        assert!(d.is_redelivery("t", b"x"));
    }
}
