//! `mes-collector check`: validates the configuration, loads every plugin, tries the
//! database and the broker, and names every problem. Prints no secret.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

use mysql::prelude::Queryable;

use crate::{
    config::{Config, COLLECTOR_FILE},
    crash_guard::state::{self as guard_state, GuardState},
    intake::mqtt::{connect_options, create_client},
    mappings::{self, MappingSet},
    plugins::{
        load_dir, load_file, new_instance,
        trust::{admit, digest, PluginPolicy},
        PluginInfo, PluginSet,
    },
    sink::mysql::connect,
};

/// Tables the collector and the shipped plugins write.
pub const TABLES: [&str; 6] = [
    "cnc_data",
    "cnc_status",
    "cnc_alarms",
    "dead_letters",
    "collector_position",
    "collector_lease",
];

/// Runs every check, printing a report to stdout. Returns the problems found.
pub fn check(config_dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    println!("{}", crate::version_line());
    println!("configuration: {}", config_dir.display());
    let mut cfg = match Config::load(config_dir) {
        Ok(c) => {
            println!(
                "  ok: {COLLECTOR_FILE}, db_config.json, cnc_classes.json ({} machines)",
                c.classes.len()
            );
            c
        }
        Err(errors) => {
            for e in errors {
                println!("  PROBLEM: {e}");
                problems.push(e.to_string());
            }
            return problems;
        }
    };

    println!("\nplugins in {}:", cfg.collector.plugins_dir.display());
    let mut plugins = match load_dir(&cfg.collector.plugins_dir, &cfg.collector.plugins) {
        Ok(p) => p,
        Err(e) => {
            println!("  PROBLEM: {e}");
            problems.push(e);
            return problems;
        }
    };
    print_table(&["FILE", "CLASS", "VERSION", "ABI"], &plugin_rows(&plugins));
    for f in &plugins.failures {
        problems.push(format!(
            "plugin {} not loaded: {}",
            f.file.display(),
            f.reason
        ));
    }
    if let Some(e) = plugins.conflict_error() {
        problems.push(e);
    }

    let mapped = check_mappings(&mut cfg, &mut plugins, &mut problems);

    println!("\nmachines:");
    let mut rows = Vec::new();
    for m in cfg.classes.values() {
        let status = match plugins.by_class.get(&m.class_name) {
            None => {
                let refused_mapping = mapped
                    .failures
                    .iter()
                    .find(|f| f.file.file_stem().is_some_and(|s| *s == *m.class_name));
                problems.push(match refused_mapping {
                    Some(f) => format!(
                        "cnc_id {} is mapped to class {:?}, whose mapping {} was refused (above)",
                        m.cnc_id,
                        m.class_name,
                        f.file.display()
                    ),
                    None => format!(
                        "cnc_id {} is mapped to class {:?}, but no plugin provides it; put its library in {} or fix cnc_classes.json",
                        m.cnc_id,
                        m.class_name,
                        cfg.collector.plugins_dir.display()
                    ),
                });
                "NO PLUGIN".to_string()
            }
            Some(p) => match new_instance(p, &m.cnc_id, m) {
                Ok(_) => file_name(&p.info.file),
                Err(e) => {
                    problems.push(e.clone());
                    format!("REFUSED: {e}")
                }
            },
        };
        rows.push([m.cnc_id.clone(), m.class_name.clone(), status]);
    }
    print_table(&["CNC_ID", "CLASS", "PLUGIN"], &rows);

    check_isolation(&cfg, &plugins, &mut problems);
    check_quarantine(&cfg, &plugins, &mut problems);

    println!("\ndatabase {}:", cfg.db.target());
    match connect(&cfg.db) {
        Ok(mut conn) => {
            let mut ok = true;
            for t in TABLES {
                if let Err(e) = conn.query_drop(format!("SELECT 1 FROM `{t}` LIMIT 0")) {
                    ok = false;
                    let e = match &e {
                        mysql::Error::MySqlError(se) => se.message.clone(),
                        other => other.to_string(),
                    };
                    println!(
                        "  PROBLEM: table {t}: {e}; apply database.sql (it adds what is missing and keeps what exists)"
                    );
                    problems.push(format!(
                        "database {}: table {t}: {e}; apply database.sql",
                        cfg.db.target()
                    ));
                }
            }
            if ok {
                println!("  ok: connected; tables {} present", TABLES.join(", "));
                check_layout(&mut conn, &cfg, &mut problems);
            }
            let found = mappings::check_database(&mut conn, &mapped);
            if !mapped.files.is_empty() && found.is_empty() {
                println!("  ok: every table and column the mappings write is there");
            }
            for p in found {
                println!("  PROBLEM: {p}");
                problems.push(p);
            }
        }
        Err(e) => {
            println!("  PROBLEM: cannot connect: {e}");
            problems.push(format!("database {}: cannot connect: {e}", cfg.db.target()));
        }
    }

    let b = &cfg.collector.broker;
    println!(
        "\nbroker {} (topic {:?}, client id {:?}):",
        b.uri, b.topic, b.client_id
    );
    // A client id of its own, so the check never takes over the running collector's
    // session.
    let probe_id = format!("{}-check-{}", b.client_id, std::process::id());
    match create_client(b, &probe_id).and_then(|c| {
        c.connect(connect_options(b, false)?)
            .wait_for(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let _ = c.disconnect(None).wait_for(Duration::from_secs(2));
        Ok(())
    }) {
        Ok(()) => println!("  ok: connected"),
        Err(e) => {
            println!("  PROBLEM: cannot connect: {e}");
            problems.push(format!("broker {}: cannot connect: {e}", b.uri));
        }
    }
    problems
}

/// The tables' columns against `database.sql`: the original Python service's
/// `cnc_data`, and columns added since the tables were made.
fn check_layout(conn: &mut mysql::Conn, cfg: &Config, problems: &mut Vec<String>) {
    let found = match crate::schema::inspect(conn) {
        Ok(f) => f,
        Err(e) => {
            println!("  PROBLEM: cannot read the tables' layout from information_schema: {e}");
            problems.push(format!(
                "database {}: cannot read the tables' layout: {e}",
                cfg.db.target()
            ));
            return;
        }
    };
    if !found.cnc_data.is_empty() {
        let mut text = if found.python_layout {
            "cnc_data has the layout of the original Python service, which database.sql leaves as it is; it differs:".to_string()
        } else {
            "cnc_data differs from database.sql:".to_string()
        };
        for d in &found.cnc_data {
            text.push_str(&format!("\n- {d}"));
        }
        text.push_str(&format!(
            "\nfix: {}",
            crate::schema::remedy(&cfg.db.database)
        ));
        println!("  PROBLEM: {}", text.replace('\n', "\n    "));
        problems.push(text);
    }
    if !found.missing.is_empty() {
        let text = format!(
            "{} missing (added by this version); apply database.sql: it adds them and keeps what exists",
            found.missing.join(", ")
        );
        println!("  PROBLEM: {text}");
        problems.push(text);
    }
    if found.cnc_data.is_empty() && found.missing.is_empty() {
        println!("  ok: the tables' columns are those of database.sql");
    }
}

/// The crash guard's quarantine: a class still quarantined at its installed build is a
/// problem (its messages are dead letters); one whose build was replaced is lifted at
/// the next start.
/// `plugins.isolate`: every class named has a plugin, and its runner process can
/// load it (the runner applies the trust checks itself). The constructors above ran
/// in this process, isolated classes' too: `check` is a process of its own.
fn check_isolation(cfg: &Config, plugins: &PluginSet, problems: &mut Vec<String>) {
    let isolate = &cfg.collector.plugins.isolate;
    if isolate.is_empty() {
        return;
    }
    println!(
        "
isolated plugins (plugins.isolate):"
    );
    let isolation = match crate::isolation::Isolation::new(
        &cfg.collector.plugins,
        &cfg.classes,
        &plugins.by_class,
    ) {
        Ok(Some(i)) => i,
        Ok(None) => return,
        Err(e) => {
            problems.push(e);
            return;
        }
    };
    for class in isolate {
        let status = match plugins.by_class.get(class) {
            None => {
                problems.push(format!(
                    "plugins.isolate names class {class:?}, but no plugin provides it; fix collector.json or put its library in {}",
                    cfg.collector.plugins_dir.display()
                ));
                "NO PLUGIN".to_string()
            }
            Some(p) => match isolation.probe(class) {
                Ok(()) => format!("runner loads {}", file_name(&p.info.file)),
                Err(e) => {
                    problems.push(format!(
                        "plugin {class} ({}) is isolated, but its runner process cannot load it: {e}",
                        p.info.file.display()
                    ));
                    format!("RUNNER FAILS: {e}")
                }
            },
        };
        println!("  {class}: {status}");
    }
}

fn check_quarantine(cfg: &Config, plugins: &PluginSet, problems: &mut Vec<String>) {
    let spool_dir = &cfg.collector.spool.dir;
    println!(
        "
plugin crashes and quarantine ({}):",
        guard_state::path(spool_dir).display()
    );
    let s = match GuardState::load(spool_dir) {
        Ok(s) => s,
        Err(e) => {
            println!("  PROBLEM: {e}");
            problems.push(e);
            return;
        }
    };
    if s.quarantined.is_empty() {
        println!(
            "  ok: no plugin class quarantined ({} crashes on record)",
            s.crashes.len()
        );
    }
    for q in &s.quarantined {
        let installed = plugins
            .by_class
            .get(&q.class)
            .and_then(|p| digest(&p.info.file).ok());
        if installed.as_deref() == Some(q.sha256.as_str()) {
            let text = format!(
                "{}; its messages are dead letters (plugin_quarantined) until a different build is installed or `mes-collector quarantine lift {}`",
                q.describe(),
                q.class
            );
            println!("  PROBLEM: {text}");
            problems.push(text);
        } else {
            println!(
                "  class {} was quarantined at SHA-256 {}; a different build is installed, so the next start lifts it",
                q.class, q.sha256
            );
        }
    }
}

/// Loads the mapping files, prints them, and registers their classes so that the
/// machine checks that follow make each machine's instance as `run` would.
fn check_mappings(
    cfg: &mut Config,
    plugins: &mut PluginSet,
    problems: &mut Vec<String>,
) -> MappingSet {
    let (dir, required) = cfg.mappings_dir();
    println!("\nmappings in {}:", dir.display());
    let set = match mappings::load_dir(&dir, required) {
        Ok(set) => set,
        Err(e) => {
            println!("  PROBLEM: {e}");
            problems.push(e);
            return MappingSet::default();
        }
    };
    let attached = mappings::attach(&set, plugins, &mut cfg.classes);
    let mut rows: Vec<[String; 4]> = Vec::new();
    for m in &set.files {
        let status = if attached.classes.contains(&m.class) {
            "ok".to_string()
        } else {
            "REFUSED (below)".to_string()
        };
        let tables: BTreeSet<&str> = m.mapping.rows().iter().map(|r| r.table()).collect();
        rows.push([
            file_name(&m.file),
            m.class.clone(),
            tables.into_iter().collect::<Vec<_>>().join(", "),
            status,
        ]);
    }
    for f in &set.failures {
        rows.push([
            file_name(&f.file),
            "-".into(),
            "-".into(),
            format!("REFUSED: {} mistake(s), below", f.errors.len()),
        ]);
    }
    print_table(&["FILE", "CLASS", "TABLES", "STATUS"], &rows);
    for f in set.failures.iter().chain(&attached.refused) {
        for e in &f.errors {
            let p = format!("{}: {e}", f.file.display());
            println!("  PROBLEM: {p}");
            problems.push(p);
        }
    }
    for c in attached.conflicts {
        println!("  PROBLEM: {c}");
        problems.push(c);
    }
    set
}

/// One row per file: file, class, version, ABI status.
/// "ok", the API version the plugin was built against, the host features it can use
/// (those of its API version that this host offers) and those it requires.
fn abi_summary(info: &PluginInfo) -> String {
    let mut s = format!("ok, API {}", info.api_version);
    if !info.attached.is_empty() {
        s.push_str(&format!(", can use {}", info.attached.join("+")));
    }
    if !info.requires.is_empty() {
        s.push_str(&format!(", requires {}", info.requires.join("+")));
    }
    s
}

fn plugin_rows(plugins: &PluginSet) -> Vec<[String; 4]> {
    let mut rows: Vec<[String; 4]> = Vec::new();
    for p in plugins.by_class.values() {
        rows.push([
            file_name(&p.info.file),
            p.info.class_name.clone(),
            p.info.version.clone(),
            abi_summary(&p.info),
        ]);
    }
    for (class, files) in &plugins.conflicts {
        for f in files {
            rows.push([
                file_name(f),
                class.clone(),
                "-".into(),
                "CONFLICT: class claimed twice".into(),
            ]);
        }
    }
    for f in &plugins.failures {
        let flat: String = f.reason.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = flat.chars().take(100).collect();
        rows.push([
            file_name(&f.file),
            "-".into(),
            "-".into(),
            format!("REFUSED: {short}"),
        ]);
    }
    rows.sort();
    rows
}

/// Which plugin policy `plugins` and `plugins allow-entry` apply: a collector's
/// (`--config-dir`), so that they call a file ok only if that collector's `run` would
/// load it, or the default one for a bare directory.
pub struct PolicySource {
    pub policy: PluginPolicy,
    /// The collector's plugins directory, when the policy is a collector's.
    pub plugins_dir: Option<PathBuf>,
    /// Where the policy comes from, for the header line.
    pub origin: String,
}

impl PolicySource {
    /// The `plugins` section of the collector in `config_dir`, or the default policy.
    pub fn new(config_dir: Option<&Path>) -> Result<PolicySource, String> {
        let Some(config_dir) = config_dir else {
            return Ok(PolicySource {
                policy: PluginPolicy::default(),
                plugins_dir: None,
                origin: "the default (no plugins.allow), not a collector's: give --config-dir to apply the plugins section of its collector.json, as `run` does".into(),
            });
        };
        let cfg = Config::load(config_dir).map_err(|errors| {
            let list: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
            format!(
                "{}\n(to list a bare directory with the default policy: mes-collector plugins DIR)",
                list.join("\n")
            )
        })?;
        Ok(PolicySource {
            origin: format!(
                "plugins section of {}",
                config_dir.join(COLLECTOR_FILE).display()
            ),
            policy: cfg.collector.plugins,
            plugins_dir: Some(cfg.collector.plugins_dir),
        })
    }

    /// One line per rule the policy applies.
    fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!("policy: {}", self.origin)];
        lines.push(match &self.policy.allow {
            Some(allow) => format!(
                "  plugins.allow: {} SHA-256 digest(s); any other file is refused",
                allow.len()
            ),
            None => {
                "  plugins.allow: not set; any file that passes the permission checks loads".into()
            }
        });
        lines.push(if self.policy.allow_insecure_permissions {
            "  permission checks: OFF (plugins.allow_insecure_permissions, development only)"
                .into()
        } else {
            "  permission checks: on (files and directory writable only by their owner, owned by this user or root)".into()
        });
        lines
    }
}

