//! The crash history, the quarantine and the messages found to crash a plugin, kept
//! as a small JSON file beside the spool (the spool directory is the collector's only
//! writable directory in production).
//!
//! Deleting the file forgets all of it: every quarantine is lifted, and a message
//! found to crash a plugin but not yet committed as a dead letter is tried again (and,
//! if it crashes again, found again).

use std::{
    fs, io,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

pub const STATE_FILE: &str = "plugin-crashes.json";

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A plugin file as a run loaded it: enough to tell later whether the same build is
/// still installed without hashing it at every start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoadedBuild {
    pub class: String,
    pub version: String,
    pub file: PathBuf,
    pub bytes: u64,
    pub modified_ns: u128,
}

/// One crash or hang attributed to a plugin build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crash {
    pub class: String,
    pub version: String,
    pub file: PathBuf,
    /// SHA-256 of the file that crashed; `None` when it was replaced before the
    /// restart, so the crash counts against no installed build.
    pub sha256: Option<String>,
    /// Unix seconds.
    pub at: u64,
    /// `plugin_crashed` or `plugin_hung`.
    pub reason: String,
    pub detail: String,
    pub cnc_id: Option<String>,
    pub seq: Option<u64>,
}

/// A class whose build crashed too often: its messages are dead letters until a
/// different build is installed or an operator lifts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quarantine {
    pub class: String,
    pub version: String,
    pub file: PathBuf,
    pub sha256: String,
    /// Unix seconds.
    pub since: u64,
    pub crashes: usize,
    pub last_crash: String,
}

impl Quarantine {
    /// Which build of which class is quarantined and why, for `check`, the log and the
    /// dead letters; the caller adds what to do.
    pub fn describe(&self) -> String {
        format!(
            "plugin class {} is quarantined: build {} ({}, SHA-256 {}) crashed {} times (last: {})",
            self.class,
            self.version,
            self.file.display(),
            self.sha256,
            self.crashes,
            self.last_crash
        )
    }
}

/// A message that crashed (or hung) a plugin: the next run dead-letters it without
/// calling the plugin. Kept until the committed position passes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pinned {
    pub seq: u64,
    /// `plugin_crashed` or `plugin_hung`.
    pub reason: String,
    pub class: String,
    pub version: String,
    pub cnc_id: Option<String>,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuardState {
    /// The builds the last run loaded, to attribute its crash to the right one.
    pub loaded: Vec<LoadedBuild>,
    pub crashes: Vec<Crash>,
    pub quarantined: Vec<Quarantine>,
    pub pinned: Vec<Pinned>,
}

pub fn path(spool_dir: &Path) -> PathBuf {
    spool_dir.join(STATE_FILE)
}

impl GuardState {
    /// Reads the state; a missing file is an empty state. A damaged one is moved
    /// aside (and the error says where) so that it never stops the collector.
    pub fn load(spool_dir: &Path) -> Result<GuardState, String> {
        let file = path(spool_dir);
        match fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                let aside = file.with_extension("json.damaged");
                let _ = fs::rename(&file, &aside);
                format!(
                    "{} is not valid ({e}); moved it to {} and started with no crash history",
                    file.display(),
                    aside.display()
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(GuardState::default()),
            Err(e) => Err(format!("cannot read {}: {e}", file.display())),
        }
    }

