//! Daemon measurements with the real binary:
//! 1. config file write → pipeline restarted (p50/p99 over 100 edits, default 200 ms debounce);
//! 2. daemon memory (RSS) with 1,000 and 10,000 idle pipelines;
//! 3. emergency close of 500 open simulated positions, request to answer (every position
//!    filled when the answer leaves).
//!
//! Run: `cargo bench --bench daemon`.

use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const TOKEN: &str = "bench-token-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, data: &Path, speed: &str) -> Daemon {
        let port = free_port();
        // Next to the config directory, not in it: every line written into the watched tree
        // would make the daemon rescan its whole config.
        let log = dir.with_extension("log");
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ztraded"))
            .args(["--log-format", "json", "run"])
            .arg(dir)
            .env("ZTRADED_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("ZTRADED_MARKET_DATA__PATH", data)
            .env("ZTRADED_MARKET_DATA__SPEED", speed)
            .env("ZTRADED_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Daemon { child, port, log }
    }

    fn request(&self, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some((out.split(' ').nth(1)?.parse().ok()?, out))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Duration {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some((200, _)) = self.request("GET", "/readyz", "") {
                return start.elapsed();
            }
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!(
                    "daemon exited {s}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("not ready in {timeout:?}");
    }

    fn metric(&self, series: &str) -> f64 {
        let Some((_, text)) = self.request("GET", "/metrics", "") else {
            return f64::NAN;
        };
        text.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn copy_config(dir: &Path) {
    std::fs::copy(root().join("ztraded.toml"), dir.join("ztraded.toml")).unwrap();
    for sub in ["pipelines", "scanners", "risk"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for e in std::fs::read_dir(root().join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(sub).join(e.file_name())).unwrap();
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn reload_latency() {
    let dir = tempfile::tempdir().unwrap();
    copy_config(dir.path());
    let mut d = Daemon::start(dir.path(), &root().join("examples/data"), "86400");
    d.wait_ready(Duration::from_secs(60));
    let file = dir.path().join("pipelines/golden-cross.yaml");
    let original = std::fs::read_to_string(&file).unwrap();
    let mut log = std::fs::File::open(&d.log).unwrap();
    log.seek(SeekFrom::End(0)).unwrap();
    let mut reader = BufReader::new(log);
    let mut latencies = Vec::new();
    for i in 0..100 {
        let text = original.replace(
            "max_trades_per_day: 3",
            &format!("max_trades_per_day: {}", 3 + (i % 2) + 1),
        );
        let written = SystemTime::now();
        std::fs::write(&file, text).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut line = String::new();
        'wait: while Instant::now() < deadline {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            if line.contains("restarting between executions") && line.contains("golden-cross") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                let at =
                    chrono::DateTime::parse_from_rfc3339(v["timestamp"].as_str().unwrap()).unwrap();
                let written: chrono::DateTime<chrono::Utc> = written.into();
                latencies.push(
                    (at.with_timezone(&chrono::Utc) - written)
                        .num_microseconds()
                        .unwrap() as f64
                        / 1000.0,
                );
                break 'wait;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    latencies.sort_by(f64::total_cmp);
    println!(
        "reload: file write → pipeline restarted over {} edits (debounce 200 ms): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
}

fn idle_memory(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let root_dir = dir.path();
    std::fs::create_dir_all(root_dir.join("pipelines")).unwrap();
    std::fs::create_dir_all(root_dir.join("risk")).unwrap();
    // Pipelines like the shipped golden-cross (its indicators, lookback, bias, strategy with
    // exits and targets, risk and trade managers), one symbol each, on a yearly schedule.
    let golden = std::fs::read_to_string(root().join("pipelines/golden-cross.yaml")).unwrap();
    let golden = golden
        .replace("scanner: megacaps\n", "symbols: [SYMBOL]\n")
        .replace(
            "trigger:\n  bar_close: { timeframe: 1d }\n",
            "trigger:\n  schedule: { cron: \"0 0 10 1 1 *\" }\n",
        );
    assert!(golden.contains("symbols: [SYMBOL]") && golden.contains("cron"));
    std::fs::write(
        root_dir.join("risk/default.yaml"),
        std::fs::read_to_string(root().join("risk/default.yaml")).unwrap(),
    )
    .unwrap();
    let symbols = ["AAPL", "GOOG", "SPY", "YHOO"];
    for i in 0..n {
        let text = golden.replace("SYMBOL", symbols[i % symbols.len()]);
        std::fs::write(root_dir.join(format!("pipelines/idle-{i}.yaml")), text).unwrap();
    }
    // Speed 1: the simulated clock runs in real time, no bar closes during the measurement.
    let mut d = Daemon::start(root_dir, &root().join("examples/data"), "1");
    let ready = d.wait_ready(Duration::from_secs(600));
    let start = Instant::now();
    while d.metric("ztraded_pipelines{state=\"running\"}") < n as f64
        && start.elapsed() < Duration::from_secs(120)
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Measured 40 s after start, as an operator would look at it.
    let since = Instant::now() - ready;
    let wait = Duration::from_secs(40).saturating_sub(since.elapsed());
    std::thread::sleep(wait.max(Duration::from_secs(2)));
    let rss = d.rss_kib();
    println!(
        "memory: {n} idle pipelines like golden-cross (1 daily symbol each, yearly schedule): RSS {:.1} MiB ({:.1} KiB per pipeline), ready in {:.1} s, measured 40 s after start",
        rss as f64 / 1024.0,
        rss as f64 / n as f64,
        ready.as_secs_f64()
    );
}

fn emergency_close() {
    let n = 500;
    let dir = tempfile::tempdir().unwrap();
    let root_dir = dir.path();
    let data = root_dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    // 500 symbols with real SPY bars (the last 400 days).
    let spy = std::fs::read_to_string(root().join("examples/data/SPY.csv")).unwrap();
    let lines: Vec<&str> = spy.lines().collect();
    let body = format!("{}\n{}\n", lines[0], lines[lines.len() - 400..].join("\n"));
    let names: Vec<String> = (0..n).map(|i| format!("S{i:03}")).collect();
    for name in &names {
        std::fs::write(data.join(format!("{name}.csv")), &body).unwrap();
    }
    for sub in ["pipelines", "risk"] {
        std::fs::create_dir_all(root_dir.join(sub)).unwrap();
    }
    std::fs::write(
        root_dir.join("ztraded.toml"),
        "[market_data]\nstart = \"2017-01-03\"\n\n[brokers.sim]\nkind = \"simulated\"\ninitial_balance = 100000000\n",
    )
    .unwrap();
    std::fs::write(
        root_dir.join("risk/bulk.yaml"),
        "sizing: { risk_per_trade_pct: 0.01, max_position_pct: 1 }\nlimits: { max_pipeline_capital_pct: 100, max_deployed_pct: 100, max_correlated_positions: 10000 }\ntrade: { min_reward_risk: 0 }\n",
    )
    .unwrap();
    std::fs::write(
        root_dir.join("pipelines/bulk.yaml"),
        format!(
            "mode: simulation\nsymbols: [{}]\nrisk: bulk\nmax_concurrency: 64\ntrigger: {{ once: {{}} }}\nnodes:\n  - {{ id: data, agent: market_data, config: {{ timeframes: [1d], indicators: [atr_14] }} }}\n  - id: strategy\n    agent: strategy\n    config: {{ kind: rules, timeframe: 1d, long_entry: \"close > 0\", stop_loss: \"close - 20 * atr_14\", target_1: \"close + 40 * atr_14\" }}\n  - {{ id: risk, agent: risk_manager }}\n  - {{ id: trade, agent: trade_manager }}\n",
            names.join(", ")
        ),
    )
    .unwrap();
    let mut d = Daemon::start(root_dir, &data, "86400");
    d.wait_ready(Duration::from_secs(120));
    let start = Instant::now();
    while d.metric("ztraded_positions_open{pipeline=\"bulk\"}") < n as f64 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "positions did not open: {}",
            d.metric("ztraded_positions_open{pipeline=\"bulk\"}")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut times = Vec::new();
    let t = Instant::now();
    let (status, answer) = d
        .request("POST", "/v1/close", r#"{"scope":"all","reason":"bench"}"#)
        .unwrap();
    times.push(t.elapsed());
    assert_eq!(status, 200, "{answer}");
    let filled = answer.matches("\"filled\"").count();
    println!(
        "emergency close: {n} open simulated positions, request to answer {:.1} ms, {filled} filled in the answer, positions left {}",
        times[0].as_secs_f64() * 1000.0,
        d.metric("ztraded_positions_open{pipeline=\"bulk\"}")
    );
}

fn main() {
    // ZTRADED_BENCH=reload|close|memory runs one part.
    let only = std::env::var("ZTRADED_BENCH").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only == name;
    if run("reload") {
        reload_latency();
    }
    if run("close") {
        emergency_close();
    }
    if run("memory") {
        idle_memory(1_000);
        idle_memory(10_000);
    }
}
