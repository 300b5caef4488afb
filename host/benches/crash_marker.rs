//! What the crash guard adds to the dispatcher: per batch, the marker's dispatch slot
//! written twice (batch begins, batch sealed), a 32-byte `pwrite` each into the page
//! cache; per message, the record in hand stored and cleared around the plugin call.
//!
//! `cargo bench -p mes-collector --bench crash_marker`. The marker file is created in
//! a temporary directory (pass `MES_BENCH_MARKER_DIR` to put it on the spool's disk).

use std::{hint::black_box, sync::atomic::Ordering};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use mes_collector::crash_guard::{
    marker::{Marker, Phase, NONE},
    signals::IN_HAND,
};

fn marker(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let dir = std::env::var_os("MES_BENCH_MARKER_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let marker = Marker::create(&dir).expect("marker");
    let mut group = c.benchmark_group("crash_guard");
    group.throughput(Throughput::Elements(1));
    let mut seq = 0u64;
    group.bench_function("per_batch_two_marker_writes", |b| {
        b.iter(|| {
            seq += 1;
            marker
                .set(Phase::Batch {
                    from: black_box(seq),
                })
                .unwrap();
            marker.set(Phase::Idle).unwrap();
        })
    });
    group.bench_function("per_message_record_in_hand", |b| {
        b.iter(|| {
            seq += 1;
            IN_HAND.store(black_box(seq), Ordering::Release);
            IN_HAND.store(NONE, Ordering::Release);
        })
    });
    // Careful mode after a crash: two marker writes per message.
    group.bench_function("careful_mode_per_message", |b| {
        b.iter(|| {
            seq += 1;
            IN_HAND.store(seq, Ordering::Release);
            marker
                .set(Phase::Careful {
                    from: 0,
                    end: u64::MAX - 1,
                    in_hand: black_box(seq),
                })
                .unwrap();
            IN_HAND.store(NONE, Ordering::Release);
            marker
                .set(Phase::Careful {
                    from: 0,
                    end: u64::MAX - 1,
                    in_hand: NONE,
                })
                .unwrap();
        })
    });
    group.finish();
}

criterion_group!(benches, marker);
criterion_main!(benches);
