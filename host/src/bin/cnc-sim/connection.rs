//! The broker connection: connecting, and the subscribe step `count` and `record`
//! share. TLS and authentication are the collector's own code
//! ([`secured_connect_options`]); the session and timing options are cnc-sim's.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mes_collector::intake::config::BrokerConfig;
use mes_collector::intake::mqtt::secured_connect_options;
use paho_mqtt as mqtt;

use crate::failure::{fail, Result};

/// How long a blocked wait on the broker may go before the connection-lost flag
/// is looked at again; a lost connection never completes pending tokens.
pub const POLL_SLICE: Duration = Duration::from_millis(200);

/// paho's default window, for the subscribing commands: they publish nothing.
const SUBSCRIBER_WINDOW: u32 = 100;

/// Connects with a clean session: the simulator must not pick up messages
/// queued for an earlier run under the same client id, or counts would be off.
/// `window` is the most publishes awaiting acknowledgement at once.
pub fn connect(broker: &BrokerConfig, window: u32) -> Result<mqtt::AsyncClient> {
    // Not the collector's `create_client`: that one never publishes, so it keeps
    // paho's default buffer, which is too small for a publishing window.
    let create = mqtt::CreateOptionsBuilder::new_v3()
        .server_uri(&broker.uri)
        .client_id(&broker.client_id)
        .persistence(mqtt::PersistenceType::None)
        // The C library counts publishes waiting behind max_inflight as
        // "buffered" even while connected, and rejects them past this limit
        // (default 100), so it must hold the whole window.
        .max_buffered_messages(window as i32)
        .finalize();
    let client = mqtt::AsyncClient::new(create).or_else(|e| {
        fail(format!(
            "cannot create an MQTT client for {}: {e}",
            broker.uri
        ))
    })?;

    let mut opts = secured_connect_options(broker).or_else(|e| {
        fail(format!(
            "cannot connect to the broker at {}: {e}",
            broker.uri
        ))
    })?;
    opts.clean_session(true)
        .keep_alive_interval(Duration::from_secs(broker.keep_alive_secs))
        .connect_timeout(Duration::from_secs(10))
        .max_inflight(window as i32);
    if let Err(e) = client.connect(opts.finalize()).wait() {
        return fail(format!(
            "cannot connect to the broker at {}: {e}",
            broker.uri
        ));
    }
    Ok(client)
}

/// A flag paho sets when the connection drops; there is no reconnect, so whoever
/// holds it stops waiting for what can no longer arrive.
pub fn connection_lost_flag(client: &mqtt::AsyncClient) -> Arc<AtomicBool> {
    let lost = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&lost);
    client.set_connection_lost_callback(move |_| {
        flag.store(true, Ordering::SeqCst);
    });
    lost
}

pub type MessageReceiver = mqtt::SyncReceiver<Option<mqtt::Message>>;

/// Connects, subscribes, and prints `ready` on stdout once the broker confirmed
/// the subscription: a publisher started after that loses nothing to this
/// subscriber.
pub fn subscribe_and_print_ready(
    broker: &BrokerConfig,
) -> Result<(mqtt::AsyncClient, MessageReceiver)> {
    let client = connect(broker, SUBSCRIBER_WINDOW)?;
    // Consuming starts before subscribing so that nothing published right
    // after the subscription is confirmed can slip past the receiver.
    let incoming = client.start_consuming();
    let granted = match client.subscribe(broker.topic.as_str(), broker.qos).wait() {
        Ok(rsp) => rsp.subscribe_response(),
        Err(e) => {
            return fail(format!(
                "cannot subscribe to {} on {}: {e}",
                broker.topic, broker.uri
            ))
        }
    };
    if let Some(q) = granted {
        if !(0..=2).contains(&q) {
            return fail(format!(
                "the broker at {} refused the subscription to {} (code {q})",
                broker.uri, broker.topic
            ));
        }
        if q < broker.qos {
            eprintln!(
                "cnc-sim: warning: broker granted QoS {q} instead of {}",
                broker.qos
            );
        }
    }
    println!("ready");
    io::stdout()
        .flush()
        .or_else(|e| fail(format!("cannot write to stdout: {e}")))?;
    Ok((client, incoming))
}

/// Only warns: a command disconnects once everything it waited for is in, so a
/// failed disconnect loses nothing.
pub fn disconnect(client: &mqtt::AsyncClient, uri: &str) {
    if let Err(e) = client.disconnect(None).wait() {
        eprintln!("cnc-sim: warning: disconnect from {uri} failed: {e}");
    }
}
