//! The async client: HTTP Basic `appId:appKey`, JSON bodies, one call per method, no retries
//! (callers decide, from [`ArcadiaError::is_transient`] and [`ArcadiaError::retry_after`]).

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::model::{Account, ApiError, Envelope, PropertyData, SetProperty};

/// Arcadia's public API base.
pub const DEFAULT_BASE_URL: &str = "https://api.genability.com/rest/v1";

/// The application key. `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct AppKey(String);

impl AppKey {
    /// Wrap a key.
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
    /// The key itself; call only where it is sent.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Which account a call is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AccountRef {
    /// Our id (`/accounts/pid/{providerAccountId}`).
    Provider(String),
    /// Arcadia's UUID (`/accounts/{accountId}`).
    Arcadia(String),
}

impl fmt::Display for AccountRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountRef::Provider(p) => write!(f, "providerAccountId {p}"),
            AccountRef::Arcadia(a) => write!(f, "accountId {a}"),
        }
    }
}

/// A page of an account search.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountQuery {
    /// Text to look for (`search`).
    pub search: Option<String>,
    /// Fields to look in (`searchOn`, comma-separated), e.g. `customerOrgId`.
    pub search_on: Option<String>,
    /// First result (`pageStart`).
    pub page_start: u64,
    /// Page size (`pageCount`).
    pub page_count: u64,
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ArcadiaError {
    /// Arcadia answered with a non-2xx status (the message is Arcadia's own when it sent one).
    #[error("Arcadia answered HTTP {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Arcadia's errors, one line.
        message: String,
        /// The delay asked for with `Retry-After` (429, 503).
        retry_after: Option<Duration>,
    },
    /// No complete answer in time.
    #[error("Arcadia did not answer in time")]
    Timeout,
    /// The connection failed, or broke mid-request.
    #[error("cannot reach Arcadia: {0}")]
    Transport(String),
    /// A 2xx answer that is not the documented JSON.
    #[error("unexpected answer from Arcadia: {0}")]
    Decode(String),
    /// Bad configuration (base URL).
    #[error("invalid Arcadia client configuration: {0}")]
    Config(String),
}

impl ArcadiaError {
    /// Whether trying again later may succeed: 429, 5xx, 408, timeouts and transport errors.
    /// 400, 401, 403 and 404 are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            ArcadiaError::Status { status, .. } => {
                *status == 429 || *status == 408 || *status >= 500
            }
            ArcadiaError::Timeout | ArcadiaError::Transport(_) => true,
            ArcadiaError::Decode(_) | ArcadiaError::Config(_) => false,
        }
    }

    /// The `Retry-After` delay, if Arcadia asked for one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ArcadiaError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The HTTP status, if Arcadia answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ArcadiaError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Low-cardinality label for metrics: `http_429`, `timeout`, `transport`, `decode`.
    pub fn label(&self) -> String {
        match self {
            ArcadiaError::Status { status, .. } => format!("http_{status}"),
            ArcadiaError::Timeout => "timeout".into(),
            ArcadiaError::Transport(_) => "transport".into(),
            ArcadiaError::Decode(_) => "decode".into(),
            ArcadiaError::Config(_) => "config".into(),
        }
    }
}

/// How to reach Arcadia.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// API base, e.g. [`DEFAULT_BASE_URL`] or a simulator's `http://127.0.0.1:PORT/rest/v1`.
    pub base_url: String,
    /// The application id (HTTP Basic user).
    pub app_id: String,
    /// The application key (HTTP Basic password).
    pub app_key: AppKey,
    /// Bound on each whole exchange.
    pub timeout: Duration,
}

/// A client for Arcadia's account API.
#[derive(Debug, Clone)]
pub struct ArcadiaClient {
    http: reqwest::Client,
    base: url::Url,
    app_id: String,
    app_key: AppKey,
    timeout: Duration,
}

