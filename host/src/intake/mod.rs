//! Where messages enter: the MQTT subscription, which spools every message before
//! acknowledging it.

pub mod config;
pub mod dedup;
pub mod mqtt;
pub mod subscriptions;
