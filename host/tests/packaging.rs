//! The Debian package's files agree with the development ones and with each other:
//! its configuration (deploy/debian/etc/mes-collector) differs from config/ only in
//! the paths and the database user, the unit runs what the package installs where the
//! configuration says, and every shipped plugin is packed. Needs no services.
//! scripts/package-test.sh tests the built package itself.

mod common;

use std::{collections::HashMap, fs, path::PathBuf};

use common::build::workspace_root;
use mes_collector::config::{Config, CLASSES_FILE, COLLECTOR_FILE, DB_FILE};
use serde_json::Value;

const PACKAGED_CONFIG: &str = "deploy/debian/etc/mes-collector";
const ETC: &str = "/etc/mes-collector";
const PLUGINS_DIR: &str = "/usr/lib/mes-collector/plugins";
const SPOOL_DIR: &str = "/var/lib/mes-collector/spool";

fn read(rel: &str) -> String {
    let path = workspace_root().join(rel);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `key`'s value in the [Service] section of the unit, each occurrence.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    let mut in_service = false;
    let mut values = Vec::new();
    for line in unit.lines() {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service {
            if let Some(v) = line.strip_prefix(&format!("{key}=")) {
                values.push(v.to_string());
            }
        }
    }
    values
}

#[test]
fn packaged_configuration_differs_from_config_only_in_paths_and_db_user() {
    // collector.json: the development paths put back, the rest must be equal.
    let mut packaged = json(&format!("{PACKAGED_CONFIG}/{COLLECTOR_FILE}"));
    let dev = json(&format!("config/{COLLECTOR_FILE}"));
    assert_eq!(packaged["plugins_dir"], PLUGINS_DIR);
    assert_eq!(packaged["spool"]["dir"], SPOOL_DIR);
    packaged["plugins_dir"] = dev["plugins_dir"].clone();
    packaged["spool"]["dir"] = dev["spool"]["dir"].clone();
    assert_eq!(
        packaged, dev,
        "{PACKAGED_CONFIG}/{COLLECTOR_FILE} differs from config/{COLLECTOR_FILE} in more than plugins_dir and spool.dir: make the same change in both"
    );

    // db_config.json: the least-privilege user of grants.sql instead of root.
    let mut packaged = json(&format!("{PACKAGED_CONFIG}/{DB_FILE}"));
    let dev = json(&format!("config/{DB_FILE}"));
    let user = packaged["user"].as_str().unwrap().to_string();
    assert!(
        read("grants.sql").contains(&format!("TO '{user}'@'%'")),
        "the packaged db_config.json's user {user:?} is not the one grants.sql grants to"
    );
    packaged["user"] = dev["user"].clone();
    assert_eq!(
        packaged, dev,
        "{PACKAGED_CONFIG}/{DB_FILE} differs from config/{DB_FILE} in more than the user: make the same change in both"
    );
    assert_eq!(
        packaged["password"], "",
        "the packaged db_config.json must hold no password (it goes in secrets.env)"
    );

    assert_eq!(
        json(&format!("{PACKAGED_CONFIG}/{CLASSES_FILE}")),
        json(&format!("config/{CLASSES_FILE}"))
    );
}

#[test]
fn packaged_configuration_loads_with_absolute_paths() {
    let dir = workspace_root().join(PACKAGED_CONFIG);
    let env = HashMap::from([("MES_DB_PASSWORD".to_string(), "x".to_string())]);
    let cfg = Config::load_with_env(&dir, &env).unwrap_or_else(|errors| {
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        panic!("{}", text.join("\n"))
    });
    // Absolute, so the config dir they are read from does not matter.
    assert_eq!(cfg.collector.plugins_dir, PathBuf::from(PLUGINS_DIR));
    assert_eq!(cfg.collector.spool.dir, PathBuf::from(SPOOL_DIR));
}

#[test]
fn unit_runs_what_the_package_installs() {
    let unit = read("deploy/mes-collector.service");
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1, "{exec:?}");
    let words: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(words[0], "/usr/bin/mes-collector");
    let at = words.iter().position(|w| *w == "--config-dir").unwrap();
    assert_eq!(words[at + 1], ETC);
    assert_eq!(unit_values(&unit, "User"), ["mes-collector"]);
    assert_eq!(
        unit_values(&unit, "EnvironmentFile"),
        [format!("-{ETC}/secrets.env")]
    );
    // The spool is the only place the service may write.
    assert_eq!(
        unit_values(&unit, "ReadWritePaths"),
        ["/var/lib/mes-collector"]
    );
    assert!(SPOOL_DIR.starts_with("/var/lib/mes-collector/"));
    assert_eq!(unit_values(&unit, "ProtectSystem"), ["strict"]);
    let read_only = unit_values(&unit, "ReadOnlyPaths").join(" ");
    assert!(
        read_only.contains("/usr/lib/mes-collector") && read_only.contains(ETC),
        "{read_only}"
    );
}

#[test]
fn package_metadata_installs_every_shipped_plugin_where_the_config_reads() {
    let manifest = read("host/Cargo.toml");
    let meta = &manifest[manifest
        .find("[package.metadata.deb]")
        .expect("host/Cargo.toml has [package.metadata.deb]")..];
    let dest = format!("\"{}/\"", PLUGINS_DIR.trim_start_matches('/'));
    let mut crates = Vec::new();
    for entry in fs::read_dir(workspace_root().join("plugins")).unwrap() {
        let toml = fs::read_to_string(entry.unwrap().path().join("Cargo.toml")).unwrap();
        let name = toml
            .lines()
            .find_map(|l| l.strip_prefix("name = \""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("a package name")
            .to_string();
        let asset = format!(
            "[\"target/release/lib{}.so\", {dest}, \"644\"]",
            name.replace('-', "_")
        );
        assert!(
            meta.contains(&asset),
            "the package does not ship plugin {name}: add {asset} to the assets of [package.metadata.deb] in host/Cargo.toml"
        );
        crates.push(name);
    }
    assert!(crates.len() >= 2, "{crates:?}");
    for file in [COLLECTOR_FILE, DB_FILE, CLASSES_FILE] {
        let asset = format!(
            "[\"../{PACKAGED_CONFIG}/{file}\", \"{}/\", \"644\"]",
            ETC.trim_start_matches('/')
        );
        assert!(meta.contains(&asset), "missing asset {asset}");
    }
}
