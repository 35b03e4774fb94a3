//! The pipeline engine: clock, slot layout and feeds, compiled pipelines, the DAG executor,
//! the position book, limits, schedules and windows.
pub mod book;
pub mod clock;
pub mod exec;
pub mod feed;
pub mod layout;
pub mod limits;
pub mod picker;
pub mod pipeline;
pub mod schedule;
pub mod state;
pub mod trades;
