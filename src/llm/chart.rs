//! Candlestick charts for vision models (`chart: true` on an LLM node, as seed 003 sends its
//! daily and weekly charts): one PNG per timeframe of the node, 768 × 432 pixels, of the bars
//! the prompt lists — green up candles, red down candles, a volume pane below — with the
//! node's price-scale indicators drawn over them (`sma_N`, `ema_N`, the Bollinger bands,
//! `vwap`), computed with the same indicator code as the feed over those bars (so a line
//! starts once its period is covered). No text is drawn: the numbers are in the prompt.

use crate::market::Bar;
use crate::market::indicators::{IndicatorSpec, compute};
use plotters::prelude::*;
use serde_json::Value;
use std::str::FromStr;

/// Width of a chart, pixels.
pub const WIDTH: u32 = 768;
/// Height of a chart, pixels.
pub const HEIGHT: u32 = 432;

/// The bars of one timeframe of a prompt context's market JSON (`[[ts, o, h, l, c, v], …]`).
pub fn bars_of(market: &Value, timeframe: &str) -> Vec<Bar> {
    market
        .get(timeframe)
        .and_then(|t| t.get("bars"))
        .and_then(Value::as_array)
        .map(|bars| {
            bars.iter()
                .filter_map(|b| {
                    let b = b.as_array()?;
                    let n = |i: usize| b.get(i).and_then(Value::as_f64);
                    Some(Bar {
                        ts: b.first()?.as_i64()?,
                        open: n(1)?,
                        high: n(2)?,
                        low: n(3)?,
                        close: n(4)?,
                        volume: n(5).unwrap_or(0.0),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The price-scale overlays among `names` (indicator output names): each as its values over
/// `bars` (NaN where undefined).
fn overlays(names: &[String], bars: &[Bar]) -> Vec<Vec<f64>> {
    let mut out = Vec::new();
    for name in names {
        let (base, pick) = match ["_upper", "_middle", "_lower"]
            .iter()
            .enumerate()
            .find_map(|(i, s)| name.strip_suffix(s).map(|b| (b, i)))
        {
            Some((b, i)) => (b, i),
            None => (name.as_str(), 0),
        };
        let Ok(spec) = IndicatorSpec::from_str(base) else {
            continue;
        };
        if matches!(
            spec,
            IndicatorSpec::Sma(_)
                | IndicatorSpec::Ema(_)
                | IndicatorSpec::Bbands(..)
                | IndicatorSpec::Vwap
        ) && let Some(series) = compute(&spec, bars).into_iter().nth(pick)
        {
            out.push(series);
        }
    }
    out
}

/// A PNG of `bars` with the overlays among `indicators`; `None` with fewer than 2 bars or
/// when drawing fails (the node then goes without its chart, and says so in its trace).
pub fn png(bars: &[Bar], indicators: &[String]) -> Option<Vec<u8>> {
    if bars.len() < 2 {
        return None;
    }
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    draw(&mut rgb, bars, &overlays(indicators, bars)).ok()?;
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, WIDTH, HEIGHT);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().ok()?;
        writer.write_image_data(&rgb).ok()?;
    }
    Some(out)
}

fn draw(
    rgb: &mut [u8],
    bars: &[Bar],
    lines: &[Vec<f64>],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::with_buffer(rgb, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (price_area, volume_area) = root.split_vertically(HEIGHT * 3 / 4);
    let n = bars.len();
    let mut low = bars.iter().map(|b| b.low).fold(f64::INFINITY, f64::min);
    let mut high = bars
        .iter()
        .map(|b| b.high)
        .fold(f64::NEG_INFINITY, f64::max);
    for v in lines.iter().flatten().filter(|v| v.is_finite()) {
        low = low.min(*v);
        high = high.max(*v);
    }
    let pad = ((high - low) * 0.05).max(high.abs() * 1e-6).max(1e-9);
    let x = -0.5..(n as f64 - 0.5);
    let mut price = ChartBuilder::on(&price_area)
        .margin(6)
        .build_cartesian_2d(x.clone(), (low - pad)..(high + pad))?;
    price
        .configure_mesh()
        .disable_x_mesh()
        .disable_axes()
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    let width = ((WIDTH as f64 * 0.8 / n as f64) as u32).clamp(1, 24);
    let up = RGBColor(38, 166, 91);
    let down = RGBColor(214, 48, 49);
    price.draw_series(bars.iter().enumerate().map(|(i, b)| {
        CandleStick::new(
            i as f64,
            b.open,
            b.high,
            b.low,
            b.close,
            up.filled(),
            down.filled(),
            width,
        )
    }))?;
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(23, 190, 207),
    ];
    for (k, series) in lines.iter().enumerate() {
        let color = palette[k % palette.len()];
        let points: Vec<(f64, f64)> = series
            .iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, v)| (i as f64, *v))
            .collect();
        price.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
    }
    let top = bars.iter().map(|b| b.volume).fold(0.0, f64::max).max(1.0);
    let mut volume = ChartBuilder::on(&volume_area)
        .margin(6)
        .build_cartesian_2d(x, 0.0..top)?;
    volume.draw_series(bars.iter().enumerate().map(|(i, b)| {
        let color = if b.close >= b.open { up } else { down };
        Rectangle::new(
            [(i as f64 - 0.4, 0.0), (i as f64 + 0.4, b.volume)],
            color.mix(0.6).filled(),
        )
    }))?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars(n: usize) -> Vec<Bar> {
        (0..n)
            .map(|i| {
                let c = 100.0 + (i as f64 * 0.7).sin() * 5.0 + i as f64 * 0.2;
                Bar {
                    ts: 1_700_000_000 + i as i64 * 86_400,
                    open: c - 0.5,
                    high: c + 1.5,
                    low: c - 1.8,
                    close: c + if i % 3 == 0 { -1.0 } else { 0.8 },
                    volume: 1_000.0 + i as f64 * 10.0,
                }
            })
            .collect()
    }

    #[test]
    fn a_chart_is_a_png_with_candles_of_both_colors_and_the_overlays() {
        let b = bars(50);
        let names = vec![
            "sma_10".to_string(),
            "rsi_14".to_string(),
            "bbands_20_2_upper".to_string(),
        ];
        assert_eq!(
            overlays(&names, &b).len(),
            2,
            "rsi is not on the price scale"
        );
        let image = png(&b, &names).unwrap();
        assert_eq!(&image[..8], b"\x89PNG\r\n\x1a\n");
        // To look at it: ZTRADED_CHART_PNG=/tmp/chart.png cargo test --lib chart
        if let Ok(path) = std::env::var("ZTRADED_CHART_PNG") {
            std::fs::write(path, &image).unwrap();
        }
        let decoder = ::png::Decoder::new(std::io::Cursor::new(&image));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        let has = |c: [u8; 3]| buf.chunks(3).any(|p| p == c);
        assert!(has([38, 166, 91]), "green candles");
        assert!(has([214, 48, 49]), "red candles");
        assert!(has([31, 119, 180]), "the first overlay");
        assert!(png(&b[..1], &names).is_none());
    }
}
