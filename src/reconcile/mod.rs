//! Following the config directory: watcher, typed diff, plan.
pub mod diff;
pub mod watcher;
