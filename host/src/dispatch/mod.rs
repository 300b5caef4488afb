//! Where messages are dispatched: the dispatcher reads the spool in order, runs each
//! message through its machine's plugin ([`handler`]) into a batch, and seals the
//! batch for the writer when it is full or the latency budget is spent.

pub mod config;
pub mod handler;

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use log::{error, info};

use crate::{
    crash_guard::{signals, CrashGuard},
    shutdown::Shutdown,
    sink::{
        batch::Batch,
        writer::{CommitTime, SealedBatch},
    },
    spool::{Record, Spool, SpoolReader},
};
use config::BatchConfig;
use handler::MessageHandler;

/// While a batch waits for more messages within the latency budget, how often it looks.
const WAIT_SLICE: Duration = Duration::from_millis(5);

pub struct Dispatcher {
    handler: MessageHandler,
    batch: BatchConfig,
    /// Notes which records plugins are handling, so that a crash can be pinned on
    /// its message after the restart.
    guard: CrashGuard,
    to_writer: Sender<SealedBatch>,
    /// Batches the writer has committed and emptied, for reuse.
    recycled: Receiver<Batch>,
    commit_time: CommitTime,
}

impl Dispatcher {
    pub fn new(
        handler: MessageHandler,
        batch: BatchConfig,
        guard: CrashGuard,
        to_writer: Sender<SealedBatch>,
        recycled: Receiver<Batch>,
        commit_time: CommitTime,
    ) -> Self {
        Dispatcher {
            handler,
            batch,
            guard,
            to_writer,
            recycled,
            commit_time,
        }
    }

    /// Runs until `stop` is requested (or the writer hangs up): reads the spool from
    /// record `start` on and sends each sealed batch to the writer.
    pub fn run(mut self, spool: &Spool, start: u64, stop: &Shutdown) {
        self.guard.forget_committed(start);
        signals::register_dispatcher_thread();
        let (waiting, bytes) = spool.depth(start.saturating_sub(1));
        info!("dispatching from spool record {start}: {waiting} records ({bytes} bytes) wait in the spool");
        let mut reader = spool.reader(start);
        let mut shapes_sent = 0;
        while !stop.requested() {
            let Some(first) = read(&mut reader, Instant::now() + Duration::from_millis(100)) else {
                continue;
            };
            let mut batch = self.recycled.try_recv().unwrap_or_default();
            // The latency budget: the first message may wait for company as long as
            // the budget leaves after a commit (twice the usual, for the slow ones),
            // so that a steady line commits few, large batches instead of one per
            // message, and a quiet line is still stored within the budget. A backlog
            // fills the batch at once and never waits.
            let seal_at = Instant::now()
                + self
                    .batch
                    .max_latency()
                    .saturating_sub(self.commit_time.typical() * 2);
            let mut position = first.seq;
            self.guard.batch_begins(first.seq);
            self.dispatch(first, &mut batch);
            while batch.len() < self.batch.max_messages {
                match read(&mut reader, Instant::now()) {
                    Some(r) => {
                        position = r.seq;
                        self.dispatch(r, &mut batch);
                    }
                    None => {
                        let now = Instant::now();
                        if now >= seal_at {
                            break;
                        }
                        // Nothing at hand: sleep out a slice of the budget and take what
                        // came meanwhile, rather than waking for every message (at a
                        // steady 2,000 msg/s that was most of the dispatcher's CPU).
                        std::thread::sleep((seal_at - now).min(WAIT_SLICE));
                    }
                }
            }
            self.guard.batch_sealed();
            let new_shapes = self.handler.shapes().since(shapes_sent);
            shapes_sent += new_shapes.len();
            let sealed = SealedBatch {
                batch,
                position,
                new_shapes,
            };
            if self.to_writer.send(sealed).is_err() {
                break; // the writer stopped: told to stop while the database was down
            }
        }
    }

    /// Runs one spooled message through its plugin. A message found to crash its
    /// plugin in an earlier run is not handed to it again.
    fn dispatch(&mut self, msg: Record, batch: &mut Batch) {
        if let Some(dead) = self.guard.pinned(msg.seq) {
            batch.begin(&msg.topic);
            batch.current().cnc_id = dead.cnc_id.clone();
            batch.end(msg.payload, Some(dead));
            return;
        }
        self.handler.handle_guarded(
            &msg.topic,
            msg.payload,
            batch,
            Some((&mut self.guard, msg.seq)),
        );
    }
}

fn read(reader: &mut SpoolReader, deadline: Instant) -> Option<Record> {
    match reader.next(deadline) {
        Ok(r) => r,
        Err(e) => {
            error!("reading the spool: {e}; retrying");
            std::thread::sleep(Duration::from_millis(500));
            None
        }
    }
}
