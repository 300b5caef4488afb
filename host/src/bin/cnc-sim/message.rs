//! One generated message in the wire format (docs/architecture.md, "Wire format"),
//! with the extra payload fields consumers check loss, duplicates and latency by.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::machine::{Machine, MachineClass};
use crate::split_mix::SplitMix64;

/// Every how many messages of one type-B machine an alarm is reported.
const ALARM_EVERY: u64 = 50;

const ALARMS: &[(&str, &str)] = &[
    ("EX1001", "Spindle overload"),
    ("EX1012", "Coolant level low"),
    ("EX2003", "Servo following error on X axis"),
    ("EX2004", "Servo following error on Y axis"),
    ("EX3100", "Tool life expired"),
    ("EX4020", "Door interlock open"),
];

// The collector parses the envelope with its own borrowing type
// (`mes_collector::envelope::Envelope`), which cannot be serialized; the tests
// below check that what this writes is what that reads.
#[derive(Serialize)]
struct Envelope<'a> {
    cnc_id: &'a str,
    part_program: String,
    timestamp: String,
    payload: Payload,
}

#[derive(Serialize)]
struct Alarm {
    code: &'static str,
    message: &'static str,
}

/// Field names and order as the plant's services send them; `feed_rate`,
/// `part_count` and `alarms` only from type-B controllers.
#[derive(Serialize)]
struct Payload {
    status: &'static str,
    spin: u32,
    #[serde(rename = "X-Axis")]
    x_axis: f64,
    #[serde(rename = "Y-Axis")]
    y_axis: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    feed_rate: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    part_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alarms: Option<Vec<Alarm>>,
    /// Unique per message, so that consumers can check for loss and duplicates.
    seq: u64,
    /// Publish time, Unix epoch microseconds, so that consumers can measure latency.
    sent_at_us: u64,
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The message machine `m` sends now, as number `seq`.
pub fn message_for(m: &Machine, rng: &mut SplitMix64, seq: u64) -> Vec<u8> {
    message_at(m, rng, seq, now_us())
}

fn message_at(m: &Machine, rng: &mut SplitMix64, seq: u64, sent_at_us: u64) -> Vec<u8> {
    let spin = m.spin(rng);
    let type_b = m.class == MachineClass::TypeB;
    let alarms = type_b.then(|| {
        if m.messages.is_multiple_of(ALARM_EVERY) {
            let (code, message) = ALARMS[rng.below(ALARMS.len() as u64) as usize];
            vec![Alarm { code, message }]
        } else {
            Vec::new()
        }
    });
    let env = Envelope {
        cnc_id: &m.cnc_id,
        part_program: format!("program_{:02}", m.program),
        timestamp: (sent_at_us / 1_000_000).to_string(),
        payload: Payload {
            status: m.status.as_str(),
            spin,
            x_axis: round3(m.x),
            y_axis: round3(m.y),
            feed_rate: type_b.then_some(m.reported_feed()),
            part_count: type_b.then_some(m.part_count),
            alarms,
            seq,
            sent_at_us,
        },
    };
    serde_json::to_vec(&env).expect("a generated message always serializes")
}

#[cfg(test)]
mod tests {
    use mes_collector::envelope;
    use serde_json::Value;

    use super::{message_at, ALARMS, ALARM_EVERY};
    use crate::machine::Machine;
    use crate::split_mix::SplitMix64;

    const SENT_AT_US: u64 = 1_764_176_400_123_456;

    /// Machine `i` after `steps` messages, and its next message, as the collector
    /// parses it and as JSON.
    fn nth_message(i: u32, steps: u64) -> (Machine, Value) {
        let mut rng = SplitMix64(7);
        let mut m = Machine::new(i, &mut rng);
        for _ in 0..steps {
            m.step(&mut rng);
        }
        let bytes = message_at(&m, &mut rng, 42, SENT_AT_US);
        let env = envelope::parse(&bytes).expect("the collector parses a generated message");
        assert_eq!(env.cnc_id, m.cnc_id);
        assert_eq!(env.part_program, format!("program_{:02}", m.program));
        assert_eq!(env.timestamp, 1_764_176_400);
        let payload = serde_json::from_str(env.payload()).unwrap();
        (m, payload)
    }

    fn keys(payload: &Value) -> Vec<&str> {
        payload
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn a_type_a_message_has_the_basic_fields_only() {
        let (_, payload) = nth_message(1, 1);
        let mut got = keys(&payload);
        got.sort_unstable();
        assert_eq!(
            got,
            ["X-Axis", "Y-Axis", "sent_at_us", "seq", "spin", "status"]
        );
        assert_eq!(payload["seq"], 42);
        assert_eq!(payload["sent_at_us"], SENT_AT_US);
    }

    #[test]
    fn a_type_b_message_adds_feed_rate_part_count_and_alarms() {
        let (m, payload) = nth_message(2, 1);
        for key in ["feed_rate", "part_count", "alarms"] {
            assert!(payload.get(key).is_some(), "{key} missing in {payload}");
        }
        assert_eq!(payload["part_count"], m.part_count);
        assert_eq!(payload["alarms"], Value::Array(Vec::new()));
    }

    #[test]
    fn a_type_b_machine_reports_an_alarm_every_fiftieth_message() {
        let (_, payload) = nth_message(2, ALARM_EVERY);
        let alarms = payload["alarms"].as_array().unwrap();
        assert_eq!(alarms.len(), 1, "{payload}");
        let code = alarms[0]["code"].as_str().unwrap();
        assert!(ALARMS.iter().any(|(c, _)| *c == code), "{code}");
    }
}
