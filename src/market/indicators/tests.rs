//! Streaming state machines against straightforward batch definitions, lookbacks, reset, and
//! hand-computed Supertrend and VWAP series.

use super::*;

/// Deterministic synthetic daily bars: a random walk around 100 with flat stretches (equal
/// closes) and gaps, volumes in the millions.
fn synthetic_bars(count: usize, seed: u64) -> Vec<Bar> {
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut close = 100.0;
    (0..count)
        .map(|i| {
            let open = close + (next() - 0.5) * 2.0;
            close = if (i / 40) % 5 == 3 {
                close // a flat stretch
            } else {
                (close + (next() - 0.5) * 4.0).max(1.0)
            };
            let high = open.max(close) + next() * 1.5;
            let low = (open.min(close) - next() * 1.5).max(0.5);
            Bar {
                ts: 1_104_537_600 + i as i64 * 3_600 * 5, // every 5 h: some days hold 5 bars
                open,
                high,
                low,
                close,
                volume: (next() * 5e6).round(),
            }
        })
        .collect()
}

fn closes(bars: &[Bar]) -> Vec<f64> {
    bars.iter().map(|b| b.close).collect()
}

fn nan_vec(n: usize) -> Vec<f64> {
    vec![f64::NAN; n]
}

// ---- batch definitions, written index-by-index after TA-Lib's batch loops ----

fn ref_sma(xs: &[f64], n: usize) -> Vec<f64> {
    let mut out = nan_vec(xs.len());
    for i in n - 1..xs.len() {
        out[i] = xs[i + 1 - n..=i].iter().sum::<f64>() / n as f64;
    }
    out
}

/// EMA seeded at index `start + n − 1` with the mean of `xs[start..start + n]`.
fn ref_ema(xs: &[f64], n: usize, start: usize) -> Vec<f64> {
    let mut out = nan_vec(xs.len());
    let k = 2.0 / (n as f64 + 1.0);
    let seed = start + n - 1;
    if seed >= xs.len() {
        return out;
    }
    out[seed] = xs[start..=seed].iter().sum::<f64>() / n as f64;
    for i in seed + 1..xs.len() {
        out[i] = (xs[i] - out[i - 1]) * k + out[i - 1];
    }
    out
}

fn ref_rsi(xs: &[f64], n: usize) -> Vec<f64> {
    let mut out = nan_vec(xs.len());
    let (mut gain, mut loss) = (0.0, 0.0);
    for i in 1..=n {
        let d = xs[i] - xs[i - 1];
        if d < 0.0 {
            loss -= d;
        } else {
            gain += d;
        }
    }
    gain /= n as f64;
    loss /= n as f64;
    let rsi = |g: f64, l: f64| {
        if (g + l).abs() < 1e-14 {
            0.0
        } else {
            100.0 * g / (g + l)
        }
    };
    out[n] = rsi(gain, loss);
    for i in n + 1..xs.len() {
        let d = xs[i] - xs[i - 1];
        gain = (gain * (n as f64 - 1.0) + d.max(0.0)) / n as f64;
        loss = (loss * (n as f64 - 1.0) + (-d).max(0.0)) / n as f64;
        out[i] = rsi(gain, loss);
    }
    out
}

fn ref_true_ranges(bars: &[Bar]) -> Vec<f64> {
    let mut tr = nan_vec(bars.len());
    for i in 1..bars.len() {
        let (h, l, pc) = (bars[i].high, bars[i].low, bars[i - 1].close);
        tr[i] = (h - l).max((h - pc).abs()).max((l - pc).abs());
    }
    tr
}

fn ref_atr(bars: &[Bar], n: usize) -> Vec<f64> {
    let tr = ref_true_ranges(bars);
    let mut out = nan_vec(bars.len());
    out[n] = tr[1..=n].iter().sum::<f64>() / n as f64;
    for i in n + 1..bars.len() {
        out[i] = (out[i - 1] * (n as f64 - 1.0) + tr[i]) / n as f64;
    }
    out
}

fn ref_macd(xs: &[f64], fast: usize, slow: usize, signal: usize) -> Vec<Vec<f64>> {
    let f = ref_ema(xs, fast, slow - fast);
    let s = ref_ema(xs, slow, 0);
    let line: Vec<f64> = f.iter().zip(&s).map(|(a, b)| a - b).collect();
    let mut sig = nan_vec(xs.len());
    let sig_from_first = ref_ema(&line[slow - 1..], signal, 0);
    sig[slow - 1..].copy_from_slice(&sig_from_first);
    let first = slow - 1 + signal - 1;
    let mut macd = nan_vec(xs.len());
    let mut hist = nan_vec(xs.len());
    for i in first..xs.len() {
        macd[i] = line[i];
        hist[i] = line[i] - sig[i];
    }
    vec![macd, sig, hist]
}

