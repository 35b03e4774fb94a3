//! The daemon, `ztraded run`: watch → validate → reconcile → run, with its store, metrics
//! and emergency close (DESIGN.md §4).
//!
//! Start: settings → store (migrations; executions left `running` become `interrupted`) →
//! metrics and the HTTP port (not ready yet) → replay data and the simulated clock (resumed
//! where the last run stopped) → brokers and the book (restored, reconciled with the
//! brokers, pending intents settled) → the first reconcile (ready) → the watcher and the
//! market loop. SIGHUP rescans the directory; SIGINT and SIGTERM stop taking triggers, let
//! running executions finish for up to 8 s, mark the rest interrupted, save the brokers and
//! exit 0. The pipelines' states and the daemon's heartbeat go to the store as they change
//! ([`status`]), for `ztraded status`.

pub mod actor;
pub mod control;
pub mod controller;
pub mod live;
pub mod market;
pub mod registry;
pub mod status;

use crate::config::load::{ConfigSet, load_dir_with_env, load_settings_of, process_env};
use crate::config::semantic::{StartPoint, parse_start};
use crate::config::settings::MarketDataSource;
use crate::engine::clock::{Clock, ReplayClock, WallClock};
use crate::http::{HttpState, Readiness};
use crate::market::replay::ReplayOptions;
use crate::metrics::Metrics;
use crate::reconcile::watcher::{WatchOptions, Watcher};
use crate::runtime::{Account, AccountOptions, ReplayHub};
use crate::store::Store;
use actor::Shared;
use controller::{APPLIED_FILES_KEY, Controller, Outcome};
use registry::Registry;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{error, info, warn};

/// Daemon state key of the replay clock's position.
pub const REPLAY_CURSOR_KEY: &str = "replay_cursor";

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The settings are invalid.
    #[error("{0}")]
    Settings(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Market data failed.
    #[error("market data: {0}")]
    MarketData(String),
    /// The HTTP port failed.
    #[error("http: {0}")]
    Http(String),

    /// The watcher failed.
    #[error("watcher: {0}")]
    Watch(String),
    /// The bus (Redis) could not be reached, or the signal bus failed.
    #[error("bus: {0}")]
    Bus(String),
}

