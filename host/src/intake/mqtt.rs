//! The MQTT subscription: QoS 1, a fixed client id and a persistent session, so the
//! broker keeps what arrives while the collector is away; automatic reconnect.
//!
//! The message callback appends the message to the spool and returns; paho sends the
//! acknowledgement after it returns, so an acknowledged message is on disk. When the
//! spool is full the callback waits, paho stops reading the socket, and the broker
//! holds the rest of the stream.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::Duration,
};

use log::{debug, error, info, warn};
use paho_mqtt as mqtt;

use crate::{
    intake::config::BrokerConfig,
    intake::{dedup::Redelivery, subscriptions::Subscriptions},
    lock,
    metrics::Metrics,
    shutdown::{Backoff, Shutdown},
    spool::Spool,
};

/// How long before the connection closes an acknowledgement is taken to have reached
/// the broker (see [`MqttIntake::stop`]).
const ACK_GRACE: Duration = Duration::from_millis(200);

pub struct MqttIntake {
    client: mqtt::AsyncClient,
}

pub fn create_client(cfg: &BrokerConfig, client_id: &str) -> Result<mqtt::AsyncClient, String> {
    let opts = mqtt::CreateOptionsBuilder::new()
        .server_uri(&cfg.uri)
        .client_id(client_id)
        // Nothing is published by the collector, so no outbound persistence is needed.
        .persistence(None)
        .finalize();
    mqtt::AsyncClient::new(opts)
        .map_err(|e| format!("cannot create MQTT client for {}: {e}", cfg.uri))
}

/// Whether the URI asks for TLS.
fn is_tls(uri: &str) -> bool {
    ["ssl://", "mqtts://", "wss://"]
        .iter()
        .any(|p| uri.starts_with(p))
}

/// paho's TLS options: the CA file (or the system's trust store), an optional client
/// certificate, and server certificate and host name verification, always on unless
/// `verify_hostname` is explicitly false.
fn ssl_options(cfg: &BrokerConfig) -> Result<mqtt::SslOptions, String> {
    let mut b = mqtt::SslOptionsBuilder::new();
    b.enable_server_cert_auth(true);
    if let Some(tls) = &cfg.tls {
        let path_err = |what: &str, p: &std::path::Path, e: mqtt::Error| {
            format!("broker.tls.{what} {}: {e}", p.display())
        };
        if let Some(ca) = &tls.ca_file {
            b.trust_store(ca).map_err(|e| path_err("ca_file", ca, e))?;
        }
        if let Some(cert) = &tls.cert_file {
            b.key_store(cert)
                .map_err(|e| path_err("cert_file", cert, e))?;
        }
        if let Some(key) = &tls.key_file {
            b.private_key(key)
                .map_err(|e| path_err("key_file", key, e))?;
        }
        b.verify(tls.verify_hostname);
    } else {
        b.verify(true);
    }
    Ok(b.finalize())
}

/// Connect options with the broker section's security: TLS (CA, client certificate
/// and key, host name verification) and user name and password (already resolved from
/// `password_file` or the environment, see [`BrokerConfig::resolve_password`]). The
/// collector and `cnc-sim` both start from it, so that whatever connects the
/// collector to a secured broker connects the simulator too; each adds its own session
/// and timing options.
pub fn secured_connect_options(cfg: &BrokerConfig) -> Result<mqtt::ConnectOptionsBuilder, String> {
    let mut b = mqtt::ConnectOptionsBuilder::new();
    if is_tls(&cfg.uri) {
        b.ssl_options(ssl_options(cfg)?);
    } else if cfg.tls.is_some() {
        return Err(format!(
            "broker.tls is set (cnc-sim: --ca-file, --cert-file, --key-file or --verify-hostname) but the broker URI {} is not a TLS URI; use ssl://host:8883 or mqtts://host:8883",
            cfg.uri
        ));
    }
    if let Some(user) = &cfg.username {
        b.user_name(user);
    }
    if let Some(pw) = &cfg.password {
        b.password(pw.as_str());
    }
    Ok(b)
}

pub fn connect_options(
    cfg: &BrokerConfig,
    persistent_session: bool,
) -> Result<mqtt::ConnectOptions, String> {
    let mut b = secured_connect_options(cfg)?;
    b.clean_session(!persistent_session)
        .keep_alive_interval(Duration::from_secs(cfg.keep_alive_secs))
        .connect_timeout(Duration::from_secs(5));
    if persistent_session {
        b.automatic_reconnect(Duration::from_millis(500), Duration::from_secs(30));
    }
    Ok(b.finalize())
}

