//! The three configuration files, read and checked once at start. Each section's
//! type lives beside the component it configures (`intake::config::BrokerConfig`,
//! `dispatch::config::BatchConfig`, `sink::config::DbConfig`, `spool::SpoolConfig`,
//! `envelope::Limits`, `plugins::trust::PluginPolicy`); this module assembles them
//! into the files and reads them.
//!
//! Every error names the file and the field, and says how to fix it where it can.

use std::{
    collections::{BTreeMap, HashMap},
    fmt, fs,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{
    dispatch::config::BatchConfig, envelope::Limits, intake::config::BrokerConfig,
    plugins::trust::PluginPolicy, sink::config::DbConfig, spool::SpoolConfig,
};

pub mod tls;

pub const COLLECTOR_FILE: &str = "collector.json";
pub const DB_FILE: &str = "db_config.json";
pub const CLASSES_FILE: &str = "cnc_classes.json";

/// A configuration problem, naming the file (and field where known).
#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn err(file: &Path, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        message: message.into(),
    }
}

/// `collector.json`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    pub broker: BrokerConfig,
    /// Directory of plugin libraries; relative paths are relative to the config dir.
    pub plugins_dir: PathBuf,
    /// Directory of mapping files (`<Class>.json`, see docs/mapping.md); default
    /// `mappings`, relative to the config dir.
    #[serde(default)]
    pub mappings_dir: Option<PathBuf>,
    /// Which plugin files may load.
    #[serde(default)]
    pub plugins: PluginPolicy,
    #[serde(default)]
    pub batch: BatchConfig,
    /// The store-and-forward log between the MQTT callback and the dispatcher.
    #[serde(default)]
    pub spool: SpoolConfig,
    /// Size and nesting bounds on incoming messages.
    #[serde(default)]
    pub limits: Limits,
    /// Where `/metrics`, `/healthz` and `/readyz` are served; empty turns them off.
    #[serde(default = "default_metrics_addr")]
    pub metrics_addr: String,
    /// Raw payload bytes kept in a dead letter; the rest is cut off.
    #[serde(default = "default_dead_letter_payload_limit")]
    pub dead_letter_payload_limit: usize,
    /// How long the lease on `broker.client_id` lasts without renewal: how soon
    /// another collector may take over the client_id of one that died without
    /// stopping (its host gone, say). See `sink::lease`.
    #[serde(default = "default_client_lease_secs")]
    pub client_lease_secs: u64,
}

fn default_client_lease_secs() -> u64 {
    15
}

fn default_metrics_addr() -> String {
    "127.0.0.1:9464".into()
}
fn default_dead_letter_payload_limit() -> usize {
    65_536
}

/// One entry of `cnc_classes.json`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct ClassMapping {
    pub cnc_id: String,
    pub class_name: String,
    /// Handed to the plugin's constructor as JSON text.
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
}

/// Everything the collector reads at start.
#[derive(Debug, Clone)]
pub struct Config {
    pub dir: PathBuf,
    pub collector: CollectorConfig,
    pub db: DbConfig,
    /// cnc_id → mapping, in the file's order for display.
    pub classes: BTreeMap<String, ClassMapping>,
}

impl Config {
    /// Where the mapping files are, and whether collector.json names the directory
    /// (then it must exist; the default may be absent).
    pub fn mappings_dir(&self) -> (PathBuf, bool) {
        match &self.collector.mappings_dir {
            Some(d) => (self.dir.join(d), true),
            None => (self.dir.join(crate::mappings::DEFAULT_DIR), false),
        }
    }

    /// Reads and checks the three files in `dir`, applying secrets from the
    /// environment. Returns every problem found, not only the first.
    pub fn load(dir: &Path) -> Result<Config, Vec<ConfigError>> {
        let env: HashMap<String, String> = std::env::vars().collect();
        Self::load_with_env(dir, &env)
    }

