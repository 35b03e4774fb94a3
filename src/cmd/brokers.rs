//! `ztraded brokers [DIR]`: each configured broker account checked from the command line —
//! reachable, authenticated, paper or live, status, equity, cash and buying power (USD), open
//! positions and orders, and drift (positions and orders at the broker that no pipeline owns,
//! by the store's order records). Nothing is changed at any broker.
//!
//! Exit code: 0 when every account answered and shows no drift, 1 when one is unreachable,
//! refuses the keys, is blocked or shows drift, 2 for a config that does not load.

use super::{EXIT_INVALID, EXIT_OK, EXIT_USAGE};
use crate::broker::alpaca::AlpacaBroker;
use crate::broker::{Broker, OrderState, Position};
use crate::config::load::load_dir;
use crate::config::settings::BrokerSettings;
use crate::store::Store;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// One account's check, as printed (`--json` prints these objects in a list).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BrokerCheck {
    /// The `[brokers.<name>]` name.
    pub name: String,
    /// `simulated`, `alpaca` or `ibkr`.
    pub kind: &'static str,
    /// `paper`, `live`, or `simulated`.
    pub account: &'static str,
    /// The broker answered.
    pub reachable: bool,
    /// The broker accepted the keys (`None` when it was not reached or needs none).
    pub authenticated: Option<bool>,
    /// The broker's account status (`ACTIVE`, …) and blocks, when it says.
    pub status: Option<String>,
    /// Balances, USD: `{cash, equity, buying_power}`.
    pub balances: Option<Value>,
    /// Open positions: `{symbol, quantity, average_price, market_price, pipeline}`.
    pub positions: Vec<Value>,
    /// Open orders at the broker.
    pub open_orders: usize,
    /// Positions no pipeline owns (symbols).
    pub drift_positions: Vec<String>,
    /// Open orders no pipeline owns (broker order ids).
    pub drift_orders: Vec<String>,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

impl BrokerCheck {
    fn new(name: &str, kind: &'static str, account: &'static str) -> BrokerCheck {
        BrokerCheck {
            name: name.to_string(),
            kind,
            account,
            reachable: false,
            authenticated: None,
            status: None,
            balances: None,
            positions: Vec::new(),
            open_orders: 0,
            drift_positions: Vec::new(),
            drift_orders: Vec::new(),
            error: None,
        }
    }

    /// Whether the account is usable and everything at it is owned.
    pub fn ok(&self) -> bool {
        self.reachable
            && self.authenticated != Some(false)
            && self.error.is_none()
            && self.drift_positions.is_empty()
            && self.drift_orders.is_empty()
    }

    fn fill(&mut self, positions: &[Position], orders: &[OrderState]) {
        self.positions = positions
            .iter()
            .map(|p| {
                json!({
                    "symbol": p.symbol,
                    "quantity": p.quantity,
                    "average_price": p.average_price,
                    "market_price": p.market_price,
                    "pipeline": p.pipeline,
                })
            })
            .collect();
        self.open_orders = orders.len();
        self.drift_positions = positions
            .iter()
            .filter(|p| p.pipeline.is_empty())
            .map(|p| p.symbol.clone())
            .collect();
        self.drift_orders = orders
            .iter()
            .filter(|o| o.pipeline.is_empty())
            .map(|o| o.broker_order_id.clone())
            .collect();
    }
}

/// Runs the check of every broker of `dir`'s settings; prints text or JSON to `out`.
/// Returns the exit code (see the module documentation).
pub async fn run(dir: &Path, as_json: bool, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let set = load_dir(dir);
    let setting_errors: Vec<_> = set
        .findings
        .iter()
        .filter(|f| {
            f.severity == crate::config::Severity::Error
                && (f.code == "invalid-setting"
                    || f.file.ends_with("ztraded.toml")
                    || f.file.starts_with("env "))
        })
        .collect();
    if !setting_errors.is_empty() {
        for f in setting_errors {
            let _ = writeln!(err, "{}", f.human());
        }
        let _ = writeln!(
            err,
            "ztraded brokers: the settings of {} do not load",
            dir.display()
        );
        return EXIT_INVALID;
    }
    if set.settings.brokers.is_empty() {
        let _ = writeln!(err, "ztraded brokers: no [brokers.<name>] in the settings");
        return EXIT_USAGE;
    }
    // The store says which orders are ours; without it every position at a real broker
    // would look like drift, so say so instead.
    let store = match Store::connect(&set.settings.store.url, 1, dir).await {
        Ok(s) => Some(s),
        Err(e) => {
            let _ = writeln!(
                err,
                "ztraded brokers: the store is unreachable ({e}); ownership of positions is unknown"
            );
            None
        }
    };
    let mut checks = Vec::new();
    for (name, settings) in &set.settings.brokers {
        checks.push(check(name, settings, store.as_ref()).await);
    }
    if let Some(s) = store {
        s.close().await;
    }
    if as_json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&checks).unwrap_or_default()
        );
    } else {
        for c in &checks {
            let _ = out.write_all(human(c).as_bytes());
        }
    }
    if checks.iter().all(BrokerCheck::ok) {
        EXIT_OK
    } else {
        1
    }
}