/// What this collector's session subscribed to before, from the spool directory.
fn remembered_subscriptions(state_dir: &Path, cfg: &BrokerConfig) -> Subscriptions {
    let remembered = Subscriptions::load(state_dir, &cfg.client_id).unwrap_or_else(|e| {
        warn!("{e}");
        Subscriptions::fresh(state_dir, &cfg.client_id)
    });
    if let Some(old) = remembered.other_client_id() {
        warn!(
            "broker.client_id changed from {old:?} to {:?}: the broker may still keep the session of {old:?} and queue messages for it; if no collector uses that id any more, end it with a clean-session connect as {old:?} (e.g. `mosquitto_sub -i {old} -t unused -E`)",
            cfg.client_id
        );
    }
    remembered
}

/// Waits for the broker to confirm each unsubscription, and forgets the filter once it
/// did; one it did not is unsubscribed again at the next start.
fn forget_unsubscribed(
    unsubscribed: Vec<(String, mqtt::Token)>,
    mut remembered: Subscriptions,
    uri: &str,
) {
    for (filter, token) in unsubscribed {
        match token.wait() {
            Ok(_) => {
                info!("unsubscribed from old topic {filter:?} (no longer broker.topic)");
                if let Err(e) = remembered.remove(&filter) {
                    warn!("{e}; {filter:?} will be unsubscribed again at the next start");
                }
            }
            Err(e) => warn!(
                "the broker {uri} did not confirm the unsubscription from old topic {filter:?} ({e}); trying again at the next start"
            ),
        }
    }
}

