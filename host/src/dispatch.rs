//! Where messages are dispatched: each message's envelope is parsed once, routed to
//! its machine's plugin instance, and the plugin's writes are recorded into the batch,
//! which the sink commits in one transaction.

#![allow(non_local_definitions)] // sabi_trait emits its impls inside a const block

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use abi_stable::{sabi_trait::TD_Opaque, std_types::RResult};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use log::{debug, info, warn};
use mes_plugin_api::{FailureKind, Message, RawDatabase_TO};

use crate::{
    config::BatchConfig,
    dead_letter::{DeadLetter, Reason},
    envelope,
    intake::Incoming,
    plugins::Router,
    sink::{
        batch::{Batch, Shapes},
        mysql::MysqlSink,
    },
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
    router: Router,
    sink: MysqlSink,
    shapes: Shapes,
    batch: BatchConfig,
    totals: Totals,
}

const SUMMARY_EVERY: Duration = Duration::from_secs(60);

impl Dispatcher {
    pub fn new(router: Router, sink: MysqlSink, batch: BatchConfig) -> Self {
        Dispatcher {
            router,
            sink,
            shapes: Shapes::default(),
            batch,
            totals: Totals::default(),
        }
    }

    /// Runs until `stop` is set and the queue is empty; every message taken from the
    /// queue is committed before it returns.
    pub fn run(mut self, queue: Receiver<Incoming>, stop: Arc<AtomicBool>) -> Totals {
        let mut batch = Batch::default();
        let mut last_summary = Instant::now();
        let mut since_summary = Totals::default();
        loop {
            let first = match queue.recv_timeout(Duration::from_millis(100)) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => {
                    self.maybe_summary(&mut last_summary, &mut since_summary);
                    continue;
                }
                Err(_) => break,
            };
            let deadline = Instant::now() + self.batch.max_wait();
            self.dispatch(first, &mut batch);
            while batch.len() < self.batch.max_messages {
                match queue.recv_deadline(deadline) {
                    Ok(m) => self.dispatch(m, &mut batch),
                    Err(_) => break,
                }
            }
            self.commit(&mut batch, &mut since_summary);
            self.maybe_summary(&mut last_summary, &mut since_summary);
        }
        info!("dispatcher stopped: {}", self.totals.summary());
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

    fn commit(&mut self, batch: &mut Batch, since: &mut Totals) {
        let started = Instant::now();
        let done = self.sink.commit(batch, &self.shapes);
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
    }

    /// Runs one message through its plugin, recording its writes or its dead letter.
    fn dispatch(&mut self, msg: Incoming, batch: &mut Batch) {
        batch.begin(&msg.topic);
        let dead = self.handle(&msg, batch).err();
        batch.end(msg.payload, dead);
    }

    fn handle(&mut self, msg: &Incoming, batch: &mut Batch) -> Result<(), DeadLetter> {
        let env = envelope::parse(&msg.payload).map_err(|e| DeadLetter::new(e.reason, e.detail))?;
        batch.current().cnc_id = Some(env.cnc_id.to_string());
        let instance = self.router.instance(&env.cnc_id)?;
        batch.current().plugin = Some(instance.info.clone());
        debug!("cnc_id={} -> {}", env.cnc_id, instance.info.class_name);
        let message = Message::new(
            &msg.topic,
            &env.cnc_id,
            &env.part_program,
            env.timestamp,
            env.payload(),
        );
        let mut recorder = batch.recorder(&mut self.shapes);
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
