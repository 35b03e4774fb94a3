//! The REST side of Alpaca's Trading API: authentication headers, pacing (a token bucket
//! shared by every request of one account), retries of reads, and error mapping.

use super::wire::ApiError;
use crate::broker::BrokerError;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

/// Alpaca's rate limit: 200 requests per minute per account.
pub const RATE_LIMIT_PER_MINUTE: u32 = 200;

/// A failure of one Alpaca request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AlpacaError {
    /// 401, or 403 with "forbidden"/"unauthorized" on a read: the keys are wrong.
    #[error(
        "authentication failed: check the API key id and secret key environment variables (alpaca {status} {code}: {message})"
    )]
    Auth {
        /// HTTP status.
        status: u16,
        /// Alpaca's code (0 when absent).
        code: i64,
        /// Alpaca's message.
        message: String,
    },
    /// Alpaca answered an error (4xx) for this request.
    #[error("alpaca {status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Alpaca's code (0 when absent).
        code: i64,
        /// Alpaca's message.
        message: String,
    },
    /// 429 after every retry.
    #[error("alpaca rate limit: {0}")]
    RateLimited(String),
    /// 5xx after every retry.
    #[error("alpaca {status}: {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The body.
        message: String,
    },
    /// No answer in time.
    #[error("alpaca request timed out: {0}")]
    Timeout(String),
    /// Could not connect or the connection broke.
    #[error("alpaca unreachable: {0}")]
    Connect(String),
    /// The answer did not parse.
    #[error("alpaca answered garbage: {0}")]
    Decode(String),
}

impl AlpacaError {
    /// Whether the keys were refused (show "check APCA_API_KEY_ID/…").
    pub fn is_auth(&self) -> bool {
        matches!(self, AlpacaError::Auth { .. })
    }
    /// Whether a request that changes state may or may not have been executed.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            AlpacaError::Timeout(_) | AlpacaError::Connect(_) | AlpacaError::Server { .. }
        )
    }
    /// The HTTP status of an Alpaca error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            AlpacaError::Auth { status, .. }
            | AlpacaError::Api { status, .. }
            | AlpacaError::Server { status, .. } => Some(*status),
            AlpacaError::RateLimited(_) => Some(429),
            _ => None,
        }
    }
    /// `alpaca 403 40310000: insufficient buying power` for an API error.
    pub fn reason(&self) -> String {
        self.to_string()
    }
    /// As a [`BrokerError`] for a read (everything is `Unavailable` but a 404).
    pub fn into_broker(self, broker: &str) -> BrokerError {
        match self {
            AlpacaError::Api { status: 404, .. } => BrokerError::UnknownOrder(self.to_string()),
            other => BrokerError::Unavailable(format!("broker {broker}: {other}")),
        }
    }
}

/// A token bucket: at most `limit` requests in any `period` (the refill rate is
/// `(limit − burst) / period` less 2 % headroom, so a full bucket plus a period of refills stays within
/// `limit`). Waiters are served in order (a fair mutex); a 429 blocks everyone until the
/// limit resets.
#[derive(Debug)]
pub struct Pacer {
    state: Mutex<Bucket>,
    burst: f64,
    per_second: f64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    blocked_until: Option<Instant>,
}

impl Pacer {
    /// At most `limit` requests in any `period`, `burst` of them at once.
    pub fn new(limit: u32, period: Duration, burst: u32) -> Pacer {
        let limit = limit.max(1) as f64;
        let burst = (burst as f64).clamp(1.0, limit);
        let refill = (limit - burst).max(1.0);
        Pacer {
            state: Mutex::new(Bucket {
                tokens: burst,
                last: Instant::now(),
                blocked_until: None,
            }),
            burst,
            // 2 % headroom: Alpaca counts arrivals, which network jitter bunches up.
            per_second: refill * 0.98 / period.as_secs_f64().max(1e-9),
        }
    }

    /// Waits for a token.
    pub async fn acquire(&self) {
        let mut b = self.state.lock().await;
        if let Some(until) = b.blocked_until.take()
            && until > Instant::now()
        {
            tokio::time::sleep_until(until).await;
            // The window reset: start from a full burst.
            b.tokens = self.burst;
            b.last = Instant::now();
        }
        loop {
            let now = Instant::now();
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens = (b.tokens + elapsed * self.per_second).min(self.burst);
            b.last = now;
            if b.tokens >= 1.0 - 1e-9 {
                b.tokens = (b.tokens - 1.0).max(0.0);
                return;
            }
            let wait = (1.0 - b.tokens) / self.per_second;
            // At least a millisecond (the timer's resolution), so that a rounding
            // remainder never spins.
            tokio::time::sleep(Duration::from_secs_f64(wait).max(Duration::from_millis(1))).await;
        }
    }

