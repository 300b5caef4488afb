//! Log output: `env_logger`'s text by default, or one JSON object per line for log
//! shippers (`--log-format json`).

use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// paho-mqtt turns the C library's tracing up to match the Rust log level, and at
/// `info` that formats a trace line (time, `snprintf`) for every packet only to drop
/// it: a third of the collector's CPU in the benchmark. Its warnings still show.
const DEFAULT_FILTER: &str = "info,paho_mqtt_c=warn";

pub fn init(format: LogFormat) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(DEFAULT_FILTER));
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let line = serde_json::json!({
                "ts": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        });
    }
    builder.init();
}
