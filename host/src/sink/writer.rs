//! Where batches are written: a thread of its own commits each batch the dispatcher
//! seals, so that MySQL works on one batch while the plugins fill the next. Per-cnc_id
//! order is kept: there is one dispatcher, a machine's messages always go to the same
//! writer ([`crate::sink::shares`]), and each writer commits its batches in order.
//!
//! The writer knows the sink and nothing upstream: what a commit means for the spool
//! is the pipeline's business, told through the `committed` callback.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use log::{debug, info, warn};

use crate::{
    fasthash::FxBuild,
    metrics::Metrics,
    shutdown::Shutdown,
    sink::{
        batch::{Batch, Shape, Shapes},
        mysql::{MysqlSink, Stopped},
        totals::Totals,
    },
};

/// A batch ready to commit: its messages (this writer's share of them, perhaps none),
/// the spool position it reaches, and the row shapes first seen in it.
pub struct SealedBatch {
    pub batch: Batch,
    pub position: u64,
    pub new_shapes: Vec<Shape>,
    /// (this writer, of how many) the machines are spread over: whose row in
    /// `collector_position` the commit writes ([`crate::sink::shares`]).
    pub layout: (usize, usize),
}

const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// How long a commit takes these days: a moving average the writer keeps and the
/// dispatcher reads, so that a batch waits for more messages only as long as the
/// latency budget leaves after its commit.
#[derive(Debug, Clone, Default)]
pub struct CommitTime(Arc<AtomicU64>);

impl CommitTime {
    fn record(&self, took: Duration) {
        let took = took.as_micros().min(u64::MAX as u128) as u64;
        let before = self.0.load(Ordering::Relaxed);
        // A 1/8 weight: a single slow commit (an outage's retries) moves it little,
        // a lasting change within a few dozen commits.
        let now = if before == 0 {
            took
        } else {
            before - before / 8 + took / 8
        };
        self.0.store(now, Ordering::Relaxed);
    }

    pub fn typical(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }
}

/// Told the spool position each commit reaches, once it is committed.
pub type OnCommitted = Box<dyn FnMut(u64) + Send>;

pub struct Writer {
    sink: MysqlSink,
    metrics: Arc<Metrics>,
    committed: OnCommitted,
    /// The dispatcher's shapes, mirrored from what each sealed batch brings.
    shapes: Shapes,
    totals: Totals,
    commit_time: CommitTime,
}

impl Writer {
    pub fn new(
        sink: MysqlSink,
        metrics: Arc<Metrics>,
        commit_time: CommitTime,
        committed: OnCommitted,
    ) -> Self {
        Writer {
            sink,
            metrics,
            committed,
            shapes: Shapes::default(),
            totals: Totals::default(),
            commit_time,
        }
    }

    /// Commits sealed batches in order until the dispatcher hangs up (or `stop` is
    /// requested while the database is unreachable), sending each emptied batch back
    /// for reuse.
    pub fn run(
        mut self,
        sealed: Receiver<SealedBatch>,
        emptied: Sender<Batch>,
        stop: &Shutdown,
    ) -> Totals {
        let mut last_summary = Instant::now();
        let mut since_summary = Totals::default();
        loop {
            match sealed.recv_timeout(Duration::from_millis(100)) {
                Ok(SealedBatch {
                    mut batch,
                    position,
                    new_shapes,
                    layout: (share, writers),
                }) => {
                    self.shapes.extend(new_shapes);
                    self.sink.set_layout(share, writers);
                    // Nothing of this writer's share: nothing to commit, and its row
                    // stays where it is (it covers the share, not the spool).
                    if !batch.is_empty()
                        && self
                            .commit(&mut batch, position, stop, &mut since_summary)
                            .is_err()
                    {
                        info!(
                            "stopped with {} messages uncommitted; they stay in the spool for the next start",
                            batch.len()
                        );
                        break;
                    }
                    (self.committed)(position);
                    batch.clear();
                    let _ = emptied.try_send(batch);
                }
                Err(RecvTimeoutError::Timeout) => self.sink.check_alive(),
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.maybe_summary(&mut last_summary, &mut since_summary);
        }
        info!("writer stopped: {}", self.totals.summary());
        self.totals
    }

    fn maybe_summary(&self, last: &mut Instant, since: &mut Totals) {
        if last.elapsed() >= SUMMARY_EVERY {
            if since.received > 0 {
                info!("last {} s: {}", last.elapsed().as_secs(), since.summary());
            }
            *last = Instant::now();
            *since = Totals::default();
        }
    }

    fn commit(
        &mut self,
        batch: &mut Batch,
        position: u64,
        stop: &Shutdown,
        since: &mut Totals,
    ) -> Result<(), Stopped> {
        let started = Instant::now();
        let done = self
            .sink
            .commit(batch, &self.shapes, Some(position), stop)?;
        self.commit_time.record(started.elapsed());
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.metrics.batch_size.observe(batch.len() as f64);
        self.count(batch);
        debug!(
            "committed {} messages ({} dead letters) in {:.1} ms",
            batch.len(),
            done.dead,
            started.elapsed().as_secs_f64() * 1e3
        );
        for (entry, dl) in batch.dead_letters() {
            warn!(
                "dead letter ({}) cnc_id={} plugin={} topic={}: {}",
                dl.reason.as_str(),
                dl.cnc_id.as_deref().unwrap_or("-"),
                dl.plugin
                    .as_ref()
                    .map(|(c, v)| format!("{c} {v}"))
                    .unwrap_or_else(|| "-".into()),
                entry.topic,
                dl.detail
            );
            for t in [&mut self.totals, &mut *since] {
                *t.dead.entry(dl.reason.as_str()).or_default() += 1;
            }
        }
        for t in [&mut self.totals, &mut *since] {
            t.received += batch.len() as u64;
            t.stored += done.stored as u64;
        }
        Ok(())
    }

    /// Counts the committed batch per (class, cnc_id), and when each machine was
    /// last heard from.
    fn count(&self, batch: &Batch) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let m = &*self.metrics;
        // Keyed by labels, which are mapped ids and classes or `unknown`: a sender
        // cannot make up keys, so the fast hash is safe ([`crate::fasthash`]).
        let mut stored: HashMap<(&str, &str), u64, FxBuild> = HashMap::default();
        let mut seen: HashSet<&str, FxBuild> = HashSet::default();
        for e in &batch.entries {
            let cnc = m.cnc_label(e.cnc_id.as_deref());
            let class = m.class_label(e.plugin.as_ref().map(|p| p.class_name.as_str()));
            if e.cnc_id.as_deref() == Some(cnc) {
                // A mapped id (`heard_from` ignores the others).
                seen.insert(cnc);
            }
            match &e.dead {
                None => *stored.entry((class, cnc)).or_default() += 1,
                Some(dl) => m
                    .dead_lettered
                    .with_label_values(&[dl.reason.as_str(), class, cnc])
                    .inc(),
            }
        }
        for ((class, cnc), n) in stored {
            m.stored.with_label_values(&[class, cnc]).inc_by(n);
        }
        for id in seen {
            m.heard_from(id, now);
        }
    }
}