/// How long queued notifications get to be delivered at shutdown.
const NOTIFY_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// How long running executions get to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Runs the daemon on config directory `dir` until SIGINT or SIGTERM.
///
/// # Errors
/// A [`DaemonError`] when it cannot start.
pub async fn run(dir: PathBuf) -> Result<(), DaemonError> {
    let (settings, settings_ok, settings_findings) = load_settings_of(&dir, &process_env());
    if !settings_ok {
        let findings: Vec<String> = settings_findings.iter().map(|f| f.human()).collect();
        return Err(DaemonError::Settings(format!(
            "the settings are invalid:\n{}",
            findings.join("\n")
        )));
    }
    // The watcher's first scan is the desired state to start with: one parse of the
    // directory, kept by the watcher in compact form (no parse trees).
    let (watcher, mut updates) = Watcher::start_with(
        dir.clone(),
        WatchOptions::from_settings(&settings.reconcile),
    )
    .await
    .map_err(|e| DaemonError::Watch(e.to_string()))?;
    let set = updates.borrow_and_update().set.clone();
    let initial = set.revision.clone();
    // Store.
    let store = Store::connect(&settings.store.url, settings.store.max_connections, &dir).await?;
    // With several daemons on one store, the executions `running` there may be another
    // daemon's: they are left alone.
    let shared_store = !settings.bus.url.starts_with("memory://");
    let interrupted = if shared_store {
        0
    } else {
        store.mark_running_interrupted().await?
    };
    if interrupted > 0 {
        warn!(
            count = interrupted,
            "executions left running by the last run are marked interrupted"
        );
    }
    info!(store = %store.url(), backend = store.backend(), "store ready");
    // Metrics and HTTP (not ready until the first reconcile).
    let metrics = Arc::new(Metrics::new().map_err(|e| DaemonError::Http(e.to_string()))?);
    let readiness = Arc::new(Readiness::new("starting: the first reconcile has not run"));
    // Market data and the clock.
    let tz: chrono_tz::Tz = settings
        .market_data
        .timezone
        .parse()
        .unwrap_or(chrono_tz::America::New_York);
    // The signal bus (in process, or the deployment's Redis streams).
    let bus_config = crate::bus::BusConfig::from_settings(&settings.bus);
    let bus = Arc::new(
        crate::bus::Bus::connect(bus_config.clone())
            .await
            .map_err(|e| DaemonError::Bus(e.to_string()))?,
    );
    info!(bus = %bus_config.safe_url(), stream = %bus_config.stream, group = %bus_config.group, consumer = %bus_config.consumer, "signal bus ready");
    // Several daemons on one account: pipeline leases in Redis.
    let lease_client = if settings.bus.url.starts_with("memory://") {
        None
    } else {
        let ttl = settings.bus.lease_ttl.std();
        // Under the deployment's key prefix, beside its signal streams.
        let client = crate::lease::LeaseClient::connect(&settings.bus.url, ttl)
            .await
            .map_err(|e| DaemonError::Bus(format!("{}: {e}", bus_config.safe_url())))?
            .with_prefix(&format!("{}:lease:", settings.bus.key_prefix));
        if store.backend() != "postgres" {
            warn!(store = %store.url(), "several daemons share one account through a shared store: use a postgres:// store; this one is seen by this daemon only");
        }
        info!(bus = %settings.bus.url, lease_ttl = ?ttl, "pipeline leases in redis: this daemon runs the pipelines whose lease it holds");
        Some(client)
    };
    // Live data (Alpaca) on the wall clock, or the replay data on the simulated clock.
    let live_data = match settings.market_data.source {
        MarketDataSource::Replay => None,
        MarketDataSource::Alpaca => {
            Some(live::LiveSource::Alpaca(Box::new(alpaca_data(&settings)?)))
        }
        MarketDataSource::Ibkr => Some(live::LiveSource::Ibkr(ibkr_data(&settings)?)),
    };
    let (clock, replay): (Arc<dyn Clock>, Option<Replay>) = match &live_data {
        Some(_) => (Arc::new(WallClock), None),
        None => {
            let replay = replay_setup(&dir, &settings, tz, &store).await?;
            (Arc::clone(&replay.clock) as Arc<dyn Clock>, Some(replay))
        }
    };
    // Brokers and the ledger. A broker this build cannot connect fails its pipelines (with
    // the reason); the others run.
    let mut brokers = Vec::new();
    let mut unavailable = Vec::new();
    for (name, b) in &settings.brokers {
        let saved = store.load_broker_state(name).await?.map(|s| s.state);
        let broker_clock = Arc::clone(&clock);
        let now: crate::broker::Now = Arc::new(move || broker_clock.now().timestamp());
        // A real broker learns which of its orders are ours (and whose) from the store.
        let known = match b {
            crate::config::settings::BrokerSettings::Simulated(_) => Vec::new(),
            _ => {
                let mut known: Vec<crate::broker::OrderState> = store
                    .orders_of_broker(name)
                    .await?
                    .into_iter()
                    .map(|o| o.state)
                    .collect();
                // Intents written but not confirmed (a crash during the submission): their
                // orders may be at the broker, and are ours.
                known.extend(
                    store
                        .pending_intents()
                        .await?
                        .iter()
                        .filter(|i| &i.broker == name)
                        .map(pending_order),
                );
                known
            }
        };
        match crate::broker::connect(name, b, now, saved, known) {
            Ok(broker) => brokers.push(broker),
            Err(e) => {
                warn!(broker = %name, reason = %e, "broker not connected; the pipelines that use it fail");
                unavailable.push((name.clone(), e.to_string()));
            }
        }
    }
    let mut account = Account::new(
        brokers,
        AccountOptions {
            store: Some(store.clone()),
            metrics: Some(Arc::clone(&metrics)),
            clock: Arc::clone(&clock),
            keep_history: false,
        },
    );
    // Notifications: one delivery task per `[notify.*]` sink; trading never waits for them.
    let notifier = Arc::new(crate::notify::Notifier::start(
        &settings.notify,
        |v| std::env::var(v).ok(),
        Some(Arc::clone(&metrics)),
    ));
    account.set_notifier(Arc::clone(&notifier));
    for (name, reason) in unavailable {
        account.set_unavailable(&name, reason);
    }
    let (lease_tx, mut lease_events) = tokio::sync::mpsc::unbounded_channel();
    let keeper = lease_client.map(|client| {
        let member = format!(
            "{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
            std::process::id()
        );
        let keeper = crate::lease::LeaseKeeper::start(client, member.clone(), lease_tx);
        account.set_fences(keeper.fences());
        (keeper, member)
    });
    account.recover().await?;
    let account = Arc::new(account);
    // Real brokers: their order events are booked as they arrive, and they are reconciled
    // now and every `broker_interval`.
    let event_tasks = account.watch_events();
    let streaming: Vec<String> = account
        .broker_names()
        .into_iter()
        .filter(|n| account.broker(n).is_some_and(|b| b.capabilities().streams))
        .collect();
    for name in &streaming {
        account.reconcile_broker(name).await;
    }
    let registry = Arc::new(Registry::default());
    // HTTP.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let control = Arc::new(control::DaemonControl {
        account: Arc::clone(&account),
        registry: Arc::clone(&registry),
    });
    let http_state = HttpState::from_settings(
        &settings.http,
        Arc::clone(&metrics),
        control,
        Arc::clone(&readiness),
    )
    .map_err(|e| DaemonError::Http(e.to_string()))?;
    let listener = crate::http::bind(&settings.http)
        .await
        .map_err(|e| DaemonError::Http(e.to_string()))?;
    let mut http_shutdown = shutdown_rx.clone();
    let http = tokio::spawn(async move {
        let stop = async move {
            let _ = http_shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = crate::http::serve(listener, http_state, stop).await {
            error!(error = %e, "http server failed");
        }
    });
    // The live market loop (it warms up symbols before their pipelines start).
    let (history, live, live_task): (
        Arc<dyn crate::engine::core::History>,
        Option<live::LiveMarket>,
        Option<tokio::task::JoinHandle<()>>,
    ) = match (&replay, live_data) {
        (Some(r), _) => (Arc::clone(&r.hub) as _, None, None),
        (None, Some(data)) => {
            let hub = Arc::new(crate::runtime::LiveHub::new(tz));
            let calendar = Arc::new(crate::market::live::SharedCalendar::new(
                data.calendar().await,
            ));
            hub.set_calendar(Arc::clone(&calendar) as _);
            let (handle, task) = live::LiveLoop {
                data,
                hub: Arc::clone(&hub),
                account: Arc::clone(&account),
                registry: Arc::clone(&registry),
                calendar,
                tz,
            }
            .spawn(shutdown_rx.clone());
            (hub as _, Some(handle), Some(task))
        }
        (None, None) => unreachable!("replay or live data"),
    };
    // Pipeline statuses: this run's pipelines write their rows as they start.
    if keeper.is_none()
        && let Err(e) = store.clear_pipeline_statuses().await
    {
        warn!(error = %e, "the last run's pipeline statuses are not cleared");
        metrics.store_error(crate::metrics::StoreOperation::State);
    }
    let heartbeat = status::Heartbeat::new(store.clone(), Arc::clone(&metrics));
    heartbeat.write(account.now(), false).await;
    // Actors and the reconciler.
    let shared = Arc::new(Shared {
        status_writer: status::StatusWriter::spawn(store.clone(), Arc::clone(&metrics)),
        live,
        account: Arc::clone(&account),
        store: store.clone(),
        metrics: Arc::clone(&metrics),
        history,
        statuses: std::sync::Mutex::new(Default::default()),
        llm: Arc::new({
            // Validation pipelines record their LLM calls where a backtest replays them.
            let root = dir.clone();
            crate::llm::LlmClient::new(&settings.llm, Some(metrics.registry()))
                .map_err(DaemonError::Settings)?
                .with_recordings(
                    crate::llm::cassette::Recordings::new(
                        crate::llm::cassette::LlmRun::Record,
                        move |p| crate::llm::cassette::default_path(&root, p),
                        None,
                    )
                    .validation_only(),
                )
        }),
        tz,
        registry: Arc::clone(&registry),
    });
    // Signals: the dispatcher takes them from the bus; the generators feed it.
    let signals = Arc::new(crate::signals::service::SignalService::new(
        Arc::clone(&bus),
        tz,
    ));
    registry.set_signals(Arc::clone(&signals));
    let dispatcher = Arc::new(crate::signals::Dispatcher::new(
        Arc::clone(&registry),
        Some(Arc::clone(&metrics)),
    ));
    let consumer = bus.spawn_consumer(dispatcher, Some(Arc::clone(&metrics)), shutdown_rx.clone());
    let mut controller = Controller::new(Arc::clone(&shared), shutdown_rx.clone());
    if keeper.is_some() {
        controller.use_leases();
    }
    let previous = previous_revision(&dir, &store).await;
    let first = initial_revision(&dir, set, previous.clone()).await;
    match controller.apply(first.clone()).await {
        Outcome::Refused(n) => warn!(
            errors = n,
            "no valid revision to run yet; waiting for a valid edit"
        ),
        _ => {
            configure_signals(&signals, &first.scanners, &shared).await;
            readiness.set_ready();
        }
    }
    // Positions of pipelines removed while the daemon was down.
    let desired: Vec<String> = first
        .pipelines
        .iter()
        .filter(|(_, r)| r.spec.as_ref().is_some_and(|s| s.enabled))
        .map(|(n, _)| n.clone())
        .collect();
    let mut orphans: Vec<String> = account
        .positions()
        .into_iter()
        .map(|p| p.pipeline)
        .filter(|p| !desired.contains(p))
        .collect();
    orphans.sort();
    orphans.dedup();
    if !orphans.is_empty() && keeper.is_some() {
        warn!(pipelines = ?orphans, "open positions of pipelines that are not configured: protected by their stops and targets only (several daemons: orphans are not adopted)");
    } else if !orphans.is_empty() {
        match &previous {
            Some(prev) => controller.adopt_orphans(prev, &orphans).await,
            None => {
                warn!(pipelines = ?orphans, "open positions of pipelines that are not configured: protected by their stops and targets only")
            }
        }
    }
    // From here on the watcher holds the desired state and the controller the applied one.
    drop((first, previous, desired));
    watcher.release(&initial);
    let resync = watcher.resync_handle();
    // Market loop.
    let market = match (replay, live_task) {
        (Some(r), _) => {
            info!(dir = %dir.display(), listen = %settings.http.listen, speed = settings.market_data.speed, start = %crate::engine::clock::utc(r.start), "ztraded running");
            tokio::spawn(
                market::MarketLoop {
                    hub: r.hub,
                    account: Arc::clone(&account),
                    registry: Arc::clone(&registry),
                    clock: r.clock,
                    tz,
                    start: r.start,
                }
                .run(shutdown_rx.clone()),
            )
        }
        (None, Some(task)) => {
            info!(dir = %dir.display(), listen = %settings.http.listen, source = ?settings.market_data.source, "ztraded running on live market data");
            task
        }
        (None, None) => unreachable!("replay or live data"),
    };
    // Broker reconciliation every `broker_interval`.
    let reconciler = {
        let account = Arc::clone(&account);
        let interval = settings
            .reconcile
            .broker_interval
            .0
            .max(Duration::from_secs(1));
        let mut stop = shutdown_rx.clone();
        tokio::spawn(async move {
            if streaming.is_empty() {
                return;
            }
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            loop {
                tokio::select! {
                    _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
                    _ = tick.tick() => {
                        for name in &streaming {
                            account.reconcile_broker(name).await;
                        }
                    }
                }
            }
        })
    };
    // Signals.
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| DaemonError::Http(e.to_string()))?;
    let mut sighup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| DaemonError::Http(e.to_string()))?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut beat = tokio::time::interval_at(
        tokio::time::Instant::now() + status::HEARTBEAT_INTERVAL,
        status::HEARTBEAT_INTERVAL,
    );
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beating: Option<tokio::task::JoinHandle<()>> = None;
    if let Some((k, _)) = &keeper {
        k.set_desired(controller.desired());
    }
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { info!("SIGTERM: stopping"); break; }
            _ = sighup.recv() => { info!("SIGHUP: rescanning the config directory"); resync.resync(); }
            changed = updates.changed() => {
                if changed.is_err() { warn!("the watcher stopped"); break; }
                let update = updates.borrow_and_update().clone();
                let revision = update.set.revision.clone();
                let scanners = update.set.scanners.clone();
                match controller.apply(update.set).await {
                    Outcome::Refused(_) => {}
                    Outcome::Unchanged => readiness.set_ready(),
                    Outcome::Applied(_) => {
                        configure_signals(&signals, &scanners, &shared).await;
                        readiness.set_ready();
                    }
                }
                if let Some((k, _)) = &keeper {
                    k.set_desired(controller.desired());
                }
                watcher.release(&revision);
            }
            Some(event) = lease_events.recv() => {
                let Some((k, member)) = &keeper else { continue };
                lease_event(event, k, member, &store, &metrics, &account, &mut controller).await;
            }
            _ = tick.tick() => {
                controller.reap();
                if let Some((k, _)) = &keeper {
                    k.set_desired(controller.desired());
                }
            }
            // Off the loop: a slow store delays the next heartbeat, never a reload or a
            // signal.
            _ = beat.tick() => if beating.as_ref().is_none_or(|b| b.is_finished()) {
                let (hb, now) = (heartbeat.clone(), account.now());
                beating = Some(tokio::spawn(async move { hb.write(now, false).await }));
            },
        }
    }
    // Shutdown: no more triggers; running executions finish within the grace period.
    readiness.set_not_ready("shutting down");
    let _ = shutdown_tx.send(true);
    watcher.stop().await;
    let _ = market.await;
    let _ = reconciler.await;
    let _ = consumer.await;
    controller.stop_all(SHUTDOWN_GRACE).await;
    // The pipelines stopped: their leases go at once, for the other daemons to take.
    if let Some((k, _)) = keeper {
        let started = std::time::Instant::now();
        k.release_all().await;
        while let Ok(event) = lease_events.try_recv() {
            if let crate::lease::LeaseEvent::Lost { reason, .. } = event {
                metrics.lease_transition(reason);
            }
        }
        metrics.set_leases_held(0);
        info!(
            took_ms = started.elapsed().as_millis() as u64,
            "leases released"
        );
    }
    for t in event_tasks {
        t.abort();
    }
    match if shared_store {
        Ok(0)
    } else {
        store.mark_running_interrupted().await
    } {
        Ok(n) if n > 0 => warn!(count = n, "executions interrupted by the shutdown"),
        Ok(_) => {}
        Err(e) => {
            warn!(error = %e, "could not mark interrupted executions");
            metrics.store_error(crate::metrics::StoreOperation::Execution);
        }
    }
    account.persist().await;
    notifier.close(NOTIFY_GRACE).await;
    shared.status_writer.flush().await;
    if let Some(b) = beating {
        let _ = b.await;
    }
    heartbeat.write(account.now(), true).await;
    let _ = http.await;
    store.close().await;
    info!("stopped");
    Ok(())
}

