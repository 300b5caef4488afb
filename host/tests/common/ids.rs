//! Names unique to a test: each test has a database, topic and client id of its own,
//! so that tests run in parallel against the shared broker and database server.

use std::sync::atomic::{AtomicUsize, Ordering};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test process and call.
pub fn unique(tag: &str) -> String {
    format!(
        "{tag}_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}
