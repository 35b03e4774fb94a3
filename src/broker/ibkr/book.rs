//! The ownership directory of an IBKR account and the states reported for its orders: what
//! turns the gateway's open-order, order-status and execution messages into
//! [`BrokerEvent`]s, each change once, whichever message (stream or resync) brings it first.

use crate::broker::{BrokerEvent, Fill, OrderPurpose, OrderState, OrderStatus, OrderType, Side};
use rust_decimal::Decimal;
use std::collections::{HashMap, HashSet};

/// What the directory knows of one order: enough to rebuild it for a modification.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    pub pipeline: String,
    pub purpose: OrderPurpose,
    pub oco_group: Option<String>,
    pub symbol: String,
    pub side: Side,
    pub quantity: Decimal,
    pub order_type: OrderType,
    /// IB order id of the bracket's parent (0: none).
    pub parent_ib: i32,
    /// `true` for orders of the directory (ours); `false` for orders found at the gateway
    /// that no pipeline placed (drift: reported, never touched, no events).
    pub ours: bool,
}

/// The directory and the reported states.
#[derive(Default, Debug)]
pub(crate) struct Book {
    pub meta: HashMap<String, Meta>,
    pub ib_to_cid: HashMap<i32, String>,
    pub cid_to_ib: HashMap<String, i32>,
    /// The last state of every order (ours as reported on the stream; others as seen).
    pub state: HashMap<String, OrderState>,
    /// Execution ids already turned into fills.
    pub executions: HashSet<String>,
    /// Orders refused before they reached the gateway, answered again on a resubmission.
    pub rejected: HashMap<String, OrderState>,
    /// symbol → (pipeline of the latest filled entry, of the latest filled order).
    owners: HashMap<String, (Option<String>, Option<String>)>,
    /// Client ids of orders sent in this session whose first answer is awaited.
    pub pending: HashSet<String>,
}

/// The id of an order IB knows under `ib` but whose `order_ref` is not ours.
pub(crate) fn foreign_id(ib: i32, perm: i64) -> String {
    if perm != 0 {
        format!("ib-perm-{perm}")
    } else {
        format!("ib-{ib}")
    }
}

/// IB order status names → ours (`None`: says nothing new, e.g. `PendingSubmit`).
pub(crate) fn status_of(kind: &str) -> Option<OrderStatus> {
    match kind {
        "PreSubmitted" | "Submitted" | "PendingCancel" => Some(OrderStatus::Accepted),
        "Filled" => Some(OrderStatus::Filled),
        "Cancelled" | "ApiCancelled" => Some(OrderStatus::Cancelled),
        "Inactive" => Some(OrderStatus::Rejected),
        _ => None,
    }
}

impl Book {
    /// The directory of the store's orders of this broker.
    pub fn from_known(known: Vec<OrderState>) -> Book {
        let mut book = Book::default();
        let mut known = known;
        known.sort_by_key(|o| o.created_at);
        for o in known {
            book.meta.insert(
                o.client_order_id.clone(),
                Meta {
                    pipeline: o.pipeline.clone(),
                    purpose: o.purpose,
                    oco_group: o.oco_group.clone(),
                    symbol: o.symbol.clone(),
                    side: o.side,
                    quantity: o.quantity,
                    order_type: o.order_type,
                    parent_ib: 0,
                    ours: true,
                },
            );
            if let Ok(ib) = o.broker_order_id.parse::<i32>() {
                book.ib_to_cid.insert(ib, o.client_order_id.clone());
                book.cid_to_ib.insert(o.client_order_id.clone(), ib);
            } else if o.status == OrderStatus::Rejected {
                book.rejected.insert(o.client_order_id.clone(), o.clone());
            }
            if o.filled_quantity > Decimal::ZERO {
                book.note_owner(&o.symbol, &o.pipeline, o.purpose);
            }
            book.state.insert(o.client_order_id.clone(), o);
        }
        book
    }

