//! Where messages are dispatched: the dispatcher reads the spool in order, runs each
//! message through its machine's plugin ([`handler`]) into its writer's batch (the
//! first writer's, or with a backlog and `batch.writers` above 1, that of the writer
//! of its share of the machines: [`crate::sink::shares`]), and seals the batches for
//! the writers when one is full or the latency budget is spent.

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
        shares::{share_of, spread, CommittedPositions, Progress},
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
    writers: ToWriters,
    /// What the writers' rows say is committed already, past the start, and the
    /// highest of their positions: left out until that is passed (several writers get
    /// to different points).
    leave_out: Option<(CommittedPositions, u64)>,
    /// The machines are spread over all writers (a backlog), or all with the first.
    spread: bool,
}

/// The dispatcher's ends of its links with the writers.
pub struct ToWriters {
    /// One per writer: while the machines are spread, writer `w` commits those
    /// [`share_of`] gives it.
    pub senders: Vec<Sender<SealedBatch>>,
    /// Batches the writers have committed and emptied, for reuse.
    pub recycled: Receiver<Batch>,
    pub commit_time: CommitTime,
    /// Where the writers have got, to wait on before the machines change writers.
    pub progress: Progress,
}

impl Dispatcher {
    pub fn new(
        handler: MessageHandler,
        batch: BatchConfig,
        guard: CrashGuard,
        writers: ToWriters,
    ) -> Self {
        Dispatcher {
            handler,
            batch,
            guard,
            writers,
            leave_out: None,
            spread: false,
        }
    }

    /// Leaves out the messages `committed` says are in the database already.
    pub fn leaving_out(mut self, committed: CommittedPositions) -> Self {
        self.leave_out = committed.highest().map(|h| (committed, h));
        self
    }

    /// Runs until `stop` is requested (or a writer hangs up): reads the spool from
    /// record `start` on and sends each writer its part of every sealed batch.
    pub fn run(mut self, spool: &Spool, start: u64, stop: &Shutdown) {
        self.guard.forget_committed(start);
        signals::register_dispatcher_thread();
        let (waiting, bytes) = spool.depth(start.saturating_sub(1));
        info!("dispatching from spool record {start}: {waiting} records ({bytes} bytes) wait in the spool");
        let mut reader = spool.reader(start);
        let mut shapes_sent = 0;
        let mut sealed_up_to: Option<u64> = None;
        while !stop.requested() {
            let Some(first) = read(&mut reader, Instant::now() + Duration::from_millis(100)) else {
                continue;
            };
            let waiting = spool.next_seq().saturating_sub(first.seq);
            let writers = self.writers.senders.len();
            if spread(writers, self.batch.max_messages, waiting, self.spread) != self.spread {
                // No machine changes writers while a batch of it is uncommitted.
                if let Some(sealed) = sealed_up_to {
                    if !self.await_writers(sealed, stop) {
                        break; // this record stays in the spool for the next start
                    }
                }
                self.spread = !self.spread;
                match self.spread {
                    true => info!("{waiting} records wait in the spool: spreading the machines over {writers} writers"),
                    false => info!("{waiting} records wait in the spool: all machines with the first writer again"),
                }
            }
            let mut batches: Vec<Batch> = (0..self.writers.senders.len())
                .map(|_| self.writers.recycled.try_recv().unwrap_or_default())
                .collect();
            // The latency budget: the first message may wait for company as long as
            // the budget leaves after a commit (twice the usual, for the slow ones),
            // so that a steady line commits few, large batches instead of one per
            // message, and a quiet line is still stored within the budget. A backlog
            // fills the batch at once and never waits.
            let seal_at = Instant::now()
                + self
                    .batch
                    .max_latency()
                    .saturating_sub(self.writers.commit_time.typical() * 2);
            let mut position = first.seq;
            self.guard.batch_begins(first.seq);
            self.dispatch(first, &mut batches);
            while batches.iter().all(|b| b.len() < self.batch.max_messages) {
                match read(&mut reader, Instant::now()) {
                    Some(r) => {
                        position = r.seq;
                        self.dispatch(r, &mut batches);
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
            // Every writer gets its part, empty or not: each reports the position
            // back, and the spool is released up to where all of them are.
            let layout = if self.spread { writers } else { 1 };
            let sent =
                self.writers
                    .senders
                    .iter()
                    .zip(batches)
                    .enumerate()
                    .all(|(share, (to, batch))| {
                        let sealed = SealedBatch {
                            batch,
                            position,
                            new_shapes: new_shapes.clone(),
                            layout: (share, layout),
                        };
                        to.send(sealed).is_ok()
                    });
            if !sent {
                break; // a writer stopped: told to stop while the database was down
            }
            sealed_up_to = Some(position);
        }
    }

    /// Waits until every writer has committed what it was given up to `position`;
    /// false when told to stop meanwhile.
    fn await_writers(&self, position: u64, stop: &Shutdown) -> bool {
        while !self.writers.progress.all_reached(position) {
            if stop.requested() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Runs one spooled message through its plugin into its writer's batch. A message
    /// found to crash its plugin in an earlier run is not handed to it again.
    fn dispatch(&mut self, msg: Record, batches: &mut [Batch]) {
        let seq = msg.seq;
        // Recorded in the first batch, and moved once its cnc_id is known.
        let (first, others) = batches.split_first_mut().expect("a writer");
        if let Some(dead) = self.guard.pinned(seq) {
            first.begin(&msg.topic);
            first.current().cnc_id = dead.cnc_id.clone();
            first.end(msg.payload, Some(dead));
        } else {
            self.handler.handle_guarded(
                &msg.topic,
                msg.payload,
                first,
                Some((&mut self.guard, seq)),
            );
        }
        let cnc_id = first.entries.last().and_then(|e| e.cnc_id.as_deref());
        if let Some((committed, highest)) = &self.leave_out {
            if committed.covers(seq, cnc_id) {
                first.drop_last();
                return;
            }
            if seq >= *highest {
                self.leave_out = None;
            }
        }
        if !self.spread {
            return;
        }
        match share_of(cnc_id, others.len() + 1) {
            0 => {}
            w => first.move_last_to(&mut others[w - 1]),
        }
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
