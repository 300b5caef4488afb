//! `mes-collector quarantine list|lift CLASS`: what the crash guard quarantined, and
//! lifting it by hand. The state is the JSON file beside the spool
//! ([`crate::crash_guard::state`]); a lift takes effect when the collector next starts.

use std::path::Path;

use crate::{
    config::Config,
    crash_guard::state::{self, GuardState},
};

/// Prints the quarantined classes and the crash history. Exit status 0.
pub fn list(config_dir: &Path) -> Result<(), String> {
    let (spool_dir, s) = load(config_dir)?;
    println!(
        "crash history and quarantine: {}",
        state::path(&spool_dir).display()
    );
    if s.quarantined.is_empty() {
        println!("no plugin class is quarantined");
    }
    for q in &s.quarantined {
        println!(
            "QUARANTINED {}: build {} ({}, SHA-256 {}) since {} (Unix time) after {} crashes; last: {}",
            q.class,
            q.version,
            q.file.display(),
            q.sha256,
            q.since,
            q.crashes,
            q.last_crash
        );
    }
    if !s.crashes.is_empty() {
        println!("\ncrashes and hangs still counted:");
        for c in &s.crashes {
            println!(
                "  {} {} {} at {}: {}",
                c.class,
                c.version,
                c.reason,
                c.at,
                c.sha256.as_deref().unwrap_or("(build replaced since)")
            );
        }
    }
    Ok(())
}

/// Lifts the quarantine of `class` and forgets its crashes. `Ok(false)` when it was
/// not quarantined.
pub fn lift(config_dir: &Path, class: &str) -> Result<bool, String> {
    let (spool_dir, mut s) = load(config_dir)?;
    if !s.lift(class) {
        println!(
            "plugin class {class} is not quarantined (`mes-collector quarantine list --config-dir {}` lists what is)",
            config_dir.display()
        );
        return Ok(false);
    }
    s.save(&spool_dir)?;
    println!(
        "lifted the quarantine of plugin class {class} and forgot its crashes; restart the collector (systemctl restart mes-collector) for it to take effect"
    );
    Ok(true)
}

fn load(config_dir: &Path) -> Result<(std::path::PathBuf, GuardState), String> {
    let cfg = Config::load(config_dir).map_err(|errors| {
        errors
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let spool_dir = cfg.collector.spool.dir;
    let s = GuardState::load(&spool_dir)?;
    Ok((spool_dir, s))
}
