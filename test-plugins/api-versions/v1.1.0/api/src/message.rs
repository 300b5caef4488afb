//! The message a plugin is handed: one MQTT message whose envelope the host has
//! already parsed and checked.

use abi_stable::{std_types::RStr, StableAbi};

use crate::Error;

/// One message from a CNC machine, borrowed from the host for the duration of a call.
///
/// The host has checked the envelope (`cnc_id`, `part_program`, `timestamp`,
/// `payload`); what is inside `payload` is the plugin's business.
///
/// ```
/// use mes_plugin_api::Message;
///
/// let msg = Message::new(
///     "sensor/CNC", "CNC001", "program_01", 1747379028,
///     r#"{"status":"running","spin":200}"#,
/// );
/// assert_eq!(msg.cnc_id(), "CNC001");
/// let payload: serde_json::Value = msg.payload_as().unwrap();
/// assert_eq!(payload["spin"], 200);
/// ```
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy)]
pub struct Message<'a> {
    topic: RStr<'a>,
    cnc_id: RStr<'a>,
    part_program: RStr<'a>,
    timestamp: i64,
    payload: RStr<'a>,
}

impl<'a> Message<'a> {
    /// Builds a message. The host does this for every MQTT message; plugin tests can
    /// do it too.
    pub fn new(
        topic: &'a str,
        cnc_id: &'a str,
        part_program: &'a str,
        timestamp: i64,
        payload: &'a str,
    ) -> Self {
        Message {
            topic: RStr::from_str(topic),
            cnc_id: RStr::from_str(cnc_id),
            part_program: RStr::from_str(part_program),
            timestamp,
            payload: RStr::from_str(payload),
        }
    }

    /// The MQTT topic the message arrived on.
    pub fn topic(&self) -> &'a str {
        self.topic.as_str()
    }

    /// The machine that sent the message, as mapped in `cnc_classes.json`.
    pub fn cnc_id(&self) -> &'a str {
        self.cnc_id.as_str()
    }

    /// The part program running on the machine when it sent the message.
    pub fn part_program(&self) -> &'a str {
        self.part_program.as_str()
    }

    /// When the machine sent the message, in Unix epoch seconds.
    pub fn timestamp(&self) -> i64 {
        self.timestamp
    }

    /// The `payload` object exactly as it arrived, as JSON text.
    pub fn payload(&self) -> &'a str {
        self.payload.as_str()
    }

    /// Parses the payload into a type of the plugin's own.
    ///
    /// ```
    /// use mes_plugin_api::Message;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Payload { status: String, spin: f64 }
    ///
    /// let msg = Message::new("t", "CNC001", "p", 0, r#"{"status":"idle","spin":0}"#);
    /// let p: Payload = msg.payload_as().unwrap();
    /// assert_eq!((p.status.as_str(), p.spin), ("idle", 0.0));
    /// ```
    pub fn payload_as<T: serde::Deserialize<'a>>(&self) -> Result<T, Error> {
        serde_json::from_str(self.payload.as_str())
            .map_err(|e| Error::new(format!("payload does not fit the plugin's schema: {e}")))
    }
}
