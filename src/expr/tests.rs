use super::*;

const NAMES: [&str; 6] = ["close", "open", "sma_50", "sma_200", "rsi_14", "atr_14"];

fn resolver() -> impl FnMut(Option<Timeframe>, &str) -> Resolution {
    |tf: Option<Timeframe>, name: &str| match (tf, NAMES.iter().position(|n| *n == name)) {
        (None, Some(i)) => Resolution::Slot(i as u32),
        (Some(Timeframe::D1), Some(i)) => Resolution::Slot(10 + i as u32),
        _ => Resolution::Unknown("unknown-identifier", format!("unknown identifier '{name}'")),
    }
}

struct Bars {
    cur: Vec<f64>,
    prev: Vec<f64>,
}

impl Values for Bars {
    fn current(&self, slot: u32) -> f64 {
        self.cur.get(slot as usize).copied().unwrap_or(f64::NAN)
    }
    fn previous(&self, slot: u32) -> f64 {
        self.prev.get(slot as usize).copied().unwrap_or(f64::NAN)
    }
}

fn bars() -> Bars {
    let mut cur = vec![f64::NAN; 20];
    let mut prev = vec![f64::NAN; 20];
    // close open sma_50 sma_200 rsi_14 atr_14
    cur[..6].copy_from_slice(&[101.0, 99.0, 100.5, 100.0, 55.0, 2.0]);
    prev[..6].copy_from_slice(&[99.0, 98.0, 99.5, 100.0, 45.0, 2.1]);
    cur[10] = 90.0; // d1.close
    Bars { cur, prev }
}

fn num(src: &str) -> Option<f64> {
    compile(src, Ty::Number, &mut resolver())
        .unwrap()
        .eval_number(&bars())
}

fn cond(src: &str) -> Option<bool> {
    compile(src, Ty::Bool, &mut resolver())
        .unwrap()
        .eval_bool(&bars())
}

fn errors(src: &str, ty: Ty) -> Vec<(&'static str, usize)> {
    compile(src, ty, &mut resolver())
        .err()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.code, e.offset))
        .collect()
}

#[test]
fn arithmetic_with_mixed_integer_and_double_literals() {
    assert_eq!(num("close - 2 * atr_14"), Some(97.0));
    assert_eq!(num("close + 3.0 * atr_14"), Some(107.0));
    assert_eq!(num("-close / 2"), Some(-50.5));
    assert_eq!(num("max(close, open, 100) - min(1, 2)"), Some(100.0));
    assert_eq!(num("abs(open - close)"), Some(2.0));
    assert_eq!(num("rsi_14 > 50 ? close : open"), Some(101.0));
    assert_eq!(num("d1.close"), Some(90.0));
}

#[test]
fn conditions_and_crosses() {
    assert_eq!(cond("close > sma_200 && rsi_14 < 70"), Some(true));
    assert_eq!(cond("crossed_above(sma_50, sma_200)"), Some(true));
    assert_eq!(cond("crossed_below(sma_50, sma_200)"), Some(false));
    assert_eq!(cond("prev(close) < 100 && !(close < 100)"), Some(true));
    assert_eq!(cond("crossed_above(close, sma_200 * 1.005)"), Some(true));
    assert_eq!(cond("(close > 1) == true"), Some(true));
}

#[test]
fn undefined_values_make_the_whole_expression_undefined() {
    // d1.sma_50 (slot 12) is undefined: the negation must not become true.
    assert_eq!(cond("!(d1.sma_50 > 70)"), None);
    assert_eq!(num("close / (close - close)"), None);
}

#[test]
fn errors_are_located_and_collected() {
    assert_eq!(
        errors("close > atr_41", Ty::Bool),
        vec![("unknown-identifier", 8)]
    );
    assert_eq!(
        errors("foo(close) && bar > 1", Ty::Bool),
        vec![("unknown-function", 0), ("unknown-identifier", 14)]
    );
    assert_eq!(errors("close + ", Ty::Number)[0].0, "cel-syntax");
    assert_eq!(errors("close", Ty::Bool), vec![("wrong-type", 0)]);
    assert_eq!(
        errors("close > 'x'", Ty::Bool)[0].0,
        "unsupported-expression"
    );
    assert_eq!(
        errors("[close].size() > 0", Ty::Bool)[0].0,
        "unknown-function"
    );
    assert_eq!(errors("q1.close > 0", Ty::Bool)[0].0, "unknown-identifier");
    assert_eq!(
        errors("prev(prev(close)) > 0", Ty::Bool)[0].0,
        "unsupported-expression"
    );
    assert_eq!(errors("close > 1 && 3", Ty::Bool)[0].0, "wrong-type");
}

