//! The wire format: one JSON object per MQTT message with `cnc_id`, `part_program`,
//! `timestamp` and `payload`. Parsed once, borrowing from the message bytes; the
//! payload is handed to the plugin as the exact text that arrived.

use std::{borrow::Cow, fmt};

use serde::{de, Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::dead_letter::Reason;

#[derive(Debug, Deserialize)]
pub struct Envelope<'a> {
    #[serde(borrow)]
    pub cnc_id: Cow<'a, str>,
    #[serde(borrow)]
    pub part_program: Cow<'a, str>,
    #[serde(deserialize_with = "epoch_seconds")]
    pub timestamp: i64,
    #[serde(borrow)]
    pub payload: &'a RawValue,
}

impl Envelope<'_> {
    pub fn payload(&self) -> &str {
        self.payload.get()
    }
}

/// Why a message is not a valid envelope.
#[derive(Debug)]
pub struct EnvelopeError {
    pub reason: Reason,
    pub detail: String,
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.detail)
    }
}

/// Bounds on what a message may be, checked before it is parsed (`limits` in
/// `collector.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Larger messages are dead-lettered as `too_large`.
    pub max_message_bytes: usize,
    /// Deeper JSON nesting (objects and arrays) is dead-lettered as `too_deep`.
    pub max_json_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 256 * 1024,
            max_json_depth: 32,
        }
    }
}

/// Refuses a message over the size or nesting limits, before any parser (the host's
/// or a plugin's) spends time or stack on it.
pub fn check_limits(bytes: &[u8], limits: &Limits) -> Result<(), EnvelopeError> {
    if bytes.len() > limits.max_message_bytes {
        return Err(EnvelopeError {
            reason: Reason::TooLarge,
            detail: format!(
                "message of {} bytes or more; the limit is {} (limits.max_message_bytes)",
                bytes.len(),
                limits.max_message_bytes
            ),
        });
    }
    if let Some(depth) = nesting_exceeds(bytes, limits.max_json_depth) {
        return Err(EnvelopeError {
            reason: Reason::TooDeep,
            detail: format!(
                "JSON nested {depth} levels deep; the limit is {} (limits.max_json_depth)",
                limits.max_json_depth
            ),
        });
    }
    Ok(())
}

/// The depth at which `bytes` first nests deeper than `max`, counting `{` and `[`
/// outside strings. Linear, no allocation, and indifferent to whether the rest is
/// valid JSON (the parser says that afterwards).
fn nesting_exceeds(bytes: &[u8], max: usize) -> Option<usize> {
    // Nesting deeper than `max` takes more than `max` opening brackets; counting them
    // (strings included, which can only overcount) is vectorised and settles every
    // ordinary message without the byte-by-byte walk, which was 8% of the collector's
    // instructions per message.
    memchr::memchr2_iter(b'{', b'[', bytes).nth(max)?;
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return Some(depth);
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

pub fn parse(bytes: &[u8]) -> Result<Envelope<'_>, EnvelopeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| EnvelopeError {
        reason: Reason::NotJson,
        detail: format!("message is not UTF-8 ({e})"),
    })?;
    let env: Envelope<'_> = serde_json::from_str(text).map_err(|e| EnvelopeError {
        reason: if e.is_data() {
            Reason::BadEnvelope
        } else {
            Reason::NotJson
        },
        detail: e.to_string(),
    })?;
    if !env.payload.get().starts_with('{') {
        return Err(EnvelopeError {
            reason: Reason::BadEnvelope,
            detail: "field `payload` must be a JSON object".into(),
        });
    }
    for (name, value) in [("cnc_id", &env.cnc_id), ("part_program", &env.part_program)] {
        if value.is_empty() {
            return Err(EnvelopeError {
                reason: Reason::BadEnvelope,
                detail: format!("field `{name}` is empty"),
            });
        }
    }
    Ok(env)
}

