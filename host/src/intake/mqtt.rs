//! The MQTT subscription: QoS 1, a fixed client id and a persistent session, so the
//! broker keeps what arrives while the collector is away; automatic reconnect.
//!
//! The message callback only hands the message to a bounded queue. When the queue is
//! full the callback waits, paho stops reading the socket, and the broker holds the
//! rest of the stream.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use crossbeam_channel::Sender;
use log::{info, warn};
use paho_mqtt as mqtt;

use crate::{config::BrokerConfig, intake::Incoming};

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

pub fn connect_options(cfg: &BrokerConfig, persistent_session: bool) -> mqtt::ConnectOptions {
    let mut b = mqtt::ConnectOptionsBuilder::new();
    b.clean_session(!persistent_session)
        .keep_alive_interval(Duration::from_secs(cfg.keep_alive_secs))
        .connect_timeout(Duration::from_secs(5));
    if persistent_session {
        b.automatic_reconnect(Duration::from_millis(500), Duration::from_secs(30));
    }
    if let Some(user) = &cfg.username {
        b.user_name(user);
    }
    if let Some(pw) = &cfg.password {
        b.password(pw.as_str());
    }
    b.finalize()
}

impl MqttIntake {
    /// Connects and subscribes, retrying with back-off until the broker answers or
    /// `stop` is set. Every message goes to `queue`.
    pub fn start(
        cfg: &BrokerConfig,
        queue: Sender<Incoming>,
        stop: &AtomicBool,
    ) -> Result<Option<MqttIntake>, String> {
        let client = create_client(cfg, &cfg.client_id)?;
        let topic = cfg.topic.clone();
        let qos = cfg.qos;
        let uri = cfg.uri.clone();
        let first_done = Arc::new(AtomicBool::new(false));
        let first = first_done.clone();
        client.set_connected_callback(move |c| {
            // The first subscription is made (and waited for) by `start`; after a
            // reconnect, subscribe again in case the broker lost the session.
            if first.load(Ordering::SeqCst) {
                c.subscribe(&topic, qos);
                info!("reconnected to MQTT broker {uri}; subscribing to {topic:?} again");
            }
        });
        let uri = cfg.uri.clone();
        client.set_connection_lost_callback(move |_| {
            warn!("lost connection to MQTT broker {uri}; reconnecting with back-off");
        });
        client.set_message_callback(move |_, msg| {
            if let Some(msg) = msg {
                let incoming = Incoming {
                    topic: msg.topic().to_string(),
                    payload: msg.payload().to_vec(),
                };
                // Blocks while the dispatcher is behind; fails only at shutdown, after
                // the dispatcher is gone.
                let _ = queue.send(incoming);
            }
        });
        let opts = connect_options(cfg, true);
        let mut backoff = Duration::from_millis(500);
        let mut warned = false;
        loop {
            match client.connect(opts.clone()).wait() {
                Ok(_) => {
                    client
                        .subscribe(&cfg.topic, cfg.qos)
                        .wait_for(Duration::from_secs(30))
                        .map_err(|e| {
                            format!("cannot subscribe to {:?} on {}: {e}", cfg.topic, cfg.uri)
                        })?;
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
            let until = std::time::Instant::now() + backoff;
            while std::time::Instant::now() < until {
                if stop.load(Ordering::Relaxed) {
                    return Ok(None);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Stops taking messages. The session stays on the broker, which keeps what
    /// arrives until the collector is back.
    pub fn stop(self) {
        let opts = mqtt::DisconnectOptionsBuilder::new()
            .timeout(Duration::from_secs(2))
            .finalize();
        if let Err(e) = self
            .client
            .disconnect(opts)
            .wait_for(Duration::from_secs(5))
        {
            warn!("disconnecting from the MQTT broker: {e}");
        }
    }
}