/// Handles one change of this daemon's leases: a gained lease is claimed in the store (its
/// epoch raised there, so that the previous holder's intents are refused from now on), its
/// fence set, and the pipeline taken over and started; a lost one stops the pipeline here
/// (its fence is gone already).
async fn lease_event(
    event: crate::lease::LeaseEvent,
    keeper: &crate::lease::LeaseKeeper,
    member: &str,
    store: &Store,
    metrics: &Metrics,
    account: &Account,
    controller: &mut Controller,
) {
    use crate::lease::{LeaseEvent, LeaseReason};
    match event {
        LeaseEvent::Gained(lease) => {
            metrics.lease_transition(LeaseReason::Acquired);
            match store
                .claim_epoch(&lease.pipeline, lease.epoch, member, account.now())
                .await
            {
                Ok(true) => {
                    keeper.fence(&lease);
                    info!(pipeline = %lease.pipeline, epoch = lease.epoch, "lease held: the pipeline runs here");
                    controller.lease_gained(&lease.pipeline).await;
                }
                Ok(false) => {
                    error!(pipeline = %lease.pipeline, epoch = lease.epoch, "the store has a later lease epoch than redis gave (was redis emptied?); the lease is given up and the pipeline does not run here");
                    keeper.give_up(&lease.pipeline);
                }
                Err(e) => {
                    warn!(pipeline = %lease.pipeline, error = %e, "lease epoch not stored; the lease is given up and the pipeline does not run here");
                    metrics.store_error(crate::metrics::StoreOperation::State);
                    keeper.give_up(&lease.pipeline);
                }
            }
        }
        LeaseEvent::Lost {
            pipeline, reason, ..
        } => {
            metrics.lease_transition(reason);
            controller.lease_lost(&pipeline);
        }
    }
    metrics.set_leases_held(controller.leased_count());
}

