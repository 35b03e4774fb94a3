//! Where each value an expression can read lives: a flat slot array per symbol, one segment
//! per timeframe (bar fields, then indicator outputs), plus the position's slots.

use crate::config::semantic::BAR_FIELDS;
use crate::market::{IndicatorSpec, Timeframe};
use std::collections::{BTreeMap, HashMap};

/// The slot layout of one pipeline.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Timeframes, finest first, with their segments.
    pub frames: Vec<FrameLayout>,
    /// `(timeframe, identifier)` → slot, for bar fields, qualified indicator outputs and
    /// unambiguous short names.
    names: crate::FastMap<(Timeframe, String), u32>,
    /// Slot of `entry_price` (the position's average entry price, NaN when flat).
    pub entry_price: u32,
    /// Slot of `bars_held` (bars of the strategy timeframe since entry, NaN when flat).
    pub bars_held: u32,
    /// Total slots.
    pub len: usize,
}

/// The segment of one timeframe.
#[derive(Clone, Debug)]
pub struct FrameLayout {
    /// The timeframe.
    pub timeframe: Timeframe,
    /// First slot (open, high, low, close, volume follow in that order).
    pub base: u32,
    /// Indicators and the first slot of their outputs.
    pub indicators: Vec<(IndicatorSpec, u32)>,
    /// Bars of history kept.
    pub lookback: usize,
    /// First slot after the segment.
    pub end: u32,
}

impl Layout {
    /// Builds the layout for `wanted`: per timeframe, the indicators to compute and the
    /// history to keep.
    pub fn new(wanted: &BTreeMap<Timeframe, (Vec<IndicatorSpec>, usize)>) -> Layout {
        let mut frames = Vec::with_capacity(wanted.len());
        let mut names = crate::FastMap::default();
        let mut next: u32 = 0;
        for (tf, (specs, lookback)) in wanted {
            let base = next;
            for (i, field) in BAR_FIELDS.iter().enumerate() {
                names.insert((*tf, field.to_string()), base + i as u32);
            }
            next += BAR_FIELDS.len() as u32;
            let mut indicators = Vec::with_capacity(specs.len());
            let mut short_count: HashMap<&'static str, usize> = HashMap::new();
            for spec in specs {
                for s in spec.short_outputs() {
                    *short_count.entry(s).or_default() += 1;
                }
            }
            for spec in specs {
                let first = next;
                for (k, out) in spec.outputs().into_iter().enumerate() {
                    names.insert((*tf, out), first + k as u32);
                }
                for (k, short) in spec.short_outputs().iter().enumerate() {
                    if short_count.get(short) == Some(&1) {
                        names.insert((*tf, short.to_string()), first + k as u32);
                    }
                }
                next += spec.outputs().len() as u32;
                indicators.push((spec.clone(), first));
            }
            frames.push(FrameLayout {
                timeframe: *tf,
                base,
                indicators,
                lookback: (*lookback).max(1),
                end: next,
            });
        }
        let entry_price = next;
        let bars_held = next + 1;
        // A daemon keeps one layout per pipeline: no spare room.
        names.shrink_to_fit();
        Layout {
            frames,
            names,
            entry_price,
            bars_held,
            len: next as usize + 2,
        }
    }

    /// The slot of `name` on `timeframe`.
    pub fn slot(&self, timeframe: Timeframe, name: &str) -> Option<u32> {
        self.names.get(&(timeframe, name.to_string())).copied()
    }

    /// The segment of `timeframe`.
    pub fn frame(&self, timeframe: Timeframe) -> Option<&FrameLayout> {
        self.frames.iter().find(|f| f.timeframe == timeframe)
    }

    /// Every `(timeframe, name)` with its slot, sorted (for snapshots).
    pub fn named_slots(&self, timeframe: Timeframe) -> Vec<(String, u32)> {
        let mut v: Vec<(String, u32)> = self
            .names
            .iter()
            .filter(|((tf, _), _)| *tf == timeframe)
            .map(|((_, n), s)| (n.clone(), *s))
            .collect();
        v.sort();
        v
    }
}
