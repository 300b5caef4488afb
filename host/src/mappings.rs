//! Classes defined by mapping files rather than compiled plugins.
//!
//! Each `<Class>.json` in the mappings directory (`mappings_dir` in collector.json,
//! default `mappings` beside it) defines class `<Class>`. The host registers that class
//! backed by the mapping plugin's library (class [`ENGINE_CLASS`], `libcnc_mapping.so`,
//! found in the plugins directory like any plugin) and hands the plugin the mapping in
//! the settings of each machine mapped to the class. A mapping that is not valid is
//! refused, with its file and the JSON path of each mistake, and its class is not
//! registered, as for a plugin that fails to load; the other classes run.
//!
//! The format, its checks and how it is applied live in the `mes-mapping` crate, which
//! the plugin links too, so that `check` and the running collector agree.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, fs,
    io::BufRead,
    path::{Path, PathBuf},
    sync::Arc,
};

use mes_mapping::{EngineSettings, Machine, Mapping, Write, ENGINE_CLASS};
use mysql::prelude::Queryable;

use crate::{
    config::ClassMapping,
    plugins::{LoadFailure, LoadedPlugin, PluginInfo, PluginSet},
    scaffold::check_class_name,
};

/// The default `mappings_dir`, relative to the config dir.
pub const DEFAULT_DIR: &str = "mappings";

/// A valid mapping file.
#[derive(Debug, Clone)]
pub struct MappingFile {
    /// The class it defines: the file name without `.json`.
    pub class: String,
    pub file: PathBuf,
    /// The file's text, handed to the plugin.
    pub text: String,
    /// Checked for no particular machine.
    pub mapping: Mapping,
}

/// A mapping file that was refused, with every mistake found.
#[derive(Debug, Clone)]
pub struct MappingFailure {
    pub file: PathBuf,
    pub errors: Vec<String>,
}

impl fmt::Display for MappingFailure {
    /// One line per mistake, each starting with the file: the form editors and CI logs
    /// link to.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: {e}", self.file.display())?;
        }
        Ok(())
    }
}

/// Everything found in a mappings directory.
#[derive(Debug, Default)]
pub struct MappingSet {
    pub files: Vec<MappingFile>,
    pub failures: Vec<MappingFailure>,
}

/// Reads and checks one mapping file; the class is its file name.
pub fn load_file(path: &Path) -> Result<MappingFile, MappingFailure> {
    let refused = |e: String| MappingFailure {
        file: path.to_path_buf(),
        errors: vec![e],
    };
    let class = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".json"))
        .ok_or_else(|| refused("a mapping file is named <ClassName>.json".into()))?
        .to_string();
    check_class_name(&class).map_err(|e| {
        refused(format!(
            "the file name gives the class name: {}",
            e.replace(" (--class)", "")
        ))
    })?;
    let text = fs::read_to_string(path).map_err(|e| refused(format!("cannot read it: {e}")))?;
    let origin = format!("mapping {} (class {class})", path.display());
    let mapping =
        mes_mapping::load(&text, &origin, Machine::Any).map_err(|errors| MappingFailure {
            file: path.to_path_buf(),
            errors,
        })?;
    Ok(MappingFile {
        class,
        file: path.to_path_buf(),
        text,
        mapping,
    })
}

/// Loads every `*.json` in `dir`, in file-name order. A directory that does not exist
/// holds no mappings unless `required` (it was named in collector.json).
pub fn load_dir(dir: &Path, required: bool) -> Result<MappingSet, String> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(MappingSet::default())
        }
        Err(e) => {
            return Err(format!(
                "cannot read mappings directory {} ({e}); set mappings_dir in collector.json",
                dir.display()
            ))
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut set = MappingSet::default();
    for f in files {
        match load_file(&f) {
            Ok(m) => set.files.push(m),
            Err(e) => set.failures.push(e),
        }
    }
    Ok(set)
}

