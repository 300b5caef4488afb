//! The host services plugins look up through the extension entry point (plugin API
//! 1.1): log records into the collector's log, and counters into its registry, each
//! bounded so that one plugin cannot flood the journal or the metrics.
//!
//! The services are `extern "C"` functions without closures, so what they need lives
//! in one leaked [`PluginContext`] per plugin library (passed back on every call) and
//! in process-wide state: the limits, set once by `run` from `collector.json`, and the
//! metric families, which [`Metrics`](crate::metrics::Metrics) registers.

use std::{
    cell::Cell,
    collections::HashMap,
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use abi_stable::std_types::RStr;
use mes_plugin_api::{
    abi::{
        LogRecordV1, LogServiceV1, MetricsServiceV1, DB_SERVICE_V1, LOG_SERVICE_V1,
        METRICS_SERVICE_V1,
    },
    features, Feature,
};
use prometheus::{IntCounter, IntCounterVec, Opts};

use crate::lock;

/// Defaults of the `plugins` section's limits.
pub const DEFAULT_LOG_RECORDS_PER_SECOND: u32 = 20;
pub const DEFAULT_METRIC_SERIES_PER_CLASS: u32 = 100;

static LOG_RATE: AtomicU32 = AtomicU32::new(DEFAULT_LOG_RECORDS_PER_SECOND);
static SERIES_CAP: AtomicU32 = AtomicU32::new(DEFAULT_METRIC_SERIES_PER_CLASS);

/// Sets the limits for plugins loaded from now on (`run` calls it before loading).
pub fn set_limits(log_records_per_second: u32, metric_series_per_class: u32) {
    LOG_RATE.store(log_records_per_second, Ordering::Relaxed);
    SERIES_CAP.store(metric_series_per_class, Ordering::Relaxed);
}

/// The features this host offers, less those switched off by
/// `MES_COLLECTOR_WITHOUT_FEATURES` (a comma-separated list). The switch exists so that
/// the compatibility tests can run the real host as a host that predates a feature.
pub fn offered() -> Vec<Feature> {
    let off = std::env::var("MES_COLLECTOR_WITHOUT_FEATURES").unwrap_or_default();
    let off: Vec<&str> = off.split(',').map(str::trim).collect();
    features::ALL
        .iter()
        .copied()
        .filter(|f| !off.contains(&f.name()))
        .collect()
}

/// The metric families of plugin services, registered by `Metrics`.
pub struct Telemetry {
    pub events: IntCounterVec,
    pub log_dropped: IntCounterVec,
    pub series_overflow: IntCounterVec,
}

pub fn telemetry() -> &'static Telemetry {
    static T: OnceLock<Telemetry> = OnceLock::new();
    T.get_or_init(|| Telemetry {
        events: IntCounterVec::new(
            Opts::new(
                "mes_plugin_events_total",
                "Events counted by plugins (mes_plugin_api::metrics::count), by class, event and label",
            ),
            &["class", "event", "label"],
        )
        .expect("valid metric"),
        log_dropped: IntCounterVec::new(
            Opts::new(
                "mes_plugin_log_records_dropped_total",
                "Plugin log records dropped because the plugin logged faster than plugins.log_records_per_second",
            ),
            &["class"],
        )
        .expect("valid metric"),
        series_overflow: IntCounterVec::new(
            Opts::new(
                "mes_plugin_metric_series_overflow_total",
                "Plugin counts put under label \"other\" because the class reached plugins.metric_series_per_class",
            ),
            &["class"],
        )
        .expect("valid metric"),
    })
}

thread_local! {
    /// The machine whose plugin call this thread is in, for log records.
    static CALL_CNC_ID: Cell<Option<(*const u8, usize)>> = const { Cell::new(None) };
}

/// Marks this thread as calling a plugin for `cnc_id` until the guard drops, so that
/// the plugin's log records name the machine.
pub fn enter_call(cnc_id: &str) -> CallGuard<'_> {
    let previous = CALL_CNC_ID.with(|c| c.replace(Some((cnc_id.as_ptr(), cnc_id.len()))));
    CallGuard {
        previous,
        _cnc_id: std::marker::PhantomData,
    }
}

pub struct CallGuard<'a> {
    previous: Option<(*const u8, usize)>,
    _cnc_id: std::marker::PhantomData<&'a str>,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        CALL_CNC_ID.with(|c| c.set(self.previous));
    }
}

fn with_call_cnc_id<R>(f: impl FnOnce(Option<&str>) -> R) -> R {
    CALL_CNC_ID.with(|c| match c.get() {
        // SAFETY: set by `enter_call` from a `&str` that its guard borrows, and reset
        // when the guard drops, so the text is alive while it is set.
        Some((ptr, len)) => f(Some(unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(ptr, len))
        })),
        None => f(None),
    })
}

