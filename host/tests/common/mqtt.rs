//! The test's side of the MQTT broker: its address, the sample messages, publishing.

use std::time::Duration;

use paho_mqtt as mqtt;

use super::unique;

pub const BROKER: &str = "tcp://127.0.0.1:1883";

pub const SAMPLES: [&str; 3] = [
    r#"{"cnc_id": "CNC001","part_program": "program_01","timestamp": "1747379028","payload":{"status": "running","spin":200,"X-Axis":30,"Y-Axis":80}}"#,
    r#"{"cnc_id": "CNC002","part_program": "program_02","timestamp": "1747379030","payload":{"status": "idle","spin":0,"X-Axis":0,"Y-Axis":0}}"#,
    r#"{"cnc_id": "CNC001","part_program": "program_03","timestamp": "1747379035","payload":{"status": "error","spin":100,"X-Axis":25,"Y-Axis":75}}"#,
];

/// Ends the persistent session a collector left on `broker` under `client_id`, so
/// that the broker keeps nothing for it after the test. For `drop`: it never fails.
pub fn forget_session(broker: &str, client_id: &str) {
    if let Ok(cli) = mqtt::Client::new(
        mqtt::CreateOptionsBuilder::new()
            .server_uri(broker)
            .client_id(client_id)
            .persistence(None)
            .finalize(),
    ) {
        let opts = mqtt::ConnectOptionsBuilder::new()
            .clean_session(true)
            .connect_timeout(Duration::from_secs(2))
            .finalize();
        if cli.connect(opts).is_ok() {
            let _ = cli.disconnect(None);
        }
    }
}

/// Publishes at QoS 1 and waits for every acknowledgement.
pub fn publish<M: AsRef<[u8]>>(broker: &str, topic: &str, messages: &[M]) {
    let cli = mqtt::Client::new(
        mqtt::CreateOptionsBuilder::new()
            .server_uri(broker)
            .client_id(format!("pub-{}", unique("p")))
            .persistence(None)
            .finalize(),
    )
    .unwrap();
    cli.connect(
        mqtt::ConnectOptionsBuilder::new()
            .clean_session(true)
            .finalize(),
    )
    .expect("connect to the test broker");
    for m in messages {
        cli.publish(mqtt::Message::new(topic, m.as_ref(), 1))
            .unwrap();
    }
    cli.disconnect(None).unwrap();
}