/// The settings the mapping plugin is made with for one machine.
pub fn engine_settings(m: &MappingFile, machine: Option<&serde_json::Value>) -> serde_json::Value {
    serde_json::to_value(EngineSettings {
        class: m.class.clone(),
        mapping_file: m.file.display().to_string(),
        mapping: m.text.clone(),
        machine: machine.cloned(),
    })
    .expect("settings serialize")
}

/// The plugin a mapped class runs on: the mapping plugin's module under the class's
/// name, so that dead letters, logs and `check` name the class and its file.
pub fn backed_by(engine: &LoadedPlugin, m: &MappingFile) -> LoadedPlugin {
    LoadedPlugin {
        info: Arc::new(PluginInfo {
            file: m.file.clone(),
            class_name: m.class.clone(),
            ..(*engine.info).clone()
        }),
        module: engine.module,
    }
}

/// What [`attach`] did.
#[derive(Debug, Default)]
pub struct Attached {
    /// Mapped classes now in the plugin set.
    pub classes: Vec<String>,
    /// Mappings refused here (no mapping plugin to run them).
    pub refused: Vec<MappingFailure>,
    /// Classes defined both by a mapping file and by a plugin: the host cannot know
    /// which is meant, so (as for two plugins claiming a class) it does not start.
    pub conflicts: Vec<String>,
}

/// Registers each mapping's class in `plugins`, and puts the mapping into the settings
/// of each machine of `classes` mapped to it (keeping the machine's own settings under
/// `machine`).
pub fn attach(
    set: &MappingSet,
    plugins: &mut PluginSet,
    classes: &mut BTreeMap<String, ClassMapping>,
) -> Attached {
    let mut out = Attached::default();
    let engine = plugins.by_class.get(ENGINE_CLASS).cloned();
    for m in &set.files {
        if let Some(native) = plugins.by_class.get(&m.class) {
            out.conflicts.push(format!(
                "class {:?} is defined twice: by mapping file {} and by plugin {}; rename the mapping file (its name is the class name) or remove the plugin",
                m.class,
                m.file.display(),
                native.info.file.display()
            ));
            continue;
        }
        if let Some((_, files)) = plugins.conflicts.iter().find(|(c, _)| *c == m.class) {
            let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            out.conflicts.push(format!(
                "class {:?} is defined by mapping file {} and claimed by plugins {}",
                m.class,
                m.file.display(),
                names.join(" and ")
            ));
            continue;
        }
        let Some(engine) = &engine else {
            out.refused.push(MappingFailure {
                file: m.file.clone(),
                errors: vec![format!(
                    "class {} needs the mapping plugin (class {ENGINE_CLASS}, {}cnc_mapping.{}) in the plugins directory; it is not there or did not load",
                    m.class,
                    std::env::consts::DLL_PREFIX,
                    std::env::consts::DLL_EXTENSION
                )],
            });
            continue;
        };
        plugins
            .by_class
            .insert(m.class.clone(), backed_by(engine, m));
        for machine in classes.values_mut().filter(|c| c.class_name == m.class) {
            machine.settings = Some(engine_settings(m, machine.settings.as_ref()));
        }
        out.classes.push(m.class.clone());
    }
    out
}

/// For `run`: loads the mappings of `cfg` and attaches them, logging what it did.
/// Refused mappings count as plugin load failures (for the metric). `Err` is a reason
/// not to start.
pub fn start(cfg: &mut crate::config::Config, plugins: &mut PluginSet) -> Result<(), String> {
    let (dir, required) = cfg.mappings_dir();
    let set = load_dir(&dir, required)?;
    let attached = attach(&set, plugins, &mut cfg.classes);
    if !attached.conflicts.is_empty() {
        return Err(attached.conflicts.join("; "));
    }
    for f in set.failures.iter().chain(&attached.refused) {
        log::error!(
            "mapping refused, its class is not loaded: {}",
            f.to_string().replace('\n', " | ")
        );
        plugins.failures.push(LoadFailure {
            file: f.file.clone(),
            reason: f.errors.join("; "),
        });
    }
    for m in set
        .files
        .iter()
        .filter(|m| attached.classes.contains(&m.class))
    {
        log::info!(
            "class {} defined by mapping {} ({} rows), run by plugin {ENGINE_CLASS}",
            m.class,
            m.file.display(),
            m.mapping.rows().len()
        );
    }
    Ok(())
}

