//! `market_data`: the latest bars and indicator values of each timeframe the node provides.
//! The feed itself is kept up to date as bars arrive; this agent reports the snapshot.

use crate::engine::feed::SymbolFeed;
use crate::engine::layout::Layout;
use crate::market::Timeframe;
use serde_json::{Map, Value, json};

pub use crate::engine::pipeline::SNAPSHOT_BARS;

/// `{ "1d": { "bars": [[ts, o, h, l, c, v], …], "values": { "sma_50": …, … } }, … }` with
/// up to `bars` recent bars per timeframe; undefined values are `null`.
pub fn snapshot(
    layout: &Layout,
    feed: &SymbolFeed,
    timeframes: &[Timeframe],
    bars: usize,
) -> Value {
    let mut out = Map::new();
    for tf in timeframes {
        let history: Vec<Value> = feed
            .history(*tf, bars)
            .iter()
            .map(|b| json!([b.ts, b.open, b.high, b.low, b.close, b.volume]))
            .collect();
        let mut values = Map::new();
        for (name, slot) in layout.named_slots(*tf) {
            let v = feed.value(slot);
            values.insert(name, if v.is_finite() { json!(v) } else { Value::Null });
        }
        out.insert(tf.to_string(), json!({ "bars": history, "values": values }));
    }
    Value::Object(out)
}
