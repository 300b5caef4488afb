//! What the collector exposes for monitoring: Prometheus metrics on `/metrics`,
//! `/healthz` and `/readyz`, served by a small blocking HTTP server on its own thread.
//!
//! Label sets are bounded: `cnc_id` labels only take the ids mapped in
//! `cnc_classes.json` (anything else counts as `unknown`), `class` only the mapped
//! class names, `reason` the fixed dead-letter reasons.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{SystemTime, UNIX_EPOCH},
};

use log::{error, info};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::fasthash::FxBuild;

pub const UNKNOWN: &str = "unknown";

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub struct Metrics {
    registry: Registry,
    /// Fixed at the start and looked up for every message: the fast hash is safe
    /// since a sender cannot add keys ([`crate::fasthash`]).
    known_cnc_ids: HashSet<String, FxBuild>,
    known_classes: HashSet<String, FxBuild>,
    started: f64,
    pub received: IntCounter,
    pub redeliveries_dropped: IntCounter,
    pub stored: IntCounterVec,
    pub dead_lettered: IntCounterVec,
    pub spool_records: IntGauge,
    pub spool_bytes: IntGauge,
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
    db_up: IntGauge,
    broker_up: IntGauge,
    pub db_outages: IntCounter,
    pub broker_reconnects: IntCounter,
    pub plugin_load_failures: IntGauge,
    /// 1 for a class whose plugin build is quarantined after repeated crashes.
    pub plugin_quarantined: IntGaugeVec,
    /// Crashes and hangs in the quarantine window, per class, as of the start.
    pub plugin_recent_crashes: IntGaugeVec,
    /// Set by the watchdog when a plugin call hangs, just before the process exits.
    plugin_hung: AtomicBool,
    uptime: Gauge,
    last_seen: GaugeVec,
    since_seen: GaugeVec,
    /// cnc_id → Unix time of its last message, for `since_seen` at scrape time.
    last_seen_at: Mutex<BTreeMap<String, f64>>,
    /// The spool's uncommitted records and bytes, read at scrape time: set after each
    /// commit, the gauges stood still through a database outage, just when the spool
    /// grows.
    spool_depth: Mutex<Option<SpoolDepth>>,
}

/// Reads (records, bytes) waiting in the spool.
pub type SpoolDepth = Box<dyn Fn() -> (u64, u64) + Send>;