/// Checks each mapping's tables and columns against the database `conn` is connected
/// to: present, and for upserts a primary or unique key among the row's columns.
pub fn check_database(conn: &mut mysql::Conn, set: &MappingSet) -> Vec<String> {
    let mut problems = Vec::new();
    // (schema or current, table) → (columns, unique keys).
    type Table = (BTreeSet<String>, Vec<BTreeSet<String>>);
    let mut cache: BTreeMap<String, Result<Table, String>> = BTreeMap::new();
    for m in &set.files {
        for row in m.mapping.rows() {
            let table = row.table();
            let info = cache
                .entry(table.to_ascii_lowercase())
                .or_insert_with(|| describe_table(conn, table));
            let (columns, keys) = match info {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{}: {}.table: {e}", m.file.display(), row.path()));
                    continue;
                }
            };
            if columns.is_empty() {
                problems.push(format!(
                    "{}: {}.table: table `{table}` is not in the database; create it (`mes-collector new-mapping` writes CREATE TABLE statements for a starter mapping)",
                    m.file.display(),
                    row.path()
                ));
                continue;
            }
            for c in row.columns() {
                if !columns.contains(&c.to_ascii_lowercase()) {
                    problems.push(format!(
                        "{}: {}.columns.{c}: table `{table}` has no column `{c}`",
                        m.file.display(),
                        row.path()
                    ));
                }
            }
            if row.write() != Write::Insert {
                let row_cols: BTreeSet<String> = row
                    .columns()
                    .iter()
                    .map(|c| c.to_ascii_lowercase())
                    .collect();
                if !keys.iter().any(|k| k.is_subset(&row_cols)) {
                    problems.push(format!(
                        "{}: {}.write: {} into `{table}`, but no primary or unique key of it is among the row's columns, so every message would add a row; add such a key or write \"insert\"",
                        m.file.display(),
                        row.path(),
                        row.write().name()
                    ));
                }
            }
        }
    }
    problems
}

/// Columns and unique keys of a table (lowercase); no columns if it does not exist.
fn describe_table(
    conn: &mut mysql::Conn,
    table: &str,
) -> Result<(BTreeSet<String>, Vec<BTreeSet<String>>), String> {
    let (schema, name) = match table.split_once('.') {
        Some((s, t)) => (Some(s), t),
        None => (None, table),
    };
    let schema_cond = if schema.is_some() {
        "table_schema = ?"
    } else {
        "table_schema = DATABASE() AND ? IS NULL"
    };
    let columns: Vec<String> = conn
        .exec(
            format!("SELECT column_name FROM information_schema.columns WHERE {schema_cond} AND table_name = ?"),
            (schema, name),
        )
        .map_err(|e| format!("cannot read information_schema: {e}"))?;
    let key_rows: Vec<(String, String)> = conn
        .exec(
            format!("SELECT index_name, column_name FROM information_schema.statistics WHERE {schema_cond} AND table_name = ? AND non_unique = 0"),
            (schema, name),
        )
        .map_err(|e| format!("cannot read information_schema: {e}"))?;
    let mut keys: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (index, column) in key_rows {
        keys.entry(index)
            .or_default()
            .insert(column.to_ascii_lowercase());
    }
    Ok((
        columns
            .into_iter()
            .map(|c| c.to_ascii_lowercase())
            .collect(),
        keys.into_values().collect(),
    ))
}

/// `mes-collector new-mapping`.
#[derive(Debug, Clone)]
pub struct NewMapping {
    pub class: String,
    /// Recorded messages: JSON lines, one MQTT message each (`cnc-sim record`).
    pub from: PathBuf,
    pub dir: PathBuf,
    /// Replace an existing mapping file.
    pub force: bool,
}

