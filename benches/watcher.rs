//! Config watcher latency: time from a file write returning to the watcher delivering the
//! revision that contains it, over real notify (inotify) in a temporary directory. 100 edits
//! per case, one at a time; prints p50, p99 and max. Cases: debounce 50 ms and 200 ms on a
//! directory with one risk policy, and debounce 200 ms on a directory with 500 policies (the
//! rescan then costs more).
//!
//! Run: `cargo bench --bench watcher`.

use std::path::Path;
use std::time::{Duration, Instant};
use ztraded::reconcile::watcher::{WatchOptions, Watcher};

const EDITS: usize = 100;

fn risk(desc: &str) -> String {
    format!(
        "description: {desc}\n\
         sizing:\n  risk_per_trade_pct: 1.0\n  max_position_pct: 20\n\
         limits:\n  max_pipeline_capital_pct: 50\n  max_deployed_pct: 90\n  daily_loss_usd: 3000\n  daily_loss_action: halt\n\
         trade:\n  require_stop_loss: true\n  min_reward_risk: 1.5\n  allow_short: false\n"
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn case(debounce_ms: u64, extra_files: usize) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let root = dir.path().join("cfg");
    std::fs::create_dir_all(root.join("risk")).expect("mkdir");
    let file = root.join("risk/default.yaml");
    std::fs::write(&file, risk("start")).expect("write");
    for i in 0..extra_files {
        std::fs::write(
            root.join(format!("risk/policy-{i}.yaml")),
            risk(&format!("p{i}")),
        )
        .expect("write");
    }
    let options = WatchOptions {
        debounce: Duration::from_millis(debounce_ms),
        resync_interval: Duration::from_secs(3600),
        poll_interval: WatchOptions::DEFAULT_POLL_INTERVAL,
        file_events: true,
        env: Vec::new(),
    };
    let t = Instant::now();
    let (watcher, mut rx) = Watcher::start_with(root.clone(), options)
        .await
        .expect("watcher starts");
    let start = t.elapsed();
    let mut latencies = Vec::with_capacity(EDITS);
    for i in 0..EDITS {
        let marker = format!("edit {i}");
        write_file(&file, &risk(&marker));
        let t = Instant::now();
        loop {
            let seen = rx
                .borrow_and_update()
                .set
                .risk
                .get("default")
                .is_some_and(|r| r.doc.source.contains(marker.as_str()));
            if seen {
                break;
            }
            tokio::time::timeout(Duration::from_secs(30), rx.changed())
                .await
                .expect("delivered within 30 s")
                .expect("watcher running");
        }
        latencies.push(t.elapsed());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let scans = watcher.scans();
    watcher.stop().await;
    latencies.sort();
    println!(
        "debounce {debounce_ms:>3} ms, {:>3} files: write -> delivered p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms  ({EDITS} edits, {scans} scans, start {:.1} ms)",
        extra_files + 1,
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(latencies[latencies.len() - 1]),
        ms(start),
    );
}

fn write_file(path: &Path, content: &str) {
    std::fs::write(path, content).expect("write");
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        case(50, 0).await;
        case(200, 0).await;
        case(200, 499).await;
    });
}
