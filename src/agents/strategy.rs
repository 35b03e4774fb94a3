//! `strategy` with rules: exits for an open position, else entries for longs and shorts
//! with their stop and target levels evaluated at the signal bar.

use crate::broker::PositionSide;
use crate::domain::{Action, Bias, BiasSignal, StrategySignal};
use crate::engine::feed::SymbolFeed;
use crate::engine::pipeline::StrategyRules;
use crate::engine::state::{PositionView, price};
use crate::expr::Program;

fn level(p: &Option<Program>, feed: &SymbolFeed) -> Option<rust_decimal::Decimal> {
    p.as_ref().and_then(|p| p.eval_number(feed)).and_then(price)
}

fn holds(p: &Option<Program>, feed: &SymbolFeed) -> bool {
    p.as_ref().and_then(|p| p.eval_bool(feed)) == Some(true)
}

/// Evaluates the rules for one symbol. `position` is this pipeline's open position in it;
/// `pending_entry` says an entry was sent and is not settled yet (it counts as a position);
/// `pyramiding` lets entries add to either. `explain` writes the reasoning.
pub fn rules(
    r: &StrategyRules,
    feed: &SymbolFeed,
    position: Option<&PositionView>,
    pending_entry: bool,
    bias: Option<&BiasSignal>,
    pyramiding: bool,
    explain: bool,
) -> StrategySignal {
    let text = |f: &dyn Fn() -> String| if explain { f() } else { String::new() };
    if let Some(pos) = position {
        let exit = match pos.side {
            PositionSide::Long => &r.long_exit,
            PositionSide::Short => &r.short_exit,
        };
        if holds(exit, feed) {
            let mut s = StrategySignal::hold(text(&|| {
                format!(
                    "exit rule `{}` holds for the {} position",
                    exit.as_ref().map_or("", |p| p.source()),
                    pos.side.as_str()
                )
            }));
            s.action = Action::Close;
            s.conviction = r.conviction;
            return s;
        }
        if !pyramiding {
            return StrategySignal::hold(text(&|| {
                format!(
                    "a {} position is open and no exit rule holds",
                    pos.side.as_str()
                )
            }));
        }
    }
    if pending_entry && !pyramiding {
        return StrategySignal::hold(text(&|| {
            "an entry order is pending at the broker and pyramiding is off".to_string()
        }));
    }
    let bias = bias.map(|b| b.bias);
    for side in [PositionSide::Long, PositionSide::Short] {
        let (entry, stop, t1, t2) = match side {
            PositionSide::Long => (&r.long_entry, &r.stop_loss, &r.target_1, &r.target_2),
            PositionSide::Short => (
                &r.short_entry,
                &r.short_stop_loss,
                &r.short_target_1,
                &r.short_target_2,
            ),
        };
        if !holds(entry, feed) {
            continue;
        }
        if let Some(pos) = position
            && pos.side != side
        {
            continue;
        }
        let against = match side {
            PositionSide::Long => Bias::Bearish,
            PositionSide::Short => Bias::Bullish,
        };
        if r.follow_bias && bias == Some(against) {
            return StrategySignal::hold(text(&|| {
                format!(
                    "{} entry `{}` holds but the bias is {against:?}",
                    side.as_str(),
                    entry.as_ref().map_or("", |p| p.source())
                )
                .to_lowercase()
            }));
        }
        let entry_price = match &r.entry_price {
            Some(p) => p.eval_number(feed).and_then(price),
            None => price(feed.value(r.close_slot)),
        };
        let stop_loss = level(stop, feed);
        let target_1 = level(t1, feed);
        let target_2 = level(t2, feed);
        let reward_risk = match (entry_price, stop_loss, target_1) {
            (Some(e), Some(s), Some(t)) => StrategySignal::compute_reward_risk(side, e, s, t),
            _ => None,
        };
        let action = match side {
            PositionSide::Long => Action::Buy,
            PositionSide::Short => Action::Sell,
        };
        return StrategySignal {
            action,
            conviction: r.conviction,
            entry_price,
            stop_loss,
            target_1,
            target_2,
            reward_risk,
            reasoning: text(&|| {
                let show = |d: Option<rust_decimal::Decimal>| {
                    d.map_or("none".to_string(), |d| d.to_string())
                };
                format!(
                    "{} entry `{}` holds: entry {}, stop {}, targets {} / {}{}",
                    side.as_str(),
                    entry.as_ref().map_or("", |p| p.source()),
                    show(entry_price),
                    show(stop_loss),
                    show(target_1),
                    show(target_2),
                    reward_risk.map_or(String::new(), |rr| format!(", reward/risk {rr:.2}"))
                )
            }),
        };
    }
    StrategySignal::hold(text(&|| "no entry rule holds".to_string()))
}
