//! Which plugin files the host agrees to load. A plugin is native code running with
//! the collector's rights and its database password, so a file that someone else
//! could have replaced is refused, and a plant can pin the exact files it approved.

use std::{
    fs,
    io::{self, Read},
    os::unix::fs::MetadataExt,
    path::Path,
};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The `plugins` section of `collector.json`: which files may load, the bounds on what
/// plugins log and count, and how a plugin that crashes or hangs the process is
/// contained (see [`crate::crash_guard`]).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct PluginPolicy {
    /// SHA-256 digests (hex) of the only plugin files that may load; absent: any file
    /// that passes the permission check. `mes-collector plugins` prints each digest.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// Skip the ownership and permission checks (development only).
    #[serde(default)]
    pub allow_insecure_permissions: bool,
    /// Log records each plugin class may write per second (bursts of five seconds'
    /// worth); the rest are dropped and counted.
    #[serde(default = "default_log_records_per_second")]
    pub log_records_per_second: u32,
    /// Distinct (event, label) pairs each plugin class may count; further pairs are
    /// counted under label "other".
    #[serde(default = "default_metric_series_per_class")]
    pub metric_series_per_class: u32,
    /// A plugin call running longer than this is taken for a hang: the collector
    /// exits for its supervisor to restart it. 0 turns the watchdog off.
    #[serde(default = "default_call_timeout_ms")]
    pub call_timeout_ms: u64,
    /// Crashes (or hangs) of one build of a plugin within `quarantine_window_secs`
    /// that quarantine its class. 0 never quarantines.
    #[serde(default = "default_quarantine_after_crashes")]
    pub quarantine_after_crashes: usize,
    #[serde(default = "default_quarantine_window_secs")]
    pub quarantine_window_secs: u64,
    /// Classes whose plugin runs in a child process of the collector (see
    /// [`crate::isolation`]): a crash or hang costs the message in hand, not the
    /// collector.
    #[serde(default)]
    pub isolate: Vec<String>,
}

fn default_call_timeout_ms() -> u64 {
    5_000
}
fn default_quarantine_after_crashes() -> usize {
    3
}
fn default_quarantine_window_secs() -> u64 {
    3_600
}

impl Default for PluginPolicy {
    fn default() -> Self {
        PluginPolicy {
            allow: None,
            allow_insecure_permissions: false,
            log_records_per_second: default_log_records_per_second(),
            metric_series_per_class: default_metric_series_per_class(),
            call_timeout_ms: default_call_timeout_ms(),
            quarantine_after_crashes: default_quarantine_after_crashes(),
            quarantine_window_secs: default_quarantine_window_secs(),
            isolate: Vec::new(),
        }
    }
}

fn default_log_records_per_second() -> u32 {
    super::services::DEFAULT_LOG_RECORDS_PER_SECOND
}

fn default_metric_series_per_class() -> u32 {
    super::services::DEFAULT_METRIC_SERIES_PER_CLASS
}

/// SHA-256 of a file, as lowercase hex.
pub fn digest(path: &Path) -> io::Result<String> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Refuses a file or directory that is writable by group or others, or owned by
/// anyone but the collector's user or root.
pub fn check_permissions(path: &Path) -> Result<(), String> {
    let meta = fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    check_owner_and_mode(path, meta.mode(), meta.uid(), me)
}

/// The rule of [`check_permissions`] for a file of `mode` owned by uid `owner`, as seen
/// by a collector running as uid `me`. Root's files pass, so that plugins a package
/// installs (root-owned, mode 0644, in /usr/lib/mes-collector/plugins) load in a
/// collector running as its own service user.
fn check_owner_and_mode(path: &Path, mode: u32, owner: u32, me: u32) -> Result<(), String> {
    let mode = mode & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "{} is writable by group or others (mode {mode:04o}), so anyone could replace the code the collector runs; fix with `chmod go-w {}` (or set plugins.allow_insecure_permissions in collector.json, for development only)",
            path.display(),
            path.display()
        ));
    }
    if owner != me && owner != 0 {
        return Err(format!(
            "{} is owned by uid {owner}, neither the collector's user (uid {me}) nor root; fix with `chown root {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// Whether `file` (in `dir`) may be loaded under `policy`.
pub fn admit(file: &Path, policy: &PluginPolicy) -> Result<(), String> {
    if !policy.allow_insecure_permissions {
        check_permissions(file)?;
    }
    if let Some(allow) = &policy.allow {
        let d = digest(file).map_err(|e| format!("{}: {e}", file.display()))?;
        if !allow.iter().any(|a| a.trim().eq_ignore_ascii_case(&d)) {
            return Err(format!(
                "its SHA-256 {d} is not in plugins.allow of collector.json; add it there if you trust this file"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn group_or_world_writable_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("libx.so");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_permissions(&f).is_ok());
        for mode in [0o666, 0o664, 0o646] {
            fs::set_permissions(&f, fs::Permissions::from_mode(mode)).unwrap();
            let e = check_permissions(&f).unwrap_err();
            assert!(e.contains("chmod go-w") && e.contains("libx.so"), "{e}");
        }
        let policy = PluginPolicy {
            allow_insecure_permissions: true,
            ..PluginPolicy::default()
        };
        assert!(admit(&f, &policy).is_ok());
    }

    /// What the Debian package installs: a root-owned 0755 plugins directory and
    /// root-owned 0644 plugin files, loaded by a collector running as its service user.
    #[test]
    fn root_owned_0644_files_load_in_a_service_users_collector() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("libvendor.so");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let service_uid = 999;
        for (path, mode) in [(f.as_path(), 0o100644), (dir.path(), 0o040755)] {
            assert_eq!(fs::metadata(path).unwrap().mode(), mode);
            assert!(check_owner_and_mode(path, mode, 0, service_uid).is_ok());
            assert!(check_owner_and_mode(path, mode, service_uid, service_uid).is_ok());
        }
        // Another user's file, or a group-writable one, still is not.
        let e = check_owner_and_mode(&f, 0o100644, 1234, service_uid).unwrap_err();
        assert!(
            e.contains("owned by uid 1234") && e.contains("chown root"),
            "{e}"
        );
        let e = check_owner_and_mode(&f, 0o100664, 0, service_uid).unwrap_err();
        assert!(e.contains("chmod go-w"), "{e}");
    }

    #[test]
    fn allow_list_matches_the_digest() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("liby.so");
        fs::write(&f, b"abc").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        let d = digest(&f).unwrap();
        assert_eq!(
            d,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let allowed = PluginPolicy {
            allow: Some(vec![d.to_uppercase()]),
            ..PluginPolicy::default()
        };
        assert!(admit(&f, &allowed).is_ok());
        let other = PluginPolicy {
            allow: Some(vec!["00".repeat(32)]),
            ..PluginPolicy::default()
        };
        assert!(admit(&f, &other)
            .unwrap_err()
            .contains("not in plugins.allow"));
    }
}
