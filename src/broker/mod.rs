//! Brokers: the [`Broker`] trait every broker implements (the only way the engine reaches a
//! broker), the shared order vocabulary, the simulated broker, and [`connect`], which builds
//! the broker of a `[brokers.<name>]` setting.

pub mod alpaca;
pub mod ibkr;
pub mod sim;
pub mod types;

pub use types::*;

use crate::config::settings::BrokerSettings;
use crate::market::Bar;
use async_trait::async_trait;
use rust_decimal::Decimal;
use std::sync::Arc;

/// A broker failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The broker refused the request (an order it will not take, a cancel of a filled
    /// order). Nothing changed at the broker.
    #[error("order {client_order_id} rejected: {reason}")]
    Rejected {
        /// Our order id.
        client_order_id: String,
        /// The broker's reason.
        reason: String,
    },
    /// No such order.
    #[error("unknown order {0}")]
    UnknownOrder(String),
    /// The broker could not be reached, timed out, or answered garbage. For a request that
    /// changes state (submit, cancel, replace) the outcome is **unknown**: the request may or
    /// may not have reached the broker. Look the order up by client order id
    /// ([`Broker::order`]) before doing anything else; never submit it again blindly.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused our credentials (Alpaca: HTTP 401). Nothing executed; nothing
    /// will until the keys are fixed and the daemon restarted: the pipelines on this
    /// broker fail with the reason.
    #[error("{0}")]
    Unauthorized(String),
    /// This build cannot connect to this kind of broker.
    #[error("{0}")]
    Unsupported(String),
}

/// What a broker can do natively.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// The broker places an entry's stop and take-profit legs itself when the entry fills
    /// (a bracket / OTO order, with one-cancels-other between the legs). Without it the
    /// engine submits the legs as separate exit orders once the entry fills, and cancels
    /// the others itself when the stop fills or the position is flat.
    pub brackets: bool,
    /// The broker closes every position and cancels every open order of the account in one
    /// request ([`Broker::close_all`]); the emergency close with scope `all` uses it.
    pub bulk_close: bool,
    /// The broker also places bracket legs for crypto pairs (`BTC/USD`). Alpaca does not:
    /// its crypto orders are simple, so the engine submits the legs as separate exit orders
    /// when a crypto entry fills, as for a broker without [`Capabilities::brackets`].
    pub crypto_brackets: bool,
    /// The broker's events arrive on their own (a real broker's order stream), not only in
    /// answer to [`Broker::on_bar`]: the daemon books them as they arrive. The simulated
    /// broker's events follow from the bars it is given, and are booked with them.
    pub streams: bool,
}

/// One symbol's answer to [`Broker::close_all`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkClose {
    /// Ticker symbol.
    pub symbol: String,
    /// The broker's status for this symbol (HTTP status of the part, 200 when accepted).
    pub status: u16,
    /// The closing order, when the broker created one.
    pub order: Option<OrderState>,
    /// The broker's error for this symbol, when it refused.
    pub error: Option<String>,
}

/// The order events of a broker, in the order the broker produced them.
pub type EventStream = tokio::sync::mpsc::UnboundedReceiver<BrokerEvent>;

