//! Contains plugins that crash or hang the process, so that one bad message or one bad
//! plugin build cannot stop the plant.
//!
//! A plugin is native code in the collector's process: `catch_unwind` turns its panics
//! into dead letters, but a segfault, an abort, a stack overflow or a call that never
//! returns takes the whole process down, and a restarted collector would replay the
//! same spooled message and die again, forever. So:
//!
//! - **Breaker.** Before a batch's first plugin call the dispatcher notes in a marker
//!   file in the spool directory which spool record the batch began at ([`marker`]);
//!   after the batch is sealed it notes "idle". A fatal-signal handler ([`signals`])
//!   and the hang watchdog ([`watchdog`]) add how the process died and which record
//!   the dispatcher had in hand. On start, [`start`] reads what the last run left:
//!   - it died in a plugin call on a known record (a fatal signal on the dispatcher
//!     thread, or a hang): that message is *pinned*, and this run stores it as a
//!     dead letter (`plugin_crashed` / `plugin_hung`) without calling the plugin.
//!   - it died while a batch was in plugin code but the record is unknown (killed by
//!     SIGKILL, say by the OOM killer, or a fault on another thread): this run handles
//!     the records from that batch's start, up to a batch's worth, one at a time,
//!     noting each record in hand before its plugin call ("careful mode"). If it dies
//!     again with a record in hand, that record is pinned at the next start.
//! - **Quarantine.** Each crash or hang is attributed to the plugin build (SHA-256 of
//!   the file) and kept in a JSON file beside the spool ([`state`]). A build that
//!   crashed `plugins.quarantine_after_crashes` times within
//!   `plugins.quarantine_window_secs` has its class quarantined: its messages become
//!   dead letters (`plugin_quarantined`) while the other classes run on, until a
//!   different build is installed or `mes-collector quarantine lift CLASS`.
//! - **Watchdog.** A plugin call running past `plugins.call_timeout_ms` makes the
//!   collector report it, turn `/readyz` to 503 and exit with [`EXIT_PLUGIN_HUNG`] for
//!   its supervisor to restart it. A thread cannot be stopped safely inside a process
//!   (it may hold locks or half-updated state, and the plugin's memory is shared), so
//!   leaving the process is the only clean way out.
//!
//! The steady-state cost is one 32-byte `pwrite` at the start and one at the end of
//! each batch, and two atomic stores per message.
//!
//! Classes in `plugins.isolate` are not guarded here: their plugins run in runner
//! processes ([`crate::isolation`]), whose crashes and hangs never end the collector,
//! so no message of theirs is noted as in hand and none of their crashes is counted.

pub mod marker;
pub mod signals;
pub mod state;
pub mod watchdog;

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Instant, UNIX_EPOCH},
};

use log::{error, info, warn};

use crate::{
    config::ClassMapping,
    dead_letter::{DeadLetter, Reason},
    envelope,
    plugins::{trust, LoadedPlugin, PluginInfo},
    spool::Spool,
};
use marker::{Fatal, Marker, Phase, Previous, NONE};
use state::{Crash, GuardState, LoadedBuild, Pinned, Quarantine};

/// Exit status of a collector that left because a plugin call hung (EX_SOFTWARE).
pub const EXIT_PLUGIN_HUNG: i32 = 70;

/// The `plugins.*` settings the guard works with.
#[derive(Debug, Clone, Copy)]
pub struct GuardSettings {
    pub quarantine_after_crashes: usize,
    pub quarantine_window_secs: u64,
    /// Records a careful pass covers: a batch's worth.
    pub batch_max_messages: usize,
}

/// What a message in the spool is, as far as the guard needs: who sent it and which
/// plugin it goes to.
#[derive(Debug, Clone, Default)]
pub struct MessageInHand {
    pub cnc_id: Option<String>,
    pub class: Option<String>,
    pub plugin: Option<Arc<PluginInfo>>,
}

impl MessageInHand {
    /// Reads record `seq` from the spool and maps it to its class and plugin.
    pub fn find(
        spool: &Spool,
        seq: u64,
        classes: &BTreeMap<String, ClassMapping>,
        plugins: &BTreeMap<String, LoadedPlugin>,
    ) -> Option<MessageInHand> {
        let record = spool.reader(seq).next(Instant::now()).ok().flatten()?;
        if record.seq != seq {
            return None;
        }
        let cnc_id = envelope::parse(&record.payload)
            .ok()
            .map(|e| e.cnc_id.to_string());
        let class = cnc_id
            .as_ref()
            .and_then(|id| classes.get(id))
            .map(|m| m.class_name.clone());
        let plugin = class
            .as_ref()
            .and_then(|c| plugins.get(c))
            .map(|p| p.info.clone());
        Some(MessageInHand {
            cnc_id,
            class,
            plugin,
        })
    }

