//! Where messages are dispatched: each message's envelope is parsed once, routed to
//! its machine's plugin instance, and the plugin's writes are recorded into the batch,
//! which the sink commits in one transaction.

#![allow(non_local_definitions)] // sabi_trait emits its impls inside a const block

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use abi_stable::std_types::RResult;
use log::{debug, error, info, warn};
use mes_plugin_api::{FailureKind, Message};

pub use crate::sink::writer::Totals;
use crate::{
    config::BatchConfig,
    crash_guard::{signals, CrashGuard},
    dead_letter::{DeadLetter, Reason},
    envelope::{self, Limits},
    isolation::{Isolation, Request},
    metrics::Metrics,
    plugins::Router,
    sink::{
        batch::{Batch, Shapes},
        mysql::MysqlSink,
        writer::{CommitTime, Sealed, Writer},
    },
    spool::{Record, Spool, SpoolReader},
};

/// While a batch waits for more messages within the latency budget, how often it looks.
const WAIT_SLICE: Duration = Duration::from_millis(5);

pub struct Dispatcher {
    metrics: Arc<Metrics>,
    router: Router,
    /// Size and nesting bounds a message must pass before it is parsed.
    limits: Limits,
    /// Handed to the writer thread once the start position is known.
    sink: Option<MysqlSink>,
    shapes: Shapes,
    batch: BatchConfig,
    /// Notes which records plugins are handling, so that a crash can be pinned on
    /// its message after the restart.
    guard: CrashGuard,
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

impl Dispatcher {
    pub fn new(
        router: Router,
        limits: Limits,
        sink: MysqlSink,
        batch: BatchConfig,
        metrics: Arc<Metrics>,
        guard: CrashGuard,
    ) -> Self {
        Dispatcher {
            metrics,
            router,
            limits,
            sink: Some(sink),
            shapes: Shapes::default(),
            batch,
            guard,
        }
    }

