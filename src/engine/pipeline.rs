//! A pipeline compiled for execution: the DAG in topological order, expressions compiled
//! against the slot layout, schedules and windows parsed.

use super::layout::Layout;
use super::schedule::{TimeGate, TradingWindow};
use crate::config::common::Percent;
use crate::config::pipeline::{
    AgentConfig, BiasConfig, BiasLlm, Mode, OnRemove, Pipeline, PipelineLimits, StrategyConfig,
    StrategyLlm, TradeManagerConfig, Trigger,
};
use crate::config::risk::RiskPolicy;
use crate::expr::{self, Program, Resolution, Ty};
use crate::market::{IndicatorSpec, Timeframe};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, Weak};

/// Number of recent bars in a snapshot.
pub const SNAPSHOT_BARS: usize = 5;

/// The compiled nodes and layout of a DAG, shared by every pipeline whose nodes are the same
/// (thousands of pipelines often differ only in their symbols): one copy of the compiled
/// expressions and slot layout instead of one per pipeline. Weak references: an entry goes
/// when no pipeline uses it.
type SharedDag = (Weak<Layout>, Weak<[CompiledNode]>);

fn dag_cache() -> &'static Mutex<HashMap<String, SharedDag>> {
    static CACHE: std::sync::OnceLock<Mutex<HashMap<String, SharedDag>>> =
        std::sync::OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Why a pipeline cannot be compiled (a config that passed validation compiles; these
/// guard the daemon against a config that did not).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The nodes' `needs` do not form a DAG.
    #[error("pipeline {0}: the nodes do not form a DAG")]
    NotADag(String),
    /// An expression did not compile.
    #[error("pipeline {pipeline}: node {node}: {field}: {message}")]
    Expression {
        /// Pipeline.
        pipeline: String,
        /// Node id.
        node: String,
        /// Config field.
        field: String,
        /// The first error.
        message: String,
    },
    /// Anything else.
    #[error("pipeline {0}: {1}")]
    Invalid(String, String),
}

/// Compiled rules of a `strategy` node.
#[derive(Clone, Debug)]
pub struct StrategyRules {
    /// Timeframe the rules read.
    pub timeframe: Timeframe,
    /// Long entry condition.
    pub long_entry: Option<Program>,
    /// Long exit condition.
    pub long_exit: Option<Program>,
    /// Long stop level.
    pub stop_loss: Option<Program>,
    /// Long first target.
    pub target_1: Option<Program>,
    /// Long second target.
    pub target_2: Option<Program>,
    /// Short entry condition.
    pub short_entry: Option<Program>,
    /// Short exit condition.
    pub short_exit: Option<Program>,
    /// Short stop level.
    pub short_stop_loss: Option<Program>,
    /// Short first target.
    pub short_target_1: Option<Program>,
    /// Short second target.
    pub short_target_2: Option<Program>,
    /// Entry price (default: the close).
    pub entry_price: Option<Program>,
    /// Close slot of `timeframe` (the default entry price).
    pub close_slot: u32,
    /// Conviction reported, 0–100.
    pub conviction: f64,
    /// Respect the upstream bias.
    pub follow_bias: bool,
}

/// One step of the DAG.
#[derive(Clone, Debug)]
pub enum Step {
    /// `time_trigger`.
    TimeGate(TimeGate),
    /// `price_trigger` or `technical_trigger`.
    Condition(Program),
    /// `stock_picker`: handled before the per-symbol steps.
    StockPicker {
        /// Filter scanner.
        scanner: String,
        /// Symbols kept.
        top_n: u32,
    },
    /// `market_data`.
    MarketData {
        /// Timeframes it provides.
        timeframes: Vec<Timeframe>,
    },
    /// `bias` with rules.
    BiasRules {
        /// Bullish condition.
        bullish: Program,
        /// Bearish condition.
        bearish: Option<Program>,
        /// Confidence reported, 0–100.
        confidence: f64,
    },
    /// `bias` with an LLM.
    BiasLlm(BiasLlm),
    /// `strategy` with rules.
    StrategyRules(Box<StrategyRules>),
    /// `strategy` with an LLM.
    StrategyLlm(StrategyLlm),
    /// `risk_manager`.
    RiskManager,
    /// `trade_manager`.
    TradeManager(TradeManagerConfig),
    /// `reporting`.
    Reporting,
    /// `reporting` with `summary: llm`: a written summary from `provider`.
    ReportingLlm {
        /// The `[llm.<name>]` provider.
        provider: String,
    },
}

