//! Messages that cannot be stored. Each becomes one row of `dead_letters` and one log
//! line; none stops the collector.

/// Why a message was not stored. The text form is what the `reason` column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Larger than `limits.max_message_bytes`.
    TooLarge,
    /// Nested deeper than `limits.max_json_depth`.
    TooDeep,
    /// Not UTF-8 or not JSON at all.
    NotJson,
    /// JSON, but a required field is missing, empty or of the wrong type.
    BadEnvelope,
    /// The `cnc_id` has no entry in `cnc_classes.json`.
    UnknownCncId,
    /// The `cnc_id`'s class has no loaded plugin.
    NoPlugin,
    /// The plugin's constructor refused the machine (bad settings, say).
    PluginInit,
    /// The plugin returned an error.
    PluginError,
    /// The plugin panicked.
    PluginPanic,
    /// The plugin crashed the process (a fatal signal, or killed while in hand) on
    /// this message; found by the crash guard after the restart.
    PluginCrashed,
    /// A call of the plugin on this message did not return within
    /// `plugins.call_timeout_ms`.
    PluginHung,
    /// The plugin's class is quarantined after repeated crashes.
    PluginQuarantined,
    /// MySQL refused the message's rows.
    DbRejected,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::TooDeep => "too_deep",
            Reason::NotJson => "not_json",
            Reason::BadEnvelope => "bad_envelope",
            Reason::UnknownCncId => "unknown_cnc_id",
            Reason::NoPlugin => "no_plugin",
            Reason::PluginInit => "plugin_init",
            Reason::PluginError => "plugin_error",
            Reason::PluginPanic => "plugin_panic",
            Reason::PluginCrashed => "plugin_crashed",
            Reason::PluginHung => "plugin_hung",
            Reason::PluginQuarantined => "plugin_quarantined",
            Reason::DbRejected => "db_rejected",
        }
    }
}

/// One message that will be stored in `dead_letters` instead of its rows.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub reason: Reason,
    pub detail: String,
    pub cnc_id: Option<String>,
    pub plugin: Option<(String, String)>,
}

impl DeadLetter {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        DeadLetter {
            reason,
            detail: detail.into(),
            cnc_id: None,
            plugin: None,
        }
    }

    pub fn cnc_id(mut self, cnc_id: &str) -> Self {
        self.cnc_id = Some(cnc_id.to_string());
        self
    }

    pub fn plugin(mut self, class: &str, version: &str) -> Self {
        self.plugin = Some((class.to_string(), version.to_string()));
        self
    }
}

/// Cuts `payload` at `limit` bytes for storage.
pub fn truncate_payload(payload: &[u8], limit: usize) -> &[u8] {
    &payload[..payload.len().min(limit)]
}