/// The order of a pending intent as far as we know it (nothing confirmed by the broker).
pub(crate) fn pending_order(intent: &crate::store::OrderIntent) -> crate::broker::OrderState {
    let (order_type, oco_group) = match &intent.order {
        crate::store::IntentOrder::Entry(e) => (e.order_type, None),
        crate::store::IntentOrder::Exit(x) => (x.order_type, x.oco_group.clone()),
    };
    crate::broker::OrderState {
        client_order_id: intent.client_order_id.clone(),
        broker_order_id: String::new(),
        pipeline: intent.pipeline.clone(),
        symbol: intent.symbol.clone(),
        side: intent.side,
        quantity: intent.quantity,
        filled_quantity: rust_decimal::Decimal::ZERO,
        average_price: rust_decimal::Decimal::ZERO,
        order_type,
        purpose: intent.purpose,
        oco_group,
        status: crate::broker::OrderStatus::Accepted,
        reason: None,
        created_at: intent.created_at,
    }
}

/// The replay: its data, its simulated clock and where it starts.
struct Replay {
    hub: Arc<ReplayHub>,
    clock: Arc<ReplayClock>,
    start: i64,
}

/// Loads the replay data and sets the simulated clock where the replay starts: the later of
/// `[market_data] start` and where the last run stopped (the stored cursor), else the first
/// bar.
async fn replay_setup(
    dir: &Path,
    settings: &crate::config::settings::Settings,
    tz: chrono_tz::Tz,
    store: &Store,
) -> Result<Replay, DaemonError> {
    let data_dir = dir.join(&settings.market_data.path);
    let hub = Arc::new(
        ReplayHub::load(
            &data_dir,
            &ReplayOptions {
                timezone: tz,
                stamp: settings.market_data.timestamps,
            },
        )
        .map_err(|e| DaemonError::MarketData(e.to_string()))?,
    );
    let configured_start = match settings.market_data.start.as_deref().and_then(parse_start) {
        Some(StartPoint::Date(d)) => {
            Some(crate::market::timeframe::local_midnight(tz, d).timestamp())
        }
        Some(StartPoint::Time(t)) => Some(t.timestamp()),
        None => None,
    };
    let cursor = store
        .get_state(REPLAY_CURSOR_KEY)
        .await?
        .and_then(|v| v.as_i64());
    let start = match (cursor, configured_start) {
        (Some(c), Some(s)) => c.max(s),
        (Some(c), None) => c,
        (None, Some(s)) => s,
        (None, None) => hub.first_end().unwrap_or(0),
    };
    if cursor.is_some() {
        info!(at = %crate::engine::clock::utc(start), "replay resumes where the last run stopped");
    }
    let clock = Arc::new(ReplayClock::new(
        crate::engine::clock::utc(start),
        settings.market_data.speed,
    ));
    Ok(Replay { hub, clock, start })
}