    /// "plugin C V (file) on cnc_id X", for log lines.
    pub fn describe(&self, seq: u64) -> String {
        let plugin = match (&self.plugin, &self.class) {
            (Some(p), _) => format!(
                "plugin {} {} ({})",
                p.class_name,
                p.version,
                p.file.display()
            ),
            (None, Some(c)) => format!("class {c}"),
            (None, None) => "a plugin".into(),
        };
        format!(
            "{plugin} on cnc_id {} (spool record {seq})",
            self.cnc_id.as_deref().unwrap_or("unknown")
        )
    }
}

/// What the guard decided at start, for the router, the metrics and `check`.
pub struct Startup {
    pub guard: CrashGuard,
    pub quarantined: Vec<Quarantine>,
    /// Crashes and hangs in the window, per class.
    pub recent_crashes: BTreeMap<String, usize>,
}

/// The dispatcher's side of the breaker: the marker of this run, the careful range
/// if the last run died in plugin code, and the pinned messages.
pub struct CrashGuard {
    marker: Option<Marker>,
    spool_dir: Option<PathBuf>,
    /// Records handled one at a time, with the record in hand noted before each call.
    careful: Option<(u64, u64)>,
    pinned: HashMap<u64, Pinned>,
    write_failed: bool,
}

fn build_of(p: &LoadedPlugin) -> LoadedBuild {
    let meta = std::fs::metadata(&p.info.file).ok();
    LoadedBuild {
        class: p.info.class_name.clone(),
        version: p.info.version.clone(),
        file: p.info.file.clone(),
        bytes: meta.as_ref().map_or(0, |m| m.len()),
        modified_ns: meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos()),
    }
}

/// Reads what the last run left, pins the message that crashed it, updates the crash
/// history and the quarantine, and starts this run's marker and signal handler.
pub fn start(
    spool_dir: &Path,
    spool: &Spool,
    plugins: &BTreeMap<String, LoadedPlugin>,
    classes: &BTreeMap<String, ClassMapping>,
    settings: GuardSettings,
) -> Result<Startup, String> {
    let previous = marker::read_previous(spool_dir).unwrap_or_else(|e| {
        warn!("{e}; assuming the last run was not in plugin code");
        Previous {
            phase: Phase::Idle,
            fatal: None,
        }
    });
    let mut state = GuardState::load(spool_dir).unwrap_or_else(|e| {
        warn!("{e}");
        GuardState::default()
    });
    let now = state::now_secs();
    let current: BTreeMap<String, LoadedBuild> = plugins
        .iter()
        .map(|(class, p)| (class.clone(), build_of(p)))
        .collect();
    let mut digests = Digests::default();

    let careful = {
        let mut blame = |seq: u64, reason: Reason, how: String| {
            let found = MessageInHand::find(spool, seq, classes, plugins);
            blame_message(
                &mut state,
                &current,
                plugins,
                &mut digests,
                seq,
                found,
                reason,
                &how,
                now,
            )
        };
        assess(previous, settings.batch_max_messages, &mut blame)
    };
    if let Some((from, end)) = careful {
        warn!(
            "the last run died while plugins were handling a batch from spool record {from} on ({}); handling records {from}..={end} one at a time, so that a message that crashes a plugin again is found and dead-lettered",
            match previous.fatal {
                Some(f) => fatal_text(f),
                None => "no fatal signal recorded: killed, e.g. by SIGKILL or the OOM killer".into(),
            }
        );
    }

    state.expire(now, settings.quarantine_window_secs);
    let mut quarantined = Vec::new();
    for (class, build) in &current {
        let plugin = &plugins[class];
        if let Some(q) = state.quarantine_of(class).cloned() {
            match digests.of(plugin) {
                Some(d) if d == q.sha256 => quarantined.push(q),
                _ => {
                    info!(
                        "plugin class {class}: quarantine lifted, a different build is installed ({} {}, was {} with SHA-256 {})",
                        build.version,
                        build.file.display(),
                        q.version,
                        q.sha256
                    );
                    state.lift(class);
                }
            }
        } else if state.crashes.iter().any(|c| &c.class == class) {
            if let Some(d) = digests.of(plugin) {
                if state.quarantine_if_due(build, &d, settings.quarantine_after_crashes, now) {
                    quarantined.push(state.quarantine_of(class).expect("just added").clone());
                }
            }
        }
    }
    for q in &quarantined {
        error!(
            "plugin class {} is QUARANTINED: build {} ({}, SHA-256 {}) crashed {} times within {} s (last: {}); its messages are stored as dead letters (plugin_quarantined) until a different build is installed or `mes-collector quarantine lift {}` and a restart",
            q.class,
            q.version,
            q.file.display(),
            q.sha256,
            q.crashes,
            settings.quarantine_window_secs,
            q.last_crash,
            q.class
        );
    }
    let mut recent_crashes = BTreeMap::new();
    for c in &state.crashes {
        *recent_crashes.entry(c.class.clone()).or_insert(0) += 1;
    }
    state.loaded = current.into_values().collect();
    state.save(spool_dir)?;

    let marker = Marker::create(spool_dir)
        .map_err(|e| format!("cannot start the plugin-call marker: {e}"))?;
    signals::install(marker.fatal_fd())?;
    let pinned = state.pinned.iter().map(|p| (p.seq, p.clone())).collect();
    Ok(Startup {
        guard: CrashGuard {
            marker: Some(marker),
            spool_dir: Some(spool_dir.to_path_buf()),
            careful,
            pinned,
            write_failed: false,
        },
        quarantined,
        recent_crashes,
    })
}

