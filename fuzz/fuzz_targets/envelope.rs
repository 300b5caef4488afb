//! Arbitrary bytes into the envelope parser, as if they had arrived over MQTT.
//!
//! Never panics; on success the envelope holds what the rest of the host relies on:
//! a non-empty `cnc_id` and `part_program`, and a payload that is the text of a JSON
//! object, which is what a plugin's `payload_as` will parse.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mes_collector::envelope;

fuzz_target!(|data: &[u8]| {
    let env = match envelope::parse(data) {
        Ok(env) => env,
        Err(e) => {
            // The error must render (it goes into a log line and the dead letter).
            let _ = e.to_string();
            return;
        }
    };

    // Whatever parsed was UTF-8 JSON as a whole.
    let text = std::str::from_utf8(data).expect("accepted a message that is not UTF-8");
    assert!(!env.cnc_id.is_empty(), "accepted an empty cnc_id");
    assert!(
        !env.part_program.is_empty(),
        "accepted an empty part_program"
    );

    let payload = env.payload();
    assert!(
        payload.starts_with('{'),
        "payload {payload:?} does not start with '{{'"
    );
    // The payload is an exact slice of the message, not a copy that could differ.
    let start = payload.as_ptr() as usize - text.as_ptr() as usize;
    assert!(start + payload.len() <= text.len());
    assert_eq!(&text[start..start + payload.len()], payload);

    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(value) => assert!(value.is_object(), "accepted payload is not an object"),
        // Known and reported, not crashes: the envelope only checks the payload's JSON
        // grammar (serde_json skips over it for the RawValue), so it accepts payloads
        // that `serde_json::Value`, and so a plugin's `payload_as`, then refuses:
        // nested deeper than serde_json's limit of 128, a number beyond f64's range
        // (`1E704`), or a `\u` escape of an unpaired UTF-16 surrogate (`"\udb7d_"`).
        // Such a message becomes a `plugin_error` dead letter (or a `db_rejected` one
        // where MySQL's JSON type refuses it). Run with FUZZ_STRICT_PAYLOAD=1 to count
        // them as failures. The payload must still be well-formed JSON as far as
        // `IgnoredAny` checks it (grammar, escapes), with none of these limits.
        Err(e) if is_value_limit(&e) => {
            if std::env::var_os("FUZZ_STRICT_PAYLOAD").is_some() {
                panic!("accepted a payload serde_json::Value refuses ({e}): {payload:?}");
            }
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(payload) {
                panic!("accepted payload is not valid JSON ({e}): {payload:?}");
            }
        }
        Err(e) => panic!("accepted payload is not valid JSON ({e}): {payload:?}"),
    }
});

/// Errors of `serde_json::Value` on well-formed JSON it cannot represent.
fn is_value_limit(e: &serde_json::Error) -> bool {
    let msg = e.to_string();
    [
        "recursion limit exceeded",
        "number out of range",
        "lone leading surrogate in hex escape",
        "unexpected end of hex escape",
        "invalid unicode code point",
    ]
    .iter()
    .any(|known| msg.starts_with(known))
}