    /// Writes the state through a temporary file and a rename, so a reader (the
    /// `quarantine` command, `check`, the next start) never sees half a file.
    pub fn save(&self, spool_dir: &Path) -> Result<(), String> {
        let file = path(spool_dir);
        let tmp = file.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("the state serialises");
        fs::write(&tmp, text)
            .and_then(|()| fs::rename(&tmp, &file))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))
    }

    /// Forgets crashes older than the window.
    pub fn expire(&mut self, now: u64, window_secs: u64) {
        self.crashes
            .retain(|c| now.saturating_sub(c.at) <= window_secs);
    }

    /// Crashes of this build (class and digest) still in the history.
    pub fn crashes_of(&self, class: &str, sha256: &str) -> usize {
        self.crashes
            .iter()
            .filter(|c| c.class == class && c.sha256.as_deref() == Some(sha256))
            .count()
    }

    /// Quarantines `class` at `build` if it crashed `threshold` times or more (0:
    /// never). Returns whether it newly became quarantined.
    pub fn quarantine_if_due(
        &mut self,
        build: &LoadedBuild,
        sha256: &str,
        threshold: usize,
        now: u64,
    ) -> bool {
        let crashes = self.crashes_of(&build.class, sha256);
        if threshold == 0 || crashes < threshold || self.quarantine_of(&build.class).is_some() {
            return false;
        }
        let last_crash = self
            .crashes
            .iter()
            .rev()
            .find(|c| c.class == build.class)
            .map(|c| c.detail.clone())
            .unwrap_or_default();
        self.quarantined.push(Quarantine {
            class: build.class.clone(),
            version: build.version.clone(),
            file: build.file.clone(),
            sha256: sha256.to_string(),
            since: now,
            crashes,
            last_crash,
        });
        true
    }

    pub fn quarantine_of(&self, class: &str) -> Option<&Quarantine> {
        self.quarantined.iter().find(|q| q.class == class)
    }

    /// Lifts the quarantine of `class` and forgets its crashes, so that it starts
    /// afresh. Returns whether it was quarantined.
    pub fn lift(&mut self, class: &str) -> bool {
        let before = self.quarantined.len();
        self.quarantined.retain(|q| q.class != class);
        self.crashes.retain(|c| c.class != class);
        self.quarantined.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(class: &str) -> LoadedBuild {
        LoadedBuild {
            class: class.into(),
            version: "0.1.0".into(),
            file: format!("/p/lib{class}.so").into(),
            bytes: 1,
            modified_ns: 1,
        }
    }

    fn crash(class: &str, sha: Option<&str>, at: u64) -> Crash {
        Crash {
            class: class.into(),
            version: "0.1.0".into(),
            file: "/p/x.so".into(),
            sha256: sha.map(String::from),
            at,
            reason: "plugin_crashed".into(),
            detail: format!("crash at {at}"),
            cnc_id: None,
            seq: None,
        }
    }

    #[test]
    fn quarantine_counts_crashes_of_one_build_within_the_window() {
        let mut s = GuardState::default();
        let b = build("X");
        s.crashes.push(crash("X", Some("aa"), 100));
        s.crashes.push(crash("X", Some("bb"), 200)); // another build
        s.crashes.push(crash("X", None, 250)); // replaced before the restart
        s.crashes.push(crash("Y", Some("aa"), 300)); // another class
        assert!(!s.quarantine_if_due(&b, "aa", 2, 400));
        s.crashes.push(crash("X", Some("aa"), 500));
        // The first crash of "aa" falls out of a 350 s window at 501.
        let mut expired = s.clone();
        expired.expire(501, 350);
        assert!(!expired.quarantine_if_due(&b, "aa", 2, 501));
        assert!(s.quarantine_if_due(&b, "aa", 2, 501));
        assert!(
            !s.quarantine_if_due(&b, "aa", 2, 502),
            "already quarantined"
        );
        let q = s.quarantine_of("X").unwrap();
        assert_eq!((q.sha256.as_str(), q.crashes, q.since), ("aa", 2, 501));
        assert_eq!(q.last_crash, "crash at 500");
        // 0 never quarantines.
        let mut never = GuardState::default();
        never.crashes.push(crash("X", Some("aa"), 1));
        assert!(!never.quarantine_if_due(&b, "aa", 0, 2));
    }

    #[test]
    fn lift_forgets_the_class_and_keeps_the_others() {
        let mut s = GuardState::default();
        s.crashes.push(crash("X", Some("aa"), 1));
        s.crashes.push(crash("X", Some("aa"), 2));
        s.crashes.push(crash("Y", Some("cc"), 3));
        assert!(s.quarantine_if_due(&build("X"), "aa", 2, 3));
        assert!(s.lift("X"));
        assert!(!s.lift("X"));
        assert!(s.quarantined.is_empty());
        assert_eq!(s.crashes, vec![crash("Y", Some("cc"), 3)]);
    }

    #[test]
    fn saved_state_loads_back_and_a_damaged_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(GuardState::load(dir.path()).unwrap(), GuardState::default());
        let mut s = GuardState::default();
        s.loaded.push(build("X"));
        s.crashes.push(crash("X", Some("aa"), 1));
        s.pinned.push(Pinned {
            seq: 9,
            reason: "plugin_hung".into(),
            class: "X".into(),
            version: "0.1.0".into(),
            cnc_id: Some("M1".into()),
            detail: "d".into(),
        });
        s.save(dir.path()).unwrap();
        assert_eq!(GuardState::load(dir.path()).unwrap(), s);
        fs::write(path(dir.path()), b"{not json").unwrap();
        let e = GuardState::load(dir.path()).unwrap_err();
        assert!(e.contains("json.damaged"), "{e}");
        assert_eq!(GuardState::load(dir.path()).unwrap(), GuardState::default());
    }
}
