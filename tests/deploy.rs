//! The deployment kit under `deploy/`: every metric a Grafana panel or an alert rule reads is
//! a family a running daemon exports (with HELP and TYPE, from the first scrape); the alert
//! rules pass `promtool check rules` and their unit tests; every YAML file is well-formed; the
//! Kubernetes manifests pass the Kubernetes JSON schemas (`kubernetes-validate`) and agree
//! with each other; the compose file passes the Compose Specification schema
//! (`check-jsonschema`) and points at files that exist; the Docker image's health check
//! works against a real daemon; the systemd unit is hardened and verifies.
//!
//! External tools (promtool, kubernetes-validate, check-jsonschema) are installed by
//! `scripts/test`; without one a test says it skipped that part, and fails under `CI=true`.

mod common;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

/// Every file under `dir` whose name ends with one of `exts`, sorted.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if exts
                .iter()
                .any(|e| path.to_string_lossy().ends_with(&format!(".{e}")))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A YAML file through the project's own loader: one document, a mapping at the root, no
/// duplicate keys, YAML 1.2 scalars.
fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    let (doc, errors) = ztraded::config::yaml::parse(&text);
    assert!(
        errors.is_empty(),
        "{}: {:?}",
        path.display(),
        errors
            .iter()
            .map(|e| format!("{}:{}: {} {}", e.pos.line, e.pos.col, e.code, e.message))
            .collect::<Vec<_>>()
    );
    doc.unwrap().value
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A program on the PATH, or `None` after saying the check is skipped; under `CI=true` a
/// missing program fails the test.
fn tool(name: &str, install: &str) -> Option<PathBuf> {
    find_tool(name, install, true)
}

/// [`tool`] for a program that CI may lack too (systemd-analyze on a machine without systemd).
fn optional_tool(name: &str, install: &str) -> Option<PathBuf> {
    find_tool(name, install, false)
}

fn find_tool(name: &str, install: &str, required_in_ci: bool) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        let hint =
            format!("{name} is not installed; install it with `{install}` (scripts/test does)");
        if required_in_ci && std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{hint}");
        }
        eprintln!("\n*** SKIPPED a check: {hint} ***\n");
    }
    found
}

/// Runs `cmd`, returning (success, stdout + stderr).
fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The `ztraded_*` metric names a PromQL expression reads: identifiers (outside string
/// literals) that start with `ztraded_`. Recording-rule names (`ztraded:…`) are not metrics.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            // A string literal: a label value or a regular expression.
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && c != '`' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            if ident.starts_with("ztraded_") {
                names.insert(ident);
            }
        } else if c == '$' {
            // A Grafana variable ($__rate_interval, ${datasource}): not PromQL.
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || matches!(chars[i], '_' | '{' | '}'))
            {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let e = r#"histogram_quantile(0.95, sum by (le) (rate(ztraded_execution_duration_seconds_bucket{instance=~"$instance", x="ztraded_not_a_metric"}[$__rate_interval])))
        / ignoring(result) ztraded:daily_loss_dollars + on () group_left ztraded_equity_dollars"#;
    assert_eq!(
        metric_names(e).into_iter().collect::<Vec<_>>(),
        [
            "ztraded_equity_dollars",
            "ztraded_execution_duration_seconds_bucket"
        ]
    );
}

/// The families of an exposition: name → (has HELP, TYPE).
fn families(text: &str) -> BTreeMap<String, (bool, Option<String>)> {
    let mut out: BTreeMap<String, (bool, Option<String>)> = BTreeMap::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some("#"), Some("HELP"), Some(name)) => {
                out.entry(name.to_string()).or_default().0 = true;
            }
            (Some("#"), Some("TYPE"), Some(name)) => {
                out.entry(name.to_string()).or_default().1 = words.next().map(String::from);
            }
            _ => {}
        }
    }
    out
}

/// The family a sample name belongs to: itself, or the histogram it is a part of.
fn family_of(name: &str, families: &BTreeMap<String, (bool, Option<String>)>) -> Option<String> {
    if families.contains_key(name) {
        return Some(name.to_string());
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        families
            .get(base)
            .filter(|(_, t)| matches!(t.as_deref(), Some("histogram" | "summary")))
            .map(|_| base.to_string())
    })
}

/// Every PromQL expression of a Grafana dashboard: panel targets and variable queries.
fn dashboard_queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                match (k.as_str(), child) {
                    ("expr" | "definition" | "query", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|c| dashboard_queries(c, out)),
        _ => {}
    }
}

