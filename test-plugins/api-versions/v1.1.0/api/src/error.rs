//! What a plugin returns when it cannot handle a message.

use std::fmt;

use abi_stable::{std_types::RString, StableAbi};

/// A plugin's reason for refusing a message or a setting. The host stores the
/// message in the dead-letter table with this text as the reason, so say what was
/// wrong with the input.
///
/// Any `std::error::Error` converts into it, so `?` works on `serde_json`, parsing and
/// database-handle errors alike:
///
/// ```
/// use mes_plugin_api::Error;
///
/// fn spindle(text: &str) -> Result<u32, Error> {
///     let rpm: u32 = text.parse()?;
///     if rpm > 60_000 {
///         return Err(Error::new(format!("spindle speed {rpm} is out of range")));
///     }
///     Ok(rpm)
/// }
/// assert_eq!(spindle("200").unwrap(), 200);
/// assert!(spindle("fast").is_err());
/// assert_eq!(spindle("90000").unwrap_err().message(), "spindle speed 90000 is out of range");
/// ```
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Error {
            message: message.into(),
        }
    }

    /// The message, as it will appear in the dead-letter table.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Self {
        Error::new(e.to_string())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({:?})", self.message)
    }
}

/// Whether a failed call returned an error or panicked. The host records the two
/// differently in the dead-letter table.
#[repr(u8)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The plugin returned an [`Error`].
    Error,
    /// The plugin panicked; the export macro caught it at the boundary.
    Panic,
}

/// An error as it crosses the ABI boundary.
#[repr(C)]
#[derive(StableAbi, Debug, Clone)]
pub struct PluginFailure {
    /// Returned or panicked.
    pub kind: FailureKind,
    /// The error's or the panic's message.
    pub message: RString,
}

impl PluginFailure {
    pub(crate) fn error(e: Error) -> Self {
        PluginFailure {
            kind: FailureKind::Error,
            message: RString::from(e.message),
        }
    }

    pub(crate) fn panic(payload: Box<dyn std::any::Any + Send>) -> Self {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic with a non-text payload".to_string());
        PluginFailure {
            kind: FailureKind::Panic,
            message: RString::from(text),
        }
    }
}

impl fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FailureKind::Error => write!(f, "{}", self.message),
            FailureKind::Panic => write!(f, "panicked: {}", self.message),
        }
    }
}