fn ref_bbands(xs: &[f64], n: usize, k: f64) -> Vec<Vec<f64>> {
    let mut cols = vec![nan_vec(xs.len()), nan_vec(xs.len()), nan_vec(xs.len())];
    for i in n - 1..xs.len() {
        let w = &xs[i + 1 - n..=i];
        let mean = w.iter().sum::<f64>() / n as f64;
        let var = w.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        let sd = if var < 1e-14 { 0.0 } else { var.sqrt() };
        cols[0][i] = mean + k * sd;
        cols[1][i] = mean;
        cols[2][i] = mean - k * sd;
    }
    cols
}

fn ref_supertrend(bars: &[Bar], n: usize, k: f64) -> Vec<Vec<f64>> {
    let atr = ref_atr(bars, n);
    let mut line = nan_vec(bars.len());
    let mut dir = nan_vec(bars.len());
    let (mut upper, mut lower) = (0.0, 0.0);
    for i in n..bars.len() {
        let hl2 = (bars[i].high + bars[i].low) / 2.0;
        let (bu, bl) = (hl2 + k * atr[i], hl2 - k * atr[i]);
        if i == n {
            (upper, lower) = (bu, bl);
            dir[i] = -1.0;
        } else {
            let pc = bars[i - 1].close;
            upper = if bu < upper || pc > upper { bu } else { upper };
            lower = if bl > lower || pc < lower { bl } else { lower };
            let c = bars[i].close;
            dir[i] = match dir[i - 1] < 0.0 {
                true if c > upper => 1.0,
                true => -1.0,
                false if c < lower => -1.0,
                false => 1.0,
            };
        }
        line[i] = if dir[i] > 0.0 { lower } else { upper };
    }
    vec![line, dir]
}

fn ref_vwap(bars: &[Bar]) -> Vec<f64> {
    let day = |b: &Bar| b.ts.div_euclid(86_400);
    (0..bars.len())
        .map(|i| {
            let start = (0..=i)
                .rev()
                .find(|&j| j == 0 || day(&bars[j - 1]) != day(&bars[i]));
            let session = &bars[start.unwrap_or(0)..=i];
            let pv: f64 = session
                .iter()
                .map(|b| (b.high + b.low + b.close) / 3.0 * b.volume)
                .sum();
            let v: f64 = session.iter().map(|b| b.volume).sum();
            if v == 0.0 { f64::NAN } else { pv / v }
        })
        .collect()
}

fn reference(spec: &IndicatorSpec, bars: &[Bar]) -> Vec<Vec<f64>> {
    let c = closes(bars);
    match *spec {
        IndicatorSpec::Sma(n) => vec![ref_sma(&c, n)],
        IndicatorSpec::Ema(n) => vec![ref_ema(&c, n, 0)],
        IndicatorSpec::Rsi(n) => vec![ref_rsi(&c, n)],
        IndicatorSpec::Atr(n) => vec![ref_atr(bars, n)],
        IndicatorSpec::Macd(f, s, g) => ref_macd(&c, f, s, g),
        IndicatorSpec::Bbands(n, k) => ref_bbands(&c, n, k),
        IndicatorSpec::Supertrend(n, k) => ref_supertrend(bars, n, k),
        IndicatorSpec::VolumeSma(n) => {
            let v: Vec<f64> = bars.iter().map(|b| b.volume).collect();
            vec![ref_sma(&v, n)]
        }
        IndicatorSpec::Vwap => vec![ref_vwap(bars)],
    }
}

fn specs() -> Vec<IndicatorSpec> {
    use IndicatorSpec::*;
    vec![
        Sma(1),
        Sma(2),
        Sma(20),
        Sma(200),
        Ema(1),
        Ema(2),
        Ema(9),
        Ema(50),
        Rsi(1),
        Rsi(2),
        Rsi(14),
        Atr(1),
        Atr(14),
        Macd(12, 26, 9),
        Macd(5, 35, 5),
        Macd(3, 4, 1),
        Bbands(20, 2.0),
        Bbands(5, 2.5),
        Bbands(1, 2.0),
        Supertrend(10, 3.0),
        Supertrend(7, 2.5),
        Supertrend(1, 1.0),
        VolumeSma(20),
        VolumeSma(3),
        Vwap,
    ]
}

