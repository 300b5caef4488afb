//! Plugin libraries: loading them, and routing each machine to its plugin instance.

mod compat;
mod extensions;
mod loader;
mod router;
pub mod services;
pub mod trust;

pub use loader::{load_dir, load_file, LoadFailure, LoadedPlugin, PluginInfo, PluginSet};
pub use router::{new_instance, Instance, Router};
