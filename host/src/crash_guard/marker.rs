//! The marker file: what the plugins were doing when the process died.
//!
//! It lives in the spool directory and holds two fixed 32-byte slots, each written
//! whole by one `pwrite`/`write`. A write reaches the page cache before the call
//! returns, and the page cache outlives the process, so the next start reads what the
//! dead run wrote last without any `fsync`. (A power loss can lose it; the next start
//! then sees an idle marker and carries on, as before this guard existed.)
//!
//! - the dispatch slot (offset 0), written by the dispatcher: idle; a batch whose
//!   plugin calls began at record `from`; or careful mode, one message at a time over
//!   `from..=end`, with the record in hand.
//! - the fatal slot (offset 32), written at most once per run, by the fatal-signal
//!   handler or the hang watchdog: the signal (or the hang) and the record the
//!   dispatcher had in hand if it was inside plugin code.

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::unix::{fs::FileExt, io::AsRawFd},
    path::{Path, PathBuf},
};

pub const MARKER_FILE: &str = "plugin-calls.marker";

/// No record in hand.
pub const NONE: u64 = u64::MAX;

const SLOT: usize = 32;
const DISPATCH_MAGIC: u32 = 0x4d45_5344; // "MESD"
const FATAL_MAGIC: u32 = 0x4d45_5346; // "MESF"
pub const FATAL_OFFSET: u64 = SLOT as u64;

/// What the dispatcher was doing, as the dispatch slot says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No plugin code running.
    Idle,
    /// Plugins are handling a batch that began at spool record `from`.
    Batch { from: u64 },
    /// One message at a time over `from..=end`; `in_hand` is the record whose plugin
    /// call is running, or [`NONE`] between calls.
    Careful { from: u64, end: u64, in_hand: u64 },
}

impl Phase {
    pub fn encode(self) -> [u8; SLOT] {
        let (kind, a, b, c) = match self {
            Phase::Idle => (0u32, 0, 0, NONE),
            Phase::Batch { from } => (1, from, 0, NONE),
            Phase::Careful { from, end, in_hand } => (2, from, end, in_hand),
        };
        let mut buf = [0u8; SLOT];
        buf[0..4].copy_from_slice(&DISPATCH_MAGIC.to_le_bytes());
        buf[4..8].copy_from_slice(&kind.to_le_bytes());
        buf[8..16].copy_from_slice(&a.to_le_bytes());
        buf[16..24].copy_from_slice(&b.to_le_bytes());
        buf[24..32].copy_from_slice(&c.to_le_bytes());
        buf
    }

    fn decode(buf: &[u8]) -> Phase {
        if buf.len() < SLOT || u32_at(buf, 0) != DISPATCH_MAGIC {
            return Phase::Idle;
        }
        let (a, b, c) = (u64_at(buf, 8), u64_at(buf, 16), u64_at(buf, 24));
        match u32_at(buf, 4) {
            1 => Phase::Batch { from: a },
            2 => Phase::Careful {
                from: a,
                end: b,
                in_hand: c,
            },
            _ => Phase::Idle,
        }
    }
}

/// How the last run ended, if the fatal slot says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fatal {
    /// A fatal signal. `in_hand` is the record whose plugin call was running on the
    /// dispatcher thread when it arrived there, else [`NONE`].
    Signal {
        signal: i32,
        in_hand: u64,
        stack_overflow: bool,
    },
    /// The watchdog found the plugin call on `in_hand` running past the timeout.
    Hung { in_hand: u64, after_ms: u64 },
}

const KIND_SIGNAL: u32 = 1;
const KIND_HUNG: u32 = 2;

impl Fatal {
    /// Fixed-size and allocation-free: the signal handler calls this.
    pub fn encode(self) -> [u8; SLOT] {
        let (kind, signal, flags, seq, extra) = match self {
            Fatal::Signal {
                signal,
                in_hand,
                stack_overflow,
            } => (KIND_SIGNAL, signal, u32::from(stack_overflow), in_hand, 0),
            Fatal::Hung { in_hand, after_ms } => (KIND_HUNG, 0, 0, in_hand, after_ms),
        };
        let mut buf = [0u8; SLOT];
        buf[0..4].copy_from_slice(&FATAL_MAGIC.to_le_bytes());
        buf[4..8].copy_from_slice(&kind.to_le_bytes());
        buf[8..12].copy_from_slice(&signal.to_le_bytes());
        buf[12..16].copy_from_slice(&flags.to_le_bytes());
        buf[16..24].copy_from_slice(&seq.to_le_bytes());
        buf[24..32].copy_from_slice(&extra.to_le_bytes());
        buf
    }