    /// Blocks every request until `until` (a 429 with a reset time).
    pub async fn block_until(&self, until: Instant) {
        let mut b = self.state.lock().await;
        b.tokens = 0.0;
        b.blocked_until = Some(b.blocked_until.map_or(until, |u| u.max(until)));
    }
}

/// Tuning of the REST client.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Per-request timeout.
    pub timeout: Duration,
    /// Requests allowed per `rate_period`.
    pub rate_limit: u32,
    /// The rate-limit window.
    pub rate_period: Duration,
    /// Requests allowed at once.
    pub burst: u32,
    /// First retry delay (doubled each time).
    pub backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Tries of a read before giving up (5xx, timeouts, connection errors).
    pub max_tries: u32,
    /// Tries of any request answered 429.
    pub max_rate_limited: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            timeout: Duration::from_secs(10),
            rate_limit: RATE_LIMIT_PER_MINUTE,
            rate_period: Duration::from_secs(60),
            burst: 10,
            backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            max_tries: 3,
            max_rate_limited: 10,
        }
    }
}

/// One answer.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Vec<u8>,
}

impl Answer {
    /// Parses the body as `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, AlpacaError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            AlpacaError::Decode(format!(
                "{e} in {}",
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            ))
        })
    }
}

/// The REST client of one account.
#[derive(Debug)]
pub struct RestClient {
    http: reqwest::Client,
    base: String,
    key_id: String,
    secret_key: String,
    pacer: Pacer,
    options: ClientOptions,
}

/// How many times to try a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Reads and idempotent requests: retry 429, 5xx, timeouts and connection errors.
    Yes,
    /// Requests whose repetition could do something twice (submit, replace): one try. A
    /// 429 still makes every request of the account wait for the reset, and answers
    /// [`AlpacaError::RateLimited`]; the caller looks the order up before sending again.
    No,
}

impl RestClient {
    /// A client of `base` (the trading URL) with these keys.
    pub fn new(
        base: &str,
        key_id: &str,
        secret_key: &str,
        options: ClientOptions,
    ) -> Result<RestClient, AlpacaError> {
        crate::install_tls_provider();
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| AlpacaError::Connect(format!("building the HTTP client: {e}")))?;
        Ok(RestClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            key_id: key_id.to_string(),
            secret_key: secret_key.to_string(),
            pacer: Pacer::new(options.rate_limit, options.rate_period, options.burst),
            options,
        })
    }

    /// The options.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The delay before retry `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        (self.options.backoff * factor).min(self.options.max_backoff)
    }

    async fn once(
        &self,
        method: &Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<(Answer, Option<Duration>), AlpacaError> {
        self.pacer.acquire().await;
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method.clone(), &url)
            .header("APCA-API-KEY-ID", &self.key_id)
            .header("APCA-API-SECRET-KEY", &self.secret_key);
        if !query.is_empty() {
            req = req.query(query);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let what = format!("{method} {path}");
        let resp = req.send().await.map_err(|e| classify(&what, &e))?;
        let status = resp.status();
        let wait =
            (status == StatusCode::TOO_MANY_REQUESTS).then(|| rate_limit_wait(resp.headers()));
        let body = resp
            .bytes()
            .await
            .map_err(|e| classify(&what, &e))?
            .to_vec();
        Ok((Answer { status, body }, wait.flatten()))
    }

    /// Sends a request, paced, retrying per `retry`. Error statuses (4xx other than 429;
    /// 5xx after the retries) come back as `Err`; 2xx (and 207) as `Ok`.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        retry: Retry,
    ) -> Result<Answer, AlpacaError> {
        let mut tries = 0u32;
        let mut limited = 0u32;
        loop {
            let outcome = self.once(&method, path, query, body).await;
            let err = match outcome {
                Ok((answer, wait)) if answer.status == StatusCode::TOO_MANY_REQUESTS => {
                    limited += 1;
                    let wait = wait.unwrap_or_else(|| self.backoff(limited));
                    if retry == Retry::No {
                        self.pacer.block_until(Instant::now() + wait).await;
                        return Err(AlpacaError::RateLimited(format!("{method} {path}: 429")));
                    }
                    if limited >= self.options.max_rate_limited {
                        return Err(AlpacaError::RateLimited(format!(
                            "{method} {path}: still 429 after {limited} tries"
                        )));
                    }
                    tracing::warn!(request = %format!("{method} {path}"), wait_ms = wait.as_millis() as u64, "alpaca rate limit (429): waiting");
                    self.pacer.block_until(Instant::now() + wait).await;
                    continue;
                }
                Ok((answer, _)) if answer.status.is_success() => return Ok(answer),
                Ok((answer, _)) => error_of(&method, path, &answer),
                Err(e) => e,
            };
            tries += 1;
            if retry == Retry::Yes && err.outcome_unknown() && tries < self.options.max_tries {
                let wait = self.backoff(tries);
                tracing::warn!(request = %format!("{method} {path}"), error = %err, try_ = tries, "alpaca request failed; retrying");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(err);
        }
    }

    /// `GET path` parsed as `T`, with retries.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, AlpacaError> {
        self.request(Method::GET, path, query, None, Retry::Yes)
            .await?
            .json()
    }
}

