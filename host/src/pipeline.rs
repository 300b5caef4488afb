//! Connects the parts a message passes through after the intake has spooled it:
//! the dispatcher reads the spool and seals batches, the writer commits them through
//! the sink, and each commit releases the spool up to the position it reached.
//!
//! The parts do not hold each other: the dispatcher sees a sender, the writer sees
//! the sink, and only this module knows that a commit frees spool records.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    thread,
};

use log::warn;

use crate::{
    crash_guard::CrashGuard,
    dispatch::{config::BatchConfig, handler::MessageHandler, Dispatcher, ToWriters},
    metrics::Metrics,
    shutdown::Shutdown,
    sink::{
        batch::Batch,
        mysql::MysqlSink,
        shares::{CommittedPositions, Progress},
        totals::Totals,
        writer::{CommitTime, SealedBatch, Writer},
    },
    spool::Spool,
};

/// The dispatcher and writer threads, running.
pub struct Pipeline {
    dispatcher: thread::JoinHandle<()>,
    writers: Vec<thread::JoinHandle<Totals>>,
}

/// Why the pipeline did not end cleanly.
#[derive(Debug)]
pub struct Panicked(pub &'static str);

impl Pipeline {
    /// Starts the writers, one per sink (the first reads what is committed from the
    /// database, waiting out an outage, or until `stop`), and the dispatcher, which then
    /// starts reading the spool after it. Meanwhile the intake keeps spooling.
    pub fn start(
        spool: Spool,
        handler: MessageHandler,
        batch: BatchConfig,
        guard: CrashGuard,
        sinks: Vec<MysqlSink>,
        metrics: Arc<Metrics>,
        stop: Shutdown,
    ) -> Pipeline {
        let writers = sinks.len();
        assert!(writers > 0, "a pipeline needs a writer");
        // Before the intake appends: a committed position at or past it belongs to
        // another spool.
        let spool_end = spool.next_seq();
        // Per writer: one batch being filled, one being committed, one waiting between.
        let (to_writers, sealed): (Vec<_>, Vec<_>) = (0..writers)
            .map(|_| crossbeam_channel::bounded::<SealedBatch>(1))
            .unzip();
        let (emptied, recycled) = crossbeam_channel::bounded::<Batch>(3 * writers);
        let (committed_read, committed_positions) =
            crossbeam_channel::bounded::<CommittedPositions>(1);
        let commit_time = CommitTime::default();
        // The first record not known to be committed: until the database has said,
        // everything in the spool.
        let uncommitted = Arc::new(AtomicU64::new(spool.first_seq()));
        let measured = spool.clone();
        let from = uncommitted.clone();
        metrics.read_spool_depth(Box::new(move || {
            let (_, bytes) = measured.depth(0);
            let records = measured
                .next_seq()
                .saturating_sub(from.load(Ordering::Relaxed));
            (records, bytes)
        }));
        // Where each writer has got: the spool is released up to the lowest.
        let progress = Progress::new(writers);
        let mut committed_read = Some(committed_read);
        let mut handles = Vec::with_capacity(writers);
        for (share, (mut sink, sealed)) in sinks.into_iter().zip(sealed).enumerate() {
            let (released, committed_up_to, progress) =
                (spool.clone(), uncommitted.clone(), progress.clone());
            let on_committed = Box::new(move |position: u64| {
                if let Some(lowest) = progress.report(share, position) {
                    released.release(lowest);
                    committed_up_to.store(lowest + 1, Ordering::Relaxed);
                }
            });
            let (stop, commit_time, metrics, emptied) = (
                stop.clone(),
                commit_time.clone(),
                metrics.clone(),
                emptied.clone(),
            );
            let reads_committed = committed_read.take();
            let name = match (writers, share) {
                (1, _) => "writer".to_string(),
                _ => format!("writer-{share}"),
            };
            let handle = thread::Builder::new()
                .name(name)
                .spawn(move || {
                    if let Some(committed_read) = reads_committed {
                        let Ok(committed) = read_committed(&mut sink, spool_end, &stop) else {
                            return Totals::default(); // stopped before the database answered
                        };
                        let _ = committed_read.send(committed);
                    }
                    Writer::new(sink, metrics, commit_time, on_committed)
                        .run(sealed, emptied, &stop)
                })
                .expect("spawn writer thread");
            handles.push(handle);
        }
        let dispatcher = thread::Builder::new()
            .name("dispatcher".into())
            .spawn(move || {
                // Hung up: the writer stopped before it knew what was committed.
                let Ok(committed) = committed_positions.recv() else {
                    return;
                };
                // The spool as it is now: the intake went on appending while the
                // writer waited for the database.
                let start = committed.start(spool.first_seq());
                uncommitted.store(start, Ordering::Relaxed);
                let writers = ToWriters {
                    senders: to_writers,
                    recycled,
                    commit_time,
                    progress,
                };
                Dispatcher::new(handler, batch, guard, writers)
                    .leaving_out(committed)
                    .run(&spool, start, &stop);
            })
            .expect("spawn dispatcher thread");
        Pipeline {
            dispatcher,
            writers: handles,
        }
    }

    /// Waits for all threads, once `stop` was requested. The totals are the writers'.
    pub fn join(self) -> Result<Totals, Panicked> {
        let dispatched = self.dispatcher.join();
        let mut totals = Totals::default();
        let mut panicked = None;
        for w in self.writers {
            match w.join() {
                Ok(t) => totals.add(t),
                Err(_) => panicked = Some(Panicked("writer")),
            }
        }
        if let Some(p) = panicked {
            return Err(p);
        }
        dispatched.map_err(|_| Panicked("dispatcher"))?;
        Ok(totals)
    }
}

/// What the database says is committed; nothing, when a position is at or past
/// `spool_end`: the spool was replaced by an older copy, whose numbers will pass the
/// rows again, so they are reset.
fn read_committed(
    sink: &mut MysqlSink,
    spool_end: u64,
    stop: &Shutdown,
) -> Result<CommittedPositions, crate::sink::mysql::Stopped> {
    let committed = sink.read_committed(stop)?;
    if !committed.is_beyond(spool_end) {
        return Ok(committed);
    }
    warn!(
        "the committed position {} is beyond the spool's end {spool_end}: the spool was replaced by an older copy; storing all of it",
        committed.highest().unwrap_or_default()
    );
    sink.reset_positions(stop)?;
    Ok(CommittedPositions::default())
}
