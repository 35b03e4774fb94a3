//! `ztraded indicators` prints TA-Lib's values (to 1e-9) for GOOG, and resamples.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn prints_talib_values_for_goog() {
    let (code, stdout, stderr) = run(&[
        "indicators",
        "--data",
        "examples/data/GOOG.csv",
        "--indicators",
        "sma_20,ema_20,rsi_14,macd_12_26_9,bbands_20_2,atr_14",
    ]);
    assert_eq!(code, 0, "{stderr}");
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/GOOG_talib.csv"
    ))
    .unwrap();
    let ours: Vec<&str> = stdout.lines().collect();
    let theirs: Vec<&str> = reference.lines().collect();
    assert_eq!(
        ours[0],
        "timestamp,close,sma_20,ema_20,rsi_14,macd,macd_signal,macd_hist,bb_upper,bb_middle,bb_lower,atr_14"
    );
    assert_eq!(ours.len(), theirs.len());
    assert_eq!(ours.len(), 2149);
    let mut compared = 0;
    for (a, b) in ours[1..].iter().zip(&theirs[1..]) {
        let a: Vec<&str> = a.split(',').collect();
        let b: Vec<&str> = b.split(',').collect();
        assert_eq!(a[0], b[0], "dates");
        for (x, y) in a[1..].iter().zip(&b[1..]) {
            assert_eq!(x.is_empty(), y.is_empty(), "{} lookback", a[0]);
            if !x.is_empty() {
                let (x, y): (f64, f64) = (x.parse().unwrap(), y.parse().unwrap());
                assert!((x - y).abs() < 1e-9, "{}: {x} vs {y}", a[0]);
                compared += 1;
            }
        }
    }
    assert!(compared > 21_000);
}

#[test]
fn resamples_to_weeks_and_rejects_bad_names() {
    let (code, stdout, _) = run(&[
        "indicators",
        "--data",
        "examples/data/SPY.csv",
        "--indicators",
        "sma_4",
        "--timeframe",
        "1w",
    ]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    // 2007-12-31 is a Monday: weeks are stamped on their Monday.
    assert_eq!(lines[1].split(',').next(), Some("2007-12-31"));
    assert!(lines.len() > 500 && lines.len() < 530, "{}", lines.len());
    assert!(
        lines[3].ends_with(','),
        "three weeks are inside the lookback of sma_4"
    );
    assert!(!lines[4].ends_with(','));
    let (code, _, stderr) = run(&[
        "indicators",
        "--data",
        "examples/data/SPY.csv",
        "--indicators",
        "smaa_4",
    ]);
    assert_eq!(code, 2);
    assert!(stderr.contains("smaa_4"));
}