    fn decode(buf: &[u8]) -> Option<Fatal> {
        if buf.len() < SLOT || u32_at(buf, 0) != FATAL_MAGIC {
            return None;
        }
        let seq = u64_at(buf, 16);
        match u32_at(buf, 4) {
            KIND_SIGNAL => Some(Fatal::Signal {
                signal: i32::from_le_bytes(buf[8..12].try_into().expect("4 bytes")),
                in_hand: seq,
                stack_overflow: u32_at(buf, 12) & 1 != 0,
            }),
            KIND_HUNG => Some(Fatal::Hung {
                in_hand: seq,
                after_ms: u64_at(buf, 24),
            }),
            _ => None,
        }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// What the previous run left in the marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Previous {
    pub phase: Phase,
    pub fatal: Option<Fatal>,
}

/// Reads the previous run's marker; a missing or short file reads as idle.
pub fn read_previous(dir: &Path) -> io::Result<Previous> {
    let path = dir.join(MARKER_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot read {}: {e}", path.display()),
            ))
        }
    };
    Ok(Previous {
        phase: Phase::decode(&bytes),
        fatal: bytes.get(SLOT..).and_then(Fatal::decode),
    })
}

/// This run's marker, reset to idle with an empty fatal slot.
pub struct Marker {
    path: PathBuf,
    file: File,
    /// A second descriptor, positioned at the fatal slot, for the signal handler:
    /// `write(2)` is async-signal-safe, `pwrite(2)` is not on POSIX's list.
    fatal: File,
}

impl Marker {
    pub fn create(dir: &Path) -> io::Result<Marker> {
        let path = dir.join(MARKER_FILE);
        let context = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(context)?;
        file.write_all_at(&Phase::Idle.encode(), 0)
            .map_err(context)?;
        file.write_all_at(&[0u8; SLOT], FATAL_OFFSET)
            .map_err(context)?;
        let fatal = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(context)?;
        // SAFETY: lseek on a descriptor we own; it only moves its offset.
        if unsafe {
            libc::lseek(
                fatal.as_raw_fd(),
                FATAL_OFFSET as libc::off_t,
                libc::SEEK_SET,
            )
        } < 0
        {
            return Err(context(io::Error::last_os_error()));
        }
        Ok(Marker { path, file, fatal })
    }

    pub fn set(&self, phase: Phase) -> io::Result<()> {
        self.file
            .write_all_at(&phase.encode(), 0)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", self.path.display())))
    }

    /// The descriptor the fatal-signal handler and the watchdog write the fatal slot
    /// through; valid while the marker lives (the collector keeps it to the end).
    pub fn fatal_fd(&self) -> i32 {
        self.fatal.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_and_the_signal_slot_survives_beside_the_dispatch_slot() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            read_previous(dir.path()).unwrap(),
            Previous {
                phase: Phase::Idle,
                fatal: None
            }
        );
        let m = Marker::create(dir.path()).unwrap();
        let careful = Phase::Careful {
            from: 10,
            end: 19,
            in_hand: 12,
        };
        m.set(Phase::Batch { from: 7 }).unwrap();
        m.set(careful).unwrap();
        let fatal = Fatal::Signal {
            signal: libc::SIGSEGV,
            in_hand: 12,
            stack_overflow: true,
        };
        let buf = fatal.encode();
        // The way the signal handler writes it.
        let n = unsafe { libc::write(m.fatal_fd(), buf.as_ptr().cast(), buf.len()) };
        assert_eq!(n, SLOT as isize);
        assert_eq!(
            read_previous(dir.path()).unwrap(),
            Previous {
                phase: careful,
                fatal: Some(fatal)
            }
        );
        drop(m);
        // A new run starts idle, with no fatal record.
        let _m = Marker::create(dir.path()).unwrap();
        let hung = Fatal::Hung {
            in_hand: 3,
            after_ms: 5000,
        };
        assert_eq!(Fatal::decode(&hung.encode()), Some(hung));
        assert_eq!(read_previous(dir.path()).unwrap().fatal, None);
    }
}