/// A node ready to run.
#[derive(Clone, Debug)]
pub struct CompiledNode {
    /// Node id.
    pub id: String,
    /// Agent type name.
    pub agent: &'static str,
    /// What it does.
    pub step: Step,
}

/// A pipeline ready to run.
#[derive(Clone, Debug)]
pub struct CompiledPipeline {
    /// Name (file stem).
    pub name: String,
    /// Mode.
    pub mode: Mode,
    /// Broker name (`None` in validation mode without a broker).
    pub broker: Option<String>,
    /// Risk policy (the default policy when the pipeline names none).
    pub risk: RiskPolicy,
    /// Trigger.
    pub trigger: Trigger,
    /// Trading window.
    pub window: Option<TradingWindow>,
    /// Whether to flatten at the end of the window.
    pub flatten_at_end: bool,
    /// Limits.
    pub limits: PipelineLimits,
    /// What to do when removed.
    pub on_remove: OnRemove,
    /// Concurrency bound for symbols.
    pub max_concurrency: u32,
    /// Slot layout of every symbol's feed (shared by pipelines with the same nodes).
    pub layout: Arc<Layout>,
    /// Steps in topological order (shared by pipelines with the same nodes).
    pub nodes: Arc<[CompiledNode]>,
    /// The strategy's timeframe (drives `continuous` triggers and `bars_held`).
    pub strategy_timeframe: Option<Timeframe>,
    /// The trade manager's settings (defaults when there is none).
    pub trade: TradeManagerConfig,
    /// Percent closed at target 1.
    pub partial_exit_pct: Percent,
    /// Whether the DAG has a risk manager and a trade manager (it can place orders).
    pub trades: bool,
    /// Bars of history to warm the feeds up with (the largest `market_data.lookback`).
    pub warmup_bars: usize,
    /// The LLM cost budget (USD per day and per month), if any.
    pub budget: Option<crate::config::pipeline::Budget>,
}

fn topological(p: &Pipeline, name: &str) -> Result<Vec<usize>, CompileError> {
    let n = p.nodes.len();
    let index: BTreeMap<&str, usize> = p
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| (node.id.as_str(), i))
        .collect();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, node) in p.nodes.iter().enumerate() {
        match &node.needs {
            None if i > 0 => parents[i].push(i - 1),
            None => {}
            Some(needs) => {
                for need in needs {
                    let k = *index.get(need.as_str()).ok_or_else(|| {
                        CompileError::Invalid(
                            name.to_string(),
                            format!("node {} needs unknown node {need}", node.id),
                        )
                    })?;
                    parents[i].push(k);
                }
            }
        }
    }
    let mut done = vec![false; n];
    let mut order = Vec::with_capacity(n);
    while order.len() < n {
        let next = (0..n).find(|&i| !done[i] && parents[i].iter().all(|&k| done[k]));
        match next {
            Some(i) => {
                done[i] = true;
                order.push(i);
            }
            None => return Err(CompileError::NotADag(name.to_string())),
        }
    }
    Ok(order)
}