/// Every `expr` of the alert rules file, with the name of its rule.
fn rule_exprs(rules: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule
                .get("alert")
                .or_else(|| rule.get("record"))
                .and_then(Value::as_str)
                .unwrap()
                .to_string();
            out.push((name, rule["expr"].as_str().unwrap().to_string()));
        }
    }
    out
}

/// The `CMD` of the Dockerfile's `HEALTHCHECK`, as its exec-form array.
fn docker_healthcheck() -> Vec<String> {
    let text = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    let line = joined
        .lines()
        .find(|l| l.starts_with("HEALTHCHECK"))
        .expect("the Dockerfile has a HEALTHCHECK");
    let cmd = &line[line.find(" CMD ").expect("HEALTHCHECK … CMD") + 5..];
    serde_json::from_str(cmd.trim()).expect("the health check's CMD is an exec-form JSON array")
}

#[test]
fn every_dashboard_and_alert_query_names_a_family_of_a_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    common::copy_root_config(dir.path());
    let port = common::free_port();
    let mut d = common::Daemon::start(dir.path(), port, 86400, &[]);
    d.wait_ready(Duration::from_secs(60));
    let (status, text) = d.get("/metrics").unwrap();
    assert_eq!(status, 200);
    let fams = families(&text);

    // Every family is there from the start, with HELP and TYPE, series or not (the shipped
    // config has no LLM provider, no broker to reconcile, no risk rejection yet).
    for name in ztraded::metrics::EXPORTED_NAMES {
        let (help, kind) = fams
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{text}"));
        assert!(
            *help && kind.is_some(),
            "{name} lacks HELP or TYPE:\n{text}"
        );
    }
    for name in fams.keys() {
        assert!(
            ztraded::metrics::EXPORTED_NAMES.contains(&name.as_str()),
            "{name} is exported but not listed in metrics::EXPORTED_NAMES"
        );
    }

    // The dashboard.
    let mut queries = Vec::new();
    dashboard_queries(&json(&deploy().join("grafana/ztraded.json")), &mut queries);
    let mut used = BTreeSet::new();
    for q in &queries {
        for name in metric_names(q) {
            let family = family_of(&name, &fams)
                .unwrap_or_else(|| panic!("the dashboard reads {name}, which /metrics lacks: {q}"));
            used.insert(family);
        }
    }
    for topic in [
        "ztraded_pipelines",
        "ztraded_executions_total",
        "ztraded_orders_total",
        "ztraded_order_rejections_total",
        "ztraded_risk_rejections_total",
        "ztraded_realized_pnl_dollars",
        "ztraded_equity_dollars",
        "ztraded_config_reloads_total",
        "ztraded_halts",
        "ztraded_market_data_last_bar_timestamp_seconds",
        "ztraded_llm_cost_dollars_total",
    ] {
        assert!(used.contains(topic), "no dashboard panel reads {topic}");
    }

    // The alert rules.
    let rules = yaml(&deploy().join("prometheus/alerts.yml"));
    let exprs = rule_exprs(&rules);
    for (rule, expr) in &exprs {
        for name in metric_names(expr) {
            assert!(
                family_of(&name, &fams).is_some(),
                "rule {rule} reads {name}, which /metrics lacks: {expr}"
            );
        }
    }
    let alerts: BTreeSet<&str> = exprs.iter().map(|(n, _)| n.as_str()).collect();
    for alert in [
        "ZtradedDown",
        "ZtradedRevisionRefused",
        "ZtradedMarketDataStale",
        "ZtradedHaltLatched",
        "ZtradedDailyLossNearLimit",
        "ZtradedBrokerDrift",
        "ZtradedLlmBudgetNearlySpent",
    ] {
        assert!(alerts.contains(alert), "alerts.yml has no {alert}");
    }

    // promtool reads the exposition, families without series included.
    if let Some(promtool) = tool(
        "promtool",
        "apt-get install -y --no-install-recommends prometheus",
    ) {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && report.trim().is_empty(),
            "promtool check metrics:\n{report}\n{text}"
        );
    }

    // The image's health check, run here against the daemon: healthy while it serves,
    // unhealthy on a port where nothing listens.
    let check = docker_healthcheck();
    let run_check = |listen: &str| {
        Command::new(&check[0])
            .args(&check[1..])
            .env("ZTRADED_HTTP__LISTEN", listen)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(
        run_check(&format!("0.0.0.0:{port}")),
        "the HEALTHCHECK of deploy/Dockerfile fails against a serving daemon: {check:?}"
    );
    assert!(
        !run_check(&format!("0.0.0.0:{}", common::free_port())),
        "the HEALTHCHECK passes with no daemon"
    );
}

