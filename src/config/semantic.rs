//! The paths the semantic checks had before they were split by resource; kept so that code
//! written against them keeps compiling. New code uses [`crate::config::checks`] and
//! [`crate::config::settings`].

pub use super::checks::{BAR_FIELDS, EXIT_FIELDS, check, check_cron, literal_secrets};
pub use super::settings::{SettingSource, StartPoint, merge_settings, parse_start};
