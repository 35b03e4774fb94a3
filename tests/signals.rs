//! Signal generators on the shipped data (examples/data, and tests/data/GOOG.csv against
//! TA-Lib's own values), and backtests of the shipped signal pipelines: the scanner's
//! generators on the replayed bars, and recorded external signals (`--signals`).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use ztraded::config::scanner::Scanner;
use ztraded::engine::core::BarBatch;
use ztraded::market::indicators::{IndicatorSpec, compute};
use ztraded::market::replay::{ReplayOptions, read_file};
use ztraded::runtime::ReplayHub;
use ztraded::signals::{Direction, GeneratorSet, Signal};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scanner(json: &str) -> Scanner {
    serde_json::from_str(json).unwrap()
}

/// Every signal the generators of `scanner` fire over the whole data of `symbols` in `dir`.
fn generate(dir: &Path, symbols: &[&str], scanner: &Scanner) -> Vec<Signal> {
    let symbols: Vec<String> = symbols.iter().map(|s| s.to_string()).collect();
    let options = ReplayOptions::default();
    let hub = Arc::new(ReplayHub::load_symbols(dir, &symbols, &options).unwrap());
    let mut set = GeneratorSet::new([("s", scanner)], options.timezone);
    let start = hub.first_end().unwrap() - 1;
    set.warm_up(hub.as_ref(), start);
    let mut timeline = hub.batches_after(start);
    let mut batch = BarBatch {
        end: 0,
        bars: Vec::new(),
    };
    let mut out = Vec::new();
    while timeline.next_into(&mut batch) {
        set.on_batch(&batch, &mut out);
    }
    out
}

fn of<'a>(signals: &'a [Signal], t: &str, ticker: &str) -> Vec<&'a Signal> {
    signals
        .iter()
        .filter(|s| s.signal_type == t && s.ticker == ticker)
        .collect()
}

fn clamp(c: f64) -> f64 {
    (c.clamp(0.0, 100.0) * 100.0).round() / 100.0
}