/// `timestamp` is epoch seconds, as a string of digits or a number.
fn epoch_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = i64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Unix epoch seconds as a number or a string of digits")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| E::custom(format!("timestamp {v} is out of range")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i64, E> {
            if v.is_finite() && v.abs() < 9.0e15 {
                Ok(v.floor() as i64)
            } else {
                Err(E::custom(format!("timestamp {v} is out of range")))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i64, E> {
            let t = v.trim();
            if let Ok(i) = t.parse::<i64>() {
                return Ok(i);
            }
            match t.parse::<f64>() {
                Ok(f) => self.visit_f64(f),
                Err(_) => Err(E::custom(format!(
                    "timestamp {v:?} is not Unix epoch seconds"
                ))),
            }
        }
    }
    d.deserialize_any(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{"cnc_id": "CNC001","part_program": "program_01","timestamp": "1747379028","payload":{"status": "running","spin":200,"X-Axis":30,"Y-Axis":80}}"#;

    #[test]
    fn parses_the_sample_and_keeps_the_payload_text() {
        let env = parse(SAMPLE.as_bytes()).unwrap();
        assert_eq!(env.cnc_id, "CNC001");
        assert_eq!(env.part_program, "program_01");
        assert_eq!(env.timestamp, 1747379028);
        assert_eq!(
            env.payload(),
            r#"{"status": "running","spin":200,"X-Axis":30,"Y-Axis":80}"#
        );
        assert!(matches!(env.cnc_id, Cow::Borrowed(_)));
    }

    #[test]
    fn limits_refuse_oversize_and_deep_messages_only() {
        let limits = Limits {
            max_message_bytes: 200,
            max_json_depth: 4,
        };
        assert!(check_limits(SAMPLE.as_bytes(), &limits).is_ok());
        let big = "x".repeat(201);
        assert_eq!(
            check_limits(big.as_bytes(), &limits).unwrap_err().reason,
            Reason::TooLarge
        );
        let deep = br#"{"a":{"b":[[{"c":1}]]}}"#;
        let e = check_limits(deep, &limits).unwrap_err();
        assert_eq!(e.reason, Reason::TooDeep);
        assert!(e.detail.contains("5 levels"), "{e}");
        // Brackets inside strings, escaped quotes included, do not count.
        let quoted = br#"{"a":"[[[[[[\"{{{{{","b":[1]}"#;
        assert!(check_limits(quoted, &limits).is_ok());
        // Exactly at the limit passes; more brackets than the limit side by side are
        // not nesting.
        assert!(check_limits(br#"{"a":{"b":[[1]]}}"#, &limits).is_ok());
        assert!(check_limits(br#"{"a":[[1],[2],{"c":[3]}],"b":{}}"#, &limits).is_ok());
        assert_eq!(
            check_limits(br#"[{"a":[1],"b":{"c":[{"d":2}]}}]"#, &limits)
                .unwrap_err()
                .reason,
            Reason::TooDeep
        );
    }

    #[test]
    fn timestamp_as_number_string_or_float() {
        for (ts, want) in [
            ("1747379028", 1747379028),
            ("\"42\"", 42),
            ("1.9", 1),
            ("\" 7 \"", 7),
        ] {
            let msg =
                format!(r#"{{"cnc_id":"a","part_program":"p","timestamp":{ts},"payload":{{}}}}"#);
            assert_eq!(parse(msg.as_bytes()).unwrap().timestamp, want, "{ts}");
        }
    }

    #[test]
    fn classifies_failures() {
        let cases: &[(&[u8], Reason, &str)] = &[
            (b"not json", Reason::NotJson, "expected"),
            (b"\xff\xfe", Reason::NotJson, "UTF-8"),
            (
                br#"{"cnc_id":"a","part_program":"p","timestamp":1}"#,
                Reason::BadEnvelope,
                "payload",
            ),
            (
                br#"{"cnc_id":7,"part_program":"p","timestamp":1,"payload":{}}"#,
                Reason::BadEnvelope,
                "invalid type",
            ),
            (
                br#"{"cnc_id":"a","part_program":"p","timestamp":"soon","payload":{}}"#,
                Reason::BadEnvelope,
                "soon",
            ),
            (
                br#"{"cnc_id":"a","part_program":"p","timestamp":1,"payload":[1]}"#,
                Reason::BadEnvelope,
                "object",
            ),
            (
                br#"{"cnc_id":"","part_program":"p","timestamp":1,"payload":{}}"#,
                Reason::BadEnvelope,
                "cnc_id",
            ),
            (br#"[1,2]"#, Reason::BadEnvelope, "invalid type"),
        ];
        for (bytes, reason, needle) in cases {
            let e = parse(bytes).unwrap_err();
            assert_eq!(
                e.reason,
                *reason,
                "{:?}: {e}",
                String::from_utf8_lossy(bytes)
            );
            assert!(
                e.detail.contains(needle),
                "{:?}: {e}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}
