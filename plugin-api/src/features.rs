//! Host features a plugin may use beyond the 1.0 contract, each with the plugin API
//! version that introduced it.
//!
//! A feature is *optional* unless the plugin lists it in
//! [`Plugin::REQUIRES`](crate::Plugin::REQUIRES): on a host that lacks it, an optional
//! feature does nothing (log records and counts go nowhere), and the plugin runs. A
//! required feature that the host lacks refuses the plugin when the host loads it, with
//! a message naming the feature and the host version it needs.
//!
//! ```
//! use mes_plugin_api::{features, Db, Error, Feature, Message, Plugin};
//!
//! pub struct AlarmCounter;
//!
//! impl Plugin for AlarmCounter {
//!     const CLASS_NAME: &'static str = "AlarmCounter";
//!     // Its whole point is the counts: refuse to run where they would be lost.
//!     const REQUIRES: &'static [Feature] = &[features::METRICS];
//!
//!     fn new(_: &str, _: Option<&str>) -> Result<Self, Error> {
//!         Ok(AlarmCounter)
//!     }
//!
//!     fn handle(&mut self, msg: &Message<'_>, _db: &mut Db<'_>) -> Result<(), Error> {
//!         mes_plugin_api::metrics::count("messages", msg.part_program());
//!         Ok(())
//!     }
//! }
//! assert_eq!(features::METRICS.name(), "metrics");
//! assert_eq!(features::METRICS.since(), "1.1");
//! ```

use abi_stable::{std_types::RStr, StableAbi};

/// A host feature, named as the host reports it, with the plugin API version that
/// introduced it. The constants in [`features`](crate::features) are the only values.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    name: RStr<'static>,
    since: RStr<'static>,
}

impl Feature {
    const fn new(name: &'static str, since: &'static str) -> Self {
        Feature {
            name: RStr::from_str(name),
            since: RStr::from_str(since),
        }
    }

    /// The feature's name, as `mes-collector plugins` shows it.
    pub fn name(&self) -> &'static str {
        self.name.as_str()
    }

    /// The plugin API version (`major.minor`) that introduced it: the oldest host
    /// that can offer it.
    pub fn since(&self) -> &'static str {
        self.since.as_str()
    }
}

/// Log records through the host: the `log` crate's macros inside a plugin reach the
/// collector's log with the plugin's class and the machine's `cnc_id` attached,
/// filtered by `RUST_LOG` and rate-limited per plugin. See [`crate::log`].
pub const LOG: Feature = Feature::new("log", "1.1");

/// Counters in the host's Prometheus registry: see [`crate::metrics::count`].
pub const METRICS: Feature = Feature::new("metrics", "1.1");

/// [`Db::upsert_newest`](crate::Db::upsert_newest): "latest value" rows that keep the
/// newest state by the plugin's own ordering, whatever order messages commit in.
pub const UPSERT_NEWEST: Feature = Feature::new("upsert_newest", "1.1");

/// Every feature this version of the API knows, oldest first.
pub const ALL: &[Feature] = &[LOG, METRICS, UPSERT_NEWEST];