/// Each generator fires exactly where the indicator columns (the same indicators, run in
/// batch over the file) say, with the documented confidence.
#[test]
fn generators_fire_where_the_indicators_say_on_the_shipped_data() {
    let data = root().join("examples/data");
    let s = scanner(
        r#"{"tickers":["AAPL","GOOG","SPY","YHOO"],"signals":[
            {"type":"golden_cross","timeframe":"1d","params":{"fast":50,"slow":200}},
            {"type":"death_cross","timeframe":"1d"},
            {"type":"rsi_oversold","timeframe":"1d","params":{"period":14,"below":30}},
            {"type":"rsi_overbought","timeframe":"1d"},
            {"type":"macd_cross","timeframe":"1d"},
            {"type":"volume_spike","timeframe":"1d","params":{"period":20,"multiplier":2.5}}]}"#,
    );
    let tickers = ["AAPL", "GOOG", "SPY", "YHOO"];
    let all = generate(&data, &tickers, &s);
    let mut table = Vec::new();
    for ticker in tickers {
        let series = read_file(
            &data.join(format!("{ticker}.csv")),
            &ReplayOptions::default(),
        )
        .unwrap();
        let bars = &series.bars;
        let col = |spec: IndicatorSpec, k: usize| compute(&spec, bars).swap_remove(k);
        let (sma50, sma200) = (
            col(IndicatorSpec::Sma(50), 0),
            col(IndicatorSpec::Sma(200), 0),
        );
        let rsi = col(IndicatorSpec::Rsi(14), 0);
        let hist = col(IndicatorSpec::Macd(12, 26, 9), 2);
        let vol = col(IndicatorSpec::VolumeSma(20), 0);
        let mut golden = Vec::new();
        let mut death = Vec::new();
        let mut macd = Vec::new();
        let mut spikes = Vec::new();
        for i in 1..bars.len() {
            let (d0, d1) = (sma50[i - 1] - sma200[i - 1], sma50[i] - sma200[i]);
            let above = (bars[i].close - sma200[i]) / sma200[i] * 100.0;
            if d0.is_finite() && d1.is_finite() {
                if d0 <= 0.0 && d1 > 0.0 {
                    golden.push(clamp(50.0 + 10.0 * above));
                }
                if d0 >= 0.0 && d1 < 0.0 {
                    death.push(clamp(50.0 - 10.0 * above));
                }
            }
            let (h0, h1) = (hist[i - 1], hist[i]);
            if h0.is_finite() && h1.is_finite() {
                let c = clamp(50.0 + 50.0 * (h1 - h0).abs() / (0.005 * bars[i].close));
                if h0 <= 0.0 && h1 > 0.0 {
                    macd.push((Direction::Long, c));
                } else if h0 >= 0.0 && h1 < 0.0 {
                    macd.push((Direction::Short, c));
                }
            }
            if vol[i - 1].is_finite() && vol[i - 1] > 0.0 && bars[i].volume > 2.5 * vol[i - 1] {
                spikes.push(
                    ((50.0 * bars[i].volume / vol[i - 1] / 2.5).clamp(50.0, 100.0) * 100.0).round()
                        / 100.0,
                );
            }
        }
        let oversold: Vec<f64> = rsi
            .iter()
            .filter(|r| r.is_finite() && **r < 30.0)
            .map(|r| clamp(50.0 + 5.0 * (30.0 - r)))
            .collect();
        let overbought = rsi.iter().filter(|r| r.is_finite() && **r > 70.0).count();
        let conf =
            |t: &str| -> Vec<f64> { of(&all, t, ticker).iter().map(|s| s.confidence).collect() };
        assert_eq!(conf("golden_cross"), golden, "{ticker} golden_cross");
        assert_eq!(conf("death_cross"), death, "{ticker} death_cross");
        assert_eq!(conf("rsi_oversold"), oversold, "{ticker} rsi_oversold");
        assert_eq!(
            of(&all, "rsi_overbought", ticker).len(),
            overbought,
            "{ticker}"
        );
        let got_macd: Vec<(Direction, f64)> = of(&all, "macd_cross", ticker)
            .iter()
            .map(|s| (s.direction, s.confidence))
            .collect();
        assert_eq!(got_macd, macd, "{ticker} macd_cross");
        assert_eq!(conf("volume_spike"), spikes, "{ticker} volume_spike");
        assert!(
            !golden.is_empty() && !death.is_empty(),
            "{ticker}: no cross at all"
        );
        table.push(format!(
            "{ticker}: {} bars, golden_cross {}, death_cross {}, rsi_oversold {}, rsi_overbought {overbought}, macd_cross {}, volume_spike {}",
            bars.len(),
            golden.len(),
            death.len(),
            oversold.len(),
            macd.len(),
            spikes.len()
        ));
    }
    for s in &all {
        assert!((0.0..=100.0).contains(&s.confidence), "{s:?}");
        assert_eq!(s.source, "scanner:s");
        assert!(s.id.starts_with(&format!("s:{}:{}:1d:", s.signal_type, s.ticker)));
    }
    // Ids are unique (one per generator, ticker and bar).
    let mut ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len());
    println!("signals on examples/data:\n{}", table.join("\n"));
}

/// On GOOG, the RSI and MACD generators agree with TA-Lib's own RSI14 and MACD histogram
/// (tests/data/GOOG_talib.csv, from the shared reference).
#[test]
fn rsi_and_macd_signals_agree_with_talib_on_goog() {
    let dir = root().join("tests/data");
    let s = scanner(
        r#"{"tickers":["GOOG"],"signals":[
            {"type":"rsi_oversold"},{"type":"rsi_overbought"},{"type":"macd_cross"}]}"#,
    );
    let all = generate(&dir, &["GOOG"], &s);
    let text = std::fs::read_to_string(dir.join("GOOG_talib.csv")).unwrap();
    let mut header = text.lines().next().unwrap().split(',');
    let rsi_col = header.position(|h| h == "RSI14").unwrap();
    let hist_col = text
        .lines()
        .next()
        .unwrap()
        .split(',')
        .position(|h| h == "MACD_hist")
        .unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    let num = |r: &Vec<&str>, c: usize| r[c].parse::<f64>().ok();
    let below = rows
        .iter()
        .filter(|r| num(r, rsi_col).is_some_and(|v| v < 30.0))
        .count();
    let above = rows
        .iter()
        .filter(|r| num(r, rsi_col).is_some_and(|v| v > 70.0))
        .count();
    let hist: Vec<Option<f64>> = rows.iter().map(|r| num(r, hist_col)).collect();
    let crosses = hist
        .windows(2)
        .filter(|w| match (w[0], w[1]) {
            (Some(a), Some(b)) => (a <= 0.0 && b > 0.0) || (a >= 0.0 && b < 0.0),
            _ => false,
        })
        .count();
    assert_eq!(of(&all, "rsi_oversold", "GOOG").len(), below);
    assert_eq!(of(&all, "rsi_overbought", "GOOG").len(), above);
    assert_eq!(of(&all, "macd_cross", "GOOG").len(), crosses);
    assert!(below > 0 && above > 0 && crosses > 0);
    println!("GOOG vs TA-Lib: rsi_oversold {below}, rsi_overbought {above}, macd_cross {crosses}");
}

