//! `count`: subscribe and only count messages, the raw broker path benchmark
//! (scripts/bench.sh parses the summary line).

use std::time::{Duration, Instant};

use mes_collector::intake::config::BrokerConfig;

use crate::connection::{disconnect, subscribe_and_print_ready};
use crate::failure::{fail, Result};
use crate::progress::{rate_of, PROGRESS_EVERY};

pub fn count_messages(broker: &BrokerConfig, count: u64, idle_timeout: Duration) -> Result<()> {
    let (client, incoming) = subscribe_and_print_ready(broker)?;

    let mut received: u64 = 0;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut last_progress = Instant::now();
    let mut at_last_progress: u64 = 0;
    let mut lost = false;
    while received < count {
        match incoming.recv_timeout(PROGRESS_EVERY.min(idle_timeout)) {
            Ok(Some(_)) => {
                last = Instant::now();
                first.get_or_insert(last);
                received += 1;
            }
            Ok(None) => {
                lost = true;
                break;
            }
            Err(_) => {
                if last.elapsed() >= idle_timeout {
                    break;
                }
            }
        }
        let since = last_progress.elapsed();
        if since >= PROGRESS_EVERY {
            eprintln!(
                "received {received} of {count} ({:.0} msg/s)",
                rate_of(received - at_last_progress, since.as_secs_f64())
            );
            last_progress = Instant::now();
            at_last_progress = received;
        }
    }
    let elapsed = first
        .map(|f| last.duration_since(f).as_secs_f64())
        .unwrap_or(0.0);
    println!(
        "received {received} messages in {elapsed:.2} s ({:.0} msg/s)",
        rate_of(received, elapsed)
    );
    if lost {
        return fail(format!(
            "connection to the broker at {} lost after {received} of {count} messages",
            broker.uri
        ));
    }
    disconnect(&client, &broker.uri);
    if received < count {
        return fail(format!(
            "no message for {} s on {}: received {received} of {count}",
            idle_timeout.as_secs(),
            broker.topic
        ));
    }
    Ok(())
}
