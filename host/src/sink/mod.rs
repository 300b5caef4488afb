//! Where messages are written: batches of recorded writes, committed to MySQL.

pub mod batch;
pub mod config;
pub mod lease;
pub mod merge;
pub mod mysql;
pub mod shares;
pub mod totals;
pub mod writer;