impl CompiledPipeline {
    /// Compiles `pipeline` named `name` with its risk policy (`None`: the default policy).
    ///
    /// # Errors
    /// A [`CompileError`] for a config that would not pass validation.
    pub fn compile(
        name: &str,
        pipeline: &Pipeline,
        risk: Option<&RiskPolicy>,
    ) -> Result<CompiledPipeline, CompileError> {
        let order = topological(pipeline, name)?;
        // Timeframes and indicators: the union of every market_data node.
        let mut wanted: BTreeMap<Timeframe, (Vec<IndicatorSpec>, usize)> = BTreeMap::new();
        let mut first_tf = None;
        for node in &pipeline.nodes {
            if let AgentConfig::MarketData(c) = &node.agent {
                let specs: Vec<IndicatorSpec> = c
                    .indicators
                    .iter()
                    .map(|s| {
                        s.parse::<IndicatorSpec>()
                            .map_err(|e| CompileError::Invalid(name.to_string(), e.to_string()))
                    })
                    .collect::<Result<_, _>>()?;
                for tf in &c.timeframes {
                    first_tf.get_or_insert(*tf);
                    let entry = wanted.entry(*tf).or_default();
                    for spec in &specs {
                        if !entry.0.contains(spec) {
                            entry.0.push(spec.clone());
                        }
                    }
                    entry.1 = entry.1.max(c.lookback as usize);
                }
            }
        }
        // Bars of history matter only to LLM agents (their prompts); rule agents read the
        // streaming indicators, and the record shows the last few bars.
        let llm = pipeline.nodes.iter().any(|n| {
            matches!(
                &n.agent,
                AgentConfig::Bias(BiasConfig::Llm(_))
                    | AgentConfig::Strategy(StrategyConfig::Llm(_))
            )
        });
        let warmup_bars = wanted.values().map(|(_, l)| *l).max().unwrap_or(300);
        if !llm {
            for (_, lookback) in wanted.values_mut() {
                *lookback = SNAPSHOT_BARS;
            }
        }
        let layout = Layout::new(&wanted);
        let compile_expr = |node: &str,
                            field: &str,
                            source: &str,
                            ty: Ty,
                            own: Timeframe,
                            exit: bool|
         -> Result<Program, CompileError> {
            let mut resolver = |tf: Option<Timeframe>, ident: &str| -> Resolution {
                if tf.is_none() && exit {
                    match ident {
                        "entry_price" => return Resolution::Slot(layout.entry_price),
                        "bars_held" => return Resolution::Slot(layout.bars_held),
                        _ => {}
                    }
                }
                match layout.slot(tf.unwrap_or(own), ident) {
                    Some(s) => Resolution::Slot(s),
                    None => Resolution::Unknown(
                        "unknown-identifier",
                        format!("unknown identifier '{ident}'"),
                    ),
                }
            };
            expr::compile(source, ty, &mut resolver).map_err(|errors| CompileError::Expression {
                pipeline: name.to_string(),
                node: node.to_string(),
                field: field.to_string(),
                message: errors
                    .first()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
            })
        };
        let opt = |node: &str,
                   field: &str,
                   source: &Option<String>,
                   ty: Ty,
                   own: Timeframe,
                   exit: bool|
         -> Result<Option<Program>, CompileError> {
            source
                .as_deref()
                .map(|s| compile_expr(node, field, s, ty, own, exit))
                .transpose()
        };
        let default_tf = |tf: Option<Timeframe>| -> Result<Timeframe, CompileError> {
            tf.or(first_tf).ok_or_else(|| {
                CompileError::Invalid(name.to_string(), "no market_data node".into())
            })
        };
        // Exact capacity: a daemon keeps one compiled pipeline per file.
        let mut nodes = Vec::with_capacity(order.len());
        let mut strategy_timeframe = None;
        let mut trade = None;
        let mut has_risk = false;
        for i in order {
            let node = &pipeline.nodes[i];
            let id = node.id.as_str();
            let step = match &node.agent {
                AgentConfig::TimeTrigger(c) => {
                    Step::TimeGate(TimeGate::from_config(c).map_err(|e| {
                        CompileError::Invalid(name.to_string(), format!("node {id}: {e}"))
                    })?)
                }
                AgentConfig::PriceTrigger(c) => Step::Condition(compile_expr(
                    id,
                    "when",
                    &c.when,
                    Ty::Bool,
                    default_tf(c.timeframe)?,
                    false,
                )?),
                AgentConfig::TechnicalTrigger(c) => Step::Condition(compile_expr(
                    id,
                    "when",
                    &c.when,
                    Ty::Bool,
                    default_tf(c.timeframe)?,
                    false,
                )?),
                AgentConfig::StockPicker(c) => Step::StockPicker {
                    scanner: c.scanner.clone(),
                    top_n: c.top_n,
                },
                AgentConfig::MarketData(c) => Step::MarketData {
                    timeframes: c.timeframes.clone(),
                },
                AgentConfig::Bias(BiasConfig::Rules(c)) => {
                    let tf = default_tf(c.timeframe)?;
                    Step::BiasRules {
                        bullish: compile_expr(id, "bullish", &c.bullish, Ty::Bool, tf, false)?,
                        bearish: opt(id, "bearish", &c.bearish, Ty::Bool, tf, false)?,
                        confidence: crate::domain::to_f64(c.confidence.value()),
                    }
                }
                AgentConfig::Bias(BiasConfig::Llm(c)) => Step::BiasLlm(c.clone()),
                AgentConfig::Strategy(StrategyConfig::Rules(c)) => {
                    let tf = c.timeframe;
                    strategy_timeframe = Some(tf);
                    let close_slot = layout.slot(tf, "close").ok_or_else(|| {
                        CompileError::Invalid(
                            name.to_string(),
                            format!("node {id}: no market data on {tf}"),
                        )
                    })?;
                    Step::StrategyRules(Box::new(StrategyRules {
                        timeframe: tf,
                        long_entry: opt(id, "long_entry", &c.long_entry, Ty::Bool, tf, false)?,
                        long_exit: opt(id, "long_exit", &c.long_exit, Ty::Bool, tf, true)?,
                        stop_loss: opt(id, "stop_loss", &c.stop_loss, Ty::Number, tf, false)?,
                        target_1: opt(id, "target_1", &c.target_1, Ty::Number, tf, false)?,
                        target_2: opt(id, "target_2", &c.target_2, Ty::Number, tf, false)?,
                        short_entry: opt(id, "short_entry", &c.short_entry, Ty::Bool, tf, false)?,
                        short_exit: opt(id, "short_exit", &c.short_exit, Ty::Bool, tf, true)?,
                        short_stop_loss: opt(
                            id,
                            "short_stop_loss",
                            &c.short_stop_loss,
                            Ty::Number,
                            tf,
                            false,
                        )?,
                        short_target_1: opt(
                            id,
                            "short_target_1",
                            &c.short_target_1,
                            Ty::Number,
                            tf,
                            false,
                        )?,
                        short_target_2: opt(
                            id,
                            "short_target_2",
                            &c.short_target_2,
                            Ty::Number,
                            tf,
                            false,
                        )?,
                        entry_price: opt(id, "entry_price", &c.entry_price, Ty::Number, tf, false)?,
                        close_slot,
                        conviction: crate::domain::to_f64(c.conviction.value()),
                        follow_bias: c.follow_bias,
                    }))
                }
                AgentConfig::Strategy(StrategyConfig::Llm(c)) => {
                    strategy_timeframe = Some(c.timeframe);
                    Step::StrategyLlm(c.clone())
                }
                AgentConfig::RiskManager(_) => {
                    has_risk = true;
                    Step::RiskManager
                }
                AgentConfig::TradeManager(c) => {
                    trade = Some(c.clone());
                    Step::TradeManager(c.clone())
                }
                AgentConfig::Reporting(c) => match (c.summary, &c.provider) {
                    (crate::config::pipeline::Summary::Llm, Some(p)) => Step::ReportingLlm {
                        provider: p.clone(),
                    },
                    _ => Step::Reporting,
                },
            };
            nodes.push(CompiledNode {
                id: node.id.clone(),
                agent: node.kind().as_str(),
                step,
            });
        }
        let window = pipeline
            .window
            .as_ref()
            .map(TradingWindow::from_config)
            .transpose()
            .map_err(|e| CompileError::Invalid(name.to_string(), format!("window: {e}")))?;
        let trades = has_risk && trade.is_some();
        let trade = trade.unwrap_or_default();
        let broker = match (&pipeline.broker, pipeline.mode) {
            (Some(b), _) => Some(b.clone()),
            (None, Mode::Simulation) => Some("sim".to_string()),
            (None, _) => None,
        };
        let (layout, nodes) = {
            let mut cache = dag_cache()
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let key = format!("{:?}", pipeline.nodes);
            let shared = cache
                .get(&key)
                .and_then(|(l, n)| Some((l.upgrade()?, n.upgrade()?)));
            match shared {
                Some(shared) => shared,
                None => {
                    let layout = Arc::new(layout);
                    let nodes: Arc<[CompiledNode]> = Arc::from(nodes);
                    if cache.len() > 64 {
                        cache.retain(|_, (l, n)| l.strong_count() > 0 && n.strong_count() > 0);
                    }
                    cache.insert(key, (Arc::downgrade(&layout), Arc::downgrade(&nodes)));
                    (layout, nodes)
                }
            }
        };
        Ok(CompiledPipeline {
            name: name.to_string(),
            mode: pipeline.mode,
            broker,
            risk: risk.cloned().unwrap_or_default(),
            trigger: pipeline.trigger.clone(),
            window,
            flatten_at_end: pipeline.window.as_ref().is_some_and(|w| w.flatten_at_end),
            limits: pipeline.limits.clone().unwrap_or_default(),
            on_remove: pipeline.on_remove,
            max_concurrency: pipeline.max_concurrency,
            layout,
            nodes,
            strategy_timeframe,
            partial_exit_pct: trade.partial_exit_pct,
            trade,
            trades,
            warmup_bars,
            budget: pipeline.budget.clone(),
        })
    }

    /// The timeframes the pipeline reads, finest first.
    pub fn timeframes(&self) -> Vec<Timeframe> {
        self.layout.frames.iter().map(|f| f.timeframe).collect()
    }

    /// The stock picker step, if the pipeline has one.
    pub fn stock_picker(&self) -> Option<(&str, u32)> {
        self.nodes.iter().find_map(|n| match &n.step {
            Step::StockPicker { scanner, top_n } => Some((scanner.as_str(), *top_n)),
            _ => None,
        })
    }
}
