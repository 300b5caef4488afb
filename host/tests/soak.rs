//! Soak: the delivery faults of delivery.rs, mixed at random for minutes while traffic
//! flows, then a count of what was published against what was stored. Too long for the
//! suite, so ignored; `scripts/soak.sh [MINUTES]` runs it.
//!
//! Environment: SOAK_MINUTES (default 10, fractions allowed), SOAK_RATE (messages per
//! second, default 1000; 0 = as fast as the broker takes them), SOAK_SEED (the fault
//! schedule; a time-based one is printed when unset, so a run can be repeated).

mod common;

use std::{
    collections::BTreeMap,
    str::FromStr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{faults::*, *};
use serde_json::json;

const MACHINES: usize = 50;
/// Short chunks, because a broker fault waits for the chunk in flight to end.
const CHUNK_SECS: u64 = 2;
/// A collector that takes longer than this to honour SIGTERM is recorded as an anomaly.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Drain ends when nothing changed for this long, whether or not everything arrived.
const DRAIN_STALL: Duration = Duration::from_secs(180);
const DRAIN_QUIET: Duration = Duration::from_secs(3);

/// xorshift64*: a reproducible fault schedule without a dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // xorshift's state must not be zero, and small seeds start in a poorly mixed
        // region, so the seed is spread over the word first.
        let s = (seed ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        Rng(if s == 0 { 1 } else { s })
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a valid value")),
        _ => default,
    }
}

/// UTC time of day, the form the collector's log lines carry, so that the fault
/// timeline can be read side by side with the log.
fn clock() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let s = now.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        now.subsec_millis()
    )
}

/// Keeps broker faults between publisher chunks: the publisher holds the lock for a
/// chunk, a broker fault holds it for the outage. `wanted` stops the publisher from
/// taking the lock straight back after each chunk.
#[derive(Default)]
struct Gate {
    wanted: AtomicBool,
    lock: Mutex<()>,
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn for_publisher(&self) -> MutexGuard<'_, ()> {
        while self.wanted.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(10));
        }
        self.lock()
    }

    fn for_broker_fault(&self) -> MutexGuard<'_, ()> {
        self.wanted.store(true, Ordering::SeqCst);
        let held = self.lock();
        self.wanted.store(false, Ordering::SeqCst);
        held
    }
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Published {
    /// Seqs 0..next_seq were all published and acknowledged.
    next_seq: u64,
    chunks: u64,
    /// Ranges sent again after cnc-sim reported failures: duplicates there may be the
    /// publisher's, not the collector's.
    republished: Vec<(u64, u64)>,
    failures: Vec<String>,
}

/// Publishes consecutive chunks with disjoint seq ranges until `stop`.
fn publish_chunks(
    setup: &Setup,
    rate: u64,
    seed: u64,
    stop: &AtomicBool,
    gate: &Gate,
) -> Published {
    let chunk = if rate == 0 {
        5_000
    } else {
        (rate * CHUNK_SECS).max(100)
    };
    let mut p = Published::default();
    while !stop.load(Ordering::SeqCst) {
        let _held = gate.for_publisher();
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let start = p.next_seq;
        for attempt in 1.. {
            let chunk_seed = seed.wrapping_add(p.chunks) % (1 << 63);
            let out = generate_cmd(setup, chunk, rate, start, MACHINES)
                .args(["--seed", &chunk_seed.to_string()])
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = format!(
                "{} seq {start}..{} attempt {attempt}: {} {}",
                clock(),
                start + chunk,
                String::from_utf8_lossy(&out.stdout).trim(),
                stderr.lines().last().unwrap_or("").trim()
            );
            eprintln!("soak: publisher chunk failed, publishing it again: {why}");
            p.failures.push(why);
            assert!(
                attempt < 5,
                "cnc-sim failed 5 times in a row: {p:?}",
                p = p.failures
            );
            p.republished.push((start, start + chunk));
        }
        p.next_seq += chunk;
        p.chunks += 1;
    }
    p
}