/// Decides from the previous run's marker which message to blame (through `blame`)
/// or which records to go through one at a time.
fn assess(
    previous: Previous,
    batch_max: usize,
    blame: &mut dyn FnMut(u64, Reason, String),
) -> Option<(u64, u64)> {
    match (previous.fatal, previous.phase) {
        (Some(Fatal::Hung { in_hand, after_ms }), _) if in_hand != NONE => {
            blame(
                in_hand,
                Reason::PluginHung,
                format!("did not return within {after_ms} ms"),
            );
            None
        }
        (Some(f @ Fatal::Signal { in_hand, .. }), _) if in_hand != NONE => {
            blame(
                in_hand,
                Reason::PluginCrashed,
                format!("crashed the collector with {}", fatal_text(f)),
            );
            None
        }
        (fatal, Phase::Careful { in_hand, .. }) if in_hand != NONE => {
            let how = match fatal {
                Some(f) => format!("crashed the collector with {}", fatal_text(f)),
                None => "was running when the collector died a second time, with no fatal signal recorded (killed: SIGKILL, e.g. the OOM killer)".into(),
            };
            blame(in_hand, Reason::PluginCrashed, how);
            None
        }
        (_, Phase::Batch { from }) => Some((from, from.saturating_add(batch_max as u64 - 1))),
        (_, Phase::Careful { from, end, .. }) => Some((from, end)),
        (Some(f), Phase::Idle) => {
            warn!(
                "the last run died of {} outside any plugin call",
                fatal_text(f)
            );
            None
        }
        (None, Phase::Idle) => None,
    }
}

fn fatal_text(f: Fatal) -> String {
    match f {
        Fatal::Signal {
            signal,
            stack_overflow: true,
            ..
        } => format!("a stack overflow ({})", signals::name(signal)),
        Fatal::Signal { signal, .. } => signals::name(signal),
        Fatal::Hung { after_ms, .. } => format!("a plugin call hung for {after_ms} ms"),
    }
}

/// SHA-256 of the installed plugin files, computed only when a crash or quarantine
/// needs one (hashing every plugin at every start would cost seconds in debug builds).
#[derive(Default)]
struct Digests(HashMap<PathBuf, Option<String>>);

impl Digests {
    fn of(&mut self, plugin: &LoadedPlugin) -> Option<String> {
        let file = &plugin.info.file;
        self.0
            .entry(file.clone())
            .or_insert_with(|| {
                trust::digest(file)
                    .map_err(|e| warn!("cannot hash plugin {}: {e}", file.display()))
                    .ok()
            })
            .clone()
    }
}