/// `mes-collector plugins`: the plugin table alone, under `source`'s policy, of `dir`
/// or else the collector's plugins directory. `Ok(false)` when some file was refused
/// or a class is claimed twice.
pub fn list_plugins(dir: Option<&Path>, source: &PolicySource) -> Result<bool, String> {
    let dir = dir
        .or(source.plugins_dir.as_deref())
        .ok_or("no plugins directory: give one, or --config-dir")?;
    let plugins = load_dir(dir, &source.policy)?;
    println!(
        "plugins in {} (plugin API of this host: {}):",
        dir.display(),
        mes_plugin_api::API_VERSION
    );
    for line in source.describe() {
        println!("{line}");
    }
    print_table(&["FILE", "CLASS", "VERSION", "ABI"], &plugin_rows(&plugins));
    // For plugins.allow in collector.json.
    println!("\nSHA-256:");
    let mut files: Vec<&Path> = plugins
        .by_class
        .values()
        .map(|p| p.info.file.as_path())
        .collect();
    files.extend(plugins.failures.iter().map(|f| f.file.as_path()));
    files.sort();
    for f in files {
        match digest(f) {
            Ok(d) => println!("  {d}  {}", file_name(f)),
            Err(e) => println!("  (unreadable: {e})  {}", file_name(f)),
        }
    }
    for f in &plugins.failures {
        println!(
            "\n{}: `run` under this policy refuses it: {}",
            file_name(&f.file),
            f.reason
        );
    }
    if let Some(e) = plugins.conflict_error() {
        println!("\n{e}");
    }
    Ok(plugins.failures.is_empty() && plugins.conflicts.is_empty())
}

