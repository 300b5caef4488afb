//! `publish`: each non-empty line of a JSON-lines file, verbatim, as one message.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use mes_collector::intake::config::BrokerConfig;

use crate::cli::SendArgs;
use crate::failure::{fail, Result};
use crate::publisher::Publisher;

pub fn publish_file(broker: &BrokerConfig, send: &SendArgs, path: &Path) -> Result<()> {
    // Opened before connecting so that a wrong path is reported as such.
    let file = File::open(path)
        .or_else(|e| fail(format!("cannot open the file {}: {e}", path.display())))?;
    // Opening a directory succeeds on Unix; only reading it fails.
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return fail(format!(
            "cannot open the file {}: it is a directory",
            path.display()
        ));
    }
    let mut publisher = Publisher::new(broker, send)?;
    let mut read_error = None;
    for (n, line) in BufReader::new(file).split(b'\n').enumerate() {
        let mut line = match line {
            Ok(line) => line,
            Err(e) => {
                read_error = Some(format!(
                    "cannot read the file {} at line {}: {e}",
                    path.display(),
                    n + 1
                ));
                break;
            }
        };
        // Bytes rather than String: invalid UTF-8 is a bad message the
        // collector must cope with, so it must be sendable as is.
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if !publisher.send(|| line) {
            break;
        }
    }
    let sent = publisher.finish();
    match read_error {
        // The file error is the cause; report it even if publishing went fine.
        Some(e) => fail(e),
        None => sent,
    }
}