#[allow(clippy::too_many_arguments)] // one call site; the pieces are the start's state
fn blame_message(
    state: &mut GuardState,
    current: &BTreeMap<String, LoadedBuild>,
    plugins: &BTreeMap<String, LoadedPlugin>,
    digests: &mut Digests,
    seq: u64,
    found: Option<MessageInHand>,
    reason: Reason,
    how: &str,
    now: u64,
) {
    let Some(msg) = found else {
        warn!(
            "the last run died in a plugin call on spool record {seq} ({how}), which is no longer in the spool"
        );
        return;
    };
    let class = msg.class.clone().unwrap_or_else(|| "unknown".into());
    let ran = state.loaded.iter().find(|b| b.class == class).cloned();
    let installed = current.get(&class);
    // The build that crashed is the one the last run loaded; if the file changed
    // since, the crash counts against no installed build.
    let same_build = match (&ran, installed) {
        (Some(r), Some(i)) => r == i,
        (None, Some(_)) => true,
        (_, None) => false,
    };
    let sha256 = if same_build {
        plugins.get(&class).and_then(|p| digests.of(p))
    } else {
        None
    };
    let (version, file) = match (&ran, installed) {
        (Some(b), _) | (None, Some(b)) => (b.version.clone(), b.file.clone()),
        (None, None) => ("unknown".into(), PathBuf::from("unknown")),
    };
    let detail = format!(
        "plugin {class} {version} ({}{}) {how} while handling spool record {seq} from cnc_id {}; the collector was restarted and stored this message as a dead letter without calling the plugin again",
        file.display(),
        sha256
            .as_deref()
            .map(|d| format!(", SHA-256 {d}"))
            .unwrap_or_default(),
        msg.cnc_id.as_deref().unwrap_or("unknown"),
    );
    error!("{detail}");
    state.crashes.push(Crash {
        class: class.clone(),
        version: version.clone(),
        file,
        sha256,
        at: now,
        reason: reason.as_str().into(),
        detail: detail.clone(),
        cnc_id: msg.cnc_id.clone(),
        seq: Some(seq),
    });
    state.pinned.retain(|p| p.seq != seq);
    state.pinned.push(Pinned {
        seq,
        reason: reason.as_str().into(),
        class,
        version,
        cnc_id: msg.cnc_id,
        detail,
    });
}

impl CrashGuard {
    /// A guard that records nothing, for running plugins outside the collector
    /// (`replay`) and for tests.
    pub fn unguarded() -> CrashGuard {
        CrashGuard {
            marker: None,
            spool_dir: None,
            careful: None,
            pinned: HashMap::new(),
            write_failed: false,
        }
    }

    /// The dead letter for a message found to crash its plugin, if `seq` is one.
    pub fn pinned(&self, seq: u64) -> Option<DeadLetter> {
        if self.pinned.is_empty() {
            return None;
        }
        let p = self.pinned.get(&seq)?;
        let reason = if p.reason == Reason::PluginHung.as_str() {
            Reason::PluginHung
        } else {
            Reason::PluginCrashed
        };
        let mut dl = DeadLetter::new(reason, p.detail.clone()).plugin(&p.class, &p.version);
        dl.cnc_id = p.cnc_id.clone();
        Some(dl)
    }

    /// Records at or past `next` are the ones not yet committed: pins below it are
    /// done with.
    pub fn forget_committed(&mut self, next: u64) {
        let before = self.pinned.len();
        self.pinned.retain(|&seq, _| seq >= next);
        if self.pinned.len() == before {
            return;
        }
        let Some(dir) = &self.spool_dir else { return };
        let saved = GuardState::load(dir).and_then(|mut s| {
            s.pinned.retain(|p| p.seq >= next);
            s.save(dir)
        });
        if let Err(e) = saved {
            warn!("{e}");
        }
    }

    /// Before a batch's first plugin call.
    pub fn batch_begins(&mut self, first: u64) {
        match self.careful {
            Some((from, end)) if first <= end => self.set(Phase::Careful {
                from,
                end,
                in_hand: NONE,
            }),
            _ => self.set(Phase::Batch { from: first }),
        }
    }

    /// After a batch's last plugin call: no plugin code runs until the next batch.
    pub fn batch_sealed(&mut self) {
        self.set(Phase::Idle);
    }

    /// Right before plugin code runs for record `seq` (its constructor or `handle`).
    #[inline]
    pub fn before_call(&mut self, seq: u64) {
        // Release, not SeqCst (an xchg on x86, ~10 ns a store): the signal handler
        // runs on this thread, and the plugin call is opaque to the compiler, so the
        // store cannot move past it; the watchdog only samples.
        signals::IN_HAND.store(seq, std::sync::atomic::Ordering::Release);
        if let Some((from, end)) = self.careful {
            if seq > end {
                info!("records {from}..={end} were handled one at a time without a crash; back to batches");
                self.careful = None;
                self.set(Phase::Batch { from: seq });
            } else if seq >= from {
                self.set(Phase::Careful {
                    from,
                    end,
                    in_hand: seq,
                });
            }
        }
    }

    /// Right after plugin code for the record in hand returned.
    #[inline]
    pub fn after_call(&mut self) {
        signals::IN_HAND.store(NONE, std::sync::atomic::Ordering::Release);
        if let Some((from, end)) = self.careful {
            self.set(Phase::Careful {
                from,
                end,
                in_hand: NONE,
            });
        }
    }