    /// Runs until `stop` is set: reads the spool from the committed position on,
    /// runs each message through its plugin, and hands each full batch to the writer
    /// thread, which commits it with the position it reaches.
    pub fn run(mut self, spool: Spool, stop: Arc<AtomicBool>) -> Totals {
        let mut sink = self.sink.take().expect("run once");
        let Ok(position) = sink.read_position(&stop) else {
            return Totals::default();
        };
        let start = start_position(position, spool.first_seq(), spool.next_seq());
        self.guard.forget_committed(start);
        signals::register_dispatcher_thread();
        let (waiting, bytes) = spool.depth(start.saturating_sub(1));
        info!("dispatching from spool record {start}: {waiting} records ({bytes} bytes) wait in the spool");
        let mut reader = spool.reader(start);
        // One batch being filled, one being committed, one waiting between them.
        let (to_writer, sealed) = crossbeam_channel::bounded::<Sealed>(1);
        let (emptied, recycled) = crossbeam_channel::bounded::<Batch>(2);
        let commit_time = CommitTime::default();
        let writer = Writer::new(sink, spool, self.metrics.clone(), commit_time.clone()).spawn(
            sealed,
            emptied,
            stop.clone(),
        );
        let mut shapes_sent = 0;
        while !stop.load(Ordering::Relaxed) {
            let Some(first) = self.read(&mut reader, Instant::now() + Duration::from_millis(100))
            else {
                continue;
            };
            let mut batch = recycled.try_recv().unwrap_or_default();
            // The latency budget: the first message may wait for company as long as
            // the budget leaves after a commit (twice the usual, for the slow ones),
            // so that a steady line commits few, large batches instead of one per
            // message, and a quiet line is still stored within the budget. A backlog
            // fills the batch at once and never waits.
            let seal_at = Instant::now()
                + self
                    .batch
                    .max_latency()
                    .saturating_sub(commit_time.typical() * 2);
            let mut position = first.seq;
            self.guard.batch_begins(first.seq);
            self.dispatch(first, &mut batch);
            while batch.len() < self.batch.max_messages {
                match self.read(&mut reader, Instant::now()) {
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
            let new_shapes = self.shapes.since(shapes_sent);
            shapes_sent += new_shapes.len();
            if to_writer
                .send(Sealed {
                    batch,
                    position,
                    new_shapes,
                })
                .is_err()
            {
                break; // the writer stopped: told to stop while the database was down
            }
        }
        drop(to_writer);
        writer.join().unwrap_or_else(|_| {
            error!("the writer thread panicked");
            Totals::default()
        })
    }

    fn read(&mut self, reader: &mut SpoolReader, deadline: Instant) -> Option<Record> {
        match reader.next(deadline) {
            Ok(r) => r,
            Err(e) => {
                error!("reading the spool: {e}; retrying");
                std::thread::sleep(Duration::from_millis(500));
                None
            }
        }
    }

    /// Runs one message through its plugin, recording its writes or its dead letter.
    /// A message found to crash its plugin in an earlier run is not handed to it again.
    fn dispatch(&mut self, msg: Record, batch: &mut Batch) {
        if let Some(dead) = self.guard.pinned(msg.seq) {
            batch.begin(&msg.topic);
            batch.current().cnc_id = dead.cnc_id.clone();
            batch.end(msg.payload, Some(dead));
            return;
        }
        Self::dispatch_watched(
            &mut self.router,
            &mut self.shapes,
            &self.limits,
            &msg.topic,
            msg.payload,
            batch,
            Some((&mut self.guard, msg.seq)),
        );
    }

    /// [`Dispatcher::dispatch`] without a dispatcher: `mes-collector replay` runs
    /// recorded messages through it, so that they go exactly the way received ones do.
    pub fn dispatch_one(
        router: &mut Router,
        shapes: &mut Shapes,
        limits: &Limits,
        topic: &str,
        payload: Vec<u8>,
        batch: &mut Batch,
    ) {
        Self::dispatch_watched(router, shapes, limits, topic, payload, batch, None);
    }

    /// `guarded`: the crash guard and the message's spool record, noted around the
    /// plugin code that runs for it.
    fn dispatch_watched(
        router: &mut Router,
        shapes: &mut Shapes,
        limits: &Limits,
        topic: &str,
        payload: Vec<u8>,
        batch: &mut Batch,
        guarded: Option<(&mut CrashGuard, u64)>,
    ) {
        batch.begin(topic);
        let dead = Self::handle(router, shapes, limits, topic, &payload, batch, guarded).err();
        batch.end(payload, dead);
    }

    fn handle(
        router: &mut Router,
        shapes: &mut Shapes,
        limits: &Limits,
        topic: &str,
        payload: &[u8],
        batch: &mut Batch,
        guarded: Option<(&mut CrashGuard, u64)>,
    ) -> Result<(), DeadLetter> {
        envelope::check_limits(payload, limits).map_err(|e| DeadLetter::new(e.reason, e.detail))?;
        let env = envelope::parse(payload).map_err(|e| DeadLetter::new(e.reason, e.detail))?;
        batch.current().cnc_id = Some(env.cnc_id.to_string());
        // An isolated plugin's crash or hang ends its runner process, not this one:
        // the crash guard has nothing to note.
        if let Some(isolation) = router.isolated(&env.cnc_id) {
            let seq = guarded.map(|(_, seq)| seq);
            return Self::call_isolated(isolation, shapes, topic, &env, batch, seq);
        }
        // From here plugin code runs: the constructor (for a machine's first message)
        // and then `handle`.
        match guarded {
            Some((guard, seq)) => {
                guard.before_call(seq);
                let result = Self::call_plugin(router, shapes, topic, &env, batch);
                guard.after_call();
                result
            }
            None => Self::call_plugin(router, shapes, topic, &env, batch),
        }
    }

    /// [`Dispatcher::call_plugin`] for a plugin in a runner process: its writes come
    /// back over a pipe and go through the same recorder checks as in process.
    fn call_isolated(
        isolation: &mut Isolation,
        shapes: &mut Shapes,
        topic: &str,
        env: &envelope::Envelope<'_>,
        batch: &mut Batch,
        seq: Option<u64>,
    ) -> Result<(), DeadLetter> {
        let request = Request {
            topic,
            cnc_id: &env.cnc_id,
            part_program: &env.part_program,
            timestamp: env.timestamp,
            payload: env.payload(),
            seq,
        };
        let (info, ops) = isolation.call(&request)?;
        batch.current().plugin = Some(info.clone());
        let mut recorder = batch.recorder(shapes);
        for op in ops {
            recorder.apply(op).map_err(|e| {
                DeadLetter::new(
                    Reason::PluginError,
                    format!(
                        "plugin {} {} ({}) on cnc_id {}, running isolated, sent a write the collector refuses: {e}",
                        info.class_name,
                        info.version,
                        info.file.display(),
                        env.cnc_id
                    ),
                )
                .cnc_id(&env.cnc_id)
                .plugin(&info.class_name, &info.version)
            })?;
        }
        Ok(())
    }

    fn call_plugin(
        router: &mut Router,
        shapes: &mut Shapes,
        topic: &str,
        env: &envelope::Envelope<'_>,
        batch: &mut Batch,
    ) -> Result<(), DeadLetter> {
        let instance = router.instance(&env.cnc_id)?;
        batch.current().plugin = Some(instance.info.clone());
        debug!("cnc_id={} -> {}", env.cnc_id, instance.info.class_name);
        let message = Message::new(
            topic,
            &env.cnc_id,
            &env.part_program,
            env.timestamp,
            env.payload(),
        );
        let mut recorder = batch.recorder(shapes);
        let (db, _lent) = crate::sink::batch::lend(&mut recorder);
        let _call = crate::plugins::services::enter_call(&env.cnc_id);
        match instance.plugin.handle(&message, db) {
            RResult::ROk(()) => Ok(()),
            RResult::RErr(failure) => {
                let reason = match failure.kind {
                    FailureKind::Error => Reason::PluginError,
                    FailureKind::Panic => Reason::PluginPanic,
                };
                Err(DeadLetter::new(reason, failure.to_string())
                    .cnc_id(&env.cnc_id)
                    .plugin(&instance.info.class_name, &instance.info.version))
            }
        }
    }
}
