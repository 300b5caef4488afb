//! What the collector's persistent session is subscribed to at the broker, kept in the
//! spool directory (`subscriptions.json`).
//!
//! The broker keeps a persistent session's subscriptions until they are unsubscribed:
//! after `broker.topic` changes, the old filter would go on delivering (and queueing
//! while the collector is away) messages nobody configured any more. MQTT has no way to
//! ask a broker what a session is subscribed to, so the collector remembers what it
//! subscribed and, at the next connect to a kept session, unsubscribes what is no
//! longer configured.

use std::{
    collections::BTreeSet,
    fs, io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::spool::write_atomic;

pub const FILE: &str = "subscriptions.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    /// The session the filters belong to: the broker keeps one per client id.
    client_id: String,
    filters: BTreeSet<String>,
}

/// The filters the session of one client id may hold at the broker.
#[derive(Debug)]
pub struct Subscriptions {
    file: PathBuf,
    saved: Saved,
    /// The client id of the file's session, when it is another than this collector's.
    other_client_id: Option<String>,
    /// The file as it is on disk: a save that would write the same is skipped, so a
    /// restart with an unchanged topic writes nothing.
    on_disk: Vec<u8>,
}

impl Subscriptions {
    /// Reads `subscriptions.json` in `dir`; a missing file remembers nothing. The
    /// filters of another client id's session are not this session's, so they are not
    /// taken: see [`Subscriptions::other_client_id`].
    pub fn load(dir: &Path, client_id: &str) -> Result<Subscriptions, String> {
        let file = dir.join(FILE);
        let mut on_disk = Vec::new();
        let saved: Saved = match fs::read(&file) {
            Ok(bytes) => {
                let saved = serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{} is not valid ({e}); it is replaced by what is configured now, so a topic subscribed before a change of broker.topic stays subscribed at the broker (end the session with a clean-session connect as broker.client_id to drop it)",
                    file.display()
                )
                })?;
                on_disk = bytes;
                saved
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Saved::default(),
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        let other_client_id = (saved.client_id != client_id && !saved.filters.is_empty())
            .then(|| saved.client_id.clone());
        Ok(Subscriptions {
            file,
            saved: Saved {
                client_id: client_id.to_string(),
                filters: if other_client_id.is_some() {
                    BTreeSet::new()
                } else {
                    saved.filters
                },
            },
            other_client_id,
            on_disk,
        })
    }

    /// Remembers nothing yet: for when the file could not be read.
    pub fn fresh(dir: &Path, client_id: &str) -> Subscriptions {
        Subscriptions {
            file: dir.join(FILE),
            saved: Saved {
                client_id: client_id.to_string(),
                filters: BTreeSet::new(),
            },
            other_client_id: None,
            on_disk: Vec::new(),
        }
    }

    /// The client id, and its filters, of the session recorded before
    /// `broker.client_id` changed: that session stays at the broker (this collector
    /// cannot tell whether another one now uses that id, so it leaves it alone).
    pub fn other_client_id(&self) -> Option<&str> {
        self.other_client_id.as_deref()
    }

    /// Remembered filters that are not in `configured`: what a kept session still
    /// holds and nobody wants.
    pub fn stale(&self, configured: &[String]) -> Vec<String> {
        self.saved
            .filters
            .iter()
            .filter(|f| !configured.contains(f))
            .cloned()
            .collect()
    }

    /// Remembers `filters` too, before they are subscribed: a crash between the
    /// subscription and the next save must not leave a filter the broker holds
    /// unknown.
    pub fn add(&mut self, filters: &[String]) -> Result<(), String> {
        self.saved.filters.extend(filters.iter().cloned());
        self.save()
    }

    /// Forgets a filter the broker no longer holds.
    pub fn remove(&mut self, filter: &str) -> Result<(), String> {
        self.saved.filters.remove(filter);
        self.save()
    }

    /// Remembers exactly `filters`: the broker started a new session, so it holds
    /// nothing else.
    pub fn replace(&mut self, filters: &[String]) -> Result<(), String> {
        self.saved.filters = filters.iter().cloned().collect();
        self.other_client_id = None;
        self.save()
    }

    fn save(&mut self) -> Result<(), String> {
        let text = serde_json::to_vec_pretty(&self.saved).expect("the filters serialise");
        if text == self.on_disk {
            return Ok(());
        }
        write_atomic(&self.file, &text)
            .map_err(|e| format!("cannot write {}: {e}", self.file.display()))?;
        self.on_disk = text;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_filter_no_longer_configured_is_stale_until_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Subscriptions::load(dir.path(), "c1").unwrap();
        assert!(s.stale(&filters(&["a/#"])).is_empty());
        s.add(&filters(&["a/#", "$share/g/b"])).unwrap();

        let mut s = Subscriptions::load(dir.path(), "c1").unwrap();
        s.add(&filters(&["c"])).unwrap();
        assert_eq!(s.stale(&filters(&["c"])), filters(&["$share/g/b", "a/#"]));
        s.remove("a/#").unwrap();

        let s = Subscriptions::load(dir.path(), "c1").unwrap();
        assert_eq!(s.stale(&filters(&["c"])), filters(&["$share/g/b"]));
        assert!(!dir.path().join("subscriptions.json.tmp").exists());
    }

    #[test]
    fn another_client_ids_filters_are_not_this_sessions() {
        let dir = tempfile::tempdir().unwrap();
        Subscriptions::load(dir.path(), "old")
            .unwrap()
            .add(&filters(&["a"]))
            .unwrap();
        let mut s = Subscriptions::load(dir.path(), "new").unwrap();
        assert_eq!(s.other_client_id(), Some("old"));
        assert!(s.stale(&filters(&["b"])).is_empty());
        s.replace(&filters(&["b"])).unwrap();
        let s = Subscriptions::load(dir.path(), "new").unwrap();
        assert_eq!(s.other_client_id(), None);
        assert!(s.stale(&[]).len() == 1);
    }

    #[test]
    fn a_restart_with_the_same_topic_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        Subscriptions::load(dir.path(), "c1")
            .unwrap()
            .add(&filters(&["a"]))
            .unwrap();
        // write_atomic renames a new file over the old one: a write shows as a new inode.
        let inode = || {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(dir.path().join(FILE)).unwrap().ino()
        };
        let before = inode();
        let mut again = Subscriptions::load(dir.path(), "c1").unwrap();
        again.add(&filters(&["a"])).unwrap();
        again.replace(&filters(&["a"])).unwrap();
        assert_eq!(inode(), before);
        again.add(&filters(&["b"])).unwrap();
        assert_ne!(inode(), before);
    }

    #[test]
    fn a_damaged_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), "{").unwrap();
        let e = Subscriptions::load(dir.path(), "c").unwrap_err();
        assert!(
            e.contains("subscriptions.json") && e.contains("clean-session"),
            "{e}"
        );
    }
}
