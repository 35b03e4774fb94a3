use super::*;
use crate::config::risk::RiskPolicy;
use rust_decimal::dec;

fn policy() -> RiskPolicy {
    let mut p = RiskPolicy::default();
    p.sizing.risk_per_trade_pct = Percent::new(dec!(2));
    p.sizing.max_position_pct = Percent::new(dec!(100));
    p.limits.max_pipeline_capital_pct = Percent::new(dec!(100));
    p.limits.max_deployed_pct = Percent::new(dec!(100));
    p.trade.min_reward_risk = 1.5;
    p
}

fn buy(entry: Decimal, stop: Decimal, t1: Decimal, t2: Decimal) -> StrategySignal {
    StrategySignal {
        action: Action::Buy,
        conviction: 100.0,
        entry_price: Some(entry),
        stop_loss: Some(stop),
        target_1: Some(t1),
        target_2: Some(t2),
        reward_risk: None,
        reasoning: String::new(),
    }
}

fn no_corr(_: &str, _: &str) -> Option<f64> {
    None
}

fn run(
    policy: &RiskPolicy,
    signal: &StrategySignal,
    positions: &[Position],
    day_pnl: Decimal,
) -> (RiskDecision, Option<RiskApproved<EntryOrder>>) {
    evaluate(&RiskInput {
        policy,
        pipeline: "p",
        symbol: "AAPL",
        signal,
        equity: dec!(100000),
        positions,
        day_pnl,
        halted: None,
        correlation: &no_corr,
        client_order_id: "zt-1".into(),
        partial_exit_pct: Percent::new(dec!(50)),
        explain: true,
    })
}

#[test]
fn sizes_by_risk_per_trade_as_the_seeds_do() {
    // The seeds' example: account 100,000, 2% risk, entry 150.50, stop 148.00:
    // 2,000 / 2.50 = 800 shares, 120,400 USD, more than the account: cut to 664.
    let (d, _) = run(
        &policy(),
        &buy(dec!(150.50), dec!(148.00), dec!(154.25), dec!(158.00)),
        &[],
        Decimal::ZERO,
    );
    assert!(d.approved && d.adjusted, "{d:?}");
    assert!(d.reasoning.contains("→ 800 shares"), "{}", d.reasoning);
    assert_eq!(
        (d.quantity, d.rule.as_str()),
        (dec!(664), "max_position_pct")
    );
    // At 1% the 400 shares fit.
    let mut p = policy();
    p.sizing.risk_per_trade_pct = Percent::new(dec!(1));
    let (d, order) = run(
        &p,
        &buy(dec!(150.50), dec!(148.00), dec!(154.25), dec!(158.00)),
        &[],
        Decimal::ZERO,
    );
    assert!(d.approved && !d.adjusted, "{d:?}");
    assert_eq!(d.quantity, dec!(400));
    assert_eq!(d.position_risk_usd, dec!(1000.00));
    let order = order.unwrap();
    let o = order.get();
    assert_eq!(o.quantity, dec!(400));
    assert_eq!(o.stop_loss, Some(dec!(148.00)));
    assert_eq!(
        o.take_profits
            .iter()
            .map(|t| t.quantity)
            .collect::<Vec<_>>(),
        vec![dec!(200), dec!(200)]
    );
}

#[test]
fn shrinks_to_the_max_position_and_says_so() {
    let mut p = policy();
    p.sizing.max_position_pct = Percent::new(dec!(10));
    let (d, order) = run(
        &p,
        &buy(dec!(150.50), dec!(148.00), dec!(154.25), dec!(158.00)),
        &[],
        Decimal::ZERO,
    );
    // 10% of 100,000 = 10,000 USD → 66 shares of 150.50.
    assert!(d.approved && d.adjusted);
    assert_eq!(d.quantity, dec!(66));
    assert_eq!(d.rule, "max_position_pct");
    assert_eq!(order.unwrap().rule(), "adjusted");
    assert!(d.reasoning.contains("max_position_pct"), "{}", d.reasoning);
}

#[test]
fn pipeline_and_account_caps_count_open_positions() {
    let mut p = policy();
    p.limits.max_pipeline_capital_pct = Percent::new(dec!(30));
    let open = Position {
        pipeline: "p".into(),
        symbol: "MSFT".into(),
        quantity: dec!(100),
        average_price: dec!(250),
        market_price: dec!(250),
    };
    // 30,000 cap − 25,000 used = 5,000 → 33 shares.
    let (d, _) = run(
        &p,
        &buy(dec!(150.50), dec!(148.00), dec!(154.25), dec!(158.00)),
        std::slice::from_ref(&open),
        Decimal::ZERO,
    );
    assert_eq!(
        (d.quantity, d.rule.as_str()),
        (dec!(33), "max_pipeline_capital_pct")
    );
    // A position of another pipeline does not count against this pipeline, but does
    // against the account.
    let mut other = open;
    other.pipeline = "q".into();
    p.limits.max_deployed_pct = Percent::new(dec!(26));
    let (d, _) = run(
        &p,
        &buy(dec!(150.50), dec!(148.00), dec!(154.25), dec!(158.00)),
        &[other],
        Decimal::ZERO,
    );
    assert_eq!((d.quantity, d.rule.as_str()), (dec!(6), "max_deployed_pct"));
}

