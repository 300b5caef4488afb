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
