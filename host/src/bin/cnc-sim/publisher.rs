//! Publishing at a given rate with a bounded window of unacknowledged messages,
//! counting every acknowledgement and failure: what `publish` and `generate` share.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use mes_collector::intake::config::BrokerConfig;
use paho_mqtt as mqtt;

use crate::cli::SendArgs;
use crate::connection::{connect, connection_lost_flag, disconnect, POLL_SLICE};
use crate::failure::{fail, Result};
use crate::progress::{rate_of, PROGRESS_EVERY};

/// Publishes with a bounded window of unacknowledged messages so that memory
/// stays flat at full speed while the broker still gets enough in flight to
/// be the bottleneck, not the round trip.
pub struct Publisher {
    client: mqtt::AsyncClient,
    broker_uri: String,
    topic: String,
    qos: i32,
    window: usize,
    pending: VecDeque<mqtt::Token>,
    lost: Arc<AtomicBool>,
    rate: f64,
    sent: u64,
    acked: u64,
    failed: u64,
    first_error: Option<String>,
    /// Set when sending stopped before the input ran out.
    cut_short: bool,
    start: Option<Instant>,
    last_progress: Instant,
    acked_at_last_progress: u64,
}

impl Publisher {
    pub fn new(broker: &BrokerConfig, send: &SendArgs) -> Result<Self> {
        if broker.topic.contains(['+', '#']) {
            return fail(format!(
                "cannot publish to {}: a topic filter with wildcards (a collector's broker.topic?); give --topic with a plain topic",
                broker.topic
            ));
        }
        let client = connect(broker, send.window)?;
        let lost = connection_lost_flag(&client);
        Ok(Publisher {
            client,
            broker_uri: broker.uri.clone(),
            topic: broker.topic.clone(),
            qos: broker.qos,
            window: send.window as usize,
            pending: VecDeque::with_capacity(send.window as usize),
            lost,
            rate: send.rate,
            sent: 0,
            acked: 0,
            failed: 0,
            first_error: None,
            cut_short: false,
            start: None,
            last_progress: Instant::now(),
            acked_at_last_progress: 0,
        })
    }

    fn elapsed(&self) -> Duration {
        self.start.map(|s| s.elapsed()).unwrap_or_default()
    }

    /// Sleeps until the scheduled time of the next message. The schedule is
    /// absolute (start + k/R) so that sleep overshoot does not accumulate into
    /// a rate below the one asked for.
    fn wait_for_slot(&mut self) {
        let start = *self.start.get_or_insert_with(Instant::now);
        if self.rate <= 0.0 {
            return;
        }
        let due = start + Duration::from_secs_f64(self.sent as f64 / self.rate);
        loop {
            let now = Instant::now();
            if now >= due {
                return;
            }
            // Sliced so that acks and progress keep flowing at low rates.
            thread::sleep((due - now).min(POLL_SLICE));
            self.reap_ready();
            self.progress();
        }
    }

    /// Sends one message; the payload is built by the caller only now so that
    /// any send time in it is taken after the rate limiter and the window.
    /// Returns false once the connection is lost: there is no reconnect, so
    /// every further message would only fail.
    pub fn send(&mut self, make_payload: impl FnOnce() -> Vec<u8>) -> bool {
        if self.lost.load(Ordering::SeqCst) {
            self.cut_short = true;
            return false;
        }
        self.wait_for_slot();
        while self.pending.len() >= self.window {
            self.settle_oldest();
        }
        let msg = mqtt::Message::new(self.topic.as_str(), make_payload(), self.qos);
        self.pending.push_back(self.client.publish(msg).into());
        self.sent += 1;
        self.reap_ready();
        self.progress();
        true
    }

    fn count_outcome(&mut self, res: std::result::Result<mqtt::ServerResponse, mqtt::Error>) {
        match res {
            Ok(_) => self.acked += 1,
            Err(e) => {
                self.failed += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(e.to_string());
                }
            }
        }
    }

    /// Collects acknowledgements that have already arrived, without blocking.
    fn reap_ready(&mut self) {
        while let Some(tok) = self.pending.front_mut() {
            match tok.try_wait() {
                Some(res) => {
                    self.pending.pop_front();
                    self.count_outcome(res);
                }
                None => break,
            }
        }
    }

    /// Blocks until the oldest message is acknowledged or failed. A lost
    /// connection leaves tokens pending forever, so once it is lost whatever
    /// is not complete counts as failed without waiting: a full window would
    /// otherwise take a wait slice per message to drain.
    fn settle_oldest(&mut self) {
        let Some(mut tok) = self.pending.pop_front() else {
            return;
        };
        loop {
            if let Some(res) = tok.try_wait() {
                self.count_outcome(res);
                return;
            }
            if self.lost.load(Ordering::SeqCst) {
                self.count_outcome(Err(mqtt::Error::General("connection to the broker lost")));
                return;
            }
            // Waiting on a clone leaves `tok` usable if the slice runs out.
            match tok.clone().wait_for(POLL_SLICE) {
                Err(mqtt::Error::Timeout) => self.progress(),
                res => {
                    self.count_outcome(res);
                    return;
                }
            }
        }
    }

    fn progress(&mut self) {
        let now = Instant::now();
        let since = now.duration_since(self.last_progress);
        if since < PROGRESS_EVERY {
            return;
        }
        let recent = rate_of(
            self.acked - self.acked_at_last_progress,
            since.as_secs_f64(),
        );
        eprintln!(
            "[{:6.1} s] sent {} acked {} failed {} ({:.0} msg/s)",
            self.elapsed().as_secs_f64(),
            self.sent,
            self.acked,
            self.failed,
            recent
        );
        self.last_progress = now;
        self.acked_at_last_progress = self.acked;
    }

    /// Waits for every outstanding acknowledgement, disconnects and prints the
    /// summary; fails if any message did not make it.
    pub fn finish(mut self) -> Result<()> {
        while !self.pending.is_empty() {
            self.settle_oldest();
        }
        let elapsed = self.elapsed().as_secs_f64();
        if !self.lost.load(Ordering::SeqCst) {
            disconnect(&self.client, &self.broker_uri);
        }
        println!(
            "published {} messages in {:.2} s ({:.0} msg/s), {} failed",
            self.sent,
            elapsed,
            rate_of(self.sent, elapsed),
            self.failed
        );
        if self.cut_short {
            return fail(format!(
                "connection to the broker at {} lost: stopped after {} messages, {} failed",
                self.broker_uri, self.sent, self.failed
            ));
        }
        if self.failed > 0 {
            return fail(format!(
                "{} of {} messages failed to publish to {} (first error: {})",
                self.failed,
                self.sent,
                self.broker_uri,
                self.first_error.as_deref().unwrap_or("unknown")
            ));
        }
        Ok(())
    }
}