/// `mes-collector plugins allow-entry FILE`: the `plugins.allow` entry that lets
/// `file` load, as JSON on stdout (alone, for scripts); on stderr, which class and
/// version it is and, with a collector's policy, which entry it takes the place of.
/// Refuses a file that `run` would refuse for another reason than the allow list
/// (permissions, not a plugin, another ABI): an entry would not make it load.
pub fn allow_entry(file: &Path, source: &PolicySource) -> Result<(), String> {
    let unpinned = PluginPolicy {
        allow: None,
        ..source.policy.clone()
    };
    admit(file, &unpinned)
        .map_err(|e| format!("{}: `run` would refuse it: {e}", file.display()))?;
    let sha = digest(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let plugin = load_file(file)
        .map_err(|f| format!("{}: `run` would refuse it: {}", file.display(), f.reason))?;
    let info = &plugin.info;
    println!("{}", serde_json::Value::String(sha.clone()));
    eprintln!(
        "{}: class {}, version {}, plugin API {}; SHA-256 {sha}",
        file.display(),
        info.class_name,
        info.version,
        info.api_version
    );
    let (Some(allow), Some(plugins_dir)) = (&source.policy.allow, &source.plugins_dir) else {
        eprintln!(
            "policy: {}; put the entry in the plugins.allow list of collector.json",
            source.origin
        );
        return Ok(());
    };
    let listed = |d: &str| allow.iter().any(|a| a.trim().eq_ignore_ascii_case(d));
    if listed(&sha) {
        eprintln!("it is already in plugins.allow ({})", source.origin);
        return Ok(());
    }
    // The entry of the build it upgrades: the allowed file of the same class in the
    // plugins directory, or else entries that match no file there any more.
    let installed = load_dir(plugins_dir, &source.policy)
        .ok()
        .and_then(|set| set.by_class.get(&info.class_name).cloned());
    match installed.and_then(|p| Some((digest(&p.info.file).ok()?, p))) {
        Some((old, p)) if listed(&old) => eprintln!(
            "it replaces {:?}, the entry of {} (class {}, version {}) in plugins.allow ({}): put it in that entry's place when the new file is installed",
            old,
            p.info.file.display(),
            p.info.class_name,
            p.info.version,
            source.origin
        ),
        _ => {
            let present: BTreeSet<String> = std::fs::read_dir(plugins_dir)
                .into_iter()
                .flatten()
                .filter_map(|e| digest(&e.ok()?.path()).ok())
                .collect();
            let unmatched: Vec<&String> = allow
                .iter()
                .filter(|a| !present.contains(&a.trim().to_ascii_lowercase()))
                .collect();
            eprintln!(
                "no allowed file of class {} is in {}; add the entry to plugins.allow ({}){}",
                info.class_name,
                plugins_dir.display(),
                source.origin,
                if unmatched.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; these entries match no file there any more (an old build's?): {unmatched:?}"
                    )
                }
            );
        }
    }
    Ok(())
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

fn print_table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) {
    write_table(&mut std::io::stdout().lock(), header, rows);
}

/// Columns padded to their widest cell, indented by two spaces.
pub(crate) fn write_table<const N: usize>(
    out: &mut dyn std::io::Write,
    header: &[&str; N],
    rows: &[[String; N]],
) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        let _ = writeln!(out, "  {}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}
