//! Parallel writers: each owns a fixed share of the machines, and records its own
//! progress through the spool.
//!
//! With a backlog in the spool ([`SPREAD_AT`]) the machines are spread over all
//! writers; otherwise they all go to the first, since at a steady rate each writer
//! would commit a small transaction of its own per latency budget, and the database's
//! cost per message goes up (measured: 5.9 against 3.5 CPU-s per 100k at 2,000 msg/s
//! with two writers against one). The dispatcher changes between the two only once
//! every writer has committed what it was given ([`Progress`]), so that a machine's
//! rows never overtake each other. While spread, a machine's messages always go to the
//! same writer (by a hash of its cnc_id), so they commit in order.
//!
//! Writer `w` of `n` commits its share of each sealed batch with its own row in
//! `collector_position`, `<client_id>#writer-<w>-of-<n>`; while the first writer has
//! all the machines it commits under the plain `<client_id>` row, a layout of one
//! writer, as earlier versions did. A row at `p` says: every message of its share up
//! to spool record `p` is committed. After a restart the dispatcher starts where every
//! writer's row reaches, and leaves out the messages a row says are committed, so that
//! each is stored once, also when the number of writers changed in between (the rows
//! of every layout found count).

use std::sync::{Arc, Mutex};

use crate::lock;

/// Which of `writers` owns the machine `cnc_id`; messages without a cnc_id (a payload
/// that did not parse) go to the first. FNV-1a: stable across builds and versions,
/// since a message must land with the same writer after an upgrade.
pub fn share_of(cnc_id: Option<&str>, writers: usize) -> usize {
    if writers <= 1 {
        return 0;
    }
    let Some(id) = cnc_id else { return 0 };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % writers as u64) as usize
}

/// What the `collector_position` keys of `client_id`'s parallel writers begin with.
pub fn writer_keys_prefix(client_id: &str) -> String {
    format!("{client_id}{WRITER_KEY}")
}

const WRITER_KEY: &str = "#writer-";

/// The `collector_position` key of writer `share` of `writers`.
pub fn position_key(client_id: &str, share: usize, writers: usize) -> String {
    if writers <= 1 {
        client_id.to_string()
    } else {
        format!("{}{share}-of-{writers}", writer_keys_prefix(client_id))
    }
}

/// The longest `collector_position` key for `client_id` with `writers` writers, to
/// check against the column's 191 characters.
pub fn longest_key(client_id: &str, writers: usize) -> usize {
    position_key(client_id, writers.saturating_sub(1), writers)
        .chars()
        .count()
}

/// What `collector_position` says is committed, by layout (number of writers).
#[derive(Debug, Clone, Default)]
pub struct CommittedPositions {
    /// (writers, each share's position or `None` with no row).
    layouts: Vec<(usize, Vec<Option<u64>>)>,
}

impl CommittedPositions {
    /// From the rows of this collector: `(key, last_seq)`, keys of other collectors
    /// ignored.
    pub fn from_rows(client_id: &str, rows: impl IntoIterator<Item = (String, u64)>) -> Self {
        let mut c = CommittedPositions::default();
        for (key, seq) in rows {
            let Some((share, writers)) = parse_key(client_id, &key) else {
                continue;
            };
            let layout = match c.layouts.iter().position(|(n, _)| *n == writers) {
                Some(i) => &mut c.layouts[i].1,
                None => {
                    c.layouts.push((writers, vec![None; writers]));
                    &mut c.layouts.last_mut().expect("pushed").1
                }
            };
            layout[share] = Some(seq);
        }
        c.layouts.sort_by_key(|(n, _)| *n);
        c
    }