/// The Alpaca market data client of `[market_data] broker`, with the keys from the
/// environment.
fn alpaca_data(
    settings: &crate::config::settings::Settings,
) -> Result<crate::market::alpaca::AlpacaData, DaemonError> {
    let Some(name) = settings.market_data.broker.as_deref() else {
        return Err(DaemonError::MarketData(
            "[market_data] source = \"alpaca\" needs broker = \"<name>\" naming an [brokers.<name>] of kind alpaca".into(),
        ));
    };
    match settings.brokers.get(name) {
        Some(crate::config::settings::BrokerSettings::Alpaca(a)) => {
            crate::market::alpaca::AlpacaData::from_env(name, a)
                .map_err(|e| DaemonError::MarketData(e.to_string()))
        }
        _ => Err(DaemonError::MarketData(format!(
            "[market_data] broker = \"{name}\" is not an [brokers.{name}] of kind alpaca"
        ))),
    }
}

/// The IB market data of `[market_data] broker` (an `[brokers.<name>]` of kind ibkr; its
/// own API connection with client id `client_id + 1`).
fn ibkr_data(
    settings: &crate::config::settings::Settings,
) -> Result<crate::market::ibkr::IbkrData, DaemonError> {
    let Some(name) = settings.market_data.broker.as_deref() else {
        return Err(DaemonError::MarketData(
            "[market_data] source = \"ibkr\" needs broker = \"<name>\" naming an [brokers.<name>] of kind ibkr".into(),
        ));
    };
    match settings.brokers.get(name) {
        Some(crate::config::settings::BrokerSettings::Ibkr(i)) => {
            Ok(crate::market::ibkr::IbkrData::new(i))
        }
        _ => Err(DaemonError::MarketData(format!(
            "[market_data] broker = \"{name}\" is not an [brokers.{name}] of kind ibkr"
        ))),
    }
}