/// Returning from the callback acknowledges the message, so it only returns once the
/// message is stored: a write error (disk full, say) is retried until it clears.
fn append_until_stored(spool: &Spool, topic: &str, payload: &[u8]) {
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        match spool.append(topic, payload) {
            Ok(_) => {
                if let Some(since) = failing_since {
                    info!(
                        "spool writable again after {:.1} s",
                        since.elapsed().as_secs_f64()
                    );
                }
                return;
            }
            Err(e) => {
                if failing_since.is_none() {
                    error!("cannot append to the spool ({e}); not acknowledging messages until it works again");
                    failing_since = Some(std::time::Instant::now());
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

impl MqttIntake {
    /// Connects and subscribes, retrying with back-off until the broker answers or
    /// `stop` is set. Every message is appended to `spool`. A kept session's
    /// subscriptions that are no longer configured (remembered in `state_dir`, the
    /// spool directory) are unsubscribed.
    pub fn start(
        cfg: &BrokerConfig,
        spool: Spool,
        redelivery: Redelivery,
        metrics: Arc<Metrics>,
        max_message_bytes: usize,
        stop: &Shutdown,
        state_dir: &Path,
    ) -> Result<Option<MqttIntake>, String> {
        let client = create_client(cfg, &cfg.client_id)?;
        let topic = cfg.topic.clone();
        let qos = cfg.qos;
        let uri = cfg.uri.clone();
        let first_done = Arc::new(AtomicBool::new(false));
        let first = first_done.clone();
        let redelivery = Arc::new(Mutex::new(redelivery));
        let on_connect = redelivery.clone();
        let m = metrics.clone();
        client.set_connected_callback(move |c| {
            lock(&on_connect).connected();
            m.set_broker_up(true);
            // The first subscription is made (and waited for) by `start`; after a
            // reconnect, subscribe again in case the broker lost the session.
            if first.load(Ordering::SeqCst) {
                m.broker_reconnects.inc();
                c.subscribe(&topic, qos);
                info!("reconnected to MQTT broker {uri}; subscribing to {topic:?} again");
            }
        });
        let uri = cfg.uri.clone();
        let m = metrics.clone();
        client.set_connection_lost_callback(move |_| {
            m.set_broker_up(false);
            warn!("lost connection to MQTT broker {uri}; reconnecting with back-off");
        });
        client.set_message_callback(move |_, msg| {
            if let Some(msg) = msg {
                // An oversize message is dead-lettered by the dispatcher; spooling one
                // byte past the limit is enough to tell, and keeps a hostile sender
                // from filling the spool.
                let payload = &msg.payload()[..msg.payload().len().min(max_message_bytes + 1)];
                let mut dedup = lock(&redelivery);
                if dedup.is_redelivery(msg.topic(), payload) {
                    metrics.redeliveries_dropped.inc();
                    debug!(
                        "dropped a redelivery of an already spooled message ({} so far)",
                        dedup.dropped
                    );
                    return;
                }
                append_until_stored(&spool, msg.topic(), payload);
                dedup.appended(msg.topic(), payload);
                metrics.received.inc();
            }
        });
        let opts = connect_options(cfg, true)?;
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut warned = false;
        loop {
            match client.connect(opts.clone()).wait() {
                Ok(response) => {
                    let session_present = response
                        .connect_response()
                        .is_some_and(|r| r.session_present);
                    let configured = vec![cfg.topic.clone()];
                    let mut remembered = remembered_subscriptions(state_dir, cfg);
                    if let Err(e) = remembered.add(&configured) {
                        warn!(
                            "{e}; a later change of broker.topic cannot unsubscribe {:?}",
                            cfg.topic
                        );
                    }
                    let subscribed = client.subscribe(&cfg.topic, cfg.qos);
                    let stale = if session_present {
                        remembered.stale(&configured)
                    } else {
                        // A new session holds no subscription but those just made.
                        if let Err(e) = remembered.replace(&configured) {
                            warn!("{e}");
                        }
                        Vec::new()
                    };
                    let unsubscribed: Vec<(String, mqtt::Token)> = stale
                        .into_iter()
                        .map(|f| {
                            let token = client.unsubscribe(f.as_str());
                            (f, token)
                        })
                        .collect();
                    if session_present {
                        // The broker kept the session, and sends what it queued for it
                        // before the acknowledgement of this subscription, each message
                        // at the spool's speed (an fsync each with spool.fsync always):
                        // waiting for it could take longer than any timeout. The
                        // subscription is made again all the same, since Mosquitto does
                        // not keep shared subscriptions across its own restart.
                        let (topic, uri) = (cfg.topic.clone(), cfg.uri.clone());
                        thread::spawn(move || {
                            if let Err(e) = subscribed.wait() {
                                error!(
                                    "the broker {uri} refused the subscription to {topic:?}: {e}"
                                );
                            }
                            forget_unsubscribed(unsubscribed, remembered, &uri);
                        });
                    } else {
                        subscribed.wait_for(Duration::from_secs(30)).map_err(|e| {
                            format!("cannot subscribe to {:?} on {}: {e}", cfg.topic, cfg.uri)
                        })?;
                    }
                    first_done.store(true, Ordering::SeqCst);
                    info!(
                        "connected to MQTT broker {} as {:?}, subscribed to {:?} at QoS {}",
                        cfg.uri, cfg.client_id, cfg.topic, cfg.qos
                    );
                    return Ok(Some(MqttIntake { client }));
                }
                Err(e) => {
                    if !warned {
                        warn!(
                            "cannot connect to MQTT broker {} ({e}); retrying with back-off",
                            cfg.uri
                        );
                        warned = true;
                    }
                }
            }
            if !backoff.wait(stop) {
                return Ok(None);
            }
        }
    }

    /// Stops taking messages. The session stays on the broker, which keeps what
    /// arrives until the collector is back. When the connection was closed cleanly,
    /// the spool position before which every record's acknowledgement surely reached
    /// the broker; the records from it on may come again after the restart.
    ///
    /// paho writes a message's acknowledgement as its callback returns, but the broker
    /// reads it a moment later, and messages keep coming until the socket closes.
    /// Closing a socket with unread data in it sends a reset, and a broker that had
    /// not yet read the last acknowledgements loses them (`delivery.rs`'s SIGTERM test
    /// once stored 7 of 3,000 messages twice after a "clean" stop). So the records
    /// spooled until then are acknowledged with [`ACK_GRACE`] to spare, and only those
    /// spooled during it are left for the redelivery check.
    pub fn stop(self, spool: &Spool) -> Option<u64> {
        let acknowledged_before = spool.next_seq();
        thread::sleep(ACK_GRACE);
        let opts = mqtt::DisconnectOptionsBuilder::new()
            .timeout(Duration::from_secs(2))
            .finalize();
        match self
            .client
            .disconnect(opts)
            .wait_for(Duration::from_secs(5))
        {
            Ok(_) => {
                let unsure = spool.next_seq() - acknowledged_before;
                info!("disconnected from the MQTT broker; {unsure} messages spooled in its last {} ms may come again, and are checked for after the restart", ACK_GRACE.as_millis());
                Some(acknowledged_before)
            }
            Err(e) => {
                warn!("disconnecting from the MQTT broker: {e}");
                None
            }
        }
    }
}