struct Soak {
    faults: BTreeMap<&'static str, u64>,
    /// Restarts of the collector that happened while the database was cut off.
    during_db_outage: u64,
    bad_not_json: u64,
    bad_unknown: u64,
    peak_rss_kib: u64,
    slowest_stop: Duration,
    anomalies: Vec<String>,
    timeline: Vec<String>,
    started: Instant,
}

impl Soak {
    fn new() -> Soak {
        Soak {
            faults: BTreeMap::new(),
            during_db_outage: 0,
            bad_not_json: 0,
            bad_unknown: 0,
            peak_rss_kib: 0,
            slowest_stop: Duration::ZERO,
            anomalies: Vec::new(),
            timeline: Vec::new(),
            started: Instant::now(),
        }
    }

    fn event(&mut self, what: String) {
        let at = self.started.elapsed();
        self.timeline
            .push(format!("{} +{:7.1} s {what}", clock(), at.as_secs_f64()));
    }

    fn fault(&mut self, kind: &'static str, detail: String) {
        *self.faults.entry(kind).or_default() += 1;
        self.event(format!("{kind} {detail}"));
    }

    fn anomaly(&mut self, what: String) {
        eprintln!("soak: anomaly: {what}");
        self.event(format!("ANOMALY {what}"));
        self.anomalies.push(format!("{} {what}", clock()));
    }

    fn sample_rss(&mut self, collector: &Collector) {
        self.peak_rss_kib = self.peak_rss_kib.max(collector.peak_rss_kib());
    }

    /// A collector that ended without being told to is restarted, and noted.
    fn check_alive(&mut self, collector: &mut Collector) {
        if let Some(status) = collector.exited() {
            self.anomaly(format!("collector exited on its own ({status}); restarted"));
            collector.restart();
        }
    }

    /// Waits, watching the collector.
    fn idle(&mut self, collector: &mut Collector, d: Duration) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            self.check_alive(collector);
            self.sample_rss(collector);
            thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(250)),
            );
        }
    }

    fn kill9(&mut self, collector: &mut Collector, note: &str) {
        self.check_alive(collector);
        self.sample_rss(collector);
        self.fault("kill9", note.to_string());
        collector.kill9();
        collector.restart();
    }

    fn sigterm(&mut self, collector: &mut Collector, note: &str) {
        self.check_alive(collector);
        self.sample_rss(collector);
        self.fault("sigterm", note.to_string());
        let began = Instant::now();
        match collector.stop_within(STOP_TIMEOUT) {
            Some(s) if s.success() => {}
            Some(s) => self.anomaly(format!("SIGTERM {note}: collector exited with {s}")),
            None => self.anomaly(format!(
                "SIGTERM {note}: collector still running after {STOP_TIMEOUT:?}; killed"
            )),
        }
        self.slowest_stop = self.slowest_stop.max(began.elapsed());
        collector.restart();
    }

    fn broker_stop(&mut self, broker: &mut PrivateBroker, gate: &Gate, down: Duration, note: &str) {
        let _held = gate.for_broker_fault();
        self.fault("broker_stop", format!("for {down:?}{note}"));
        broker.stop();
        thread::sleep(down);
        broker.restart();
        self.event("broker back".into());
    }

    fn bad_messages(&mut self, setup: &Setup, rng: &mut Rng) {
        let n = 1 + rng.below(5);
        let mut msgs = Vec::new();
        for _ in 0..n {
            // Each one unique: the collector's redelivery filter compares contents.
            let k = self.bad_not_json + self.bad_unknown;
            if rng.chance(50) {
                self.bad_not_json += 1;
                msgs.push(format!("soak bad message {k}: {{not json"));
            } else {
                self.bad_unknown += 1;
                msgs.push(
                    json!({"cnc_id": format!("SOAK-NOBODY-{k}"), "part_program": "p", "timestamp": k,
                           "payload": {"status": "running", "spin": 1, "X-Axis": 1, "Y-Axis": 1}})
                    .to_string(),
                );
            }
        }
        setup.publish(&msgs);
        self.event(format!("published {n} bad messages"));
    }
}

