//! A real `ztraded run` process on a copy of the shipped config, for end-to-end tests.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The admin token the tests use.
pub const TOKEN: &str = "test-token-0123456789";

/// A free port on loopback.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Copies the repository's root config (settings, pipelines, scanners, risk) into `dir`.
pub fn copy_root_config(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::copy(root.join("ztraded.toml"), dir.join("ztraded.toml")).unwrap();
    for sub in ["pipelines", "scanners", "risk"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for entry in std::fs::read_dir(root.join(sub)).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), dir.join(sub).join(entry.file_name())).unwrap();
        }
    }
}

/// A running daemon.
pub struct Daemon {
    pub child: Child,
    pub port: u16,
    pub dir: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `ztraded run dir` on `port`, replaying examples/data `speed` simulated seconds
    /// per second.
    pub fn start(dir: &Path, port: u16, speed: u64, extra_env: &[(&str, &str)]) -> Daemon {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data");
        let log = dir.join(format!(
            "daemon-{}.log",
            Instant::now().elapsed().as_nanos() + u128::from(port)
        ));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        // ZTRADED_BIN runs the daemon tests against another build (a release binary, for
        // the measurements that print numbers).
        let bin = std::env::var("ZTRADED_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ztraded").to_string());
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg(dir)
            .env("ZTRADED_HTTP__LISTEN", format!("127.0.0.1:{port}"))
            .env("ZTRADED_MARKET_DATA__PATH", data)
            .env("ZTRADED_MARKET_DATA__SPEED", speed.to_string())
            .env("ZTRADED_ADMIN_TOKEN", TOKEN)
            .env("ZTRADED_RECONCILE__DEBOUNCE", "50ms")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log_file);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Daemon {
            child,
            port,
            dir: dir.to_path_buf(),
            log,
        }
    }

    /// `GET path` → (status, body), or `None` when the daemon does not answer.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        http(self.port, "GET", path, None, None)
    }

    /// `POST path` with a JSON body and an optional bearer token.
    pub fn post(&self, path: &str, body: &str, token: Option<&str>) -> Option<(u16, String)> {
        http(self.port, "POST", path, Some(body), token)
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some((200, _)) = self.get("/readyz") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited with {status}:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "the daemon did not get ready in {timeout:?}:\n{}",
            self.log_text()
        );
    }

    /// The value of a metric series (the line that starts with `series`), 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        let Some((_, text)) = self.get("/metrics") else {
            return f64::NAN;
        };
        text.lines()
            .filter(|l| l.starts_with(series))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum()
    }

    /// Waits until `f` holds, polling every 100 ms.
    pub fn wait_for(&mut self, what: &str, timeout: Duration, mut f: impl FnMut(&Daemon) -> bool) {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if f(self) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the daemon exited with {status} while waiting for {what}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}:\n{}",
            tail(&self.log_text(), 60)
        );
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// Sends `signal` (e.g. "TERM", "KILL") and waits for the exit; returns the exit code
    /// (None when killed by a signal) and how long it took.
    pub fn signal(&mut self, signal: &str, timeout: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
        while start.elapsed() < timeout {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (status.code(), start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        panic!(
            "the daemon did not exit within {timeout:?} after SIG{signal}:\n{}",
            tail(&self.log_text(), 40)
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends SIGTERM to `child`.
pub fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A minimal HTTP/1.1 request over a fresh TCP connection.
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> Option<(u16, String)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Chunked bodies: strip the chunk sizes.
    let body = if response
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Some((status, body))
}

fn dechunk(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}
