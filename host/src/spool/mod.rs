//! Where messages are spooled: a store-and-forward log on local disk between the MQTT
//! callback and the dispatcher.
//!
//! The callback appends each message before it returns (paho acknowledges a QoS 1
//! message when its callback returns), so once the broker has our acknowledgement the
//! message is on disk. The dispatcher reads the log in order and commits each batch
//! together with the sequence number it reached; segments wholly below the committed
//! position are deleted. The log is bounded in bytes: when full, `append` waits, and
//! with it the callback, so the broker holds the rest of the stream.
//!
//! No crate does this exact job (a position committed in MySQL, not in the log; an
//! append that must be durable before an FFI callback returns; a byte bound that
//! back-pressures the producer), so it is a small module of our own.

mod record;

use std::{
    collections::VecDeque,
    fs::{self, File, OpenOptions},
    io::{self, BufReader, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{Arc, Condvar, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use log::{error, info, warn};
use serde::Deserialize;

use crate::lock;
pub use record::Record;
use record::{encode, read, seal, Next};

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    /// Each record is written to the OS before the callback returns: survives the
    /// collector being killed, not a power loss or kernel crash.
    Never,
    /// Each record is also `fdatasync`ed before the callback returns: survives power
    /// loss, at the cost of one disk flush per message.
    Always,
}

/// The `spool` section of `collector.json`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct SpoolConfig {
    /// Directory of segment files; one per collector. Relative to the config dir.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    #[serde(default = "default_fsync")]
    pub fsync: Fsync,
    /// A segment is closed and a new one started past this size.
    #[serde(default = "default_segment_bytes")]
    pub segment_bytes: u64,
    /// Most bytes on disk; at the limit the MQTT callback waits.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

fn default_dir() -> PathBuf {
    "spool".into()
}
fn default_fsync() -> Fsync {
    Fsync::Never
}
fn default_segment_bytes() -> u64 {
    16 << 20
}
fn default_max_bytes() -> u64 {
    1 << 30
}

impl SpoolConfig {
    /// What is wrong with the section, saying how to fix it.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.max_bytes < 2 * self.segment_bytes {
            return Err(format!(
                "spool.max_bytes ({}) must be at least twice spool.segment_bytes ({}), or the spool cannot free space",
                self.max_bytes, self.segment_bytes
            ));
        }
        Ok(())
    }
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            dir: default_dir(),
            fsync: default_fsync(),
            segment_bytes: default_segment_bytes(),
            max_bytes: default_max_bytes(),
        }
    }
}

/// How many of the last appended records are kept in memory to recognise a broker's
/// redelivery after a reconnect (see [`crate::intake::dedup`]). It must exceed the
/// longest redelivery: 64 did not, as runs of `tests/delivery.rs` showed (138 and
/// 1,422 messages redelivered after a kill -9, against a Mosquitto with
/// max_inflight_messages 100). About 1.5 MB at 300-byte messages.
pub const TAIL_RECORDS: usize = 4096;

#[derive(Debug)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
    bytes: u64,
}

struct State {
    /// Oldest first; the last one is being appended to.
    segments: VecDeque<Segment>,
    /// The sequence number the next append gets.
    next_seq: u64,
    bytes: u64,
    full_since: Option<Instant>,
    /// Threads waiting on `changed`. A notification is a system call even when nobody
    /// waits (std's futex condvar), and the append that makes it runs once per
    /// message in paho's callback: it is made only when someone waits.
    waiting: usize,
}

impl State {
    fn notify(&self, changed: &Condvar) {
        if self.waiting > 0 {
            changed.notify_all();
        }
    }