#[test]
fn the_alert_rules_pass_promtool_and_their_tests_cover_every_alert() {
    let prom = deploy().join("prometheus");
    // Every alert has a test where it fires and one where it does not.
    let rules = yaml(&prom.join("alerts.yml"));
    let tests = yaml(&prom.join("alerts_test.yml"));
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for t in tests["tests"].as_array().unwrap() {
        for case in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_string();
            match case["exp_alerts"].as_array() {
                Some(a) if !a.is_empty() => firing.insert(name),
                _ => quiet.insert(name),
            };
        }
    }
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            if let Some(alert) = rule.get("alert").and_then(Value::as_str) {
                assert!(firing.contains(alert), "no test where {alert} fires");
                assert!(quiet.contains(alert), "no test where {alert} stays quiet");
            }
        }
    }

    let Some(promtool) = tool(
        "promtool",
        "apt-get install -y --no-install-recommends prometheus",
    ) else {
        return;
    };
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["test", "rules", "alerts_test.yml"],
        &["check", "config", "prometheus.yml"],
    ] {
        let (ok, out) = run(Command::new(&promtool).args(args).current_dir(&prom));
        assert!(ok, "promtool {}:\n{out}", args.join(" "));
    }
}

#[test]
fn every_deploy_file_is_well_formed() {
    let yamls = files(&deploy(), &["yaml", "yml"]);
    assert!(yamls.len() >= 15, "{yamls:?}");
    for f in &yamls {
        yaml(f);
    }
    for f in files(&deploy(), &["json"]) {
        json(&f);
    }
    // The dashboard's panels have unique ids and every target a data source.
    let dash = json(&deploy().join("grafana/ztraded.json"));
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{t}");
        }
    }
}

/// The manifests of deploy/kubernetes/, by path relative to it.
fn manifests() -> BTreeMap<String, Value> {
    let k8s = deploy().join("kubernetes");
    files(&k8s, &["yaml"])
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&k8s).unwrap().to_string_lossy().to_string();
            (rel, yaml(&p))
        })
        .collect()
}

#[test]
fn the_kubernetes_manifests_pass_the_kubernetes_schemas() {
    let all = manifests();
    let builtin: Vec<PathBuf> = all
        .iter()
        .filter(|(_, v)| !matches!(v["kind"].as_str(), Some("Kustomization" | "ServiceMonitor")))
        .map(|(p, _)| deploy().join("kubernetes").join(p))
        .collect();
    assert!(builtin.len() >= 9, "{builtin:?}");
    let Some(validate) = tool(
        "kubernetes-validate",
        "python3 -m pip install kubernetes-validate",
    ) else {
        return;
    };
    // The newest Kubernetes the package has schemas for, and an older one still in use.
    for version in [None, Some("1.30.0")] {
        let mut cmd = Command::new(&validate);
        cmd.arg("--strict");
        if let Some(v) = version {
            cmd.args(["--kubernetes-version", v]);
        }
        let (ok, out) = run(cmd.args(&builtin));
        assert!(ok, "kubernetes-validate {version:?}:\n{out}");
        assert_eq!(
            out.lines()
                .filter(|l| l.contains(" passed for resource "))
                .count(),
            builtin.len(),
            "{out}"
        );
    }
}

/// The container named `name` of a Deployment.
fn container<'a>(deployment: &'a Value, name: &str) -> &'a Value {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

fn env_value<'a>(c: &'a Value, name: &str) -> Option<&'a Value> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| e.get("value").or_else(|| e.get("valueFrom")).unwrap())
}