    pub fn note_owner(&mut self, symbol: &str, pipeline: &str, purpose: OrderPurpose) {
        if pipeline.is_empty() {
            return;
        }
        let e = self.owners.entry(symbol.to_string()).or_default();
        if purpose == OrderPurpose::Entry {
            e.0 = Some(pipeline.to_string());
        }
        e.1 = Some(pipeline.to_string());
    }

    /// The pipeline owning a position in `symbol` (`""`: none, drift).
    pub fn owner_of(&self, symbol: &str) -> String {
        self.owners
            .get(symbol)
            .and_then(|(entry, any)| entry.clone().or_else(|| any.clone()))
            .unwrap_or_default()
    }

    /// Registers `order_ref` as a bracket leg of one of our entries when it is named like
    /// one (`<entry>-sl`, `-t1`, `-t2`; see [`crate::broker::bracket_leg_id`]) and the
    /// entry is in the directory: the legs a crashed run placed are ours after a restart,
    /// though the store never heard of them. `shape`: the leg's type and quantity.
    pub fn adopt_leg(&mut self, order_ref: &str, shape: Option<(OrderType, Decimal)>) -> bool {
        if self.meta.contains_key(order_ref) {
            return true;
        }
        for (suffix, purpose) in [
            ("-sl", OrderPurpose::StopLoss),
            ("-t1", OrderPurpose::Target1),
            ("-t2", OrderPurpose::Target2),
        ] {
            let Some(entry) = order_ref.strip_suffix(suffix) else {
                continue;
            };
            let Some(parent) = self.meta.get(entry).cloned() else {
                return false;
            };
            if parent.purpose != OrderPurpose::Entry || !parent.ours {
                return false;
            }
            let (order_type, quantity) = shape.unwrap_or((OrderType::Market, parent.quantity));
            self.meta.insert(
                order_ref.to_string(),
                Meta {
                    pipeline: parent.pipeline.clone(),
                    purpose,
                    oco_group: Some(entry.to_string()),
                    symbol: parent.symbol.clone(),
                    side: parent.side.opposite(),
                    quantity,
                    order_type,
                    parent_ib: self.cid_to_ib.get(entry).copied().unwrap_or(0),
                    ours: true,
                },
            );
            return true;
        }
        false
    }

    /// The client id of IB order `ib` with order reference `order_ref`, registering the
    /// mapping when the reference is one of ours.
    pub fn resolve(&mut self, ib: i32, perm: i64, order_ref: &str) -> String {
        if !order_ref.is_empty() && self.meta.contains_key(order_ref) {
            if ib != 0 {
                self.ib_to_cid.insert(ib, order_ref.to_string());
                self.cid_to_ib.insert(order_ref.to_string(), ib);
            }
            return order_ref.to_string();
        }
        if let Some(cid) = self.ib_to_cid.get(&ib) {
            return cid.clone();
        }
        if !order_ref.is_empty() {
            return order_ref.to_string();
        }
        foreign_id(ib, perm)
    }

    fn fresh_state(&self, cid: &str, meta: &Meta, now: i64) -> OrderState {
        OrderState {
            client_order_id: cid.to_string(),
            broker_order_id: self
                .cid_to_ib
                .get(cid)
                .map(|i| i.to_string())
                .unwrap_or_default(),
            pipeline: meta.pipeline.clone(),
            symbol: meta.symbol.clone(),
            side: meta.side,
            quantity: meta.quantity,
            filled_quantity: Decimal::ZERO,
            average_price: Decimal::ZERO,
            order_type: meta.order_type,
            purpose: meta.purpose,
            oco_group: meta.oco_group.clone(),
            status: OrderStatus::Accepted,
            reason: None,
            created_at: now,
        }
    }

