//! References between resources: a pipeline's scanner, risk policy, broker and LLM
//! providers, a stock picker's scanner, and scanners and risk policies no pipeline uses.
//!
//! A reference from a disabled pipeline that leads nowhere is a warning
//! (`disabled-dangling-reference`): the pipeline does not run, and its file may be kept for
//! later.

use super::Ctx;
use crate::config::finding::{Finding, Reporter, Severity};
use crate::config::pipeline::{AgentConfig, Mode, Pipeline};
use crate::config::schema::suggestion;
use std::collections::BTreeSet;

/// The code of a dangling reference: `code` from an enabled pipeline, the warning's code
/// from a disabled one.
fn dangling(severity: Severity, code: &'static str) -> &'static str {
    if severity == Severity::Error {
        code
    } else {
        "disabled-dangling-reference"
    }
}

/// `scanner:` names a scanner of the directory.
pub(super) fn check_scanner_ref(
    ctx: &Ctx<'_>,
    p: &Pipeline,
    r: &mut Reporter<'_>,
    severity: Severity,
) {
    let set = ctx.set;
    if let Some(scanner) = &p.scanner
        && set.complete
        && !set.scanners.contains_key(scanner)
    {
        let known: Vec<String> = set.scanners.keys().cloned().collect();
        r.report(
            severity,
            dangling(severity, "unknown-scanner"),
            "/scanner",
            format!(
                "unknown scanner '{scanner}' (no scanners/{scanner}.yaml){}",
                suggestion(scanner, &known)
            ),
        );
    }
}

/// A stock picker's `scanner` names a scanner of the directory.
pub(super) fn check_picker_scanner(
    ctx: &Ctx<'_>,
    scanner: &str,
    pointer: &str,
    r: &mut Reporter<'_>,
    severity: Severity,
) {
    let set = ctx.set;
    if set.complete && !set.scanners.contains_key(scanner) {
        let known: Vec<String> = set.scanners.keys().cloned().collect();
        r.report(
            severity,
            dangling(severity, "unknown-scanner"),
            pointer,
            format!("unknown scanner '{scanner}'{}", suggestion(scanner, &known)),
        );
    }
}

/// `risk:` names a risk policy of the directory.
pub(super) fn check_risk_ref(
    ctx: &Ctx<'_>,
    p: &Pipeline,
    r: &mut Reporter<'_>,
    severity: Severity,
) {
    let set = ctx.set;
    if let Some(risk) = &p.risk
        && set.complete
        && !set.risk.contains_key(risk)
    {
        let known: Vec<String> = set.risk.keys().cloned().collect();
        r.report(
            severity,
            dangling(severity, "unknown-risk-policy"),
            "/risk",
            format!(
                "unknown risk policy '{risk}' (no risk/{risk}.yaml){}",
                suggestion(risk, &known)
            ),
        );
    }
}

/// The pipeline's broker exists in the settings and fits its mode. Skipped when the
/// settings did not load (the brokers are not known then).
pub(super) fn check_broker(ctx: &Ctx<'_>, p: &Pipeline, r: &mut Reporter<'_>, severity: Severity) {
    if !ctx.set.settings_ok {
        return;
    }
    let brokers = &ctx.set.settings.brokers;
    let name = match (&p.broker, p.mode) {
        (Some(b), _) => b.clone(),
        (None, Mode::Live | Mode::Paper) => {
            r.error("missing-broker", "/mode", format!("a {} pipeline needs `broker`: an alpaca or ibkr [brokers.<name>] entry of ztraded.toml", p.mode.as_str()));
            return;
        }
        (None, Mode::Simulation) => "sim".to_string(),
        (None, Mode::Validation) => return,
    };
    let pointer = if p.broker.is_some() {
        "/broker"
    } else {
        "/mode"
    };
    let Some(broker) = brokers.get(&name) else {
        let known: Vec<String> = brokers.keys().cloned().collect();
        r.report(
            severity,
            dangling(severity, "unknown-broker"),
            pointer,
            format!(
                "unknown broker '{name}': ztraded.toml has no [brokers.{name}]{}",
                suggestion(&name, &known)
            ),
        );
        return;
    };
    match (p.mode, broker.is_paper()) {
        (Mode::Live | Mode::Paper, None) => r.error(
            "broker-mode",
            pointer,
            format!("broker '{name}' is simulated; a {} pipeline needs an alpaca or ibkr broker", p.mode.as_str()),
        ),
        (Mode::Live, Some(true)) => r.error("broker-mode", pointer, format!("broker '{name}' is a paper account; a live pipeline needs a live account (paper = false)")),
        (Mode::Paper, Some(false)) => r.error("broker-mode", pointer, format!("broker '{name}' is a live account; a paper pipeline needs a paper account (paper = true)")),
        (Mode::Simulation, Some(_)) => r.error(
            "broker-mode",
            pointer,
            format!("broker '{name}' is a real {} account; simulation fills in-process and needs a simulated broker", broker.kind()),
        ),
        _ => {}
    }
}

/// An LLM node's `provider` is an `[llm.<name>]` of the settings. Skipped when the settings
/// did not load.
pub(super) fn check_provider(
    ctx: &Ctx<'_>,
    provider: &str,
    pointer: &str,
    r: &mut Reporter<'_>,
    severity: Severity,
) {
    let llm = &ctx.set.settings.llm;
    if ctx.set.settings_ok && !llm.contains_key(provider) {
        let known: Vec<String> = llm.keys().cloned().collect();
        r.report(
            severity,
            dangling(severity, "unknown-llm-provider"),
            pointer,
            format!(
                "unknown LLM provider '{provider}': ztraded.toml has no [llm.{provider}]{}",
                suggestion(provider, &known)
            ),
        );
    }
}

/// Warns about scanners and risk policies no pipeline uses (whole directories only). A
/// pipeline that does not load may use anything: nothing is called unused then.
pub(super) fn check_unused(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let set = ctx.set;
    if !set.complete {
        return;
    }
    let mut used_scanners = BTreeSet::new();
    let mut used_risk = BTreeSet::new();
    for p in set.pipelines.values() {
        let Some(spec) = &p.spec else {
            used_scanners.extend(set.scanners.keys().cloned());
            used_risk.extend(set.risk.keys().cloned());
            continue;
        };
        used_scanners.extend(spec.scanner.iter().cloned());
        used_risk.extend(spec.risk.iter().cloned());
        for node in &spec.nodes {
            if let AgentConfig::StockPicker(c) = &node.agent {
                used_scanners.insert(c.scanner.clone());
            }
        }
    }
    for s in set.scanners.values() {
        if !used_scanners.contains(&s.name) {
            let mut r = Reporter {
                file: &s.file,
                doc: &s.doc,
                out,
            };
            r.warning(
                "unused-scanner",
                "",
                format!("no pipeline uses scanner '{}'", s.name),
            );
        }
    }
    for p in set.risk.values() {
        if !used_risk.contains(&p.name) {
            let mut r = Reporter {
                file: &p.file,
                doc: &p.doc,
                out,
            };
            r.warning(
                "unused-risk-policy",
                "",
                format!("no pipeline uses risk policy '{}'", p.name),
            );
        }
    }
}
