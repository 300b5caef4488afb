//! Routes a message to its machine's plugin instance: cnc_id → class name → plugin,
//! one instance per cnc_id, created when the machine is first heard from.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use abi_stable::std_types::{ROption, RStr};

use crate::{
    config::ClassMapping,
    dead_letter::{DeadLetter, Reason},
    isolation::Isolation,
    plugins::{LoadedPlugin, PluginInfo},
};
use mes_plugin_api::PluginInstanceBox;

pub struct Instance {
    pub plugin: PluginInstanceBox,
    pub info: Arc<PluginInfo>,
}

pub struct Router {
    classes: BTreeMap<String, ClassMapping>,
    plugins: BTreeMap<String, LoadedPlugin>,
    /// A constructor's refusal is kept, so it is not retried for every message.
    instances: HashMap<String, Result<Instance, DeadLetter>>,
    /// Class → why it is quarantined: its machines get no instance, and their
    /// messages are dead letters, without any of its code running.
    quarantined: HashMap<String, String>,
    /// The classes that run in runner processes (`plugins.isolate`); `None` when
    /// none do, so that the in-process path only tests this.
    isolation: Option<Isolation>,
}

impl Router {
    pub fn new(
        classes: BTreeMap<String, ClassMapping>,
        plugins: BTreeMap<String, LoadedPlugin>,
    ) -> Self {
        Router {
            classes,
            plugins,
            instances: HashMap::new(),
            quarantined: HashMap::new(),
            isolation: None,
        }
    }

    /// Runs the classes `isolation` covers in runner processes.
    pub fn with_isolation(mut self, isolation: Option<Isolation>) -> Self {
        self.isolation = isolation;
        self
    }

    /// The isolation that runs `cnc_id`'s plugin, if its class runs isolated. A
    /// quarantined class does not: its messages are dead letters without any of its
    /// code running, as in process.
    #[inline]
    pub fn isolated(&mut self, cnc_id: &str) -> Option<&mut Isolation> {
        let isolation = self.isolation.as_mut()?;
        let class = isolation.class_of(cnc_id)?;
        if self.quarantined.contains_key(class) {
            return None;
        }
        Some(isolation)
    }

    /// Stops routing to `class`: its messages become `plugin_quarantined` dead letters
    /// with `detail`.
    pub fn quarantine(&mut self, class: &str, detail: String) {
        self.quarantined.insert(class.to_string(), detail);
    }

    pub fn instance(&mut self, cnc_id: &str) -> Result<&mut Instance, DeadLetter> {
        // Only mapped machines are remembered: a sender inventing new cnc_ids would
        // otherwise grow the map without bound. An unknown one costs a map lookup.
        if !self.classes.contains_key(cnc_id) {
            return Err(unknown_cnc_id(cnc_id));
        }
        if !self.instances.contains_key(cnc_id) {
            let made = self.create(cnc_id);
            self.instances.insert(cnc_id.to_string(), made);
        }
        self.instances
            .get_mut(cnc_id)
            .expect("inserted above")
            .as_mut()
            .map_err(|dl| dl.clone())
    }

    fn create(&self, cnc_id: &str) -> Result<Instance, DeadLetter> {
        let mapping = self
            .classes
            .get(cnc_id)
            .ok_or_else(|| unknown_cnc_id(cnc_id))?;
        let plugin = self.plugins.get(&mapping.class_name).ok_or_else(|| {
            DeadLetter::new(
                Reason::NoPlugin,
                format!(
                    "no loaded plugin has class {:?} (mapped for {cnc_id:?}); put its library in the plugins directory and restart",
                    mapping.class_name
                ),
            )
            .cnc_id(cnc_id)
        })?;
        if let Some(detail) = self.quarantined.get(&mapping.class_name) {
            return Err(DeadLetter::new(Reason::PluginQuarantined, detail.clone())
                .cnc_id(cnc_id)
                .plugin(&plugin.info.class_name, &plugin.info.version));
        }
        new_instance(plugin, cnc_id, mapping).map_err(|detail| {
            DeadLetter::new(Reason::PluginInit, detail)
                .cnc_id(cnc_id)
                .plugin(&plugin.info.class_name, &plugin.info.version)
        })
    }
}

fn unknown_cnc_id(cnc_id: &str) -> DeadLetter {
    DeadLetter::new(
        Reason::UnknownCncId,
        format!("cnc_id {cnc_id:?} is not in cnc_classes.json; add it with its class_name"),
    )
    .cnc_id(cnc_id)
}

/// Calls the plugin's constructor for one machine with its settings.
pub fn new_instance(
    plugin: &LoadedPlugin,
    cnc_id: &str,
    mapping: &ClassMapping,
) -> Result<Instance, String> {
    let settings = mapping.settings.as_ref().map(|s| s.to_string());
    let settings = match &settings {
        Some(s) => ROption::RSome(RStr::from_str(s)),
        None => ROption::RNone,
    };
    let _call = super::services::enter_call(cnc_id);
    match (plugin.module.new())(RStr::from_str(cnc_id), settings) {
        abi_stable::std_types::RResult::ROk(p) => Ok(Instance {
            plugin: p,
            info: plugin.info.clone(),
        }),
        abi_stable::std_types::RResult::RErr(e) => Err(format!(
            "plugin {} {} refused cnc_id {cnc_id:?}: {e}",
            plugin.info.class_name, plugin.info.version
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_cnc_ids_are_dead_letters_and_not_remembered() {
        let mut router = Router::new(BTreeMap::new(), BTreeMap::new());
        for i in 0..1000 {
            let dl = router
                .instance(&format!("INVENTED-{i}"))
                .err()
                .expect("an unknown cnc_id has no instance");
            assert_eq!(dl.reason, Reason::UnknownCncId);
        }
        assert!(router.instances.is_empty());
    }
}