#[test]
fn agrees_with_the_cel_interpreter() {
    use cel::{Context, Program as CelProgram};
    let b = bars();
    let cases = [
        "close > sma_200 && rsi_14 < 70.0",
        "close - 2.0 * atr_14 > 96.5 || open > 100.0",
        "(close + open) / 2.0 >= sma_50",
        "!(rsi_14 > 50.0) || close == 101.0",
        "rsi_14 > 50.0 ? close > open : close < open",
    ];
    for src in cases {
        let cel = CelProgram::compile(src).unwrap();
        let mut ctx = Context::default();
        for (i, n) in NAMES.iter().enumerate() {
            ctx.add_variable_from_value(*n, b.cur[i]);
        }
        let expected = cel.execute(&ctx).unwrap();
        let ours = cond(src).unwrap();
        assert_eq!(expected, cel::Value::Bool(ours), "{src}");
    }
}

/// Runs `f` on a thread with a 2 MiB stack, the size of a Tokio worker's and of Tokio's
/// blocking pool's, where the daemon compiles expressions.
fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

fn codes(src: &str) -> Vec<&'static str> {
    match compile(src, Ty::Bool, &mut resolver()) {
        Ok(_) => vec![],
        Err(errors) => errors.into_iter().map(|e| e.code).collect(),
    }
}

#[test]
fn deep_nesting_is_too_deep_not_a_stack_overflow() {
    let parens = format!("{}close{} > 1", "(".repeat(5_000), ")".repeat(5_000));
    let nots = format!("{}(close > 1)", "!".repeat(5_000));
    let sum = format!("{} > 1", vec!["close"; 5_000].join(" + "));
    let deepest_parser = format!("{}close{} > 1", "(".repeat(200), ")".repeat(200));
    let results = on_small_stack(move || {
        [parens, nots, sum, deepest_parser]
            .iter()
            .map(|s| codes(s))
            .collect::<Vec<_>>()
    });
    for r in &results {
        assert_eq!(r, &vec!["too-deep"], "{results:?}");
    }
    // The offset is where the limit is crossed.
    let e = compile(&"(".repeat(5_000), Ty::Bool, &mut resolver()).unwrap_err();
    assert_eq!(e[0].offset, MAX_EXPR_DEPTH);
}

#[test]
fn nesting_within_the_limit_compiles_on_a_small_stack() {
    // As deep as the parser accepts, and a long flat chain.
    let parens = format!("{}close{} > 1", "(".repeat(90), ")".repeat(90));
    let sum = format!("{} > 1", vec!["close"; 200].join(" + "));
    let ands = vec!["close > 1"; 60].join(" && ");
    // As deep as is parsed on the calling thread.
    let inline = format!(
        "{}close{} > 1 ? true : false",
        "max(".repeat(INLINE_PARSER_LEVELS),
        ", 0)".repeat(INLINE_PARSER_LEVELS)
    );
    assert_eq!(measure(&inline).parser_levels, INLINE_PARSER_LEVELS);
    let ok = on_small_stack(move || {
        [parens, sum, ands, inline]
            .iter()
            .map(|s| {
                compile(s, Ty::Bool, &mut resolver())
                    .map(|p| p.eval_bool(&bars()))
                    .map_err(|e| format!("{s:.40}: {e:?}"))
            })
            .collect::<Vec<_>>()
    });
    for r in ok {
        assert_eq!(r, Ok(Some(true)));
    }
    // Strings are skipped: brackets inside them do not count.
    assert_eq!(nesting_overflow(&format!("'{}'", "(".repeat(1_000))), None);
}
