//! Log output: `env_logger`'s text by default, or one JSON object per line for log
//! shippers (`--log-format json`).

use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// `RUST_LOG` (default `info`), with paho's C library held at `warn` unless it names
/// `paho_mqtt_c` itself: paho-mqtt turns the C library's tracing up to match the Rust
/// log level, and at `info` that formats a trace line (time, `snprintf`) for every
/// packet only to drop it, a third of the collector's CPU in the benchmark.
pub fn filter(rust_log: Option<&str>) -> String {
    let base = rust_log.filter(|s| !s.trim().is_empty()).unwrap_or("info");
    if base.contains("paho_mqtt_c") {
        base.to_string()
    } else {
        format!("{base},paho_mqtt_c=warn")
    }
}

static FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// The `--log-format` this process was started with, as given on the command line,
/// for the plugin runners it starts (so that their lines match the collector's).
pub fn format_name() -> &'static str {
    match FORMAT.get() {
        Some(LogFormat::Json) => "json",
        _ => "text",
    }
}

pub fn init(format: LogFormat) {
    let _ = FORMAT.set(format);
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&filter(std::env::var("RUST_LOG").ok().as_deref()));
    if format == LogFormat::Json {
        builder.format(|buf, record| {
            let mut line = serde_json::json!({
                "ts": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            // Plugin records carry `plugin` and `cnc_id` (see plugins::services).
            let _ = record.key_values().visit(&mut JsonFields(&mut line));
            writeln!(buf, "{line}")
        });
    }
    builder.init();
}

/// Adds a record's key-values to its JSON line as fields of their own.
struct JsonFields<'a>(&'a mut serde_json::Value);

impl<'kvs> log::kv::VisitSource<'kvs> for JsonFields<'_> {
    fn visit_pair(
        &mut self,
        key: log::kv::Key<'kvs>,
        value: log::kv::Value<'kvs>,
    ) -> Result<(), log::kv::Error> {
        self.0[key.as_str()] = serde_json::Value::String(value.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::filter;

    #[test]
    fn paho_trace_stays_at_warn_unless_asked_for() {
        assert_eq!(filter(None), "info,paho_mqtt_c=warn");
        assert_eq!(filter(Some("debug")), "debug,paho_mqtt_c=warn");
        assert_eq!(
            filter(Some("info,paho_mqtt_c=trace")),
            "info,paho_mqtt_c=trace"
        );
    }
}