#[test]
fn the_kubernetes_manifests_agree_with_each_other() {
    let all = manifests();
    let service = &all["base/service.yaml"];
    let monitor = &all["base/servicemonitor.yaml"];
    let secret = &all["base/secret.yaml"];
    assert_eq!(service["kind"], "Service");
    let selector = service["spec"]["selector"].as_object().unwrap();
    let port = &service["spec"]["ports"][0];

    // Each kustomization lists files that exist.
    for (path, v) in all.iter().filter(|(_, v)| v["kind"] == "Kustomization") {
        let dir = deploy()
            .join("kubernetes")
            .join(path)
            .parent()
            .unwrap()
            .to_path_buf();
        for r in v["resources"].as_array().unwrap() {
            let p = dir.join(r.as_str().unwrap());
            assert!(p.exists(), "{path}: {} does not exist", p.display());
        }
    }

    // The ServiceMonitor scrapes the Service's named port.
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(monitor["kind"], "ServiceMonitor");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][k], v,
            "ServiceMonitor selector {k}"
        );
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], port["name"]);
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    // The job label is the Service's name, which the alert rules select.
    assert_eq!(service["metadata"]["name"], "ztraded");
    let rules = std::fs::read_to_string(deploy().join("prometheus/alerts.yml")).unwrap();
    assert!(rules.contains(r#"up{job="ztraded"}"#));

    let secret_keys: BTreeSet<&str> = secret["stringData"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for path in ["git-sync/deployment.yaml", "configmap/deployment.yaml"] {
        let d = &all[path];
        assert_eq!(d["kind"], "Deployment", "{path}");
        assert_eq!(d["spec"]["replicas"], 1, "{path}: one daemon per account");
        assert_eq!(d["spec"]["strategy"]["type"], "Recreate", "{path}");
        let pod = &d["spec"]["template"];
        for (k, v) in selector {
            assert_eq!(
                &pod["metadata"]["labels"][k], v,
                "{path}: the Service selects the pod"
            );
            assert_eq!(&d["spec"]["selector"]["matchLabels"][k], v, "{path}");
        }
        assert_eq!(
            pod["spec"]["securityContext"]["runAsNonRoot"], true,
            "{path}"
        );
        let z = container(d, "ztraded");
        // The port: the Service's target, the probes' port, and what the daemon listens on.
        let cport = z["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == port["targetPort"])
            .unwrap_or_else(|| panic!("{path}: no container port {}", port["targetPort"]));
        assert_eq!(
            env_value(z, "ZTRADED_HTTP__LISTEN").unwrap(),
            &Value::String(format!("0.0.0.0:{}", cport["containerPort"])),
            "{path}: the daemon listens on the pod's port"
        );
        assert_eq!(z["livenessProbe"]["httpGet"]["path"], "/healthz", "{path}");
        assert_eq!(z["readinessProbe"]["httpGet"]["path"], "/readyz", "{path}");
        for probe in ["livenessProbe", "readinessProbe"] {
            assert_eq!(z[probe]["httpGet"]["port"], cport["name"], "{path} {probe}");
        }
        assert_eq!(z["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(z["securityContext"]["readOnlyRootFilesystem"], true);
        // The secrets the pod reads are keys of the Secret.
        let spec = &pod["spec"];
        let containers = spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(spec["initContainers"].as_array().into_iter().flatten());
        let volumes: BTreeSet<&str> = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        for c in containers {
            for e in c["env"].as_array().into_iter().flatten() {
                if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
                    assert_eq!(r["name"], secret["metadata"]["name"], "{path}");
                    assert!(
                        secret_keys.contains(r["key"].as_str().unwrap()),
                        "{path}: the Secret has no key {}",
                        r["key"]
                    );
                }
            }
            for m in c["volumeMounts"].as_array().into_iter().flatten() {
                assert!(
                    volumes.contains(m["name"].as_str().unwrap()),
                    "{path}: no volume {}",
                    m["name"]
                );
            }
        }
        for key in ["ZTRADED_ADMIN_TOKEN", "ZTRADED_STORE__URL"] {
            assert!(env_value(z, key).is_some(), "{path}: {key} is not set");
        }
    }

    // git-sync: the sidecar and its init container share an emptyDir with the daemon, which
    // reads it read-only at the link git-sync maintains.
    let d = &all["git-sync/deployment.yaml"];
    let z = container(d, "ztraded");
    let sync = container(d, "git-sync");
    let init = &d["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(env_value(init, "GITSYNC_ONE_TIME").unwrap(), "true");
    for c in [sync, init] {
        assert_eq!(
            env_value(c, "GITSYNC_REPO"),
            env_value(sync, "GITSYNC_REPO")
        );
        assert_eq!(env_value(c, "GITSYNC_REF"), env_value(sync, "GITSYNC_REF"));
    }
    let root = env_value(sync, "GITSYNC_ROOT").unwrap().as_str().unwrap();
    let link = env_value(sync, "GITSYNC_LINK").unwrap().as_str().unwrap();
    let mount = |c: &Value| -> Value {
        c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == root)
            .cloned()
            .unwrap_or_else(|| panic!("{} does not mount {root}", c["name"]))
    };
    assert_eq!(mount(z)["name"], mount(sync)["name"]);
    assert_eq!(mount(init)["name"], mount(sync)["name"]);
    assert_eq!(mount(z)["readOnly"], true);
    let args: Vec<&str> = z["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args.first(), Some(&"run"));
    assert_eq!(args.last(), Some(&format!("{root}/{link}").as_str()));
    let shared = mount(sync)["name"].clone();
    let volume = d["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == shared)
        .unwrap();
    assert!(volume.get("emptyDir").is_some(), "{volume}");

    // ConfigMap: each kind directory is a ConfigMap volume under the config directory.
    let d = &all["configmap/deployment.yaml"];
    let z = container(d, "ztraded");
    assert_eq!(z["args"].as_array().unwrap().last().unwrap(), "/config");
    let volumes = d["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    let maps: BTreeSet<&str> = all
        .values()
        .filter(|v| v["kind"] == "ConfigMap")
        .map(|v| v["metadata"]["name"].as_str().unwrap())
        .collect();
    for (mount, map) in [
        ("/config/ztraded.toml", "ztraded-settings"),
        ("/config/pipelines", "ztraded-pipelines"),
        ("/config/scanners", "ztraded-scanners"),
        ("/config/risk", "ztraded-risk"),
    ] {
        let m = z["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == mount)
            .unwrap_or_else(|| panic!("nothing mounted at {mount}"));
        let v = volumes.iter().find(|v| v["name"] == m["name"]).unwrap();
        assert_eq!(v["configMap"]["name"], map, "{mount}");
        assert!(maps.contains(map), "no ConfigMap {map}");
    }
}

#[test]
fn the_configmap_config_directory_is_valid() {
    let all = manifests();
    let dir = tempfile::tempdir().unwrap();
    for (file, sub) in [
        ("configmap/settings.yaml", ""),
        ("configmap/pipelines.yaml", "pipelines"),
        ("configmap/scanners.yaml", "scanners"),
        ("configmap/risk.yaml", "risk"),
    ] {
        let target = dir.path().join(sub);
        std::fs::create_dir_all(&target).unwrap();
        for (name, text) in all[file]["data"].as_object().unwrap() {
            std::fs::write(target.join(name), text.as_str().unwrap()).unwrap();
        }
    }
    let (ok, out) = run(Command::new(env!("CARGO_BIN_EXE_ztraded"))
        .args(["validate", "--strict"])
        .arg(dir.path()));
    assert!(ok, "ztraded validate of the ConfigMaps:\n{out}");
    assert!(out.contains("0 errors, 0 warnings"), "{out}");
}

#[test]
fn the_compose_file_matches_the_compose_spec_and_its_files_exist() {
    let path = deploy().join("docker-compose.yml");
    let compose = yaml(&path);
    let services = compose["services"].as_object().unwrap();
    for s in ["ztraded", "postgres", "redis", "prometheus", "grafana"] {
        assert!(services.contains_key(s), "no service {s}");
    }
    // Every bind mount points at a file or directory of the repository.
    for (name, s) in services {
        for v in s["volumes"].as_array().into_iter().flatten() {
            let source = v.as_str().unwrap().split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(
                    deploy().join(source).exists(),
                    "service {name} mounts {source}, which does not exist"
                );
            }
        }
    }
    let z = &services["ztraded"];
    assert!(
        deploy()
            .join(z["build"]["context"].as_str().unwrap())
            .join(z["build"]["dockerfile"].as_str().unwrap())
            .is_file()
    );
    assert_eq!(z["environment"]["ZTRADED_HTTP__LISTEN"], "0.0.0.0:9464");
    assert!(
        z["environment"]["ZTRADED_STORE__URL"]
            .as_str()
            .unwrap()
            .contains("@postgres:")
    );
    // Prometheus scrapes that service and port; Grafana reads that Prometheus.
    let prom = yaml(&deploy().join("prometheus/prometheus.yml"));
    assert_eq!(prom["scrape_configs"][0]["job_name"], "ztraded");
    assert_eq!(
        prom["scrape_configs"][0]["static_configs"][0]["targets"][0],
        "ztraded:9464"
    );
    let ds = yaml(&deploy().join("grafana/provisioning/datasources/prometheus.yml"));
    assert_eq!(ds["datasources"][0]["url"], "http://prometheus:9090");
    let provider = yaml(&deploy().join("grafana/provisioning/dashboards/ztraded.yml"));
    let dashboards = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    assert!(
        services["grafana"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v.as_str().unwrap()
                == format!("./grafana/ztraded.json:{dashboards}/ztraded.json:ro")),
        "Grafana does not mount the dashboard where its provider reads"
    );

    let Some(check) = tool(
        "check-jsonschema",
        "python3 -m pip install check-jsonschema",
    ) else {
        return;
    };
    let (ok, out) = run(Command::new(check)
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(&path));
    assert!(ok, "check-jsonschema (compose-spec):\n{out}");
}

#[test]
fn the_dockerfile_builds_in_two_stages_and_runs_unprivileged() {
    let text = std::fs::read_to_string(deploy().join("Dockerfile")).unwrap();
    let froms: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 2, "{froms:?}");
    assert!(
        froms[0].starts_with("FROM rust:1-bookworm AS "),
        "{}",
        froms[0]
    );
    assert!(text.contains("cargo build --release --locked"));
    let user = text
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric uid");
    assert!(uid >= 1000, "USER {user}");
    let check = docker_healthcheck();
    assert!(check.join(" ").contains("/healthz"), "{check:?}");

    // The build stage copies everything the build reads: the files named by include_str!
    // and sqlx::migrate! in src/, the bench targets of Cargo.toml.
    let copied: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .flat_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            words[..words.len() - 1]
                .iter()
                .map(|w| w.trim_end_matches('/').to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for (f, line) in files(&root().join("src"), &["rs"]).iter().flat_map(|f| {
        std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .filter(|l| l.contains("include_str!(\"") || l.contains("migrate!(\""))
            .map(|l| (f.clone(), l.to_string()))
            .collect::<Vec<_>>()
    }) {
        let arg = line.split('"').nth(1).unwrap();
        let resolved = if line.contains("migrate!") {
            root().join(arg)
        } else {
            f.parent().unwrap().join(arg)
        };
        let resolved = resolved.canonicalize().unwrap();
        let top = resolved
            .strip_prefix(root().canonicalize().unwrap())
            .unwrap()
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .to_string();
        assert!(
            copied.contains(&top),
            "{}: the image build does not copy {top}/",
            f.display()
        );
    }
    for needed in ["Cargo.toml", "Cargo.lock", "src", "benches"] {
        assert!(
            copied.contains(needed),
            "the image build does not copy {needed}"
        );
    }
    let ignored = std::fs::read_to_string(deploy().join("Dockerfile.dockerignore")).unwrap();
    for c in &copied {
        assert!(
            !ignored.lines().any(|l| l.trim_end_matches('/') == c),
            "Dockerfile.dockerignore excludes {c}, which the build copies"
        );
    }
}

#[test]
fn the_systemd_unit_is_hardened() {
    let path = deploy().join("systemd/ztraded.service");
    let text = std::fs::read_to_string(&path).unwrap();
    let directives: Vec<(&str, &str)> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect();
    let has = |k: &str, v: &str| directives.iter().any(|(a, b)| *a == k && *b == v);
    for (k, v) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallFilter", "@system-service"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("CapabilityBoundingSet", ""),
        ("ReadWritePaths", "/var/lib/ztraded"),
        ("StateDirectory", "ztraded"),
        ("User", "ztraded"),
    ] {
        assert!(has(k, v), "{}: no {k}={v}", path.display());
    }
    let exec = directives
        .iter()
        .find(|(k, _)| *k == "ExecStart")
        .unwrap()
        .1;
    assert!(exec.starts_with("/usr/local/bin/ztraded run "), "{exec}");

    let Some(analyze) = optional_tool("systemd-analyze", "apt-get install -y systemd") else {
        return;
    };
    // verify checks that the executable exists: point the copy at the test build.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("ztraded.service");
    std::fs::write(
        &unit,
        text.replace("/usr/local/bin/ztraded", env!("CARGO_BIN_EXE_ztraded")),
    )
    .unwrap();
    let (ok, out) = run(Command::new(&analyze).arg("verify").arg(&unit));
    assert!(
        ok && out.trim().is_empty(),
        "systemd-analyze verify:\n{out}"
    );
    // The exposure level, 0 to 10, is printed with one decimal and compared in tenths.
    let (ok, out) = run(Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit));
    assert!(ok, "systemd-analyze security (exposure over 2.0):\n{out}");
}
