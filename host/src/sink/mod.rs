//! Where messages are written: batches of recorded writes, committed to MySQL.

pub mod batch;
pub mod mysql;
pub mod writer;
