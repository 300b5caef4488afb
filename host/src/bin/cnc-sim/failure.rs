//! The one error type: every failure ends up in `main`, which prints one line
//! naming what failed and exits non-zero.

use std::fmt;

pub struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type Result<T> = std::result::Result<T, Failure>;

pub fn fail<T>(msg: impl Into<String>) -> Result<T> {
    Err(Failure(msg.into()))
}
