//! Envelope parsing: what the dispatcher does first with every message (the size and
//! nesting check, then the parse).
//!
//! `cargo bench -p mes-collector --bench envelope`; criterion prints the time per
//! message (one iteration = one message).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mes_collector::envelope;

/// As `cnc-sim generate` sends them (a CNCTypeA and a CNCTypeB machine).
const TYPE_A: &str = r#"{"cnc_id":"SIM-A-0007","part_program":"program_12","timestamp":"1764176400","payload":{"status":"running","spin":5412,"X-Axis":231.875,"Y-Axis":48.302,"seq":123456,"sent_at_us":1764176400123456}}"#;
const TYPE_B: &str = r#"{"cnc_id":"SIM-B-0008","part_program":"program_03","timestamp":"1764176400","payload":{"status":"running","spin":9800,"X-Axis":12.5,"Y-Axis":407.111,"feed_rate":1250.4,"part_count":381,"alarms":[{"code":"EX1012","message":"Coolant level low"}],"seq":123457,"sent_at_us":1764176400123789}}"#;
/// The README's sample: the original wire format, spaces and all.
const SAMPLE: &str = r#"{"cnc_id": "CNC001","part_program": "program_01","timestamp": "1747379028","payload":{"status": "running","spin":200,"X-Axis":30,"Y-Axis":80}}"#;

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("envelope_parse");
    group.throughput(Throughput::Elements(1));
    for (name, msg) in [("type_a", TYPE_A), ("type_b", TYPE_B), ("sample", SAMPLE)] {
        let bytes = msg.as_bytes();
        assert!(envelope::parse(bytes).is_ok(), "{name} must parse");
        group.bench_function(name, |b| {
            b.iter(|| {
                let env = envelope::parse(black_box(bytes)).expect("valid envelope");
                black_box(env.payload().len());
            })
        });
    }
    group.finish();
}

fn check_limits(c: &mut Criterion) {
    let limits = envelope::Limits::default();
    let mut group = c.benchmark_group("envelope_check_limits");
    group.throughput(Throughput::Elements(1));
    for (name, msg) in [("type_a", TYPE_A), ("type_b", TYPE_B)] {
        let bytes = msg.as_bytes();
        assert!(
            envelope::check_limits(bytes, &limits).is_ok(),
            "{name} must pass"
        );
        group.bench_function(name, |b| {
            b.iter(|| envelope::check_limits(black_box(bytes), &limits).expect("within limits"))
        });
    }
    group.finish();
}

criterion_group!(benches, parse, check_limits);
criterion_main!(benches);