    fn set(&mut self, phase: Phase) {
        let Some(marker) = &self.marker else { return };
        if let Err(e) = marker.set(phase) {
            // The guard is not worth stopping the plant for: log once and go on.
            if !self.write_failed {
                error!("cannot update the plugin-call marker ({e}); a plugin that crashes the collector may not be found");
                self.write_failed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (careful range, blamed (record, reason, how)).
    type Assessed = (Option<(u64, u64)>, Vec<(u64, Reason, String)>);

    fn assessed(previous: Previous) -> Assessed {
        let mut blamed = Vec::new();
        let careful = assess(previous, 100, &mut |seq, reason, how| {
            blamed.push((seq, reason, how))
        });
        (careful, blamed)
    }

    #[test]
    fn a_known_record_is_blamed_at_once_and_an_unknown_one_starts_a_careful_pass() {
        let segv = Fatal::Signal {
            signal: libc::SIGSEGV,
            in_hand: 42,
            stack_overflow: false,
        };
        let (careful, blamed) = assessed(Previous {
            phase: Phase::Batch { from: 40 },
            fatal: Some(segv),
        });
        assert_eq!(careful, None);
        assert_eq!(blamed.len(), 1);
        assert_eq!((blamed[0].0, blamed[0].1), (42, Reason::PluginCrashed));
        assert!(blamed[0].2.contains("SIGSEGV"), "{}", blamed[0].2);

        let (careful, blamed) = assessed(Previous {
            phase: Phase::Batch { from: 40 },
            fatal: Some(Fatal::Hung {
                in_hand: 41,
                after_ms: 5000,
            }),
        });
        assert_eq!(
            (careful, blamed[0].0, blamed[0].1),
            (None, 41, Reason::PluginHung)
        );

        // Killed without a signal record: the batch is gone through one at a time.
        let (careful, blamed) = assessed(Previous {
            phase: Phase::Batch { from: 40 },
            fatal: None,
        });
        assert_eq!((careful, blamed.len()), (Some((40, 139)), 0));
        // A fault on another thread is no evidence against the message in hand.
        let elsewhere = Fatal::Signal {
            signal: libc::SIGSEGV,
            in_hand: NONE,
            stack_overflow: false,
        };
        let (careful, blamed) = assessed(Previous {
            phase: Phase::Batch { from: 40 },
            fatal: Some(elsewhere),
        });
        assert_eq!((careful, blamed.len()), (Some((40, 139)), 0));

        // Died again in careful mode with a record in hand: that record.
        let (careful, blamed) = assessed(Previous {
            phase: Phase::Careful {
                from: 40,
                end: 139,
                in_hand: 43,
            },
            fatal: None,
        });
        assert_eq!((careful, blamed[0].0), (None, 43));
        assert!(blamed[0].2.contains("no fatal signal"), "{}", blamed[0].2);
        // ... between records: the careful pass starts over.
        let (careful, blamed) = assessed(Previous {
            phase: Phase::Careful {
                from: 40,
                end: 139,
                in_hand: NONE,
            },
            fatal: None,
        });
        assert_eq!((careful, blamed.len()), (Some((40, 139)), 0));
        // Idle: nothing to do.
        let (careful, blamed) = assessed(Previous {
            phase: Phase::Idle,
            fatal: Some(elsewhere),
        });
        assert_eq!((careful, blamed.len()), (None, 0));
    }

    #[test]
    fn careful_mode_notes_each_record_in_hand_and_ends_past_its_range() {
        let dir = tempfile::tempdir().unwrap();
        let mut g = CrashGuard::unguarded();
        g.marker = Some(Marker::create(dir.path()).unwrap());
        g.careful = Some((10, 12));
        let phase = || marker::read_previous(dir.path()).unwrap().phase;
        let between = Phase::Careful {
            from: 10,
            end: 12,
            in_hand: NONE,
        };
        // A batch that reaches into the careful range keeps the range on record, so
        // that a death without a signal anywhere in it starts the same pass again.
        g.batch_begins(9);
        assert_eq!(phase(), between);
        g.before_call(9);
        assert_eq!(phase(), between, "record 9 is before the range");
        g.after_call();
        g.before_call(10);
        assert_eq!(
            phase(),
            Phase::Careful {
                from: 10,
                end: 12,
                in_hand: 10
            }
        );
        g.after_call();
        assert_eq!(phase(), between);
        g.before_call(13);
        assert_eq!(phase(), Phase::Batch { from: 13 });
        assert_eq!(g.careful, None);
        g.after_call();
        g.batch_sealed();
        assert_eq!(phase(), Phase::Idle);
    }
}
