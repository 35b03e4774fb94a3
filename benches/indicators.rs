//! Streaming indicator throughput: six indicators (SMA 50, EMA 20, RSI 14, MACD 12/26/9,
//! BBANDS 20/2, Supertrend 10/3) updated over 500k synthetic bars. Reports indicator updates
//! per second (one update = one indicator fed one bar).

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use ztraded::market::Bar;
use ztraded::market::indicators::{Indicator, IndicatorSpec};

const BARS: usize = 500_000;

fn specs() -> Vec<IndicatorSpec> {
    vec![
        IndicatorSpec::Sma(50),
        IndicatorSpec::Ema(20),
        IndicatorSpec::Rsi(14),
        IndicatorSpec::Macd(12, 26, 9),
        IndicatorSpec::Bbands(20, 2.0),
        IndicatorSpec::Supertrend(10, 3.0),
    ]
}

/// A deterministic random walk of one-minute bars around 100.
fn synthetic_bars() -> Vec<Bar> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut close = 100.0_f64;
    (0..BARS)
        .map(|i| {
            let open = close;
            close = (close + (next() - 0.5) * 0.2).max(1.0);
            Bar {
                ts: 1_600_000_000 + i as i64 * 60,
                open,
                high: open.max(close) + next() * 0.1,
                low: open.min(close) - next() * 0.1,
                close,
                volume: (next() * 10_000.0).round(),
            }
        })
        .collect()
}

/// Feeds every bar to every indicator; returns a checksum so nothing is optimised away.
fn run(indicators: &mut [Indicator], bars: &[Bar]) -> f64 {
    for ind in indicators.iter_mut() {
        ind.reset();
    }
    let mut out = [0.0; 3];
    let mut sum = 0.0;
    for bar in bars {
        for ind in indicators.iter_mut() {
            ind.update(bar, false, &mut out);
            if !out[0].is_nan() {
                sum += out[0];
            }
        }
    }
    sum
}

fn main() {
    let bars = synthetic_bars();
    let mut indicators: Vec<Indicator> = specs().iter().map(Indicator::new).collect();
    let updates = (BARS * indicators.len()) as u64;

    let mut c = Criterion::default().sample_size(10).configure_from_args();
    let mut group = c.benchmark_group("indicators");
    group.throughput(Throughput::Elements(updates));
    group.bench_function("six_indicators_500k_bars", |b| {
        b.iter(|| run(black_box(&mut indicators), black_box(&bars)))
    });
    group.finish();
    c.final_summary();

    // One more timed pass, printed as a plain number.
    let start = Instant::now();
    let checksum = run(&mut indicators, &bars);
    let secs = start.elapsed().as_secs_f64();
    println!(
        "indicator updates per second: {:.3e} ({updates} updates over {BARS} bars in {secs:.3} s, checksum {checksum:.3})",
        updates as f64 / secs
    );
}
