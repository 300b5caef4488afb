//! The extension entry point of plugin API 1.1+: a plugin's manifest, looked up by
//! symbol name beside the frozen root module, and the attaching of host services.
//! See `mes_plugin_api::abi` for why features arrive this way.

use std::path::Path;

use abi_stable::{abi_stability::abi_checking::check_layout_compatibility, StableAbi};
use mes_plugin_api::{
    abi::{HostServices, PluginManifest, MANIFEST_SYMBOL},
    Feature, API_VERSION,
};

use super::services::{self, PluginContext};

/// What a plugin's manifest says, or what a 1.0 plugin (no manifest) implies.
pub struct Extensions {
    /// The `mes-plugin-api` version the plugin was built against.
    pub api_version: String,
    /// Features it cannot run without.
    pub requires: Vec<&'static str>,
    /// Features this host attached to it.
    pub attached: Vec<&'static str>,
    manifest: Option<&'static PluginManifest>,
}

/// Reads the manifest of the library at `path` (already loaded by abi_stable), and
/// refuses it if it requires a feature this host does not offer.
pub fn read(path: &Path) -> Result<Extensions, String> {
    // SAFETY: the file was loaded as a plugin library already, so its initializers
    // have run; dlopen returns the same handle. The handle is leaked: libraries are
    // never unloaded, and the manifest is a static of the library.
    let library = unsafe { libloading::Library::new(path) }
        .map_err(|e| format!("cannot open it again to read its manifest: {e}"))?;
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    // SAFETY: a symbol of this name is a `PluginManifest` static (its name is
    // versioned; the layout is checked before any other field is read).
    let manifest: Option<&'static PluginManifest> = unsafe {
        library
            .get::<*const PluginManifest>(MANIFEST_SYMBOL)
            .ok()
            .and_then(|symbol| (*symbol).as_ref())
    };
    let Some(manifest) = manifest else {
        return Ok(Extensions {
            api_version: "1.0.0".into(),
            requires: Vec::new(),
            attached: Vec::new(),
            manifest: None,
        });
    };
    if let Err(e) =
        check_layout_compatibility(<PluginManifest as StableAbi>::LAYOUT, manifest.layout)
    {
        log::debug!("abi_stable's report on the manifest: {e}");
        return Err(
            "its extension manifest (mes_plugin_manifest_v1) differs from this host's; it was \
             built against a modified mes-plugin-api: rebuild it against a released one"
                .into(),
        );
    }
    let offered = services::offered();
    let requires: Vec<&Feature> = manifest.requires.iter().collect();
    if let Some(missing) = requires.iter().find(|f| !offered.contains(f)) {
        return Err(format!(
            "built against mes-plugin-api {}, it requires the host feature `{}`, which needs a \
             host with plugin API {} or later; this host has plugin API {API_VERSION}{}. Upgrade \
             the collector, or ask the plugin's vendor for a build that does not require `{}`",
            manifest.api_version,
            missing.name(),
            missing.since(),
            if mes_plugin_api::features::ALL.contains(missing) {
                format!(" with `{}` switched off", missing.name())
            } else {
                String::new()
            },
            missing.name()
        ));
    }
    Ok(Extensions {
        api_version: manifest.api_version.to_string(),
        requires: requires.iter().map(|f| f.name()).collect(),
        // What the plugin's API version knows of, and this host offers.
        attached: offered
            .iter()
            .filter(|f| knows(manifest.api_version.as_str(), f))
            .map(|f| f.name())
            .collect(),
        manifest: Some(manifest),
    })
}

/// Whether a plugin built against `api_version` knows `feature` (it came in a version
/// no newer).
fn knows(api_version: &str, feature: &Feature) -> bool {
    let major_minor = |v: &str| -> (u32, u32) {
        let mut parts = v.split('.').map(|p| p.parse().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
    };
    major_minor(feature.since()) <= major_minor(api_version)
}

impl Extensions {
    /// Hands the host's services to the plugin, once per library.
    pub fn attach(&self, class_name: &str) {
        let Some(manifest) = self.manifest else {
            return;
        };
        let context = PluginContext::leak(class_name);
        (manifest.attach)(&HostServices {
            api_version: abi_stable::std_types::RStr::from_str(API_VERSION),
            context: context as *const PluginContext as *const (),
            lookup: services::lookup,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mes_plugin_api::features::{LOG, METRICS};

    #[test]
    fn a_plugin_knows_the_features_of_its_api_version_and_older() {
        assert!(knows("1.1.0", &LOG));
        assert!(knows("1.2.3", &METRICS));
        assert!(!knows("1.0.0", &LOG));
    }
}
