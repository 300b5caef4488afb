//! Where messages enter: the MQTT subscription.

pub mod mqtt;

/// One message as it arrived from the broker.
#[derive(Debug)]
pub struct Incoming {
    pub topic: String,
    pub payload: Vec<u8>,
}
