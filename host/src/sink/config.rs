//! `db_config.json`: the database the sink writes to, one server or a cluster's.

use std::{
    collections::HashMap,
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::config::{err, read_secret, relative_to, tls::TlsConfig, ConfigError};

/// `db_config.json`, with the original service's keys.
#[derive(Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct DbConfig {
    /// The server, when there is one; see `hosts` for a cluster.
    #[serde(default)]
    pub host: String,
    #[serde(default = "default_db_port")]
    pub port: u16,
    /// The servers of a cluster (MariaDB Galera, say), as `host` or `host:port`
    /// (`port` by default), tried in this order: the collector writes to the first that
    /// answers, fails over to the next when it stops answering, and returns to an
    /// earlier one when it answers again. Give `host` or `hosts`, not both.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub user: String,
    /// Prefer the `MES_DB_PASSWORD` environment variable or `password_file`.
    #[serde(default)]
    pub password: String,
    /// A file holding the password (readable by its owner only).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    pub database: String,
    /// TLS to the server, with CA verification.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl fmt::Debug for DbConfig {
    // Never print the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let servers: Vec<String> = self
            .endpoints()
            .iter()
            .map(|(h, p)| endpoint_text(h, *p))
            .collect();
        write!(
            f,
            "mysql://{}@{}/{}",
            self.user,
            servers.join(","),
            self.database
        )
    }
}

/// `host:port`, with brackets for an IPv6 address.
pub fn endpoint_text(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl DbConfig {
    /// Where the database is, without the password, for logs and `check`.
    pub fn target(&self) -> String {
        format!("{self:?}")
    }

    /// The servers to try, in order: `hosts`, or `host` alone.
    pub fn endpoints(&self) -> Vec<(String, u16)> {
        if self.hosts.is_empty() {
            return vec![(self.host.clone(), self.port)];
        }
        self.hosts
            .iter()
            .map(|h| parse_endpoint(h, self.port))
            .collect()
    }

    /// Relative file paths are relative to the config dir.
    pub(crate) fn resolve_paths(&mut self, dir: &Path) {
        if let Some(tls) = self.tls.as_mut() {
            tls.resolve_paths(dir);
        }
        if let Some(p) = self.password_file.as_mut() {
            relative_to(dir, p);
        }
    }

    /// The password from `password_file`, with `MES_DB_PASSWORD` over it or over
    /// `password`.
    pub(crate) fn resolve_password(&mut self, env: &HashMap<String, String>) -> Result<(), String> {
        if let Some(file) = &self.password_file {
            self.password = read_secret(file)?;
        }
        if let Some(pw) = env.get("MES_DB_PASSWORD") {
            self.password = pw.clone();
        }
        Ok(())
    }

    pub(crate) fn check(&self, path: &Path) -> Result<(), ConfigError> {
        match (self.host.trim().is_empty(), self.hosts.is_empty()) {
            (true, true) => Err(err(
                path,
                "neither host nor hosts is set; give host (one server) or hosts (the servers of a cluster, tried in order)",
            )),
            (false, false) => Err(err(
                path,
                "both host and hosts are set; give host for one server, or hosts alone for a cluster (put host first in hosts)",
            )),
            _ => {
                if let Some(bad) = self.hosts.iter().find(|h| h.trim().is_empty()) {
                    return Err(err(path, format!("hosts has an empty entry {bad:?}")));
                }
                Ok(())
            }
        }
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn parse_endpoint(text: &str, default_port: u16) -> (String, u16) {
    let text = text.trim();
    if let Some(rest) = text.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after
                .strip_prefix(':')
                .and_then(|p| p.parse().ok())
                .unwrap_or(default_port);
            return (host.to_string(), port);
        }
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(p) => (host.to_string(), p),
            Err(_) => (text.to_string(), default_port),
        },
        _ => (text.to_string(), default_port),
    }
}

fn default_db_port() -> u16 {
    3306
}

#[cfg(test)]
mod endpoint_tests {
    use super::*;

    #[test]
    fn hosts_are_read_with_their_ports_or_the_default() {
        assert_eq!(parse_endpoint("db1", 3306), ("db1".into(), 3306));
        assert_eq!(parse_endpoint("db1:3307", 3306), ("db1".into(), 3307));
        assert_eq!(parse_endpoint("[::1]:3308", 3306), ("::1".into(), 3308));
        assert_eq!(parse_endpoint("[::1]", 3306), ("::1".into(), 3306));
        assert_eq!(parse_endpoint("::1", 3306), ("::1".into(), 3306));
        assert_eq!(endpoint_text("::1", 3306), "[::1]:3306");
    }
}