    /// Waits on `changed`, counted in `waiting`.
    fn wait<'a>(
        mut guard: MutexGuard<'a, State>,
        changed: &Condvar,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, State> {
        guard.waiting += 1;
        let mut guard = match timeout {
            None => changed.wait(guard).unwrap_or_else(|p| p.into_inner()),
            Some(t) => {
                changed
                    .wait_timeout(guard, t)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
        guard.waiting -= 1;
        guard
    }
}

struct Writer {
    file: File,
    buf: Vec<u8>,
}

struct Inner {
    cfg: SpoolConfig,
    state: Mutex<State>,
    changed: Condvar,
    writer: Mutex<Writer>,
}

/// The spool; clones share it.
#[derive(Clone)]
pub struct Spool {
    inner: Arc<Inner>,
}

/// What opening the spool found.
#[derive(Debug)]
pub struct Recovery {
    pub first_seq: u64,
    pub next_seq: u64,
    pub segments: usize,
    pub bytes: u64,
    /// Bytes of a torn or corrupt tail that were cut off.
    pub cut_bytes: u64,
    /// The last appended records, oldest first.
    pub tail: Vec<Record>,
    /// The previous run stopped cleanly after its broker connection was closed: every
    /// record before this sequence number was surely acknowledged, and only those from
    /// it on (the last moment's) may come again. `None` after a crash or an unclean
    /// stop: any of the tail may come again.
    pub acknowledged_before: Option<u64>,
}

const CLEAN_STOP: &str = "clean-stop";

/// The clean-stop marker's "acknowledged before" position, if it was written for a
/// spool ending at `next_seq` (a marker left by an older run, or for another state of
/// the spool, does not count). A marker of one number, from versions that did not
/// record it, said that everything was acknowledged.
fn clean_stop_marker(text: &str, next_seq: u64) -> Option<u64> {
    let mut parts = text.split_whitespace().map(|p| p.parse::<u64>().ok());
    let next = parts.next()??;
    let acknowledged_before = parts.next().unwrap_or(Some(next))?;
    (next == next_seq).then_some(acknowledged_before.min(next))
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.spool"))
}

/// Flushes a directory entry (a created or deleted segment) for power-loss safety.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replaces `path` with `bytes` so that a reader, or the next start after a crash or a
/// power loss, finds the old file or the new one whole, never half of one: a
/// temporary file beside it, flushed, renamed over it, and the directory flushed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    sync_dir(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}

impl Spool {
    /// Opens (or creates) the spool in `cfg.dir`, cutting off a torn or corrupt tail.
    pub fn open(cfg: SpoolConfig) -> io::Result<(Spool, Recovery)> {
        let dir = cfg.dir.clone();
        fs::create_dir_all(&dir)
            .map_err(|e| with_path(e, &dir, "cannot create spool directory"))?;
        let mut firsts: Vec<u64> = Vec::new();
        for entry in
            fs::read_dir(&dir).map_err(|e| with_path(e, &dir, "cannot read spool directory"))?
        {
            let path = entry?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(first) = name
                .strip_suffix(".spool")
                .and_then(|s| s.parse::<u64>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        if firsts.is_empty() {
            // A new spool numbers from the current time in microseconds, so its numbers
            // are above any position a lost or replaced spool reached (that would take
            // over a million messages a second).
            let start = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(1);
            File::create(segment_path(&dir, start))?;
            sync_dir(&dir)?;
            firsts.push(start);
        }
        let mut segments: VecDeque<Segment> = firsts
            .iter()
            .map(|&first_seq| {
                let path = segment_path(&dir, first_seq);
                let bytes = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                Segment {
                    first_seq,
                    path,
                    bytes,
                }
            })
            .collect();

        // Only the last segment can have been cut short by a crash; it is checked
        // record by record and truncated at the first damaged one.
        let last = segments.back_mut().expect("at least one segment");
        let (good_bytes, next_seq, tail, damage) = scan(&last.path, last.first_seq)?;
        let cut_bytes = last.bytes - good_bytes;
        if let Some(why) = damage {
            warn!(
                "spool {}: cut off {cut_bytes} bytes of a damaged tail at offset {good_bytes} ({why}); every record before it is kept",
                last.path.display()
            );
            let f = OpenOptions::new().write(true).open(&last.path)?;
            f.set_len(good_bytes)?;
            f.sync_all()?;
        }
        last.bytes = good_bytes;
        let marker = dir.join(CLEAN_STOP);
        let acknowledged_before = fs::read_to_string(&marker)
            .ok()
            .and_then(|t| clean_stop_marker(&t, next_seq));
        // Only valid for the start right after the stop that wrote it.
        let _ = fs::remove_file(&marker);
        let file = OpenOptions::new().append(true).open(&last.path)?;
        let bytes = segments.iter().map(|s| s.bytes).sum();
        let recovery = Recovery {
            first_seq: segments[0].first_seq,
            next_seq,
            segments: segments.len(),
            bytes,
            cut_bytes,
            tail,
            acknowledged_before,
        };
        let spool = Spool {
            inner: Arc::new(Inner {
                cfg,
                state: Mutex::new(State {
                    segments,
                    next_seq,
                    bytes,
                    full_since: None,
                    waiting: 0,
                }),
                changed: Condvar::new(),
                writer: Mutex::new(Writer {
                    file,
                    buf: Vec::new(),
                }),
            }),
        };
        Ok((spool, recovery))
    }

    /// Appends one message and returns its sequence number once it is written (and
    /// flushed, under `fsync: always`). Waits while the spool is full.
    pub fn append(&self, topic: &str, payload: &[u8]) -> io::Result<u64> {
        let inner = &*self.inner;
        let mut w = lock(&inner.writer);
        let len = encode(&mut w.buf, 0, topic, payload) as u64;
        let seq = {
            let mut st = lock(&inner.state);
            while st.bytes + len > inner.cfg.max_bytes && st.bytes > 0 {
                if st.full_since.is_none() {
                    st.full_since = Some(Instant::now());
                    warn!(
                        "spool full ({} bytes, limit {}): not taking messages until the database catches up; the broker holds them",
                        st.bytes, inner.cfg.max_bytes
                    );
                }
                st = State::wait(st, &inner.changed, None);
            }
            if let Some(since) = st.full_since.take() {
                info!(
                    "spool has room again after {:.1} s; taking messages",
                    since.elapsed().as_secs_f64()
                );
            }
            let seq = st.next_seq;
            let active = st.segments.back().expect("active segment");
            if active.bytes > 0 && active.bytes + len > inner.cfg.segment_bytes {
                let path = segment_path(&inner.cfg.dir, seq);
                w.file = OpenOptions::new().create(true).append(true).open(&path)?;
                if inner.cfg.fsync == Fsync::Always {
                    sync_dir(&inner.cfg.dir)?;
                }
                st.segments.push_back(Segment {
                    first_seq: seq,
                    path,
                    bytes: 0,
                });
            }
            seq
        };
        seal(&mut w.buf, seq);
        let Writer { file, buf } = &mut *w;
        file.write_all(buf)?;
        if inner.cfg.fsync == Fsync::Always {
            file.sync_data()?;
        }
        let mut st = lock(&inner.state);
        st.next_seq = seq + 1;
        st.bytes += len;
        st.segments.back_mut().expect("active segment").bytes += len;
        st.notify(&inner.changed);
        Ok(seq)
    }

    /// Deletes the segments whose records are all at or below `committed`. The active
    /// segment is kept, so the spool always knows its next sequence number.
    pub fn release(&self, committed: u64) {
        let inner = &*self.inner;
        let mut removed = false;
        {
            let mut st = lock(&inner.state);
            while st.segments.len() > 1 && st.segments[1].first_seq <= committed + 1 {
                let seg = st.segments.pop_front().expect("len > 1");
                if let Err(e) = fs::remove_file(&seg.path) {
                    error!(
                        "cannot delete committed spool segment {}: {e}",
                        seg.path.display()
                    );
                }
                st.bytes -= seg.bytes;
                removed = true;
            }
            st.notify(&inner.changed);
        }
        if removed && inner.cfg.fsync == Fsync::Always {
            let _ = sync_dir(&inner.cfg.dir);
        }
    }

    /// Notes that the broker connection was closed cleanly, and that every record
    /// before `acknowledged_before` was surely acknowledged: the next start expects
    /// redeliveries only of the records from it on.
    pub fn mark_clean_stop(&self, acknowledged_before: u64) -> io::Result<()> {
        let next = lock(&self.inner.state).next_seq;
        let path = self.inner.cfg.dir.join(CLEAN_STOP);
        fs::write(&path, format!("{next} {}", acknowledged_before.min(next)))?;
        File::open(&path)?.sync_all()
    }

    /// Records waiting beyond `position`, and the bytes on disk.
    pub fn depth(&self, position: u64) -> (u64, u64) {
        let st = lock(&self.inner.state);
        (st.next_seq.saturating_sub(position + 1), st.bytes)
    }

    pub fn first_seq(&self) -> u64 {
        lock(&self.inner.state).segments[0].first_seq
    }

    pub fn next_seq(&self) -> u64 {
        lock(&self.inner.state).next_seq
    }

    /// A reader starting at sequence number `from`.
    pub fn reader(&self, from: u64) -> SpoolReader {
        SpoolReader {
            spool: self.clone(),
            next: from,
            file: None,
            buf: Vec::new(),
        }
    }
}

fn with_path(e: io::Error, path: &Path, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Reads a segment to its end: (bytes of good records, next sequence number, the last
/// records, why it stopped early if it did).
fn scan(path: &Path, first_seq: u64) -> io::Result<(u64, u64, Vec<Record>, Option<String>)> {
    let mut src = BufReader::new(File::open(path)?);
    let mut buf = Vec::new();
    let mut good = 0u64;
    let mut expect = first_seq;
    let mut tail = VecDeque::with_capacity(TAIL_RECORDS);
    loop {
        match read(&mut src, &mut buf)? {
            Next::End => return Ok((good, expect, tail.into(), None)),
            Next::Damaged(why) => return Ok((good, expect, tail.into(), Some(why))),
            Next::Record(r, n) => {
                if r.seq != expect {
                    let why = format!("sequence number {} where {expect} was expected", r.seq);
                    return Ok((good, expect, tail.into(), Some(why)));
                }
                good += n as u64;
                expect += 1;
                if tail.len() == TAIL_RECORDS {
                    tail.pop_front();
                }
                tail.push_back(r);
            }
        }
    }
}

/// Reads the spool in order, waiting for new records.
pub struct SpoolReader {
    spool: Spool,
    /// The next sequence number to return.
    next: u64,
    file: Option<OpenSegment>,
    buf: Vec<u8>,
}

/// The segment a reader has open.
struct OpenSegment {
    src: BufReader<File>,
    first_seq: u64,
    /// The sequence number the read position is at.
    at: u64,
    path: PathBuf,
}

impl SpoolReader {
    /// The next record, or `None` if none arrives before `deadline`.
    pub fn next(&mut self, deadline: Instant) -> io::Result<Option<Record>> {
        let inner = &*self.spool.inner;
        loop {
            let (seg_first, seg_end) = {
                let mut st = lock(&inner.state);
                while st.next_seq <= self.next {
                    let now = Instant::now();
                    if now >= deadline {
                        return Ok(None);
                    }
                    st = State::wait(st, &inner.changed, Some(deadline - now));
                }
                if self.next < st.segments[0].first_seq {
                    warn!(
                        "spool records {}..{} are gone (deleted before they were committed); continuing at {}",
                        self.next,
                        st.segments[0].first_seq - 1,
                        st.segments[0].first_seq
                    );
                    self.next = st.segments[0].first_seq;
                    self.file = None;
                }
                let i = st.segments.partition_point(|s| s.first_seq <= self.next) - 1;
                let seg = &st.segments[i];
                // The path is copied only to open the segment: not once per record.
                if self
                    .file
                    .as_ref()
                    .is_none_or(|f| f.first_seq != seg.first_seq)
                {
                    let mut f = File::open(&seg.path)
                        .map_err(|e| with_path(e, &seg.path, "cannot open spool segment"))?;
                    f.seek(SeekFrom::Start(0))?;
                    self.file = Some(OpenSegment {
                        src: BufReader::with_capacity(256 << 10, f),
                        first_seq: seg.first_seq,
                        at: seg.first_seq,
                        path: seg.path.clone(),
                    });
                }
                let end = st.segments.get(i + 1).map_or(u64::MAX, |s| s.first_seq);
                (seg.first_seq, end)
            };
            let open = self.file.as_mut().expect("opened above");
            debug_assert_eq!(open.first_seq, seg_first);
            let (src, at, seg_path) = (&mut open.src, &mut open.at, &open.path);
            match read(src, &mut self.buf)? {
                Next::Record(r, _) if r.seq == *at => {
                    *at += 1;
                    if r.seq < self.next {
                        continue; // skipping to the start position
                    }
                    self.next = r.seq + 1;
                    return Ok(Some(r));
                }
                other => {
                    let why = match other {
                        Next::Record(r, _) => {
                            format!("sequence number {} where {} was expected", r.seq, at)
                        }
                        Next::End => "unexpected end".into(),
                        Next::Damaged(why) => why,
                    };
                    let lost = seg_end.saturating_sub(self.next);
                    if seg_end == u64::MAX {
                        return Err(io::Error::other(format!(
                            "spool segment {} is damaged at record {} ({why}) while it is being written",
                            seg_path.display(),
                            self.next
                        )));
                    }
                    error!(
                        "spool segment {} is damaged at record {} ({why}); {lost} records of it are lost, continuing with the next segment",
                        seg_path.display(),
                        self.next
                    );
                    self.next = seg_end;
                    self.file = None;
                }
            }
        }
    }

    /// The next sequence number this reader will return.
    pub fn position(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests;
