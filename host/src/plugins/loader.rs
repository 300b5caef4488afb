//! Loads every plugin library in the plugins directory.
//!
//! Each file is loaded on its own through `lib_header_from_path`: abi_stable's
//! `RootModule::load_from_file` caches one module per interface type, so a second
//! plugin loaded that way would silently be the first one again. A file that fails to
//! load is reported by name with the reason and never stops the others.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use abi_stable::library::lib_header_from_path;

use super::trust::{admit, check_permissions, PluginPolicy};
use mes_plugin_api::PluginModuleRef;

use super::{compat, extensions};

/// What the host knows of a loaded plugin.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub file: PathBuf,
    pub class_name: String,
    pub version: String,
    /// The `mes-plugin-api` version it was built against (1.0.0 for a plugin without a
    /// manifest).
    pub api_version: String,
    /// Host features it cannot run without.
    pub requires: Vec<&'static str>,
    /// Host features this host attached to it.
    pub attached: Vec<&'static str>,
}

#[derive(Clone)]
pub struct LoadedPlugin {
    pub info: Arc<PluginInfo>,
    pub module: PluginModuleRef,
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.info.fmt(f)
    }
}

/// A file in the plugins directory that could not be used.
#[derive(Debug, Clone)]
pub struct LoadFailure {
    pub file: PathBuf,
    pub reason: String,
}

impl fmt::Display for LoadFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin {} refused: {}", self.file.display(), self.reason)
    }
}

/// Everything found in a plugins directory.
#[derive(Debug, Default)]
pub struct PluginSet {
    /// class name → plugin.
    pub by_class: BTreeMap<String, LoadedPlugin>,
    /// Files that are not plugins, or not compatible ones.
    pub failures: Vec<LoadFailure>,
    /// Class names claimed by more than one file: (class, files). Such a class is not
    /// used at all, since the host cannot know which file is meant.
    pub conflicts: Vec<(String, Vec<PathBuf>)>,
}

/// Whether a file name looks like a shared library of this platform.
fn is_library(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
}

/// Loads one plugin file. A refusal names the file, says what differs from this host
/// and what to rebuild against.
pub fn load_file(path: &Path) -> Result<LoadedPlugin, LoadFailure> {
    let refused = |reason: String| LoadFailure {
        file: path.to_path_buf(),
        reason,
    };
    let header = lib_header_from_path(path).map_err(|e| refused(compat::explain(&e, None)))?;
    compat::check_api_version(header.version_strings()).map_err(refused)?;
    let module = header
        .init_root_module::<PluginModuleRef>()
        .map_err(|e| refused(compat::explain(&e, Some(header))))?;
    let extensions = extensions::read(path).map_err(refused)?;
    let class_name = module.class_name().to_string();
    extensions.attach(&class_name);
    Ok(LoadedPlugin {
        info: Arc::new(PluginInfo {
            file: path.to_path_buf(),
            class_name,
            version: module.plugin_version().to_string(),
            api_version: extensions.api_version,
            requires: extensions.requires,
            attached: extensions.attached,
        }),
        module,
    })
}

/// Loads every library in `dir` that `policy` admits, in file-name order.
pub fn load_dir(dir: &Path, policy: &PluginPolicy) -> Result<PluginSet, String> {
    if !policy.allow_insecure_permissions {
        // A writable directory lets anyone swap a file between the check and the load.
        check_permissions(dir)?;
    }
    let entries = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "cannot read plugins directory {} ({e}); set plugins_dir in collector.json",
            dir.display()
        )
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_library(p))
        .collect();
    files.sort();
    let mut set = PluginSet::default();
    let mut claimed: BTreeMap<String, Vec<LoadedPlugin>> = BTreeMap::new();
    for file in files {
        if let Err(reason) = admit(&file, policy) {
            set.failures.push(LoadFailure { file, reason });
            continue;
        }
        match load_file(&file) {
            Ok(p) => claimed
                .entry(p.info.class_name.clone())
                .or_default()
                .push(p),
            Err(failure) => set.failures.push(failure),
        }
    }
    for (class, mut plugins) in claimed {
        if plugins.len() == 1 {
            set.by_class.insert(class, plugins.pop().expect("one"));
        } else {
            let files = plugins.iter().map(|p| p.info.file.clone()).collect();
            set.conflicts.push((class, files));
        }
    }
    Ok(set)
}

impl PluginSet {
    /// The conflicts as one error message, naming every file.
    pub fn conflict_error(&self) -> Option<String> {
        if self.conflicts.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .conflicts
            .iter()
            .map(|(class, files)| {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                format!("class {class:?} is claimed by {}", names.join(" and "))
            })
            .collect();
        Some(format!(
            "{}; remove all but one of each from the plugins directory",
            parts.join("; ")
        ))
    }
}