    pub fn load_with_env(
        dir: &Path,
        env: &HashMap<String, String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let collector = read_json::<CollectorConfig>(&dir.join(COLLECTOR_FILE))
            .and_then(|c| check_collector(&dir.join(COLLECTOR_FILE), c))
            .map_err(|e| errors.push(e))
            .ok();
        let db = read_json::<DbConfig>(&dir.join(DB_FILE))
            .and_then(|db| db.check(&dir.join(DB_FILE)).map(|()| db))
            .map_err(|e| errors.push(e))
            .ok();
        let classes = read_json::<Vec<ClassMapping>>(&dir.join(CLASSES_FILE))
            .and_then(|list| check_classes(&dir.join(CLASSES_FILE), list))
            .map_err(|e| errors.push(e))
            .ok();
        match (collector, db, classes) {
            (Some(mut collector), Some(mut db), Some(classes)) if errors.is_empty() => {
                resolve_paths(dir, &mut collector, &mut db);
                let errors: Vec<ConfigError> = [
                    (DB_FILE, db.resolve_password(env)),
                    (COLLECTOR_FILE, collector.broker.resolve_password(env)),
                ]
                .into_iter()
                .filter_map(|(file, resolved)| resolved.err().map(|e| err(&dir.join(file), e)))
                .collect();
                if !errors.is_empty() {
                    return Err(errors);
                }
                Ok(Config {
                    dir: dir.to_path_buf(),
                    collector,
                    db,
                    classes,
                })
            }
            _ => Err(errors),
        }
    }
}

/// Relative file paths in the configuration are relative to the config dir.
fn resolve_paths(dir: &Path, collector: &mut CollectorConfig, db: &mut DbConfig) {
    relative_to(dir, &mut collector.plugins_dir);
    relative_to(dir, &mut collector.spool.dir);
    collector.broker.resolve_paths(dir);
    db.resolve_paths(dir);
}

pub(crate) fn relative_to(dir: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = dir.join(&*p);
    }
}

/// The broker section of a collector's `collector.json` (`path` is the file or the
/// config dir holding it), checked and with its password resolved as `run` does, for
/// tools that connect where that collector connects (`cnc-sim --broker-config`). The
/// other two files are not needed.
pub fn load_broker(
    path: &Path,
    env: &HashMap<String, String>,
) -> Result<BrokerConfig, ConfigError> {
    let file = if path.is_dir() {
        path.join(COLLECTOR_FILE)
    } else {
        path.to_path_buf()
    };
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    if !file.is_file() {
        return Err(err(
            &file,
            format!(
                "no such file; give the collector's {COLLECTOR_FILE} or the config dir holding it"
            ),
        ));
    }
    let mut broker = read_json::<CollectorConfig>(&file)
        .and_then(|c| check_collector(&file, c))?
        .broker;
    broker.resolve_paths(&dir);
    broker.resolve_password(env).map_err(|e| err(&file, e))?;
    Ok(broker)
}