/// What the host keeps per plugin library; leaked, since libraries are never unloaded.
pub struct PluginContext {
    class: String,
    log: Mutex<LogBudget>,
    log_dropped: IntCounter,
    series: Mutex<HashMap<String, HashMap<String, IntCounter>>>,
    series_count: AtomicU64,
    series_cap: u64,
    series_overflow: IntCounter,
}

impl PluginContext {
    /// The context of a plugin library of class `class`, with the limits in force.
    pub fn leak(class: &str) -> &'static PluginContext {
        Box::leak(Box::new(Self::new(
            class,
            LOG_RATE.load(Ordering::Relaxed),
            SERIES_CAP.load(Ordering::Relaxed),
        )))
    }

    fn new(class: &str, log_rate: u32, series_cap: u32) -> Self {
        let t = telemetry();
        PluginContext {
            class: class.to_string(),
            log: Mutex::new(LogBudget::new(log_rate, Instant::now())),
            log_dropped: t.log_dropped.with_label_values(&[class]),
            series: Mutex::new(HashMap::new()),
            series_count: AtomicU64::new(0),
            series_cap: u64::from(series_cap),
            series_overflow: t.series_overflow.with_label_values(&[class]),
        }
    }
}

/// A token bucket: `rate` records a second, bursts of up to five seconds' worth.
struct LogBudget {
    rate: f64,
    tokens: f64,
    refilled: Instant,
    /// Dropped since the last summary line.
    dropped: u64,
    summarized: Instant,
}

const SUMMARY_EVERY: Duration = Duration::from_secs(10);

impl LogBudget {
    fn new(rate: u32, now: Instant) -> Self {
        LogBudget {
            rate: f64::from(rate),
            tokens: f64::from(rate) * 5.0,
            refilled: now,
            dropped: 0,
            summarized: now,
        }
    }

    /// Whether a record may go now; if so, and records were dropped, how many (to be
    /// said once in a while, not once per record).
    fn take(&mut self, now: Instant) -> Result<Option<u64>, ()> {
        let burst = self.rate * 5.0;
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(burst);
        self.refilled = now;
        if self.tokens < 1.0 {
            self.dropped += 1;
            return Err(());
        }
        self.tokens -= 1.0;
        if self.dropped > 0 && now.duration_since(self.summarized) >= SUMMARY_EVERY {
            self.summarized = now;
            return Ok(Some(std::mem::take(&mut self.dropped)));
        }
        Ok(None)
    }
}

/// Given to every plugin as `HostServices::lookup`.
pub extern "C" fn lookup(name: RStr<'_>) -> *const () {
    static LOG: LogServiceV1 = LogServiceV1 {
        max_level: log_max_level,
        enabled: log_enabled,
        log: log_record,
    };
    static METRICS: MetricsServiceV1 = MetricsServiceV1 {
        count: metrics_count,
    };
    let offered = |f: Feature| offered().contains(&f);
    match name.as_str() {
        LOG_SERVICE_V1 if offered(features::LOG) => &LOG as *const LogServiceV1 as *const (),
        METRICS_SERVICE_V1 if offered(features::METRICS) => {
            &METRICS as *const MetricsServiceV1 as *const ()
        }
        DB_SERVICE_V1 if offered(features::UPSERT_NEWEST) => {
            &crate::sink::batch::DB_SERVICE as *const _ as *const ()
        }
        _ => std::ptr::null(),
    }
}

/// # Safety
/// `context` is what [`PluginContext::leak`] returned, as the host passed it in
/// `HostServices`; the plugin hands it back unchanged.
unsafe fn context<'a>(context: *const ()) -> Option<&'a PluginContext> {
    (context as *const PluginContext).as_ref()
}

fn level(n: u8) -> log::Level {
    match n {
        0 | 1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    }
}

extern "C" fn log_max_level() -> u8 {
    log::max_level() as u8
}

extern "C" fn log_enabled(_context: *const (), n: u8, target: RStr<'_>) -> bool {
    let metadata = log::Metadata::builder()
        .level(level(n))
        .target(target.as_str())
        .build();
    log::logger().enabled(&metadata)
}

extern "C" fn log_record(ctx: *const (), record: &LogRecordV1<'_>) {
    // SAFETY: see `context`.
    let Some(ctx) = (unsafe { context(ctx) }) else {
        return;
    };
    let level = level(record.level);
    let metadata = log::Metadata::builder()
        .level(level)
        .target(record.target.as_str())
        .build();
    if !log::logger().enabled(&metadata) {
        return;
    }
    let taken = lock(&ctx.log).take(Instant::now());
    let dropped_before = match taken {
        Ok(d) => d,
        Err(()) => {
            ctx.log_dropped.inc();
            return;
        }
    };
    if let Some(n) = dropped_before {
        log::warn!(
            "plugin {} logged faster than {} records/s: {n} of its records were dropped (mes_plugin_log_records_dropped_total)",
            ctx.class,
            LOG_RATE.load(Ordering::Relaxed)
        );
    }
    with_call_cnc_id(|cnc_id| {
        let kvs: [(&str, &str); 2] = [("plugin", &ctx.class), ("cnc_id", cnc_id.unwrap_or(""))];
        let kvs: &[(&str, &str)] = if cnc_id.is_some() { &kvs } else { &kvs[..1] };
        log::logger().log(
            &log::Record::builder()
                .args(format_args!("{}", record.message.as_str()))
                .metadata(metadata)
                .module_path(Some(record.module_path.as_str()).filter(|s| !s.is_empty()))
                .file(Some(record.file.as_str()).filter(|s| !s.is_empty()))
                .line(Some(record.line).filter(|l| *l != 0))
                .key_values(&kvs)
                .build(),
        );
    });
}

