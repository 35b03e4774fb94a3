//! Alpaca market data: historical bars over REST ([`AlpacaData::bars`]), live minute bars
//! over the market-data websocket ([`AlpacaData::stream`]), and the trading API's clock and
//! calendar ([`AlpacaData::clock`], [`AlpacaData::calendar`]).
//!
//! A thin typed client over `reqwest` and `tokio-tungstenite`, following Alpaca's Market Data
//! API v2 reference. Requests carry the `APCA-API-KEY-ID` and `APCA-API-SECRET-KEY` headers;
//! the websocket authenticates with the same pair.
//!
//! Symbols containing `/` (`BTC/USD`) are crypto: their bars come from
//! `/v1beta3/crypto/us/bars` and the crypto stream, everything else from `/v2/stocks/bars`
//! and the stock stream (`iex` or `sip`).

pub mod calendar;
pub mod rest;
pub mod stream;

pub use calendar::{AlpacaCalendar, AlpacaClock};
pub use rest::{AlpacaData, DataError, Tuning};
pub use stream::{LiveEvent, StreamKind, StreamStatus};

/// Whether `symbol` is a crypto pair (`BTC/USD`): Alpaca spells those with a `/`.
pub fn is_crypto(symbol: &str) -> bool {
    symbol.contains('/')
}