    fn positions(&self) -> impl Iterator<Item = u64> + '_ {
        self.layouts
            .iter()
            .flat_map(|(_, p)| p.iter().flatten().copied())
    }

    /// Where to start reading a spool whose first record is `first`: after the
    /// records every writer of some layout has committed. (A position beyond the
    /// spool's end is the caller's to check first, see [`CommittedPositions::is_beyond`].)
    pub fn start(&self, first: u64) -> u64 {
        // A layout whose every share has a row covers everything up to its lowest.
        let covered = self
            .layouts
            .iter()
            .filter_map(|(_, p)| p.iter().copied().collect::<Option<Vec<u64>>>())
            .filter_map(|p| p.into_iter().min())
            .max();
        match covered {
            Some(p) if p + 1 > first => p + 1,
            _ => first,
        }
    }

    /// Whether a position is at or beyond the spool's end.
    pub fn is_beyond(&self, next: u64) -> bool {
        self.positions().any(|p| p >= next)
    }

    /// Whether record `seq` of machine `cnc_id` is committed already, by a writer of any
    /// layout: a writer whose row is past `seq` committed every message of its share
    /// up to there.
    pub fn covers(&self, seq: u64, cnc_id: Option<&str>) -> bool {
        self.layouts
            .iter()
            .any(|(n, p)| p[share_of(cnc_id, *n)].is_some_and(|at| at >= seq))
    }

    /// The highest position of any row: past it, nothing is left out.
    pub fn highest(&self) -> Option<u64> {
        self.positions().max()
    }
}

/// `(share, writers)` of a key of `client_id`'s.
fn parse_key(client_id: &str, key: &str) -> Option<(usize, usize)> {
    if key == client_id {
        return Some((0, 1));
    }
    let rest = key.strip_prefix(client_id)?.strip_prefix(WRITER_KEY)?;
    let (share, writers) = rest.split_once("-of-")?;
    let (share, writers): (usize, usize) = (share.parse().ok()?, writers.parse().ok()?);
    (share < writers && writers > 1 && writers <= MAX_WRITERS).then_some((share, writers))
}

/// More writers than this would only add lock waits on a server's cores.
pub const MAX_WRITERS: usize = 16;

/// Where each writer has got: the spool position of the last batch it committed (or
/// was given empty). The spool is released up to the lowest.
#[derive(Debug, Clone)]
pub struct Progress(Arc<Mutex<Vec<Option<u64>>>>);

impl Progress {
    pub fn new(writers: usize) -> Self {
        Progress(Arc::new(Mutex::new(vec![None; writers])))
    }

    /// Writer `share` has got to `position`; the lowest position all have got to.
    pub fn report(&self, share: usize, position: u64) -> Option<u64> {
        let mut reached = lock(&self.0);
        reached[share] = Some(position);
        reached.iter().copied().min().flatten()
    }

    /// Whether every writer has got to `position`.
    pub fn all_reached(&self, position: u64) -> bool {
        lock(&self.0)
            .iter()
            .all(|p| p.is_some_and(|p| p >= position))
    }
}

/// Whether to spread the machines over all `writers`, given the records waiting in
/// the spool and whether they are spread now. Up at [`SPREAD_AT`] full batches per
/// writer waiting, down below one: between the two it stays as it is, so that it does
/// not change back and forth (each change waits for every writer).
pub fn spread(writers: usize, max_messages: usize, waiting: u64, spread_now: bool) -> bool {
    let batch = max_messages as u64;
    match writers {
        0 | 1 => false,
        _ if spread_now => waiting >= batch,
        n => waiting >= SPREAD_AT * batch * n as u64,
    }
}