/// Keeps to `[a-zA-Z0-9_]` (anything else becomes `_`) and 64 bytes, for a Prometheus
/// label value that stays readable.
fn clean(text: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if keep(c) { c } else { '_' })
        .collect();
    if out.len() > 64 {
        let mut end = 64;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

extern "C" fn metrics_count(ctx: *const (), event: RStr<'_>, label: RStr<'_>, n: u64) {
    // SAFETY: see `context`.
    let Some(ctx) = (unsafe { context(ctx) }) else {
        return;
    };
    let (event, label) = (event.as_str(), label.as_str());
    let mut series = lock(&ctx.series);
    if let Some(counter) = series.get(event).and_then(|m| m.get(label)) {
        counter.inc_by(n);
        return;
    }
    let event_name = clean(event, |c| c.is_ascii_alphanumeric() || c == '_');
    let over = ctx.series_count.load(Ordering::Relaxed) >= ctx.series_cap;
    if over {
        if ctx.series_overflow.get() == 0 {
            log::warn!(
                "plugin {} counts more than {} distinct (event, label) pairs; further new pairs are counted under label \"other\" (plugins.metric_series_per_class)",
                ctx.class,
                ctx.series_cap
            );
        }
        ctx.series_overflow.inc_by(n);
        telemetry()
            .events
            .with_label_values(&[ctx.class.as_str(), &event_name, "other"])
            .inc_by(n);
        return;
    }
    let label_value = clean(label, |c| !c.is_control());
    let counter =
        telemetry()
            .events
            .with_label_values(&[ctx.class.as_str(), &event_name, &label_value]);
    counter.inc_by(n);
    ctx.series_count.fetch_add(1, Ordering::Relaxed);
    series
        .entry(event.to_string())
        .or_default()
        .insert(label.to_string(), counter);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_budget_allows_a_burst_then_the_rate_and_reports_what_it_dropped() {
        let start = Instant::now();
        let mut b = LogBudget::new(10, start);
        let passed = (0..100).filter(|_| b.take(start).is_ok()).count();
        assert_eq!(passed, 50, "a burst of five seconds' worth");
        assert_eq!(b.dropped, 50);
        // One second later: ten more, and the drop count comes out once the summary
        // interval has passed.
        let later = start + Duration::from_secs(1);
        let passed = (0..20).filter(|_| b.take(later).is_ok()).count();
        assert_eq!(passed, 10);
        let much_later = start + SUMMARY_EVERY;
        assert_eq!(b.take(much_later), Ok(Some(60)));
        assert_eq!(b.take(much_later), Ok(None));
    }

    #[test]
    fn label_values_are_cut_and_event_names_cleaned() {
        assert_eq!(
            clean("alarms by-code", |c| c.is_ascii_alphanumeric() || c == '_'),
            "alarms_by_code"
        );
        assert_eq!(clean(&"é".repeat(40), |_| true).len(), 64);
    }

    #[test]
    fn a_class_counts_up_to_its_series_cap_then_under_other() {
        let t = telemetry();
        let ctx = PluginContext::new("CapTest", 20, 2);
        let raw = &ctx as *const PluginContext as *const ();
        let count = |event: &str, label: &str| {
            metrics_count(raw, RStr::from_str(event), RStr::from_str(label), 1)
        };
        count("alarms", "E1");
        count("alarms", "E2");
        count("alarms", "E1");
        count("alarms", "E3");
        count("alarms by code", "E4");
        let value =
            |event: &str, label: &str| t.events.with_label_values(&["CapTest", event, label]).get();
        assert_eq!(value("alarms", "E1"), 2);
        assert_eq!(value("alarms", "E2"), 1);
        assert_eq!(value("alarms", "other"), 1);
        assert_eq!(value("alarms_by_code", "other"), 1);
        assert_eq!(t.series_overflow.with_label_values(&["CapTest"]).get(), 2);
        assert_eq!(value("alarms", "E3"), 0, "never created past the cap");
    }

    #[test]
    fn call_guard_restores_the_outer_machine() {
        let outer = String::from("CNC001");
        let _a = enter_call(&outer);
        {
            let inner = String::from("CNC002");
            let _b = enter_call(&inner);
            with_call_cnc_id(|c| assert_eq!(c, Some("CNC002")));
        }
        with_call_cnc_id(|c| assert_eq!(c, Some("CNC001")));
    }
}
