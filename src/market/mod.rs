//! Bars, timeframes, indicators, calendars and market-data sources.
pub mod bar;
pub mod calendar;
pub mod indicators;
pub mod replay;
pub mod resample;
pub mod timeframe;

pub use bar::Bar;
pub use indicators::IndicatorSpec;
pub use timeframe::Timeframe;
