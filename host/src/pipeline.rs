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

use log::{info, warn};

use crate::{
    crash_guard::CrashGuard,
    dispatch::{config::BatchConfig, handler::MessageHandler, Dispatcher},
    metrics::Metrics,
    shutdown::Shutdown,
    sink::{
        batch::Batch,
        mysql::MysqlSink,
        totals::Totals,
        writer::{CommitTime, SealedBatch, Writer},
    },
    spool::Spool,
};

/// The dispatcher and writer threads, running.
pub struct Pipeline {
    dispatcher: thread::JoinHandle<()>,
    writer: thread::JoinHandle<Totals>,
}

/// Why the pipeline did not end cleanly.
#[derive(Debug)]
pub struct Panicked(pub &'static str);

impl Pipeline {
    /// Starts the writer, which first reads the committed position from the database
    /// (waiting out an outage, or until `stop`), and the dispatcher, which then starts
    /// reading the spool after that position. Meanwhile the intake keeps spooling.
    pub fn start(
        spool: Spool,
        handler: MessageHandler,
        batch: BatchConfig,
        guard: CrashGuard,
        mut sink: MysqlSink,
        metrics: Arc<Metrics>,
        stop: Shutdown,
    ) -> Pipeline {
        // One batch being filled, one being committed, one waiting between them.
        let (to_writer, sealed) = crossbeam_channel::bounded::<SealedBatch>(1);
        let (emptied, recycled) = crossbeam_channel::bounded::<Batch>(2);
        let (position_read, committed_position) = crossbeam_channel::bounded::<Option<u64>>(1);
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
        let released = spool.clone();
        let committed_up_to = uncommitted.clone();
        let on_committed = Box::new(move |position: u64| {
            released.release(position);
            committed_up_to.store(position + 1, Ordering::Relaxed);
        });
        let writer_stop = stop.clone();
        let writer_commit_time = commit_time.clone();
        let writer = thread::Builder::new()
            .name("writer".into())
            .spawn(move || {
                let Ok(committed) = sink.read_position(&writer_stop) else {
                    return Totals::default(); // stopped before the database answered
                };
                let _ = position_read.send(committed);
                Writer::new(sink, metrics, writer_commit_time, on_committed).run(
                    sealed,
                    emptied,
                    &writer_stop,
                )
            })
            .expect("spawn writer thread");
        let dispatcher = thread::Builder::new()
            .name("dispatcher".into())
            .spawn(move || {
                // Hung up: the writer stopped before it knew the committed position.
                let Ok(committed) = committed_position.recv() else {
                    return;
                };
                // The spool as it is now: the intake went on appending while the
                // writer waited for the database.
                let start = start_position(committed, spool.first_seq(), spool.next_seq());
                uncommitted.store(start, Ordering::Relaxed);
                Dispatcher::new(handler, batch, guard, to_writer, recycled, commit_time)
                    .run(&spool, start, &stop);
            })
            .expect("spawn dispatcher thread");
        Pipeline { dispatcher, writer }
    }

    /// Waits for both threads, once `stop` was requested. The totals are the writer's.
    pub fn join(self) -> Result<Totals, Panicked> {
        let dispatched = self.dispatcher.join();
        let written = self.writer.join().map_err(|_| Panicked("writer"))?;
        dispatched.map_err(|_| Panicked("dispatcher"))?;
        Ok(written)
    }
}

/// Where to start reading the spool, given the position committed in MySQL.
fn start_position(committed: Option<u64>, first: u64, next: u64) -> u64 {
    match committed {
        None => first,
        Some(p) if p + 1 < first => {
            info!("the spool starts at {first}, after the committed position {p} (a new spool); storing all of it");
            first
        }
        Some(p) if p + 1 > next => {
            warn!(
                "the committed position {p} is beyond the spool's end {next}: the spool was replaced by an older copy; storing all of it"
            );
            first
        }
        Some(p) => p + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::start_position;

    #[test]
    fn the_spool_is_read_after_the_committed_position() {
        assert_eq!(
            start_position(None, 5, 9),
            5,
            "nothing committed: all of it"
        );
        assert_eq!(start_position(Some(6), 5, 9), 7);
        assert_eq!(
            start_position(Some(8), 5, 9),
            9,
            "all committed: what comes next"
        );
        assert_eq!(start_position(Some(2), 5, 9), 5, "a new spool");
        assert_eq!(
            start_position(Some(20), 5, 9),
            5,
            "an older copy of the spool"
        );
    }
}
