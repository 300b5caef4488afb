//! Test harness: a database of the test's own (`database`), a config dir
//! (`config_dir`), the collector as a child process (`collector_process`), publishing
//! (`mqtt`) and the machine simulator (`simulator`), names unique to a test (`ids`),
//! faults to inject (`faults`), the collector's HTTP endpoints (`http`) and what cargo
//! builds (`build`). Every test uses its own database, topic and client id, and cleans
//! up after itself, so tests run in parallel against the real services.

// Each test file compiles this module (`mod common;`) into a test binary of its own
// and uses a part of it, so an item one binary leaves unused is dead code in that
// binary only. Almost every item is unused by some binary (packaging.rs uses a single
// function), so the allow is on each module rather than on each item. It would hide
// an item no binary uses as well: to look for one, remove these allows, run
// `cargo test --no-run`, and see which items are reported in every binary.
#[allow(dead_code)]
pub mod build;
#[allow(dead_code)]
mod collector_process;
#[allow(dead_code)]
mod config_dir;
#[allow(dead_code)]
mod database;
#[allow(dead_code)]
pub mod faults;
#[allow(dead_code)]
pub mod http;
#[allow(dead_code)]
mod ids;
#[allow(dead_code)]
mod mqtt;
#[allow(dead_code)]
mod simulator;

// What the tests use, at the root, where `use common::*` finds it; each binary imports
// a part of it, so the rest is an unused import there, for the same reason as above.
#[allow(unused_imports)]
pub use self::{
    build::{lib_in, plugin_lib},
    collector_process::{
        check, mes_collector, run_in_log, run_to_exit, spawn_logged, wait_subscribed, Collector,
    },
    config_dir::{classes, Setup},
    database::{create_schema, poll_count, test_db_name, try_root_conn, TestDb},
    ids::unique,
    mqtt::{forget_session, publish, BROKER, SAMPLES},
    simulator::{
        check_newest_status, cnc_sim, finish, generate, generate_cmd, record, seq_stats,
        seq_stats_in, sim_classes,
    },
};
