//! Bars, timeframes, indicators, calendars and market-data sources.
pub mod alpaca;
pub mod bar;
pub mod calendar;
pub mod ibkr;
pub mod indicators;
pub mod live;
pub mod replay;
pub mod resample;
pub mod timeframe;

pub use bar::Bar;
pub use indicators::IndicatorSpec;
pub use timeframe::Timeframe;