    /// What an open-order message (or a status) says: `status` of order `cid`, with the
    /// order's current type and quantity when the message carries them. Emits `Accepted`
    /// the first time, `Replaced` when the price or quantity changed, and the terminal
    /// `Cancelled` / `Rejected`. A `Filled` status waits for the executions (they carry
    /// the prices); the order is filled when they add up.
    pub fn observe_status(
        &mut self,
        cid: &str,
        status: Option<OrderStatus>,
        shape: Option<(OrderType, Decimal)>,
        reason: Option<String>,
        now: i64,
        events: &mut Vec<BrokerEvent>,
    ) {
        self.pending.remove(cid);
        let Some(meta) = self.meta.get(cid).cloned() else {
            return;
        };
        let mut state = match self.state.get(cid) {
            Some(s) => s.clone(),
            None => {
                let fresh = self.fresh_state(cid, &meta, now);
                if status == Some(OrderStatus::Rejected) {
                    let mut rejected = fresh;
                    rejected.status = OrderStatus::Rejected;
                    rejected.reason = reason.clone().or(Some("rejected by ibkr".into()));
                    if meta.ours {
                        events.push(BrokerEvent::Rejected {
                            reason: rejected.reason.clone().unwrap_or_default(),
                            order: rejected.clone(),
                        });
                    }
                    self.state.insert(cid.to_string(), rejected);
                    return;
                }
                if meta.ours {
                    events.push(BrokerEvent::Accepted {
                        order: fresh.clone(),
                    });
                }
                fresh
            }
        };
        if state.broker_order_id.is_empty()
            && let Some(ib) = self.cid_to_ib.get(cid)
        {
            state.broker_order_id = ib.to_string();
        }
        if let Some((order_type, quantity)) = shape
            && state.status.is_open()
            && (order_type != state.order_type || quantity != state.quantity)
        {
            state.order_type = order_type;
            state.quantity = quantity;
            if let Some(m) = self.meta.get_mut(cid) {
                m.order_type = order_type;
                m.quantity = quantity;
            }
            if meta.ours {
                events.push(BrokerEvent::Replaced {
                    order: state.clone(),
                });
            }
        }
        if state.status.is_open() {
            match status {
                Some(OrderStatus::Cancelled) => {
                    state.status = OrderStatus::Cancelled;
                    state.reason = reason.or(Some("cancelled at ibkr".into()));
                    if meta.ours {
                        events.push(BrokerEvent::Cancelled {
                            reason: state.reason.clone().unwrap_or_default(),
                            order: state.clone(),
                        });
                    }
                }
                Some(OrderStatus::Rejected) => {
                    state.status = OrderStatus::Rejected;
                    state.reason = reason.or(Some("rejected by ibkr".into()));
                    if meta.ours {
                        events.push(BrokerEvent::Rejected {
                            reason: state.reason.clone().unwrap_or_default(),
                            order: state.clone(),
                        });
                    }
                }
                _ => {}
            }
        }
        self.state.insert(cid.to_string(), state);
    }