/// Full batches per writer that must wait before the machines are spread. Spreading
/// costs: more, smaller transactions, which contend for the same cores. It pays on
/// the backlog of an outage (two writers drained 500,000 messages 1.9 times as fast),
/// not on the few batches a full-speed burst leaves (with 4, the end-to-end run at
/// full speed spread and fell from 0.93 to 0.79 of the raw broker path).
pub const SPREAD_AT: u64 = 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_machine_always_has_the_same_writer() {
        // Fixed values: a change of the hash would send a machine's messages to
        // another writer after an upgrade, and the restart filter would misjudge them.
        // (Computed apart, in Python, from the FNV-1a definition.)
        assert_eq!(share_of(Some("CNC001"), 2), 0);
        assert_eq!(share_of(Some("CNC002"), 2), 1);
        assert_eq!(share_of(Some("CNC002"), 3), 0);
        assert_eq!(share_of(None, 4), 0);
        assert_eq!(share_of(Some("CNC001"), 1), 0);
        let spread: Vec<usize> = (0..100)
            .map(|i| share_of(Some(&format!("M{i:03}")), 4))
            .collect();
        for w in 0..4 {
            let n = spread.iter().filter(|&&s| s == w).count();
            assert!((15..=35).contains(&n), "writer {w} has {n} of 100 machines");
        }
    }

    #[test]
    fn the_machines_are_spread_over_the_writers_only_with_a_backlog() {
        assert!(!spread(1, 500, 1_000_000, false), "one writer");
        assert!(!spread(2, 500, 19_999, false));
        assert!(spread(2, 500, 20_000, false));
        assert!(spread(2, 500, 500, true), "stays spread down to a batch");
        assert!(!spread(2, 500, 499, true));
    }

    #[test]
    fn progress_is_the_lowest_of_all_writers() {
        let p = Progress::new(2);
        assert_eq!(p.report(0, 10), None, "writer 1 has not reported");
        assert!(!p.all_reached(10));
        assert_eq!(p.report(1, 12), Some(10));
        assert!(p.all_reached(10) && !p.all_reached(11));
    }

    #[test]
    fn keys_read_back_and_other_collectors_rows_are_ignored() {
        assert_eq!(position_key("c1", 0, 1), "c1");
        assert_eq!(position_key("c1", 1, 3), "c1#writer-1-of-3");
        assert_eq!(parse_key("c1", "c1"), Some((0, 1)));
        assert_eq!(parse_key("c1", "c1#writer-1-of-3"), Some((1, 3)));
        for other in [
            "c10",
            "c1#writer-3-of-3",
            "c1#writer-0-of-1",
            "c1#writer-x-of-2",
            "c2",
        ] {
            assert_eq!(parse_key("c1", other), None, "{other}");
        }
        assert_eq!(longest_key("c1", 12), "c1#writer-11-of-12".len());
    }

    fn rows(r: &[(&str, u64)]) -> CommittedPositions {
        CommittedPositions::from_rows("c", r.iter().map(|(k, s)| (k.to_string(), *s)))
    }

    #[test]
    fn one_writer_starts_after_its_position_as_before() {
        let c = rows(&[("c", 106)]);
        assert_eq!(c.start(100), 107);
        assert!(!c.covers(107, Some("CNC001")));
        assert_eq!(rows(&[]).start(100), 100);
        assert_eq!(rows(&[("c", 50)]).start(100), 100, "a new spool");
        let all = rows(&[("c", 199)]);
        assert_eq!(all.start(100), 200, "all committed: what comes next");
        assert!(!all.is_beyond(200));
        assert!(rows(&[("c", 250)]).is_beyond(200), "an older copy");
    }

    #[test]
    fn several_writers_start_at_the_slowest_and_leave_out_what_the_others_committed() {
        let a = share_of(Some("A"), 2);
        let b = 1 - a;
        let key = |w: usize| format!("c#writer-{w}-of-2");
        let c = rows(&[(&key(a), 150), (&key(b), 120)]);
        assert_eq!(c.start(100), 121);
        assert!(c.covers(140, Some("A")), "A's writer reached 150");
        assert!(!c.covers(140, Some("B")), "B's only 120");
        assert!(!c.covers(151, Some("A")));
        // A writer with no row yet covers nothing, and holds the start at the spool's.
        let c = rows(&[(&key(a), 150)]);
        assert_eq!(c.start(100), 100);
        assert!(c.covers(140, Some("A")));
        assert!(!c.covers(101, Some("B")));
    }

    #[test]
    fn the_rows_of_an_earlier_layout_still_count() {
        // One writer until 130, then two, which got to 160 and 140.
        let two = |m: &str| format!("c#writer-{}-of-2", share_of(Some(m), 2));
        let c = rows(&[("c", 130), (&two("A"), 160), (&two("B"), 140)]);
        let (a, b) = (Some("A"), Some("B"));
        assert_eq!(c.start(100), 141);
        assert!(c.covers(125, b) && c.covers(155, a) && !c.covers(145, b));
        assert_eq!(c.highest(), Some(160));
        assert!(c.is_beyond(160) && !c.is_beyond(161));
    }
}