async fn check(name: &str, settings: &BrokerSettings, store: Option<&Store>) -> BrokerCheck {
    let paper_or_live = match settings.is_paper() {
        None => "simulated",
        Some(true) => "paper",
        Some(false) => "live",
    };
    let mut c = BrokerCheck::new(name, settings.kind(), paper_or_live);
    match settings {
        BrokerSettings::Simulated(_) => {
            let saved = match store {
                Some(s) => s
                    .load_broker_state(name)
                    .await
                    .ok()
                    .flatten()
                    .map(|s| s.state),
                None => None,
            };
            let now: crate::broker::Now = Arc::new(|| chrono::Utc::now().timestamp());
            match crate::broker::connect(name, settings, now, saved, Vec::new()) {
                Ok(b) => read(&mut c, b.as_ref()).await,
                Err(e) => c.error = Some(e.to_string()),
            }
        }
        BrokerSettings::Alpaca(a) => {
            let known = match store {
                Some(s) => s
                    .orders_of_broker(name)
                    .await
                    .map(|v| v.into_iter().map(|o| o.state).collect())
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let broker = match AlpacaBroker::connect(name, a, known) {
                Ok(b) => b,
                Err(e) => {
                    c.error = Some(e.to_string());
                    return c;
                }
            };
            match broker.account_details().await {
                Ok(d) => {
                    c.reachable = true;
                    c.authenticated = Some(true);
                    let mut status = d.status.clone();
                    if d.trading_blocked {
                        status.push_str(", trading blocked");
                    }
                    if d.account_blocked {
                        status.push_str(", account blocked");
                    }
                    if d.pattern_day_trader {
                        status.push_str(", pattern day trader");
                    }
                    if d.trading_blocked || d.account_blocked {
                        c.error = Some(format!("the account may not trade ({status})"));
                    }
                    c.status = Some(format!("{status} (account {})", d.account_number));
                }
                Err(e) => {
                    if e.is_auth() {
                        c.reachable = true;
                        c.authenticated = Some(false);
                    }
                    c.error = Some(e.to_string());
                    return c;
                }
            }
            read(&mut c, &broker).await;
        }
        BrokerSettings::Ibkr(i) => {
            let known = match store {
                Some(s) => s
                    .orders_of_broker(name)
                    .await
                    .map(|v| v.into_iter().map(|o| o.state).collect())
                    .unwrap_or_default(),
                None => Vec::new(),
            };
            let options = crate::broker::ibkr::IbkrOptions {
                ready_wait: std::time::Duration::from_secs(10),
                ..Default::default()
            };
            let broker = crate::broker::ibkr::IbkrBroker::new(name, i, known, options);
            match broker.account_details().await {
                Ok(d) => {
                    c.reachable = true;
                    c.authenticated = Some(true);
                    c.status = Some(format!(
                        "logged in (account {}, server version {})",
                        d.account, d.server_version
                    ));
                }
                Err(e) => {
                    if matches!(e, crate::broker::BrokerError::Unauthorized(_)) {
                        c.reachable = true;
                        c.authenticated = Some(false);
                    }
                    c.error = Some(e.to_string());
                    return c;
                }
            }
            read(&mut c, &broker).await;
        }
    }
    c
}

/// Balances, positions and open orders through the `Broker` trait.
async fn read(c: &mut BrokerCheck, broker: &dyn Broker) {
    let account = match broker.account().await {
        Ok(a) => a,
        Err(e) => {
            c.error = Some(e.to_string());
            return;
        }
    };
    c.reachable = true;
    c.balances = Some(json!({
        "cash": account.cash,
        "equity": account.equity,
        "buying_power": account.buying_power,
    }));
    match (broker.positions().await, broker.open_orders().await) {
        (Ok(p), Ok(o)) => c.fill(&p, &o),
        (Err(e), _) | (_, Err(e)) => c.error = Some(e.to_string()),
    }
}

fn human(c: &BrokerCheck) -> String {
    let mut s = format!("{} ({}, {})\n", c.name, c.kind, c.account);
    let yes = |b: bool| if b { "yes" } else { "no" };
    s.push_str(&format!("  reachable:      {}\n", yes(c.reachable)));
    if let Some(a) = c.authenticated {
        s.push_str(&format!("  authenticated:  {}\n", yes(a)));
    }
    if let Some(st) = &c.status {
        s.push_str(&format!("  status:         {st}\n"));
    }
    if let Some(b) = &c.balances {
        let v = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        s.push_str(&format!("  equity:         {} USD\n", v("equity")));
        s.push_str(&format!("  cash:           {} USD\n", v("cash")));
        s.push_str(&format!("  buying power:   {} USD\n", v("buying_power")));
        s.push_str(&format!(
            "  positions:      {}, open orders: {}\n",
            c.positions.len(),
            c.open_orders
        ));
        for p in &c.positions {
            let f = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let owner = match f("pipeline") {
                o if o.is_empty() => "no pipeline (drift)".to_string(),
                o => o,
            };
            s.push_str(&format!(
                "    {} {} @ {} (last {}) — {owner}\n",
                f("symbol"),
                f("quantity"),
                f("average_price"),
                f("market_price")
            ));
        }
    }
    if c.drift_positions.is_empty() && c.drift_orders.is_empty() {
        if c.reachable && c.error.is_none() {
            s.push_str("  drift:          none\n");
        }
    } else {
        s.push_str(&format!(
            "  drift:          {} positions ({}), {} orders no pipeline owns; ztraded never touches them\n",
            c.drift_positions.len(),
            c.drift_positions.join(", "),
            c.drift_orders.len()
        ));
    }
    if let Some(e) = &c.error {
        s.push_str(&format!("  error:          {e}\n"));
    }
    s
}
