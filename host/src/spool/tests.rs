use std::{
    thread,
    time::{Duration, Instant},
};

use super::*;

fn cfg(dir: &Path, segment_bytes: u64, max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_path_buf(),
        fsync: Fsync::Never,
        segment_bytes,
        max_bytes,
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_millis(200)
}

fn read_all(spool: &Spool, from: u64) -> Vec<Record> {
    let mut r = spool.reader(from);
    let mut out = Vec::new();
    while let Some(rec) = r.next(soon()).unwrap() {
        out.push(rec);
    }
    out
}

#[test]
fn appends_read_back_in_order_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, rec) = Spool::open(cfg(dir.path(), 200, 1 << 20)).unwrap();
    let first = rec.next_seq;
    for i in 0..50 {
        let seq = spool
            .append("t/x", format!("message {i}").as_bytes())
            .unwrap();
        assert_eq!(seq, first + i);
    }
    let segments = fs::read_dir(dir.path()).unwrap().count();
    assert!(segments > 5, "expected rotation, got {segments} segments");
    let got = read_all(&spool, first);
    assert_eq!(got.len(), 50);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.seq, first + i as u64);
        assert_eq!(r.topic, "t/x");
        assert_eq!(r.payload, format!("message {i}").as_bytes());
    }
    // A reader may start anywhere.
    let from_middle = read_all(&spool, first + 33);
    assert_eq!(from_middle.first().unwrap().seq, first + 33);
    assert_eq!(from_middle.len(), 17);
}

#[test]
fn reopening_continues_the_numbering_and_keeps_a_tail() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let (spool, rec) = Spool::open(cfg(dir.path(), 1 << 20, 1 << 20)).unwrap();
        for i in 0..TAIL_RECORDS + 100 {
            spool.append("t", &(i as u32).to_le_bytes()).unwrap();
        }
        rec.next_seq
    };
    let n = (TAIL_RECORDS + 100) as u64;
    let (spool, rec) = Spool::open(cfg(dir.path(), 1 << 20, 1 << 20)).unwrap();
    assert_eq!(rec.next_seq, first + n);
    assert_eq!(rec.cut_bytes, 0);
    assert_eq!(rec.tail.len(), TAIL_RECORDS);
    assert_eq!(
        rec.tail.last().unwrap().payload,
        ((TAIL_RECORDS + 99) as u32).to_le_bytes()
    );
    assert_eq!(spool.append("t", b"x").unwrap(), first + n);
}

#[test]
fn a_new_spool_numbers_above_any_earlier_position() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rec) = Spool::open(cfg(dir.path(), 1 << 20, 1 << 20)).unwrap();
    // Microseconds since the epoch: far above the message count of any earlier spool.
    assert!(rec.next_seq > 1_700_000_000_000_000, "{}", rec.next_seq);
}

#[test]
fn a_torn_tail_is_cut_off_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let first = {
        let (spool, rec) = Spool::open(cfg(dir.path(), 1 << 20, 1 << 20)).unwrap();
        for i in 0..10 {
            spool.append("t", format!("m{i}").as_bytes()).unwrap();
        }
        rec.next_seq
    };
    let seg = fs::read_dir(dir.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let len = fs::metadata(&seg).unwrap().len();
    let f = OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(len - 3).unwrap();
    drop(f);
    let (spool, rec) = Spool::open(cfg(dir.path(), 1 << 20, 1 << 20)).unwrap();
    assert!(rec.cut_bytes > 0);
    assert_eq!(rec.next_seq, first + 9);
    let got = read_all(&spool, first);
    assert_eq!(got.len(), 9);
    assert_eq!(got[8].payload, b"m8");
    // The cut record's number is reused by the next append, so there is no gap.
    assert_eq!(spool.append("t", b"again").unwrap(), first + 9);
    assert_eq!(read_all(&spool, first + 9)[0].payload, b"again");
}

#[test]
fn release_deletes_committed_segments_but_keeps_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, rec) = Spool::open(cfg(dir.path(), 100, 1 << 20)).unwrap();
    let first = rec.next_seq;
    for _ in 0..40 {
        spool.append("t", b"0123456789").unwrap();
    }
    let before = fs::read_dir(dir.path()).unwrap().count();
    spool.release(first + 19);
    let after = fs::read_dir(dir.path()).unwrap().count();
    assert!(after < before, "{before} -> {after}");
    assert!(
        spool.first_seq() <= first + 20,
        "records above the position must stay"
    );
    assert_eq!(read_all(&spool, first + 20).len(), 20);
    spool.release(spool.next_seq() - 1);
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    let (_, bytes) = spool.depth(spool.next_seq() - 1);
    assert_eq!(
        bytes,
        fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum::<u64>()
    );
}

#[test]
fn a_full_spool_makes_append_wait_until_release() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, rec) = Spool::open(cfg(dir.path(), 100, 400)).unwrap();
    let first = rec.next_seq;
    let writer = {
        let spool = spool.clone();
        thread::spawn(move || {
            for _ in 0..30 {
                spool.append("t", b"0123456789").unwrap();
            }
        })
    };
    thread::sleep(Duration::from_millis(300));
    let (_, bytes) = spool.depth(first);
    assert!(bytes <= 400, "{bytes} bytes on disk past the limit");
    assert!(!writer.is_finished(), "append should be waiting for room");
    let mut reader = spool.reader(first);
    let mut n = 0;
    while n < 30 {
        let r = reader
            .next(Instant::now() + Duration::from_secs(5))
            .unwrap()
            .expect("record");
        n += 1;
        spool.release(r.seq);
    }
    writer.join().unwrap();
}

#[test]
fn a_reader_waits_for_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, rec) = Spool::open(cfg(dir.path(), 1 << 20, 1 << 20)).unwrap();
    let mut reader = spool.reader(rec.next_seq);
    assert!(reader.next(soon()).unwrap().is_none());
    let s2 = spool.clone();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        s2.append("t", b"late").unwrap();
    });
    let r = reader
        .next(Instant::now() + Duration::from_secs(5))
        .unwrap()
        .unwrap();
    assert_eq!(r.payload, b"late");
    t.join().unwrap();
}

#[test]
fn a_clean_stop_says_which_records_may_still_come_again() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, rec) = Spool::open(cfg(dir.path(), 1 << 20, 1 << 30)).unwrap();
    assert_eq!(rec.acknowledged_before, None, "a new spool");
    for i in 0..10 {
        spool.append("t", format!("m{i}").as_bytes()).unwrap();
    }
    let settled = rec.next_seq + 7;
    spool.mark_clean_stop(settled).unwrap();
    drop(spool);
    let (spool, rec) = Spool::open(cfg(dir.path(), 1 << 20, 1 << 30)).unwrap();
    assert_eq!(rec.acknowledged_before, Some(settled));
    drop(spool);
    // Good for the start right after that stop only.
    let (_spool, rec) = Spool::open(cfg(dir.path(), 1 << 20, 1 << 30)).unwrap();
    assert_eq!(rec.acknowledged_before, None);
}

#[test]
fn a_clean_stop_marker_counts_only_for_the_spool_it_was_written_for() {
    assert_eq!(clean_stop_marker("120 117", 120), Some(117));
    assert_eq!(clean_stop_marker("120", 120), Some(120), "older marker");
    assert_eq!(clean_stop_marker("120 117", 125), None, "appended since");
    assert_eq!(clean_stop_marker("120 130", 120), Some(120));
    assert_eq!(clean_stop_marker("", 120), None);
    assert_eq!(clean_stop_marker("x 1", 120), None);
}
