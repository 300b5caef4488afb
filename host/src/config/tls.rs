//! The `tls` sections of `collector.json`'s broker and of `db_config.json`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::relative_to;

/// TLS settings of a connection (broker or database).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA(s) that signed the server's certificate. Without it the
    /// system's trust store is used.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The client's certificate (PEM), for servers that require client certificates.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// The client's private key (PEM).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Check that the server's certificate names the host connected to. Turning this
    /// off lets anyone with a certificate from the same CA pose as the server.
    #[serde(default = "yes")]
    pub verify_hostname: bool,
}

fn yes() -> bool {
    true
}

/// As a `tls` section of `{}` reads: the system's trust store, no client
/// certificate, host names verified.
impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            ca_file: None,
            cert_file: None,
            key_file: None,
            verify_hostname: yes(),
        }
    }
}

impl TlsConfig {
    /// Relative file paths are relative to the config dir.
    pub(crate) fn resolve_paths(&mut self, dir: &Path) {
        for p in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file]
            .into_iter()
            .flatten()
        {
            relative_to(dir, p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TlsConfig;

    #[test]
    fn the_default_is_what_an_empty_section_reads_as() {
        let read: TlsConfig = serde_json::from_str("{}").unwrap();
        let default = TlsConfig::default();
        assert_eq!(
            (
                read.ca_file,
                read.cert_file,
                read.key_file,
                read.verify_hostname
            ),
            (
                default.ca_file,
                default.cert_file,
                default.key_file,
                default.verify_hostname
            )
        );
        assert!(default.verify_hostname);
    }
}