/// Alpaca's trading calendar from a week ago to three months ahead (half days and
/// unscheduled closures), its differences from our NYSE calendar logged; our calendar when
/// it cannot be read. Also logs Alpaca's market clock.
pub(crate) async fn alpaca_calendar(
    data: &crate::market::alpaca::AlpacaData,
) -> Arc<dyn crate::market::live::SessionCalendar> {
    match data.clock().await {
        Ok(c) => {
            info!(is_open = c.is_open, next_open = %c.next_open, next_close = %c.next_close, "alpaca market clock")
        }
        Err(e) => warn!(error = %e, "alpaca market clock not read"),
    }
    let today = chrono::Utc::now().date_naive();
    let (from, to) = (
        today - chrono::Duration::days(7),
        today + chrono::Duration::days(90),
    );
    match data.calendar(from, to).await {
        Ok(c) => {
            for d in c.differences(&crate::market::calendar::UsEquityCalendar) {
                warn!(difference = %d, "alpaca's calendar differs from the NYSE calendar; alpaca's is used for its accounts");
            }
            Arc::new(c)
        }
        Err(e) => {
            warn!(error = %e, "alpaca calendar not read; sessions follow the NYSE calendar");
            Arc::new(crate::market::calendar::UsEquityCalendar)
        }
    }
}

