//! What the collector has received and stored since it started, for the periodic and
//! final summaries in the log.

use std::collections::BTreeMap;

/// Messages received, stored and dead-lettered (by reason).
#[derive(Debug, Default, Clone)]
pub struct Totals {
    pub received: u64,
    pub stored: u64,
    pub dead: BTreeMap<&'static str, u64>,
}

impl Totals {
    /// Adds another writer's.
    pub fn add(&mut self, other: Totals) {
        self.received += other.received;
        self.stored += other.stored;
        for (reason, n) in other.dead {
            *self.dead.entry(reason).or_default() += n;
        }
    }

    pub fn summary(&self) -> String {
        let dead: u64 = self.dead.values().sum();
        let mut s = format!(
            "{} received, {} stored, {} dead letters",
            self.received, self.stored, dead
        );
        if dead > 0 {
            let by: Vec<String> = self.dead.iter().map(|(r, n)| format!("{r} {n}")).collect();
            s.push_str(&format!(" ({})", by.join(", ")));
        }
        s
    }
}