/// Seqs that are missing or stored more than once, as (seq, times stored).
fn seq_anomalies(db: &TestDb, published: u64) -> (Vec<(u64, u32)>, u64) {
    let seqs: Vec<Option<i64>> =
        db.rows("SELECT CAST(JSON_EXTRACT(json_data, '$.seq') AS SIGNED) FROM cnc_data");
    let mut times = vec![0u32; published as usize];
    let mut foreign = 0;
    for s in seqs {
        match s {
            Some(s) if (0..published as i64).contains(&s) => times[s as usize] += 1,
            _ => foreign += 1,
        }
    }
    let odd = times
        .iter()
        .enumerate()
        .filter(|(_, &t)| t != 1)
        .map(|(s, &t)| (s as u64, t))
        .collect();
    (odd, foreign)
}

/// Seqs as contiguous ranges: a lost or replayed batch shows up as one.
fn ranges(seqs: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &s in seqs {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == s => *hi = s,
            _ => out.push((s, s)),
        }
    }
    out
}

fn show(r: &(u64, u64)) -> String {
    match r {
        (lo, hi) if lo == hi => lo.to_string(),
        (lo, hi) => format!("{lo}..={hi} ({})", hi - lo + 1),
    }
}

#[test]
#[ignore = "minutes long: run with scripts/soak.sh"]
fn soak_mixed_faults_lose_nothing_and_duplicate_nothing() {
    let minutes: f64 = env_or("SOAK_MINUTES", 10.0);
    let rate: u64 = env_or("SOAK_RATE", 1_000);
    let default_seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let seed: u64 = env_or("SOAK_SEED", default_seed);
    eprintln!("soak: {minutes} min at {rate} msg/s, SOAK_SEED={seed}");
    let mut rng = Rng::new(seed);

    // Declared before the collector so that it is dropped after it: the collector's
    // Drop clears its session on this broker.
    let mut broker = PrivateBroker::start();
    let db = TestDb::new("soak");
    let proxy = TcpProxy::start("127.0.0.1:3306");
    let mut setup = Setup::new(
        &db,
        "soak",
        &sim_classes(MACHINES),
        &["cnc-type-a", "cnc-type-b"],
    );
    setup.use_broker(&broker.uri(), &json!({}));
    setup.write_db(&db, proxy.port);
    let mut collector = Collector::start(&setup);

    let mut soak = Soak::new();
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(minutes * 60.0);
    let stop = AtomicBool::new(false);
    let gate = Gate::default();

    let published = thread::scope(|scope| {
        // A panic here must still end the publisher, or the scope would wait for it
        // forever.
        let _stop_on_unwind = StopOnDrop(&stop);
        let publisher = scope.spawn(|| publish_chunks(&setup, rate, seed, &stop, &gate));
        while Instant::now() < deadline && !publisher.is_finished() {
            let gap = rng.millis(1_000, 5_000);
            soak.idle(&mut collector, gap);
            if rng.chance(25) {
                soak.bad_messages(&setup, &mut rng);
            }
            match rng.below(4) {
                0 => soak.kill9(&mut collector, ""),
                1 => soak.sigterm(&mut collector, ""),
                2 => {
                    let outage = rng.millis(1_000, 10_000);
                    // Sometimes a second fault lands inside the outage: restarts with a
                    // batch held back, or the broker going too.
                    let inner = rng
                        .chance(40)
                        .then(|| (rng.below(3), rng.millis(0, outage.as_millis() as u64)));
                    soak.fault("db_cut", format!("for {outage:?}"));
                    proxy.cut();
                    match inner {
                        Some((kind, at)) => {
                            soak.idle(&mut collector, at);
                            soak.during_db_outage += 1;
                            match kind {
                                0 => soak.kill9(&mut collector, "during a database outage"),
                                1 => soak.sigterm(&mut collector, "during a database outage"),
                                _ => {
                                    let down = rng.millis(1_000, 5_000);
                                    soak.broker_stop(
                                        &mut broker,
                                        &gate,
                                        down,
                                        " during a database outage",
                                    );
                                }
                            }
                            soak.idle(&mut collector, outage.saturating_sub(at));
                        }
                        None => soak.idle(&mut collector, outage),
                    }
                    proxy.restore();
                    soak.event("database back".into());
                }
                _ => {
                    let down = rng.millis(1_000, 5_000);
                    soak.broker_stop(&mut broker, &gate, down, "");
                }
            }
        }
        stop.store(true, Ordering::SeqCst);
        publisher.join().unwrap()
    });
    let faulting = began.elapsed();
    soak.event(format!(
        "faults over; {} messages published in {} chunks",
        published.next_seq, published.chunks
    ));

    // Drain: everything published must arrive, then nothing more for a while (a
    // duplicate would come late, from a replay after a restart).
    let expected_dead = soak.bad_not_json + soak.bad_unknown;
    let drain_began = Instant::now();
    let mut last = (u64::MAX, u64::MAX);
    let mut last_change = Instant::now();
    loop {
        soak.check_alive(&mut collector);
        soak.sample_rss(&collector);
        let now = (
            db.count("SELECT COUNT(*) FROM cnc_data"),
            db.count("SELECT COUNT(*) FROM dead_letters"),
        );
        if now != last {
            last = now;
            last_change = Instant::now();
        }
        let quiet = last_change.elapsed();
        if now.0 >= published.next_seq && now.1 >= expected_dead && quiet >= DRAIN_QUIET {
            break;
        }
        if quiet >= DRAIN_STALL {
            soak.anomaly(format!(
                "drain stalled at {} rows, {} dead letters for {DRAIN_STALL:?}",
                now.0, now.1
            ));
            break;
        }
        thread::sleep(Duration::from_millis(500));
    }
    let drain = drain_began.elapsed();
    soak.sample_rss(&collector);
    match collector.stop_within(STOP_TIMEOUT) {
        Some(s) if s.success() => {}
        other => soak.anomaly(format!("final SIGTERM: {other:?}")),
    }

    let (rows, distinct, _, _) = seq_stats(&db);
    let (odd, foreign) = seq_anomalies(&db, published.next_seq);
    let missing: Vec<u64> = odd
        .iter()
        .filter(|(_, t)| *t == 0)
        .map(|(s, _)| *s)
        .collect();
    let doubled: Vec<(u64, u32)> = odd.iter().filter(|(_, t)| *t > 1).copied().collect();
    let republished = |s: u64| {
        published
            .republished
            .iter()
            .any(|&(lo, hi)| (lo..hi).contains(&s))
    };
    let dup_rows = rows - distinct;
    let dup_explained: u64 = doubled
        .iter()
        .filter(|(s, _)| republished(*s))
        .map(|(_, t)| u64::from(t - 1))
        .sum();
    let dup_unexplained = dup_rows - dup_explained;
    let dead_by_reason: BTreeMap<String, u64> = db
        .rows::<(String, u64)>("SELECT reason, COUNT(*) FROM dead_letters GROUP BY reason")
        .into_iter()
        .collect();
    let dead_found: u64 = dead_by_reason.values().sum();
    let dead_distinct = db.count("SELECT COUNT(DISTINCT payload) FROM dead_letters");
    let log = collector.log();
    let runs = log.matches("--- run ").count();
    let redeliveries: u64 = log
        .lines()
        .filter_map(|l| {
            let rest = &l[l.find("dropped ")? + 8..];
            rest.strip_suffix(
                " redelivered messages that were already spooled before the reconnect",
            )?
            .parse::<u64>()
            .ok()
        })
        .sum();
    let log_errors = log.lines().filter(|l| l.contains(" ERROR ")).count();
    let log_warnings = log.lines().filter(|l| l.contains(" WARN ")).count();

    let faults: Vec<String> = soak
        .faults
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let total_faults: u64 = soak.faults.values().sum();
    let expected_by_reason = format!(
        "not_json {}, unknown_cnc_id {}",
        soak.bad_not_json, soak.bad_unknown
    );
    let found_by_reason: Vec<String> = dead_by_reason
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    println!(
        "\n=== soak summary ===\n\
         seed                  {seed}\n\
         duration              {:.1} s ({:.1} s of faults, {:.1} s to drain)\n\
         rate asked            {rate} msg/s, {MACHINES} machines, chunks of {} s\n\
         faults injected       {total_faults}: {} ({} of them inside a database outage)\n\
         collector runs        {runs}; slowest SIGTERM stop {:.1} s\n\
         messages published    {} in {} chunks ({} chunks re-published)\n\
         rows stored           {rows}\n\
         distinct seq stored   {distinct}\n\
         duplicates            {dup_rows} (rows - distinct; {dup_explained} in re-published chunks)\n\
         missing               {} (published - distinct stored)\n\
         foreign rows          {foreign} (no seq in 0..published)\n\
         dead letters          expected {expected_dead} ({expected_by_reason}), found {dead_found} ({}), distinct payloads {dead_distinct}\n\
         redeliveries dropped  {redeliveries} (collector's redelivery filter, from its log)\n\
         log                   {log_errors} ERROR lines, {log_warnings} WARN lines\n\
         peak RSS collector    {} KiB (largest VmHWM of any run)\n\
         anomalies             {}\n\
         ====================",
        began.elapsed().as_secs_f64(),
        faulting.as_secs_f64(),
        drain.as_secs_f64(),
        CHUNK_SECS,
        faults.join(", "),
        soak.during_db_outage,
        soak.slowest_stop.as_secs_f64(),
        published.next_seq,
        published.chunks,
        published.republished.len(),
        published.next_seq.saturating_sub(distinct),
        found_by_reason.join(", "),
        soak.peak_rss_kib,
        if soak.anomalies.is_empty() {
            "none".to_string()
        } else {
            format!("{}\n  {}", soak.anomalies.len(), soak.anomalies.join("\n  "))
        },
    );
    for f in &published.failures {
        println!("publisher failure: {f}");
    }

    let dead_ok = dead_found == expected_dead
        && dead_distinct == expected_dead
        && dead_by_reason.get("not_json").copied().unwrap_or(0) == soak.bad_not_json
        && dead_by_reason.get("unknown_cnc_id").copied().unwrap_or(0) == soak.bad_unknown;
    let lost_or_doubled = !missing.is_empty() || dup_unexplained > 0 || foreign > 0;
    if lost_or_doubled || !dead_ok {
        let gaps: Vec<String> = ranges(&missing).iter().map(show).collect();
        println!("missing seqs: {}", gaps.join(", "));
        let doubled_seqs: Vec<u64> = doubled.iter().map(|(s, _)| *s).collect();
        // The ends of each range, with when each copy was stored, to set beside the
        // fault timeline and the collector's log.
        for r in ranges(&doubled_seqs).iter().take(20) {
            let copies = |s: u64| -> Vec<(u64, String, String)> {
                db.rows(&format!(
                    "SELECT id, cnc_id, CAST(stored_at AS CHAR) FROM cnc_data \
                     WHERE CAST(JSON_EXTRACT(json_data, '$.seq') AS SIGNED) = {s} ORDER BY id"
                ))
            };
            println!(
                "seqs {} stored more than once; (id, cnc_id, stored_at) of seq {}: {:?}, of seq {}: {:?}",
                show(r),
                r.0,
                copies(r.0),
                r.1,
                copies(r.1)
            );
        }
        println!("fault timeline:\n  {}", soak.timeline.join("\n  "));
    }
    assert!(
        !lost_or_doubled,
        "{} missing, {dup_unexplained} duplicated outside re-published chunks, {foreign} foreign rows (seed {seed})",
        missing.len()
    );
    assert!(
        dead_ok,
        "dead letters: expected {expected_dead} ({expected_by_reason}), found {dead_found} {dead_by_reason:?}, {dead_distinct} distinct (seed {seed})"
    );
}
