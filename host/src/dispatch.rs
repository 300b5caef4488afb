//! Where messages are dispatched: each message's envelope is parsed once, routed to
//! its machine's plugin instance, and the plugin's writes are recorded into the batch,
//! which the sink commits in one transaction.

#![allow(non_local_definitions)] // sabi_trait emits its impls inside a const block

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use abi_stable::{sabi_trait::TD_Opaque, std_types::RResult};
use log::{debug, error, info, warn};
use mes_plugin_api::{FailureKind, Message, RawDatabase_TO};

use crate::{
    config::BatchConfig,
    dead_letter::{DeadLetter, Reason},
    envelope,
    metrics::Metrics,
    plugins::Router,
    sink::{
        batch::{Batch, Shapes},
        mysql::{MysqlSink, Stopped},
    },
    spool::{Record, Spool, SpoolReader},
};

/// Totals since start, for the periodic and final summaries.
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub received: u64,
    pub stored: u64,
    pub dead: BTreeMap<&'static str, u64>,
}

impl Totals {
    pub fn summary(&self) -> String {
        let dead: u64 = self.dead.values().sum();
        let mut s = format!(
            "{} received, {} stored, {} dead letters",
            self.received, self.stored, dead
        );
        if dead > 0 {
            let by: Vec<String> = self.dead.iter().map(|(r, n)| format!("{r} {n}")).collect();
            s.push_str(&format!(" ({})", by.join(", ")));
        }
        s
    }
}

pub struct Dispatcher {
    metrics: Arc<Metrics>,
    router: Router,
    sink: MysqlSink,
    shapes: Shapes,
    batch: BatchConfig,
    totals: Totals,
}

const SUMMARY_EVERY: Duration = Duration::from_secs(60);

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
    pub fn new(router: Router, sink: MysqlSink, batch: BatchConfig, metrics: Arc<Metrics>) -> Self {
        Dispatcher {
            metrics,
            router,
            sink,
            shapes: Shapes::default(),
            batch,
            totals: Totals::default(),
        }
    }

    /// Runs until `stop` is set: reads the spool from the committed position on,
    /// in batches, and commits each batch with the position it reaches.
    pub fn run(mut self, spool: Spool, stop: Arc<AtomicBool>) -> Totals {
        let Ok(position) = self.sink.read_position(&stop) else {
            return self.totals;
        };
        let start = start_position(position, spool.first_seq(), spool.next_seq());
        let (waiting, bytes) = spool.depth(start.saturating_sub(1));
        info!("dispatching from spool record {start}: {waiting} records ({bytes} bytes) wait in the spool");
        let mut reader = spool.reader(start);
        let mut batch = Batch::default();
        let mut last_summary = Instant::now();
        let mut since_summary = Totals::default();
        while !stop.load(Ordering::Relaxed) {
            let first = match self.read(&mut reader, Instant::now() + Duration::from_millis(100)) {
                Some(r) => r,
                None => {
                    self.sink.check_alive();
                    self.maybe_summary(&mut last_summary, &mut since_summary);
                    continue;
                }
            };
            let deadline = Instant::now() + self.batch.max_wait();
            let mut last_seq = first.seq;
            self.dispatch(first, &mut batch);
            while batch.len() < self.batch.max_messages {
                match self.read(&mut reader, deadline) {
                    Some(r) => {
                        last_seq = r.seq;
                        self.dispatch(r, &mut batch);
                    }
                    None => break,
                }
            }
            if self
                .commit(&mut batch, last_seq, &stop, &mut since_summary)
                .is_err()
            {
                info!("stopped with {} messages uncommitted; they stay in the spool for the next start", batch.len());
                break;
            }
            spool.release(last_seq);
            let (records, bytes) = spool.depth(last_seq);
            self.metrics.spool_records.set(records as i64);
            self.metrics.spool_bytes.set(bytes as i64);
            self.maybe_summary(&mut last_summary, &mut since_summary);
        }
        info!("dispatcher stopped: {}", self.totals.summary());
        self.totals
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
        stop: &AtomicBool,
        since: &mut Totals,
    ) -> Result<(), Stopped> {
        let started = Instant::now();
        let done = self.sink.commit(batch, &self.shapes, position, stop)?;
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
        batch.clear();
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
        let mut stored: HashMap<(&str, &str), u64> = HashMap::new();
        let mut seen: HashSet<&str> = HashSet::new();
        for e in &batch.entries {
            let cnc = m.cnc_label(e.cnc_id.as_deref());
            let class = m.class_label(e.plugin.as_ref().map(|p| p.class_name.as_str()));
            if let Some(id) = e.cnc_id.as_deref() {
                seen.insert(id);
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

    /// Runs one message through its plugin, recording its writes or its dead letter.
    fn dispatch(&mut self, msg: Record, batch: &mut Batch) {
        Self::dispatch_one(
            &mut self.router,
            &mut self.shapes,
            &msg.topic,
            msg.payload,
            batch,
        );
    }

    /// [`Dispatcher::dispatch`] without a dispatcher: `mes-collector replay` runs
    /// recorded messages through it, so that they go exactly the way received ones do.
    pub fn dispatch_one(
        router: &mut Router,
        shapes: &mut Shapes,
        topic: &str,
        payload: Vec<u8>,
        batch: &mut Batch,
    ) {
        batch.begin(topic);
        let dead = Self::handle(router, shapes, topic, &payload, batch).err();
        batch.end(payload, dead);
    }

    fn handle(
        router: &mut Router,
        shapes: &mut Shapes,
        topic: &str,
        payload: &[u8],
        batch: &mut Batch,
    ) -> Result<(), DeadLetter> {
        envelope::check_limits(payload, router.limits())
            .map_err(|e| DeadLetter::new(e.reason, e.detail))?;
        let env = envelope::parse(payload).map_err(|e| DeadLetter::new(e.reason, e.detail))?;
        batch.current().cnc_id = Some(env.cnc_id.to_string());
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
        let db = RawDatabase_TO::from_ptr(&mut recorder, TD_Opaque);
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