    /// One execution: a fill of `quantity` shares at `price`, `cumulative` shares of the
    /// order filled with it (once per execution id; an execution the order's recorded
    /// filled quantity already covers — booked before a restart — adds nothing).
    #[allow(clippy::too_many_arguments)]
    pub fn observe_execution(
        &mut self,
        cid: &str,
        exec_id: &str,
        quantity: Decimal,
        cumulative: Decimal,
        price: Decimal,
        ts: i64,
        now: i64,
        events: &mut Vec<BrokerEvent>,
    ) {
        self.pending.remove(cid);
        if quantity <= Decimal::ZERO || !self.executions.insert(exec_id.to_string()) {
            return;
        }
        if cumulative > Decimal::ZERO
            && self
                .state
                .get(cid)
                .is_some_and(|s| cumulative <= s.filled_quantity)
        {
            return;
        }
        let Some(meta) = self.meta.get(cid).cloned() else {
            return;
        };
        if !self.state.contains_key(cid) {
            self.observe_status(cid, Some(OrderStatus::Accepted), None, None, now, events);
        }
        let Some(mut state) = self.state.get(cid).cloned() else {
            return;
        };
        let before = state.filled_quantity;
        let filled = before + quantity;
        state.average_price = if filled > Decimal::ZERO {
            ((state.average_price * before + price * quantity) / filled)
                .round_dp(6)
                .normalize()
        } else {
            price
        };
        state.filled_quantity = filled;
        if state.status.is_open() || state.status == OrderStatus::Cancelled {
            state.status = if filled >= state.quantity {
                OrderStatus::Filled
            } else if state.status == OrderStatus::Cancelled {
                OrderStatus::Cancelled
            } else {
                OrderStatus::PartiallyFilled
            };
        }
        if meta.ours {
            events.push(BrokerEvent::Fill {
                fill: Fill {
                    client_order_id: cid.to_string(),
                    broker_order_id: state.broker_order_id.clone(),
                    fill_id: exec_id.to_string(),
                    pipeline: state.pipeline.clone(),
                    symbol: state.symbol.clone(),
                    side: state.side,
                    quantity,
                    price,
                    commission: Decimal::ZERO,
                    purpose: state.purpose,
                    ts,
                },
                order: state.clone(),
            });
            self.note_owner(&state.symbol, &state.pipeline, state.purpose);
        }
        self.state.insert(cid.to_string(), state);
    }

    /// The orders that can still execute, oldest first.
    pub fn open_orders(&self) -> Vec<OrderState> {
        let mut out: Vec<OrderState> = self
            .state
            .values()
            .filter(|s| s.status.is_open())
            .cloned()
            .collect();
        out.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.broker_order_id.cmp(&b.broker_order_id))
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::dec;

    fn meta(symbol: &str) -> Meta {
        Meta {
            pipeline: "p".into(),
            purpose: OrderPurpose::Entry,
            oco_group: None,
            symbol: symbol.into(),
            side: Side::Buy,
            quantity: dec!(10),
            order_type: OrderType::Market,
            parent_ib: 0,
            ours: true,
        }
    }

    #[test]
    fn each_change_is_reported_once_whichever_message_brings_it() {
        let mut book = Book::default();
        book.meta.insert("a".into(), meta("AAPL"));
        assert_eq!(book.resolve(7, 0, "a"), "a");
        let mut ev = Vec::new();
        book.observe_status("a", Some(OrderStatus::Accepted), None, None, 1, &mut ev);
        book.observe_status("a", Some(OrderStatus::Accepted), None, None, 1, &mut ev);
        book.observe_execution("a", "e1", dec!(4), dec!(4), dec!(100), 2, 2, &mut ev);
        book.observe_execution("a", "e1", dec!(4), dec!(4), dec!(100), 2, 2, &mut ev);
        book.observe_execution("a", "e2", dec!(6), dec!(10), dec!(101), 3, 3, &mut ev);
        // Replayed after a restart under an id not seen in this life: already counted.
        book.observe_execution("a", "e0", dec!(6), dec!(10), dec!(101), 3, 3, &mut ev);
        book.observe_status("a", Some(OrderStatus::Filled), None, None, 3, &mut ev);
        let kinds: Vec<_> = ev.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds, ["accepted", "partial_fill", "fill"]);
        let last = ev.last().unwrap().order();
        assert_eq!(last.status, OrderStatus::Filled);
        assert_eq!(last.average_price, dec!(100.6));
        assert_eq!(last.broker_order_id, "7");
        assert_eq!(book.owner_of("AAPL"), "p");
    }

    #[test]
    fn orders_of_nobody_make_no_events() {
        let mut book = Book::default();
        let cid = book.resolve(9, 55, "");
        assert_eq!(cid, "ib-perm-55");
        let mut ev = Vec::new();
        book.observe_status(&cid, Some(OrderStatus::Accepted), None, None, 1, &mut ev);
        assert!(ev.is_empty());
    }
}