/// A broker account: the simulated broker ([`sim::SharedSimBroker`]), Alpaca, Interactive
/// Brokers. The engine (backtest and daemon alike) reaches brokers only through this trait.
///
/// # Contract
///
/// * **Idempotent by client order id.** Every order carries a deterministic
///   `client_order_id` (see [`client_order_id`]) that the caller writes to its store before
///   calling [`Broker::submit`]. Submitting an id the broker already has creates nothing:
///   the answer is that order's current state. A broker that cannot enforce this itself
///   (one that has no client ids) must look the id up before sending.
/// * **Unknown outcomes.** A timeout or a dropped connection during `submit`, `cancel` or
///   `replace_stop` is [`BrokerError::Unavailable`]: the request may have been executed.
///   The caller resolves it with [`Broker::order`] (by client order id) before any retry,
///   and never submits twice.
/// * **Events.** Every change of an order — accepted, partial fill, fill, cancelled,
///   rejected, expired, replaced — is delivered once on the stream of
///   [`Broker::take_events`], in the broker's order, including the changes caused by our
///   own requests and the bracket legs the broker places. The answer of a request is a
///   convenience; the stream is the record. After a reconnect a broker fetches what changed
///   while its stream was down and delivers it, so no fill is missed.
/// * **Partial fills.** A fill may cover part of an order; the order's state in the event
///   says how much is filled and whether the rest still works. Bracket legs cover the
///   shares filled so far.
/// * **Rejections.** A refused submission answers `Ok` with an order in status `Rejected`
///   (and a `Rejected` event) when the broker recorded it, or [`BrokerError::Rejected`]
///   when it did not (an invalid order); either way nothing executes.
/// * **Entries only with risk approval.** [`Submit::Entry`] holds a
///   [`crate::risk::RiskApproved`] order, which only the risk manager can make; exits
///   ([`Submit::Exit`]) reduce a position and are executed reduce-only.
/// * **Brackets.** An entry carries its stop and take-profit legs. A broker with
///   [`Capabilities::brackets`] places them itself (ids `<entry>-sl`, `-t1`, `-t2`, see
///   [`bracket_leg_id`]) and reports them as `Accepted`; without it the engine submits them
///   as exit orders with those ids when the entry fills.
#[async_trait]
pub trait Broker: Send + Sync {
    /// The `[brokers.<name>]` name.
    fn name(&self) -> &str;
    /// What the broker does natively.
    fn capabilities(&self) -> Capabilities;
    /// Balances: cash, equity and buying power, USD.
    async fn account(&self) -> Result<Account, BrokerError>;
    /// Open positions (per pipeline where the broker knows them, see [`Position`]).
    async fn positions(&self) -> Result<Vec<Position>, BrokerError>;
    /// Balances and open positions together, as of one instant where the broker allows it
    /// (the simulated broker: one look at its state). The default asks
    /// [`Broker::account`], then [`Broker::positions`].
    async fn balances(&self) -> Result<(Account, Vec<Position>), BrokerError> {
        Ok((self.account().await?, self.positions().await?))
    }
    /// [`Broker::balances`] with the positions written into `positions`, which then holds
    /// exactly them (its earlier contents are replaced). A broker may reuse the vector's
    /// allocations: the simulated one updates it in place, so that reading the balances
    /// after every bar of a backtest allocates nothing. On an error `positions` is left as
    /// it was. The default calls [`Broker::balances`].
    async fn balances_into(&self, positions: &mut Vec<Position>) -> Result<Account, BrokerError> {
        let (account, fresh) = self.balances().await?;
        *positions = fresh;
        Ok(account)
    }
    /// Orders that can still execute, in submission order.
    async fn open_orders(&self) -> Result<Vec<OrderState>, BrokerError>;
    /// An order by client order id, open or not (`None`: the broker never had it).
    async fn order(&self, client_order_id: &str) -> Result<Option<OrderState>, BrokerError>;
    /// Submits an order (see the contract: idempotent by client order id).
    async fn submit(&self, order: Submit) -> Result<OrderState, BrokerError>;
    /// Cancels an open order. Cancelling an order that is already cancelled succeeds.
    async fn cancel(&self, client_order_id: &str) -> Result<(), BrokerError>;
    /// Moves a working stop order to `price` (USD per share) for `quantity` shares (stop to
    /// breakeven after target 1).
    async fn replace_stop(
        &self,
        client_order_id: &str,
        price: Decimal,
        quantity: Decimal,
    ) -> Result<(), BrokerError>;
    /// Cancels every open order of the account and closes every position at market, in the
    /// broker's bulk requests (Alpaca: `DELETE /v2/positions?cancel_orders=true`, answered
    /// with HTTP 207 and one part per symbol). The closing orders are reported on the event
    /// stream like any other, with purpose [`OrderPurpose::Emergency`] and the pipeline that
    /// owned the position. Brokers without [`Capabilities::bulk_close`] answer
    /// [`BrokerError::Unsupported`] and the engine closes position by position.
    async fn close_all(&self) -> Result<Vec<BulkClose>, BrokerError> {
        Err(BrokerError::Unsupported(format!(
            "broker {} has no bulk close",
            self.name()
        )))
    }
    /// The stream of order events. The first call takes it; later calls get `None`.
    fn take_events(&self) -> Option<EventStream>;

    /// Several daemons on one account: learn `orders` another daemon placed (the store's
    /// rows of a pipeline whose lease this daemon just took), so that they are ours from
    /// now on — their events reported, their legs cancelled and replaced by id. Orders
    /// known already are left as they are. The default does nothing (a broker that needs
    /// no directory of its orders).
    fn learn_orders(&self, _orders: &[OrderState]) {}
    /// A closed bar of market data. Real brokers have the real market and ignore it; the
    /// simulated broker executes its working orders against it (see [`sim`]).
    async fn on_bar(&self, _symbol: &str, _bar: &Bar) -> Result<(), BrokerError> {
        Ok(())
    }
    /// The broker's state to save with the store's records, so that a restart continues
    /// exactly (the simulated broker's account and orders); `None` for a real broker, whose
    /// state lives at the broker.
    fn snapshot(&self) -> Option<Box<serde_json::value::RawValue>> {
        None
    }
}

/// A clock for brokers that need the time of a submission (the simulated broker): Unix
/// seconds, the engine's clock (simulated in replay and backtest).
pub type Now = Arc<dyn Fn() -> i64 + Send + Sync>;

/// Builds the broker of setting `[brokers.<name>]`. A simulated broker continues from
/// `saved` (its [`Broker::snapshot`] from the store) when given and readable; it takes its
/// submission times from `now`. An Alpaca broker reads its keys from the environment
/// variables the settings name and knows the store's orders of this broker (`known`: which
/// pipeline owns which order and position).
///
/// # Errors
/// [`BrokerError::Unsupported`] for an Alpaca key
/// variable that is not set.
pub fn connect(
    name: &str,
    settings: &BrokerSettings,
    now: Now,
    saved: Option<serde_json::Value>,
    known: Vec<OrderState>,
) -> Result<Arc<dyn Broker>, BrokerError> {
    match settings {
        BrokerSettings::Simulated(config) => {
            let broker = match saved.map(serde_json::from_value::<sim::SimState>) {
                Some(Ok(state)) => {
                    tracing::info!(broker = %name, "simulated broker restored from the store");
                    sim::SimBroker::restore(name, config, state)
                }
                Some(Err(e)) => {
                    tracing::warn!(broker = %name, error = %e, "stored simulated broker state does not load; starting a fresh account");
                    sim::SimBroker::new(name, config)
                }
                None => sim::SimBroker::new(name, config),
            };
            Ok(Arc::new(sim::SharedSimBroker::new(broker, now)))
        }
        BrokerSettings::Alpaca(config) => alpaca::connect_alpaca(name, config, known),
        BrokerSettings::Ibkr(config) => ibkr::connect_ibkr(name, config, known),
    }
}