impl ArcadiaClient {
    /// Check the base URL and build the HTTP client.
    pub fn new(cfg: ClientConfig) -> Result<Self, ArcadiaError> {
        let mut base = url::Url::parse(cfg.base_url.trim())
            .map_err(|e| ArcadiaError::Config(format!("base_url: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(ArcadiaError::Config(
                "base_url must be an http(s) URL with a host".into(),
            ));
        }
        if base.query().is_some() || !base.username().is_empty() || base.password().is_some() {
            return Err(ArcadiaError::Config(
                "base_url must not carry credentials or a query: use app_id and app_key".into(),
            ));
        }
        if base.path_segments_mut().is_err() {
            return Err(ArcadiaError::Config("base_url cannot be a base".into()));
        }
        if let Ok(mut segs) = base.path_segments_mut() {
            segs.pop_if_empty();
        }
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.timeout)
            .build()
            .map_err(|e| ArcadiaError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base,
            app_id: cfg.app_id,
            app_key: cfg.app_key,
            timeout: cfg.timeout,
        })
    }

    fn url(&self, segments: &[&str]) -> url::Url {
        let mut u = self.base.clone();
        if let Ok(mut s) = u.path_segments_mut() {
            // Each segment is percent-encoded: a providerAccountId cannot escape its path.
            s.extend(segments);
        }
        u
    }

    fn account_path<'a>(account: &'a AccountRef, tail: &[&'a str]) -> Vec<&'a str> {
        let mut v = match account {
            AccountRef::Provider(p) => vec!["accounts", "pid", p.as_str()],
            AccountRef::Arcadia(a) => vec!["accounts", a.as_str()],
        };
        v.extend_from_slice(tail);
        v
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: Option<&B>,
    ) -> Result<Envelope<T>, ArcadiaError> {
        let mut req = self
            .http
            .request(method, url)
            .basic_auth(&self.app_id, Some(self.app_key.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .timeout(self.timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| transport(&e))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let bytes = resp.bytes().await.map_err(|e| transport(&e))?;
        if !status.is_success() {
            return Err(ArcadiaError::Status {
                status: status.as_u16(),
                message: error_message(status, &bytes),
                retry_after,
            });
        }
        let env: Envelope<serde_json::Value> = serde_json::from_slice(&bytes)
            .map_err(|e| ArcadiaError::Decode(format!("not an Arcadia envelope: {e}")))?;
        if env.status != "success" {
            // Arcadia has been seen to report errors inside a 200.
            return Err(ArcadiaError::Status {
                status: 400,
                message: error_message(reqwest::StatusCode::BAD_REQUEST, &bytes),
                retry_after: None,
            });
        }
        let results = env
            .results
            .into_iter()
            .map(serde_json::from_value)
            .collect::<Result<Vec<T>, _>>()
            .map_err(|e| ArcadiaError::Decode(format!("{} results: {e}", env.result_type)))?;
        Ok(Envelope {
            status: env.status,
            count: env.count,
            result_type: env.result_type,
            page_start: env.page_start,
            page_count: env.page_count,
            results,
        })
    }

    fn first<T>(env: Envelope<T>, what: &str) -> Result<T, ArcadiaError> {
        env.results
            .into_iter()
            .next()
            .ok_or_else(|| ArcadiaError::Decode(format!("{what}: empty results")))
    }

    /// `PUT /accounts`: add the account, or update the one with the same `providerAccountId`.
    pub async fn upsert_account(&self, account: &Account) -> Result<Account, ArcadiaError> {
        let env = self
            .call(reqwest::Method::PUT, self.url(&["accounts"]), Some(account))
            .await?;
        Self::first(env, "upsert")
    }

    /// `GET /accounts/pid/{providerAccountId}` or `GET /accounts/{accountId}`.
    pub async fn get_account(&self, account: &AccountRef) -> Result<Account, ArcadiaError> {
        let url = self.url(&Self::account_path(account, &[]));
        let env = self.call::<(), _>(reqwest::Method::GET, url, None).await?;
        Self::first(env, "get account")
    }

    /// Set Account Property: `PUT .../properties` with one field.
    pub async fn set_property(
        &self,
        account: &AccountRef,
        property: &SetProperty,
    ) -> Result<PropertyData, ArcadiaError> {
        let url = self.url(&Self::account_path(account, &["properties"]));
        let env = self.call(reqwest::Method::PUT, url, Some(property)).await?;
        Self::first(env, "set property")
    }

    /// `GET /accounts?search=&searchOn=&pageStart=&pageCount=`: one page.
    pub async fn list_accounts(
        &self,
        query: &AccountQuery,
    ) -> Result<Envelope<Account>, ArcadiaError> {
        let mut url = self.url(&["accounts"]);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("pageStart", &query.page_start.to_string());
            q.append_pair("pageCount", &query.page_count.to_string());
            if let Some(s) = &query.search {
                q.append_pair("search", s);
            }
            if let Some(s) = &query.search_on {
                q.append_pair("searchOn", s);
            }
        }
        self.call::<(), _>(reqwest::Method::GET, url, None).await
    }
}

fn transport(err: &reqwest::Error) -> ArcadiaError {
    if err.is_timeout() {
        return ArcadiaError::Timeout;
    }
    let mut detail = String::from(if err.is_connect() {
        "connection failed"
    } else {
        "transport error"
    });
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(e) = source {
        detail.push_str(": ");
        detail.push_str(&e.to_string());
        source = e.source();
    }
    ArcadiaError::Transport(detail)
}

/// Arcadia's own message from an error body, or the status line when there is none.
fn error_message(status: reqwest::StatusCode, body: &[u8]) -> String {
    if let Ok(env) = serde_json::from_slice::<Envelope<ApiError>>(body) {
        let parts: Vec<String> = env.results.iter().map(ApiError::describe).collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() || text.len() > 300 {
        status.to_string()
    } else {
        format!("{status}: {text}")
    }
}

/// `Retry-After`: delay-seconds or an HTTP-date (a past date means now); garbage means none.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Result<ArcadiaClient, ArcadiaError> {
        ArcadiaClient::new(ClientConfig {
            base_url: base.into(),
            app_id: "id".into(),
            app_key: AppKey::new("k3y"),
            timeout: Duration::from_secs(1),
        })
    }

    #[test]
    fn paths_are_encoded_under_the_base() {
        let c = client("http://h/rest/v1/").unwrap();
        let p = AccountRef::Provider("espm-1/../x".into());
        let u = c.url(&ArcadiaClient::account_path(&p, &["properties"]));
        assert_eq!(
            u.as_str(),
            "http://h/rest/v1/accounts/pid/espm-1%2F..%2Fx/properties"
        );
        let a = AccountRef::Arcadia("u-1".into());
        assert_eq!(
            c.url(&ArcadiaClient::account_path(&a, &[])).as_str(),
            "http://h/rest/v1/accounts/u-1"
        );
    }

    #[test]
    fn credentials_stay_out_of_urls_and_debug() {
        assert!(client("http://id:key@h/rest/v1").is_err());
        assert!(client("http://h/rest/v1?appKey=x").is_err());
        assert!(client("ftp://h/").is_err());
        let c = client("http://h/rest/v1").unwrap();
        assert!(!format!("{c:?}").contains("k3y"));
    }

    #[test]
    fn classifies_errors() {
        let s = |status| ArcadiaError::Status {
            status,
            message: String::new(),
            retry_after: None,
        };
        for code in [429, 500, 503, 408] {
            assert!(s(code).is_transient(), "{code}");
        }
        for code in [400, 401, 403, 404] {
            assert!(!s(code).is_transient(), "{code}");
        }
        assert!(ArcadiaError::Timeout.is_transient());
        assert_eq!(
            parse_retry_after("3", SystemTime::now()),
            Some(Duration::from_secs(3))
        );
        assert_eq!(parse_retry_after("soon", SystemTime::now()), None);
    }

    #[test]
    fn error_messages_are_arcadias() {
        let body = br#"{"status":"error","count":1,"type":"Error","results":[{"code":"Unauthorized","message":"Invalid app key","objectName":"requestSignature"}]}"#;
        assert_eq!(
            error_message(reqwest::StatusCode::UNAUTHORIZED, body),
            "Unauthorized: Invalid app key"
        );
        assert_eq!(
            error_message(reqwest::StatusCode::BAD_GATEWAY, b""),
            "502 Bad Gateway"
        );
    }
}