/// Writes `<dir>/<Class>.json` and `<dir>/<Class>.sql`, prints the SQL and the next
/// steps; the exit code.
pub fn new_mapping_main(req: &NewMapping) -> std::process::ExitCode {
    match new_mapping(req) {
        Ok(text) => {
            println!("{text}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("new-mapping: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Does the work of `new-mapping`; the text to print.
pub fn new_mapping(req: &NewMapping) -> Result<String, String> {
    check_class_name(&req.class).map_err(|e| e.replace(" (--class)", ""))?;
    if req.class == ENGINE_CLASS {
        return Err(format!(
            "{ENGINE_CLASS} is the mapping plugin's own class; choose another"
        ));
    }
    let file = fs::File::open(&req.from)
        .map_err(|e| format!("cannot open {}: {e}", req.from.display()))?;
    let mut payloads = Vec::new();
    for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("cannot read {}: {e}", req.from.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let env = crate::envelope::parse(line.as_bytes()).map_err(|e| {
            format!(
                "{} line {}: not a collector message ({}); record with `cnc-sim record`",
                req.from.display(),
                i + 1,
                e.detail
            )
        })?;
        let payload: serde_json::Value = serde_json::from_str(env.payload())
            .map_err(|e| format!("{} line {}: payload: {e}", req.from.display(), i + 1))?;
        payloads.push(payload);
    }
    if payloads.is_empty() {
        return Err(format!("{} holds no messages", req.from.display()));
    }
    let starter = mes_mapping::starter::starter(&req.class, &payloads)?;
    // The starter must pass the checks the host makes, or it is no start.
    mes_mapping::load(&starter.text, &req.class, Machine::Any).map_err(|e| {
        format!(
            "the generated mapping does not check (a bug): {}",
            e.join("; ")
        )
    })?;
    let json_path = req.dir.join(format!("{}.json", req.class));
    let sql_path = req.dir.join(format!("{}.sql", req.class));
    for p in [&json_path, &sql_path] {
        if p.exists() && !req.force {
            return Err(format!(
                "{} exists; move it away or pass --force to replace it",
                p.display()
            ));
        }
    }
    fs::create_dir_all(&req.dir)
        .map_err(|e| format!("cannot create {}: {e}", req.dir.display()))?;
    let sql: String = starter
        .tables
        .iter()
        .map(|t| format!("{}\n\n", t.create))
        .collect();
    fs::write(&json_path, &starter.text)
        .map_err(|e| format!("cannot write {}: {e}", json_path.display()))?;
    fs::write(&sql_path, &sql).map_err(|e| format!("cannot write {}: {e}", sql_path.display()))?;
    let tables: Vec<&str> = starter.tables.iter().map(|t| t.name.as_str()).collect();
    Ok(format!(
        "created {} (class {}, {} rows: cnc_data{}) from {} recorded message(s)\n\
         and {} with the CREATE TABLE statements for the new tables:\n\n{}\
         next:\n  \
         1. edit {}: check each type and missing rule, add value maps and scales (docs/mapping.md)\n  \
         2. create the tables: mariadb -h127.0.0.1 -uroot <database> < {}\n  \
         3. map machines to \"{}\" in cnc_classes.json\n  \
         4. mes-collector check --config-dir <dir>\n  \
         5. mes-collector replay --mapping {} --plugin <plugins dir>/{}cnc_mapping.{} --cnc-id <id> {}\n  \
         6. restart the collector",
        json_path.display(),
        req.class,
        starter.spec.rows.len(),
        tables.iter().map(|t| format!(", {t}")).collect::<String>(),
        payloads.len(),
        sql_path.display(),
        sql,
        json_path.display(),
        sql_path.display(),
        req.class,
        json_path.display(),
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_EXTENSION,
        req.from.display()
    ))
}