/// A weekly generator on daily data aggregates the days into weeks (as the feeds do).
#[test]
fn a_weekly_generator_runs_on_daily_data() {
    let data = root().join("examples/data");
    let weekly = generate(
        &data,
        &["SPY"],
        &scanner(r#"{"tickers":["SPY"],"signals":[{"type":"macd_cross","timeframe":"1w"}]}"#),
    );
    let daily = generate(
        &data,
        &["SPY"],
        &scanner(r#"{"tickers":["SPY"],"signals":[{"type":"macd_cross","timeframe":"1d"}]}"#),
    );
    assert!(!weekly.is_empty());
    assert!(
        weekly.len() * 3 < daily.len(),
        "{} {}",
        weekly.len(),
        daily.len()
    );
    assert!(weekly.iter().all(|s| s.id.contains(":1w:")));
}

fn backtest(args: &[&str]) -> (i32, String, String) {
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .arg("backtest")
        .args(args)
        .arg("--out")
        .arg(out_dir.path())
        .current_dir(root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The shipped signal pipeline backtests: its scanner's golden_cross generator fires on
/// the replayed bars and the pipeline trades on them.
#[test]
fn the_shipped_signal_pipeline_backtests_on_its_generators() {
    let (code, out, err) = backtest(&["examples/pipelines/golden-cross-signal.yaml"]);
    assert_eq!(code, 0, "{out}\n{err}");
    println!("{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("Signals: "))
        .unwrap_or_else(|| panic!("no signal line:\n{out}"));
    assert!(
        line.contains("golden_cross: ") && line.contains("dispatched"),
        "{line}"
    );
    assert!(out.contains("completed"), "{out}");
    let (code, out, err) = backtest(&["examples/pipelines/oversold-bounce.yaml"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("rsi_oversold: "), "{out}");
}

/// External signals recorded in a file run the pipeline at their timestamps; a bad line is
/// an error naming the file and the line.
#[test]
fn recorded_external_signals_backtest() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("signals.jsonl");
    std::fs::write(
        &file,
        concat!(
            "# recorded golden crosses\n",
            "{\"type\":\"golden_cross\",\"ticker\":\"AAPL\",\"confidence\":95,\"timestamp\":\"2012-06-01T21:00:00Z\"}\n",
            "{\"type\":\"golden_cross\",\"ticker\":\"GOOG\",\"confidence\":10,\"timestamp\":\"2012-06-04T21:00:00Z\"}\n",
            "{\"type\":\"golden_cross\",\"ticker\":\"MSFT\",\"confidence\":95,\"timestamp\":\"2012-06-05T21:00:00Z\"}\n",
        ),
    )
    .unwrap();
    let path = file.to_string_lossy().into_owned();
    let (plain_code, plain, _) = backtest(&[
        "examples/pipelines/golden-cross-signal.yaml",
        "--from",
        "2012-05-01",
        "--to",
        "2012-07-01",
    ]);
    let (code, out, err) = backtest(&[
        "examples/pipelines/golden-cross-signal.yaml",
        "--from",
        "2012-05-01",
        "--to",
        "2012-07-01",
        "--signals",
        &path,
    ]);
    assert_eq!((plain_code, code), (0, 0), "{out}\n{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("Signals: "))
        .unwrap_or_default();
    assert!(line.contains("1 below_confidence"), "{out}");
    assert!(line.contains("1 not_in_scanner"), "{out}");
    assert!(line.contains("dispatched"), "{out}");
    assert_ne!(plain, out, "the external signals changed nothing");
    std::fs::write(
        &file,
        "{\"type\":\"x\",\"ticker\":\"AAPL\",\"confidence\":\"high\",\"timestamp\":1}\n",
    )
    .unwrap();
    let (code, _, err) = backtest(&[
        "examples/pipelines/golden-cross-signal.yaml",
        "--signals",
        &path,
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains(&format!("{path}:1: confidence 'high'")),
        "{err}"
    );
    let (code, _, err) = backtest(&[
        "pipelines/golden-cross.yaml",
        "--signals",
        &path.replace("signals.jsonl", "none.jsonl"),
    ]);
    assert_eq!(code, 2, "{err}");
}