/// The revision the last run applied, rebuilt from the files kept in the store (under
/// `.ztraded/last-valid/`, with the live settings), when there is one and it is valid.
async fn previous_revision(dir: &Path, store: &Store) -> Option<Arc<ConfigSet>> {
    let stored = store.get_state(APPLIED_FILES_KEY).await.ok().flatten()?;
    let restore_dir = dir.join(crate::config::load::STATE_DIR).join("last-valid");
    let _ = std::fs::remove_dir_all(&restore_dir);
    std::fs::create_dir_all(&restore_dir).ok()?;
    if !matches!(controller::restore_files(&stored, &restore_dir), Ok(true)) {
        return None;
    }
    if let Ok(text) = std::fs::read_to_string(dir.join(crate::config::load::SETTINGS_FILE)) {
        let _ = std::fs::write(restore_dir.join(crate::config::load::SETTINGS_FILE), text);
    }
    let mut restored = load_dir_with_env(&restore_dir, &process_env());
    restored.compact();
    (restored.errors() == 0).then(|| Arc::new(restored))
}

/// The revision to start with: the directory when it is valid; otherwise the last revision
/// applied by an earlier run, so that a broken file at start does not stop trading;
/// otherwise the invalid directory (refused, nothing runs).
async fn initial_revision(
    dir: &Path,
    set: Arc<ConfigSet>,
    previous: Option<Arc<ConfigSet>>,
) -> Arc<ConfigSet> {
    if set.errors() == 0 {
        return set;
    }
    match previous {
        Some(prev) => {
            warn!(dir = %dir.display(), revision = %prev.short_revision(), "the config directory is invalid; starting with the last valid revision from the store");
            for f in set
                .findings
                .iter()
                .filter(|f| f.severity == crate::config::Severity::Error)
            {
                error!(file = %f.file, line = f.line, column = f.column, code = f.code, "{}", f.human());
            }
            prev
        }
        None => set,
    }
}

/// Points the signal generators at the scanners of the applied revision, warmed up on the
/// market data up to now.
async fn configure_signals(
    signals: &crate::signals::service::SignalService,
    scanners: &std::collections::BTreeMap<
        String,
        crate::config::set::Resource<crate::config::scanner::Scanner>,
    >,
    shared: &Shared,
) {
    signals
        .configure(
            scanners
                .iter()
                .filter_map(|(n, r)| r.spec.as_ref().map(|s| (n.as_str(), s))),
            shared.history.as_ref(),
            shared.account.now(),
        )
        .await;
}