#[test]
fn rejections_name_their_rule() {
    let p = policy();
    let cases: Vec<(StrategySignal, &str)> = vec![
        (buy(dec!(100), dec!(101), dec!(110), dec!(120)), "stop_loss"),
        (
            buy(dec!(100), dec!(98), dec!(102), dec!(104)),
            "min_reward_risk",
        ),
        (buy(dec!(100), dec!(98), dec!(99), dec!(104)), "target_1"),
        (
            StrategySignal {
                stop_loss: None,
                ..buy(dec!(100), dec!(98), dec!(110), dec!(120))
            },
            "require_stop_loss",
        ),
        (
            StrategySignal {
                action: Action::Sell,
                ..buy(dec!(100), dec!(102), dec!(90), dec!(80))
            },
            "allow_short",
        ),
        (
            StrategySignal {
                entry_price: None,
                ..buy(dec!(100), dec!(98), dec!(110), dec!(120))
            },
            "entry_price",
        ),
    ];
    for (signal, rule) in cases {
        let (d, order) = run(&p, &signal, &[], Decimal::ZERO);
        assert!(!d.approved && order.is_none(), "{rule}: {d:?}");
        assert_eq!(d.rule, rule);
        assert!(!d.reasoning.is_empty());
    }
}

#[test]
fn profit_margin_daily_loss_and_halt() {
    let mut p = policy();
    p.trade.min_profit_margin_pct = Percent::new(dec!(5));
    let (d, _) = run(
        &p,
        &buy(dec!(100), dec!(98), dec!(104), dec!(106)),
        &[],
        Decimal::ZERO,
    );
    assert_eq!(d.rule, "min_profit_margin_pct");
    p.trade.min_profit_margin_pct = Percent::default();
    p.limits.daily_loss_usd = Some(dec!(1000));
    let (d, _) = run(
        &p,
        &buy(dec!(100), dec!(98), dec!(104), dec!(106)),
        &[],
        dec!(-1000),
    );
    assert_eq!(d.rule, "daily_loss_usd");
    let (d, _) = run(
        &p,
        &buy(dec!(100), dec!(98), dec!(104), dec!(106)),
        &[],
        dec!(-999.99),
    );
    assert!(d.approved);
    let halted = evaluate(&RiskInput {
        policy: &p,
        pipeline: "p",
        symbol: "AAPL",
        signal: &buy(dec!(100), dec!(98), dec!(104), dec!(106)),
        equity: dec!(100000),
        positions: &[],
        day_pnl: Decimal::ZERO,
        halted: Some("emergency close"),
        correlation: &no_corr,
        client_order_id: "x".into(),
        partial_exit_pct: Percent::new(dec!(50)),
        explain: true,
    });
    assert_eq!(halted.0.rule, "halt");
}

#[test]
fn shorts_are_sized_and_bracketed_the_other_way() {
    let mut p = policy();
    p.trade.allow_short = true;
    let signal = StrategySignal {
        action: Action::Sell,
        ..buy(dec!(100), dec!(102), dec!(96), dec!(92))
    };
    let (d, order) = run(&p, &signal, &[], Decimal::ZERO);
    assert!(d.approved, "{d:?}");
    assert_eq!(d.quantity, dec!(1000));
    assert_eq!(order.unwrap().get().side, crate::broker::Side::Sell);
}

#[test]
fn correlated_positions_are_limited() {
    let mut p = policy();
    p.limits.max_correlated_positions = 1;
    p.limits.correlation_threshold = 0.7;
    let pos = |s: &str| Position {
        pipeline: "q".into(),
        symbol: s.into(),
        quantity: dec!(1),
        average_price: dec!(1),
        market_price: dec!(1),
    };
    let corr = |a: &str, b: &str| match (a, b) {
        ("AAPL", "MSFT") => Some(0.9),
        _ => Some(0.1),
    };
    let signal = buy(dec!(100), dec!(98), dec!(104), dec!(106));
    let input = |positions: &[Position]| {
        evaluate(&RiskInput {
            policy: &p,
            pipeline: "p",
            symbol: "AAPL",
            signal: &signal,
            equity: dec!(100000),
            positions,
            day_pnl: Decimal::ZERO,
            halted: None,
            correlation: &corr,
            client_order_id: "x".into(),
            partial_exit_pct: Percent::new(dec!(50)),
            explain: true,
        })
        .0
    };
    assert_eq!(input(&[pos("MSFT")]).rule, "max_correlated_positions");
    assert!(input(&[pos("XOM")]).approved);
}

#[test]
fn pearson_correlation_of_returns() {
    let a: Vec<f64> = (0..61)
        .map(|i| 100.0 + (i as f64 * 0.7).sin() * 5.0 + i as f64 * 0.1)
        .collect();
    let b: Vec<f64> = a.iter().map(|x| x * 2.0).collect();
    let c: Vec<f64> = a.iter().map(|x| 1.0 / x).collect();
    assert!((correlation(&a, &b, 60).unwrap() - 1.0).abs() < 1e-12);
    assert!(correlation(&a, &c, 60).unwrap() < -0.99);
    assert_eq!(correlation(&a[..10], &b[..10], 60), None);
}
