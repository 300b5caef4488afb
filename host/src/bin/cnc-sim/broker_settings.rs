//! Where and how to connect: the connection options over a collector's broker
//! section (`--broker-config`), or over cnc-sim's own defaults.
//!
//! The result is the collector's own [`BrokerConfig`], loaded by the collector's
//! [`load_broker`], so that cnc-sim reaches a secured broker exactly as the
//! collector does (see [`crate::connection::connect`]).

use std::collections::HashMap;

use mes_collector::{
    config::{load_broker, read_secret, tls::TlsConfig},
    intake::config::{BrokerConfig, DEFAULT_TOPIC},
};

use crate::cli::ConnectionArgs;
use crate::failure::{fail, Result};

// The help texts of --broker and --topic name these defaults.
const DEFAULT_BROKER: &str = "tcp://127.0.0.1:1883";
const DEFAULT_KEEP_ALIVE_SECS: u64 = 30;

/// The broker settings from `args`, `env` standing for the process environment
/// (`MES_MQTT_PASSWORD`).
pub fn resolve(args: &ConnectionArgs, env: &HashMap<String, String>) -> Result<BrokerConfig> {
    let mut cfg = match &args.broker_config {
        Some(path) => load_broker(path, env).or_else(|e| fail(e.to_string()))?,
        None => {
            let mut cfg = BrokerConfig {
                uri: DEFAULT_BROKER.into(),
                client_id: String::new(),
                topic: DEFAULT_TOPIC.into(),
                qos: 1,
                username: None,
                password: None,
                password_file: None,
                tls: None,
                keep_alive_secs: DEFAULT_KEEP_ALIVE_SECS,
            };
            // Without a password file this only takes MES_MQTT_PASSWORD, and cannot fail.
            cfg.resolve_password(env).or_else(fail)?;
            cfg
        }
    };
    // Never the collector's: connecting with its client id would end its session.
    cfg.client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| format!("cnc-sim-{}", std::process::id()));
    cfg.qos = args.qos;
    if let Some(uri) = &args.broker {
        cfg.uri = uri.clone();
    }
    cfg.topic = match &args.topic {
        Some(topic) => topic.clone(),
        None => {
            let topic = unshared(&cfg.topic);
            if topic != cfg.topic {
                eprintln!(
                    "cnc-sim: using topic {topic} of the collectors' shared subscription {}",
                    cfg.topic
                );
            }
            topic.to_string()
        }
    };
    if let Some(user) = &args.username {
        cfg.username = Some(user.clone());
    }
    if let Some(file) = &args.password_file {
        cfg.password = Some(read_secret(file).or_else(fail)?);
    }
    if let Some(password) = &args.password {
        cfg.password = Some(password.clone());
    }
    override_tls(args, &mut cfg);
    Ok(cfg)
}

/// Any TLS option turns TLS settings on, starting from the collector's defaults
/// (host name verification on) when the broker section had none.
fn override_tls(args: &ConnectionArgs, cfg: &mut BrokerConfig) {
    if args.ca_file.is_none()
        && args.cert_file.is_none()
        && args.key_file.is_none()
        && args.verify_hostname.is_none()
    {
        return;
    }
    let tls = cfg.tls.get_or_insert_with(TlsConfig::default);
    for (from, to) in [
        (&args.ca_file, &mut tls.ca_file),
        (&args.cert_file, &mut tls.cert_file),
        (&args.key_file, &mut tls.key_file),
    ] {
        if from.is_some() {
            to.clone_from(from);
        }
    }
    if let Some(verify) = args.verify_hostname {
        tls.verify_hostname = verify;
    }
}

/// `$share/<group>/<filter>` → `<filter>`: a member of the collectors' share group
/// would receive (and take from them) only some of the messages.
fn unshared(topic: &str) -> &str {
    topic
        .strip_prefix("$share/")
        .and_then(|rest| rest.split_once('/'))
        .map_or(topic, |(_, filter)| filter)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::{resolve, unshared};
    use crate::cli::Cli;
    use crate::failure::Result;
    use mes_collector::intake::config::BrokerConfig;

    /// The broker settings for `cnc-sim <args> classes` in `env`.
    fn resolved(args: &[&str], env: &[(&str, &str)]) -> Result<BrokerConfig> {
        let cli = Cli::try_parse_from(["cnc-sim"].iter().chain(args).chain(&["classes"]))
            .expect("valid arguments");
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(&cli.connection, &env)
    }

    fn ok(args: &[&str], env: &[(&str, &str)]) -> BrokerConfig {
        resolved(args, env).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn without_options_it_is_the_local_broker_and_the_collectors_default_topic() {
        let cfg = ok(&[], &[]);
        assert_eq!(cfg.uri, "tcp://127.0.0.1:1883");
        assert_eq!(cfg.topic, "sensor/CNC");
        assert_eq!(cfg.qos, 1);
        assert_eq!(cfg.client_id, format!("cnc-sim-{}", std::process::id()));
        assert!(cfg.password.is_none() && cfg.username.is_none() && cfg.tls.is_none());
    }

    #[test]
    fn the_password_option_wins_over_the_environment() {
        let env = [("MES_MQTT_PASSWORD", "from-env")];
        assert_eq!(ok(&[], &env).password.as_deref(), Some("from-env"));
        let cfg = ok(&["--password", "from-flag"], &env);
        assert_eq!(cfg.password.as_deref(), Some("from-flag"));
    }

    #[test]
    fn one_tls_option_turns_tls_on_with_host_name_verification() {
        let tls = ok(&["--ca-file", "/ca.pem"], &[]).tls.expect("tls on");
        assert_eq!(tls.ca_file.as_deref(), Some("/ca.pem".as_ref()));
        assert!(tls.verify_hostname);
        let tls = ok(&["--verify-hostname", "false"], &[])
            .tls
            .expect("tls on");
        assert!(!tls.verify_hostname && tls.ca_file.is_none());
    }

    #[test]
    fn a_collectors_broker_section_is_taken_without_its_client_id_or_share_group() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("collector.json"),
            r#"{"broker": {"uri": "tcp://broker:1883", "client_id": "collector-1",
                "topic": "$share/collectors/plant/+/cnc", "username": "mes"},
                "plugins_dir": "plugins"}"#,
        )
        .unwrap();
        let config = dir.path().to_str().unwrap();
        let cfg = ok(&["--broker-config", config], &[]);
        assert_eq!(cfg.uri, "tcp://broker:1883");
        assert_eq!(cfg.topic, "plant/+/cnc");
        assert_eq!(cfg.username.as_deref(), Some("mes"));
        assert_ne!(cfg.client_id, "collector-1");
        let cfg = ok(
            &["--broker-config", config, "--topic", "t", "--qos", "0"],
            &[],
        );
        assert_eq!((cfg.topic.as_str(), cfg.qos), ("t", 0));
    }

    #[test]
    fn only_a_share_group_prefix_is_removed() {
        assert_eq!(unshared("$share/g/sensor/CNC"), "sensor/CNC");
        assert_eq!(unshared("sensor/CNC"), "sensor/CNC");
        assert_eq!(unshared("$share/g"), "$share/g");
    }
}
