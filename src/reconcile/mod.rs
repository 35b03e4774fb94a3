//! Following the config directory: watcher, typed diff, the removal guard.
pub mod diff;
pub mod guard;
pub mod watcher;
