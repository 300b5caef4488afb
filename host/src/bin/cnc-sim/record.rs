//! `record`: subscribe and append each message, verbatim, as one line of a
//! JSON-lines file, the input of `publish --file` and `mes-collector replay`.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mes_collector::intake::config::BrokerConfig;

use crate::connection::{disconnect, subscribe_and_print_ready, POLL_SLICE};
use crate::failure::{fail, Result};

pub fn record_messages(
    broker: &BrokerConfig,
    out: &Path,
    count: Option<u64>,
    idle_timeout: Duration,
) -> Result<()> {
    // Opened before connecting so that a wrong path is reported as such.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .or_else(|e| fail(format!("cannot open {} for appending: {e}", out.display())))?;
    let mut file = io::BufWriter::new(file);
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&interrupted);
    // Ctrl-C ends the recording like the timeout does, with the file flushed.
    if let Err(e) = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst)) {
        eprintln!("cnc-sim: warning: Ctrl-C will not flush the file: {e}");
    }
    let (client, incoming) = subscribe_and_print_ready(broker)?;

    let wanted = count.unwrap_or(u64::MAX);
    let (mut received, mut recorded, mut skipped) = (0u64, 0u64, 0u64);
    let mut last = Instant::now();
    let mut lost = false;
    let write_error = |e: io::Error| fail::<()>(format!("cannot write to {}: {e}", out.display()));
    while received < wanted && !interrupted.load(Ordering::SeqCst) {
        match incoming.recv_timeout(POLL_SLICE.min(idle_timeout)) {
            Ok(Some(msg)) => {
                last = Instant::now();
                received += 1;
                let payload = msg.payload();
                match std::str::from_utf8(payload) {
                    Ok(text) if !text.contains('\n') => {
                        if let Err(e) = file.write_all(payload).and_then(|()| file.write_all(b"\n"))
                        {
                            return write_error(e);
                        }
                        recorded += 1;
                    }
                    Ok(_) => {
                        skipped += 1;
                        eprintln!(
                            "cnc-sim: warning: skipped message {received} ({} bytes on {}): it contains a line break",
                            payload.len(),
                            msg.topic()
                        );
                    }
                    Err(e) => {
                        skipped += 1;
                        eprintln!(
                            "cnc-sim: warning: skipped message {received} ({} bytes on {}): not UTF-8 ({e})",
                            payload.len(),
                            msg.topic()
                        );
                    }
                }
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
    }
    if let Err(e) = file.flush() {
        return write_error(e);
    }
    println!(
        "recorded {recorded} messages to {} ({skipped} skipped: not UTF-8 or containing a line break)",
        out.display()
    );
    if lost {
        return fail(format!(
            "connection to the broker at {} lost after {received} messages",
            broker.uri
        ));
    }
    disconnect(&client, &broker.uri);
    if let Some(n) = count {
        if received < n && !interrupted.load(Ordering::SeqCst) {
            return fail(format!(
                "no message for {} s on {}: received {received} of {n}",
                idle_timeout.as_secs(),
                broker.topic
            ));
        }
    }
    Ok(())
}