/// The longest wait a 429 may impose before the request is tried again, whatever the server
/// asks: a hostile or broken header must neither stall trading nor overflow a `Duration`.
pub(crate) const MAX_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// The wait a 429 asks for, for the trading and the market-data API alike: `Retry-After`
/// (seconds) when present, else `X-RateLimit-Reset` (Unix seconds of the reset) minus the
/// current whole second;
/// clamped to 0..=[`MAX_RATE_LIMIT_WAIT`]. `None` without either header.
pub(crate) fn rate_limit_wait(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|v| v.is_finite())
    };
    let max = MAX_RATE_LIMIT_WAIT.as_secs_f64();
    if let Some(secs) = header("retry-after") {
        return Some(Duration::from_secs_f64(secs.clamp(0.0, max)));
    }
    // The reset is a whole second; counting from the current whole second waits until the
    // window has surely turned (up to one second more than the exact instant).
    let reset = header("x-ratelimit-reset")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as f64)
        .unwrap_or_default();
    Some(Duration::from_secs_f64((reset - now).clamp(0.0, max)))
}

fn classify(what: &str, e: &reqwest::Error) -> AlpacaError {
    if e.is_timeout() {
        AlpacaError::Timeout(format!("{what}: {e}"))
    } else if e.is_decode() {
        AlpacaError::Decode(format!("{what}: {e}"))
    } else {
        AlpacaError::Connect(format!("{what}: {e}"))
    }
}

/// The error of a non-2xx answer.
pub fn error_of(method: &Method, path: &str, answer: &Answer) -> AlpacaError {
    let status = answer.status.as_u16();
    let parsed: ApiError = serde_json::from_slice(&answer.body).unwrap_or_else(|_| ApiError {
        code: None,
        message: String::from_utf8_lossy(&answer.body[..answer.body.len().min(300)])
            .trim()
            .to_string(),
    });
    let code = parsed.code.unwrap_or(0);
    let message = if parsed.message.is_empty() {
        answer
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_lowercase()
    } else {
        parsed.message
    };
    let lower = message.to_lowercase();
    if status == 401
        || (status == 403
            && *method == Method::GET
            && (lower.contains("forbidden") || lower.contains("unauthorized")))
    {
        return AlpacaError::Auth {
            status,
            code,
            message,
        };
    }
    if status >= 500 {
        return AlpacaError::Server {
            status,
            message: format!("{method} {path}: {message}"),
        };
    }
    AlpacaError::Api {
        status,
        code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_pacer_allows_at_most_the_limit_in_any_window() {
        let pacer = Pacer::new(200, Duration::from_secs(60), 10);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..300 {
            pacer.acquire().await;
            times.push(start.elapsed());
        }
        // Any window of 60 s holds at most 200 acquisitions.
        for (i, t) in times.iter().enumerate() {
            let n = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(60))
                .count();
            assert!(n <= 200, "{n} requests within 60 s from {t:?}");
        }
        assert!(times[9] < Duration::from_millis(1), "burst of 10 at once");
        assert!(times[299] >= Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_block_holds_every_request_until_it_ends() {
        let pacer = Pacer::new(200, Duration::from_secs(60), 10);
        let start = Instant::now();
        pacer.block_until(start + Duration::from_secs(2)).await;
        pacer.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    #[test]
    fn auth_and_api_errors_are_told_apart() {
        let answer = |status: u16, body: &str| Answer {
            status: StatusCode::from_u16(status).unwrap(),
            body: body.as_bytes().to_vec(),
        };
        let e = error_of(
            &Method::GET,
            "/v2/account",
            &answer(
                401,
                r#"{"code":40110000,"message":"request is not authorized"}"#,
            ),
        );
        assert!(e.is_auth());
        assert!(e.to_string().starts_with("authentication failed"));
        let e = error_of(
            &Method::POST,
            "/v2/orders",
            &answer(
                403,
                r#"{"code":40310000,"message":"insufficient buying power"}"#,
            ),
        );
        assert!(!e.is_auth());
        assert_eq!(
            e.to_string(),
            "alpaca 403 40310000: insufficient buying power"
        );
        let e = error_of(
            &Method::GET,
            "/v2/account",
            &answer(403, r#"{"code":40310000,"message":"forbidden"}"#),
        );
        assert!(e.is_auth());
        let e = error_of(&Method::GET, "/v2/orders", &answer(503, "upstream down"));
        assert!(e.outcome_unknown());
    }
}