impl Metrics {
    pub fn new<'a>(
        cnc_ids: impl IntoIterator<Item = &'a str>,
        classes: impl IntoIterator<Item = &'a str>,
    ) -> Arc<Metrics> {
        let registry = Registry::new();
        let r = &registry;
        let info = IntGaugeVec::new(
            Opts::new(
                "mes_build_info",
                "Versions of the collector and of the plugin API it was built against",
            ),
            &["version", "plugin_api"],
        )
        .expect("valid metric");
        info.with_label_values(&[env!("CARGO_PKG_VERSION"), mes_plugin_api::API_VERSION])
            .set(1);
        r.register(Box::new(info)).expect("unique metric");
        let plugin_services = crate::plugins::services::telemetry();
        for family in [
            &plugin_services.events,
            &plugin_services.log_dropped,
            &plugin_services.series_overflow,
        ] {
            r.register(Box::new(family.clone())).expect("unique metric");
        }
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        let m = Metrics {
            known_cnc_ids: cnc_ids.into_iter().map(String::from).collect(),
            known_classes: classes.into_iter().map(String::from).collect(),
            started: now_secs(),
            received: counter(r, "mes_messages_received_total", "MQTT messages appended to the spool"),
            redeliveries_dropped: counter(
                r,
                "mes_redeliveries_dropped_total",
                "Broker redeliveries of messages already spooled before a reconnect, not spooled again",
            ),
            stored: counter_vec(r, "mes_messages_stored_total", "Messages committed to MySQL", &["class", "cnc_id"]),
            dead_lettered: counter_vec(
                r,
                "mes_messages_dead_lettered_total",
                "Messages stored as dead letters, by reason",
                &["reason", "class", "cnc_id"],
            ),
            spool_records: gauge(r, "mes_spool_records", "Spooled messages not yet committed to MySQL"),
            spool_bytes: gauge(r, "mes_spool_bytes", "Bytes of spool segments on disk"),
            batch_size: histogram(
                r,
                "mes_batch_messages",
                "Messages per committed batch",
                vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2000.0],
            ),
            commit_seconds: histogram(
                r,
                "mes_commit_seconds",
                "Time to commit one batch to MySQL, retries included",
                vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0],
            ),
            db_up: gauge(r, "mes_database_up", "1 while the last database operation succeeded"),
            broker_up: gauge(r, "mes_broker_up", "1 while connected to the MQTT broker"),
            db_outages: counter(r, "mes_database_outages_total", "Times the database became unreachable"),
            broker_reconnects: counter(r, "mes_broker_reconnects_total", "Reconnects to the MQTT broker"),
            plugin_load_failures: gauge(r, "mes_plugin_load_failures", "Files in the plugins dir that failed to load at start"),
            plugin_quarantined: int_gauge_vec(
                r,
                "mes_plugin_quarantined",
                "1 while the class's plugin build is quarantined after repeated crashes: its messages are dead letters",
                &["class"],
            ),
            plugin_recent_crashes: int_gauge_vec(
                r,
                "mes_plugin_crashes",
                "Crashes and hangs of the class's plugin within plugins.quarantine_window_secs, as of the start",
                &["class"],
            ),
            plugin_hung: AtomicBool::new(false),
            uptime: {
                let g = Gauge::new("mes_uptime_seconds", "Seconds since the collector started").expect("valid metric");
                r.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            last_seen: gauge_vec(
                r,
                "mes_cnc_last_seen_timestamp_seconds",
                "Unix time the collector last dispatched a message from this machine",
                &["cnc_id"],
            ),
            since_seen: gauge_vec(
                r,
                "mes_cnc_seconds_since_last_seen",
                "Seconds since this machine was last heard from (since start if never)",
                &["cnc_id"],
            ),
            last_seen_at: Mutex::new(BTreeMap::new()),
            spool_depth: Mutex::new(None),
            registry,
        };
        // Every mapped class starts at 0 rather than without a series, so that a
        // dashboard or an alert can tell "never crashed" from "not scraped".
        for class in &m.known_classes {
            m.plugin_quarantined.with_label_values(&[class]).set(0);
            m.plugin_recent_crashes.with_label_values(&[class]).set(0);
        }
        Arc::new(m)
    }

    /// The `cnc_id` label for a message: its id if mapped, else `unknown`.
    pub fn cnc_label<'a>(&self, cnc_id: Option<&'a str>) -> &'a str {
        match cnc_id {
            Some(id) if self.known_cnc_ids.contains(id) => id,
            _ => UNKNOWN,
        }
    }

    pub fn class_label<'a>(&self, class: Option<&'a str>) -> &'a str {
        match class {
            Some(c) if self.known_classes.contains(c) => c,
            _ => UNKNOWN,
        }
    }

    pub fn heard_from(&self, cnc_id: &str, at: f64) {
        if self.known_cnc_ids.contains(cnc_id) {
            self.last_seen.with_label_values(&[cnc_id]).set(at);
            let mut last = self.last_seen_at.lock().unwrap_or_else(|p| p.into_inner());
            // Once per machine and batch: no new key string but the first time.
            match last.get_mut(cnc_id) {
                Some(t) => *t = at,
                None => {
                    last.insert(cnc_id.to_string(), at);
                }
            }
        }
    }

    pub fn set_db_up(&self, up: bool) {
        self.db_up.set(i64::from(up));
    }

    pub fn set_broker_up(&self, up: bool) {
        self.broker_up.set(i64::from(up));
    }

    /// Where the spool gauges are read from at each scrape.
    pub fn read_spool_depth(&self, depth: SpoolDepth) {
        *self.spool_depth.lock().unwrap_or_else(|p| p.into_inner()) = Some(depth);
    }

    /// The exposition text, with the time-derived gauges and the spool's brought up
    /// to date.
    pub fn render(&self) -> String {
        let now = now_secs();
        self.uptime.set(now - self.started);
        if let Some(depth) = &*self.spool_depth.lock().unwrap_or_else(|p| p.into_inner()) {
            let (records, bytes) = depth();
            self.spool_records.set(records as i64);
            self.spool_bytes.set(bytes as i64);
        }
        {
            let seen = self.last_seen_at.lock().unwrap_or_else(|p| p.into_inner());
            for id in &self.known_cnc_ids {
                let since = now - seen.get(id).copied().unwrap_or(self.started);
                self.since_seen.with_label_values(&[id]).set(since);
            }
        }
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("text encoding to memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }

    /// The watchdog found a plugin call hung; the collector is about to exit.
    pub fn set_plugin_hung(&self) {
        self.plugin_hung.store(true, Ordering::SeqCst);
    }

    /// `/readyz`: ready while connected to both the broker and the database, and no
    /// plugin call hangs.
    pub fn readiness(&self) -> (bool, String) {
        let broker = self.broker_up.get() == 1;
        let db = self.db_up.get() == 1;
        if self.plugin_hung.load(Ordering::SeqCst) {
            return (
                false,
                format!(r#"{{"broker":{broker},"database":{db},"plugin_hung":true}}"#),
            );
        }
        (
            broker && db,
            format!(r#"{{"broker":{broker},"database":{db}}}"#),
        )
    }
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn int_gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `addr` from a thread of its own.
/// Returns the address actually bound (port 0 picks a free one).
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> Result<std::net::SocketAddr, String> {
    let server = tiny_http::Server::http(addr)
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}; change metrics_addr in collector.json (\"\" turns it off)"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| format!("metrics address {addr} is not an IP address"))?;
    thread::Builder::new()
        .name("metrics-http".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let path = request.url().split('?').next().unwrap_or("").to_string();
                let (status, body, content_type) = match path.as_str() {
                    "/metrics" => (
                        200,
                        metrics.render(),
                        "text/plain; version=0.0.4; charset=utf-8",
                    ),
                    "/healthz" => (200, "ok\n".to_string(), "text/plain; charset=utf-8"),
                    "/readyz" => {
                        let (ready, body) = metrics.readiness();
                        (if ready { 200 } else { 503 }, body, "application/json")
                    }
                    _ => (
                        404,
                        "not found: try /metrics, /healthz or /readyz\n".to_string(),
                        "text/plain; charset=utf-8",
                    ),
                };
                let header = tiny_http::Header::from_bytes("Content-Type", content_type)
                    .expect("valid header");
                let response = tiny_http::Response::from_string(body)
                    .with_status_code(status)
                    .with_header(header);
                if let Err(e) = request.respond(response) {
                    error!("metrics: cannot answer a request: {e}");
                }
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    info!("metrics on http://{bound}/metrics (also /healthz, /readyz)");
    Ok(bound)
}