fn assert_same(spec: &IndicatorSpec, got: &[Vec<f64>], want: &[Vec<f64>]) {
    assert_eq!(got.len(), want.len(), "{spec}: width");
    for (o, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len(), "{spec}[{o}]: length");
        for (i, (a, b)) in g.iter().zip(w).enumerate() {
            assert_eq!(a.is_nan(), b.is_nan(), "{spec}[{o}] at {i}: {a} vs {b}");
            if !b.is_nan() {
                let tol = 1e-9 * b.abs().max(1.0);
                assert!((a - b).abs() <= tol, "{spec}[{o}] at {i}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn streaming_equals_the_batch_definitions() {
    for seed in [1, 7, 12345] {
        let bars = synthetic_bars(3_000, seed);
        for spec in specs() {
            assert_same(&spec, &compute(&spec, &bars), &reference(&spec, &bars));
        }
    }
}

#[test]
fn first_value_is_at_the_lookback_for_every_output() {
    let bars = synthetic_bars(400, 99);
    for spec in specs() {
        let columns = compute(&spec, &bars);
        assert_eq!(columns.len(), spec.outputs().len(), "{spec}");
        assert_eq!(
            Indicator::new(&spec).width(),
            spec.outputs().len(),
            "{spec}"
        );
        for (o, column) in columns.iter().enumerate() {
            let first = column.iter().position(|v| !v.is_nan());
            assert_eq!(first, Some(spec.lookback()), "{spec}[{o}]");
            assert!(
                column[spec.lookback()..].iter().all(|v| v.is_finite()),
                "{spec}[{o}] has a gap after its lookback"
            );
        }
    }
}

#[test]
fn reset_gives_the_same_values_as_a_new_state() {
    let bars = synthetic_bars(600, 3);
    let other = synthetic_bars(250, 4);
    for spec in specs() {
        let mut used = Indicator::new(&spec);
        let mut out = [0.0; 3];
        for (i, bar) in other.iter().enumerate() {
            used.update(bar, i % 5 == 0, &mut out);
        }
        used.reset();
        let mut fresh = Indicator::new(&spec);
        let mut fresh_out = [0.0; 3];
        for (i, bar) in bars.iter().enumerate() {
            used.update(bar, i % 5 == 0, &mut out);
            fresh.update(bar, i % 5 == 0, &mut fresh_out);
            let w = spec.outputs().len();
            assert_eq!(
                out[..w].iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                fresh_out[..w]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>(),
                "{spec} at {i}"
            );
        }
        assert_eq!(used.spec(), &spec);
    }
}

#[test]
fn long_streams_do_not_drift() {
    // 300k bars: the windowed sums must still equal a fresh sum over the last window.
    let bars = synthetic_bars(300_000, 42);
    let spec = IndicatorSpec::Bbands(20, 2.0);
    let mut ind = Indicator::new(&spec);
    let mut out = [0.0; 3];
    for bar in &bars {
        ind.update(bar, false, &mut out);
    }
    let tail = &bars[bars.len() - 20..];
    let want = ref_bbands(&closes(tail), 20, 2.0);
    for o in 0..3 {
        assert!(
            (out[o] - want[o][19]).abs() < 1e-11,
            "{o}: {} vs {}",
            out[o],
            want[o][19]
        );
    }
    let spec = IndicatorSpec::VolumeSma(50);
    let mut ind = Indicator::new(&spec);
    for bar in &bars {
        ind.update(bar, false, &mut out);
    }
    let want = bars[bars.len() - 50..]
        .iter()
        .map(|b| b.volume)
        .sum::<f64>()
        / 50.0;
    assert!((out[0] - want).abs() < 1e-7, "{} vs {want}", out[0]);
}

fn bar(ts: i64, high: f64, low: f64, close: f64, volume: f64) -> Bar {
    Bar {
        ts,
        open: close,
        high,
        low,
        close,
        volume,
    }
}

#[test]
fn supertrend_on_a_hand_computed_series() {
    // N = 2, K = 1, computed by hand and checked with exact rational arithmetic. True ranges
    // of bars 1..=7: 1, 1, 2.5, 1.5, 1.9, 1.7, 0.8.
    // i  ATR       final upper  final lower  direction  line
    // 2  1         10.5         8.5          −1         10.5      (first value: basic bands)
    // 3  1.75      10.5         9.25         +1         9.25      (close 11.8 > upper 10.5)
    // 4  1.625     13.875       10.625       +1         10.625    (prev close 11.8 > 10.5: upper resets)
    // 5  1.7625    13.7125      10.625       +1         10.625    (lower held: 10.1875 < 10.625)
    // 6  1.73125   11.98125     10.625       −1         11.98125  (close 9.8 < lower 10.625)
    // 7  1.265625  11.065625    8.534375     −1         11.065625 (prev close 9.8 < 10.625: lower resets)
    let bars = [
        bar(0, 10.0, 9.0, 9.5, 1.0),
        bar(1, 10.0, 9.0, 9.5, 1.0),
        bar(2, 10.0, 9.0, 9.5, 1.0),
        bar(3, 12.0, 10.0, 11.8, 1.0),
        bar(4, 13.0, 11.5, 12.8, 1.0),
        bar(5, 12.9, 11.0, 11.2, 1.0),
        bar(6, 11.0, 9.5, 9.8, 1.0),
        bar(7, 10.2, 9.4, 10.1, 1.0),
    ];
    let got = compute(&IndicatorSpec::Supertrend(2, 1.0), &bars);
    let line = [10.5, 9.25, 10.625, 10.625, 11.98125, 11.065625];
    let direction = [-1.0, 1.0, 1.0, 1.0, -1.0, -1.0];
    assert!(got[0][..2].iter().chain(&got[1][..2]).all(|v| v.is_nan()));
    for i in 0..6 {
        assert!(
            (got[0][i + 2] - line[i]).abs() < 1e-12,
            "line at {}: {}",
            i + 2,
            got[0][i + 2]
        );
        assert_eq!(got[1][i + 2], direction[i], "direction at {}", i + 2);
    }
}

#[test]
fn vwap_restarts_each_session() {
    let day = 86_400;
    let bars = [
        bar(10 * day + 3_600, 11.0, 9.0, 10.0, 100.0),  // TP 10
        bar(10 * day + 7_200, 12.0, 10.0, 11.0, 300.0), // TP 11 → (1000 + 3300) / 400
        bar(10 * day + 10_800, 13.0, 11.0, 12.0, 0.0),  // no volume: unchanged
        bar(11 * day + 3_600, 21.0, 19.0, 20.0, 50.0),  // new day: TP 20
        bar(11 * day + 7_200, 24.0, 21.0, 21.0, 150.0), // TP 22 → (1000 + 3300) / 200
        bar(12 * day, 5.0, 5.0, 5.0, 0.0),              // new day, no volume yet
        bar(12 * day + 60, 7.0, 5.0, 6.0, 10.0),        // TP 6
    ];
    let got = compute(&IndicatorSpec::Vwap, &bars);
    assert_eq!(got.len(), 1);
    let want = [10.0, 10.75, 10.75, 20.0, 21.5, f64::NAN, 6.0];
    for (i, (g, w)) in got[0].iter().zip(want).enumerate() {
        if w.is_nan() {
            assert!(g.is_nan(), "at {i}: {g}");
        } else {
            assert!((g - w).abs() < 1e-12, "at {i}: {g} vs {w}");
        }
    }
    // Streaming with the session flag given explicitly: without a new session the sums go on.
    let mut ind = Indicator::new(&IndicatorSpec::Vwap);
    let mut out = [0.0];
    ind.update(&bars[0], true, &mut out);
    ind.update(&bars[3], false, &mut out);
    assert!((out[0] - (1000.0 + 1000.0) / 150.0).abs() < 1e-12);
    ind.update(&bars[3], true, &mut out);
    assert_eq!(out[0], 20.0);
}

#[test]
fn compute_with_sessions_uses_the_given_boundaries() {
    let bars = synthetic_bars(50, 5);
    let every_ten = compute_with_sessions(&IndicatorSpec::Vwap, &bars, {
        let mut i = 0;
        move |_, _| {
            i += 1;
            (i - 1) % 10 == 0
        }
    });
    let tp = |b: &Bar| (b.high + b.low + b.close) / 3.0;
    for start in (0..50).step_by(10) {
        // The first bar of each session is its own VWAP.
        assert!(
            (every_ten[0][start] - tp(&bars[start])).abs() < 1e-12,
            "at {start}"
        );
    }
    // Bar 5 opens a UTC day (bars are 5 h apart from midnight) but not a ten-bar session.
    let by_day = compute(&IndicatorSpec::Vwap, &bars);
    assert!((by_day[0][5] - tp(&bars[5])).abs() < 1e-12);
    assert!((every_ten[0][5] - by_day[0][5]).abs() > 1e-9);
}