/// Reads a password file, refusing one that others can read.
pub fn read_secret(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(path).map_err(|e| format!("password file {}: {e}", path.display()))?;
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "password file {} can be read by group or others (mode {mode:04o}); fix with `chmod 600 {}`",
            path.display(),
            path.display()
        ));
    }
    let text =
        fs::read_to_string(path).map_err(|e| format!("password file {}: {e}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = fs::read_to_string(path).map_err(|e| {
        err(
            path,
            format!("cannot read it ({e}); pass --config-dir with the directory holding {COLLECTOR_FILE}, {DB_FILE} and {CLASSES_FILE}"),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| err(path, format!("invalid: {e}")))
}

fn check_collector(path: &Path, c: CollectorConfig) -> Result<CollectorConfig, ConfigError> {
    c.broker.check().map_err(|e| err(path, e))?;
    c.batch.check().map_err(|e| err(path, e))?;
    // `collector_position.client_id` is a VARCHAR(191).
    let key = crate::sink::shares::longest_key(&c.broker.client_id, c.batch.writers);
    if key > 191 {
        return Err(err(
            path,
            format!(
                "broker.client_id is too long for batch.writers {}: its position rows would \
                 have keys of {key} characters, and collector_position holds 191; shorten \
                 the client_id",
                c.batch.writers
            ),
        ));
    }
    if !(3..=3600).contains(&c.client_lease_secs) {
        return Err(err(
            path,
            format!(
                "client_lease_secs is {}; use 3 to 3600 (15 is the default: a replacement \
                 for a collector whose host is gone waits that long)",
                c.client_lease_secs
            ),
        ));
    }
    c.spool.check().map_err(|e| err(path, e))?;
    Ok(c)
}

fn check_classes(
    path: &Path,
    list: Vec<ClassMapping>,
) -> Result<BTreeMap<String, ClassMapping>, ConfigError> {
    let mut map = BTreeMap::new();
    for (i, m) in list.into_iter().enumerate() {
        if m.cnc_id.is_empty() || m.class_name.is_empty() {
            return Err(err(
                path,
                format!("entry {i}: cnc_id and class_name must not be empty"),
            ));
        }
        if let Some(s) = &m.settings {
            if !s.is_object() {
                return Err(err(
                    path,
                    format!("entry {i} ({}): settings must be a JSON object", m.cnc_id),
                ));
            }
        }
        let id = m.cnc_id.clone();
        if let Some(prev) = map.insert(id.clone(), m) {
            return Err(err(
                path,
                format!("cnc_id {id:?} is mapped twice (to {:?} and again at entry {i}); keep one entry", prev.class_name),
            ));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        fs::write(dir.join(name), text).unwrap();
    }

    fn valid_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            COLLECTOR_FILE,
            r#"{"broker":{"uri":"tcp://127.0.0.1:1883","client_id":"c1"},"plugins_dir":"p"}"#,
        );
        write(
            dir.path(),
            DB_FILE,
            r#"{"host":"127.0.0.1","user":"root","password":"secret","database":"d"}"#,
        );
        write(
            dir.path(),
            CLASSES_FILE,
            r#"[{"cnc_id":"CNC001","class_name":"CNCTypeA"}]"#,
        );
        dir
    }

    #[test]
    fn defaults_and_env_overrides() {
        let dir = valid_dir();
        let env = HashMap::from([("MES_DB_PASSWORD".to_string(), "fromenv".to_string())]);
        let c = Config::load_with_env(dir.path(), &env).unwrap();
        assert_eq!(c.collector.broker.topic, "sensor/CNC");
        assert_eq!(c.collector.broker.qos, 1);
        assert_eq!(c.db.port, 3306);
        assert_eq!(c.db.password, "fromenv");
        assert_eq!(c.collector.plugins_dir, dir.path().join("p"));
        assert!(!format!("{:?}", c.db).contains("fromenv"));
    }

    #[test]
    fn every_broken_file_is_named() {
        let dir = valid_dir();
        write(dir.path(), DB_FILE, "{not json");
        fs::remove_file(dir.path().join(CLASSES_FILE)).unwrap();
        let errors = Config::load_with_env(dir.path(), &HashMap::new()).unwrap_err();
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(errors.len(), 2, "{text:?}");
        assert!(
            text[0].contains(DB_FILE) && text[0].contains("invalid"),
            "{text:?}"
        );
        assert!(
            text[1].contains(CLASSES_FILE) && text[1].contains("cannot read"),
            "{text:?}"
        );
    }

    #[test]
    fn password_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = valid_dir();
        write(dir.path(), "db.secret", "from-file\n");
        fs::set_permissions(
            dir.path().join("db.secret"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        write(
            dir.path(),
            DB_FILE,
            r#"{"host":"h","user":"u","password_file":"db.secret","database":"d"}"#,
        );
        let e = Config::load_with_env(dir.path(), &HashMap::new()).unwrap_err();
        assert!(
            e[0].message.contains("chmod 600") && e[0].message.contains("db.secret"),
            "{}",
            e[0]
        );
        fs::set_permissions(
            dir.path().join("db.secret"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let c = Config::load_with_env(dir.path(), &HashMap::new()).unwrap();
        assert_eq!(c.db.password, "from-file");
    }

    #[test]
    fn a_client_id_too_long_for_the_writers_position_rows_is_refused() {
        let dir = valid_dir();
        let id = "c".repeat(180);
        write(
            dir.path(),
            COLLECTOR_FILE,
            &format!(
                r#"{{"broker":{{"uri":"tcp://127.0.0.1:1883","client_id":"{id}"}},"plugins_dir":"p","batch":{{"writers":2}}}}"#
            ),
        );
        let e = Config::load_with_env(dir.path(), &HashMap::new()).unwrap_err();
        assert_eq!(
            e[0].message,
            "broker.client_id is too long for batch.writers 2: its position rows would have keys \
             of 194 characters, and collector_position holds 191; shorten the client_id"
        );
    }

    #[test]
    fn duplicate_cnc_id_and_unknown_field_are_refused() {
        let dir = valid_dir();
        write(
            dir.path(),
            CLASSES_FILE,
            r#"[{"cnc_id":"A","class_name":"X"},{"cnc_id":"A","class_name":"Y"}]"#,
        );
        let e = Config::load_with_env(dir.path(), &HashMap::new()).unwrap_err();
        assert!(e[0].message.contains("mapped twice"), "{}", e[0]);
        write(
            dir.path(),
            CLASSES_FILE,
            r#"[{"cnc_id":"A","clas_name":"X"}]"#,
        );
        let e = Config::load_with_env(dir.path(), &HashMap::new()).unwrap_err();
        assert!(e[0].message.contains("clas_name"), "{}", e[0]);
    }
}

/// docs/configuration.md against these structs. They derive `Serialize` in tests only,
/// for this check: outside tests nothing can serialize a password into a log or file.
#[cfg(test)]
mod reference;
