//! The `broker` section of `collector.json`: where the intake subscribes, and how.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::config::{read_secret, relative_to, tls::TlsConfig};

#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub uri: String,
    pub client_id: String,
    #[serde(default = "default_topic")]
    pub topic: String,
    #[serde(default = "default_qos")]
    pub qos: i32,
    #[serde(default)]
    pub username: Option<String>,
    /// Prefer the `MES_MQTT_PASSWORD` environment variable or `password_file`.
    #[serde(default)]
    pub password: Option<String>,
    /// A file holding the password (readable by its owner only).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// TLS for `ssl://` and `mqtts://` URIs.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    #[serde(default = "default_keep_alive_secs")]
    pub keep_alive_secs: u64,
}

impl BrokerConfig {
    /// Relative file paths are relative to the config dir.
    pub(crate) fn resolve_paths(&mut self, dir: &Path) {
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve_paths(dir);
        }
        if let Some(p) = self.password_file.as_mut() {
            relative_to(dir, p);
        }
    }

    /// What is wrong with the section, saying how to fix it.
    pub(crate) fn check(&self) -> Result<(), String> {
        if !(0..=2).contains(&self.qos) {
            return Err(format!(
                "broker.qos is {}; use 0, 1 or 2 (1 is recommended)",
                self.qos
            ));
        }
        if self.client_id.trim().is_empty() {
            return Err(
                "broker.client_id is empty; the persistent session needs a fixed, unique client id"
                    .into(),
            );
        }
        if self.topic.trim().is_empty() {
            return Err("broker.topic is empty".into());
        }
        Ok(())
    }

    /// The password from `password_file`, with `MES_MQTT_PASSWORD` over it or over
    /// `password`.
    pub fn resolve_password(&mut self, env: &HashMap<String, String>) -> Result<(), String> {
        if let Some(file) = &self.password_file {
            self.password = Some(read_secret(file)?);
        }
        if let Some(pw) = env.get("MES_MQTT_PASSWORD") {
            self.password = Some(pw.clone());
        }
        Ok(())
    }
}

/// The topic the CNC services publish to unless told otherwise.
pub const DEFAULT_TOPIC: &str = "sensor/CNC";

fn default_topic() -> String {
    DEFAULT_TOPIC.into()
}

fn default_qos() -> i32 {
    1
}

fn default_keep_alive_secs() -> u64 {
    20
}
