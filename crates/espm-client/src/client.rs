//! [`PmClient`]: the calls, the retry loop and pagination.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use backoff::backoff::Backoff;
use bytes::{Bytes, BytesMut};
use espm_model::{
    parse, root_element, to_xml, Action, CustomField, CustomFieldValues, Customer, DocumentError,
    NewCustomer, NotificationList, PendingList, PmDocument, Property, Response, ResponseStatus,
    SharingResponse, TerminateSharingResponse,
};
use futures::{Stream, TryStreamExt};
use reqwest::header::{HeaderMap, ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;
use url::Url;

use crate::config::{ClientConfig, Password, RetryPolicy};
use crate::error::{snippet, ClientError};

/// Pagination stops with an error after this many pages (20 entries each: 200 000 requests).
pub const MAX_PAGES: usize = 10_000;

/// The body of a 2xx answer, unparsed, so the caller can journal the exact bytes first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBody {
    /// HTTP status (2xx).
    pub status: u16,
    /// `Content-Type`, if sent.
    pub content_type: Option<String>,
    /// The body exactly as received.
    pub bytes: Bytes,
    /// The URL that answered.
    pub url: String,
}

/// A 2xx PM response whose body is read as it arrives (see [`PmClient::notifications_stream`]).
pub struct BodyStream {
    /// HTTP status (2xx).
    pub status: u16,
    /// `Content-Type`, if sent.
    pub content_type: Option<String>,
    /// The URL that answered.
    pub url: String,
    resp: reqwest::Response,
    /// This account's one PM call at a time, held until the body is read or dropped.
    _turn: OwnedSemaphorePermit,
}

impl std::fmt::Debug for BodyStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodyStream")
            .field("status", &self.status)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl BodyStream {
    /// The next part of the body, `None` at its end. An error means the transfer broke off:
    /// what was handed out before it is all there is.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        self.resp
            .chunk()
            .await
            .map_err(|e| transport_error(&self.url, &e, None))
    }
}

/// How much of an error page is read for its message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

/// Which pending list / answer endpoint (the model's type, re-exported).
pub use espm_model::PendingKind;

/// Whose custom fields [`PmClient::custom_fields`] reads (the model's type, re-exported).
pub use espm_model::CustomFieldTarget;

/// One connected customer from `GET /customer/list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerLink {
    /// The customer's account id.
    pub id: i64,
    /// PM's hint (often the organisation name); may be missing.
    pub hint: Option<String>,
}

struct Inner {
    http: reqwest::Client,
    /// Base URI without trailing slash.
    base: String,
    base_url: Url,
    username: String,
    password: Password,
    retry: RetryPolicy,
    /// PM asks providers never to call one account concurrently: every clone of this client
    /// (poller, command API, command topics) takes its turn here for each attempt.
    turn: Arc<Semaphore>,
}

/// An async PM web-services client. Cheap to clone (shared connection pool). `Debug` never shows
/// the password. Clones share one turn: at most one call of theirs is at PM at any time.
#[derive(Clone)]
pub struct PmClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for PmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PmClient")
            .field("base_url", &self.inner.base)
            .field("username", &self.inner.username)
            .field("password", &"***")
            .field("retry", &self.inner.retry)
            .finish()
    }
}

/// One HTTP call as the retry loop sees it.
struct Call {
    endpoint: &'static str,
    method: Method,
    url: Url,
    body: Option<String>,
    /// Whether repeating the request after an unknown outcome is harmless.
    idempotent: bool,
}

impl PmClient {
    /// Build a client. Fails on an unusable base URL, empty username or zero timeout.
    pub fn new(cfg: ClientConfig) -> Result<PmClient, ClientError> {
        let base = cfg.base_url.trim().trim_end_matches('/').to_string();
        let base_url = Url::parse(&base)
            .map_err(|e| ClientError::Config(format!("base_url {base:?}: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(ClientError::Config(format!(
                "base_url {base:?}: scheme must be http or https"
            )));
        }
        if base_url.query().is_some() || base_url.fragment().is_some() {
            return Err(ClientError::Config(format!(
                "base_url {base:?}: must not have a query or fragment"
            )));
        }
        if !base_url.username().is_empty() || base_url.password().is_some() {
            // Credentials in the URL would end up in logs and errors.
            return Err(ClientError::Config(
                "base_url must not carry credentials; use username/password".into(),
            ));
        }
        if cfg.username.trim().is_empty() {
            return Err(ClientError::Config("username is empty".into()));
        }
        if cfg.timeout.is_zero() {
            return Err(ClientError::Config("timeout is zero".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(30)))
            .user_agent(cfg.user_agent.clone())
            // PM does not redirect; following one could turn a POST into a GET or leave the host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ClientError::Config(format!("HTTP client: {e}")))?;
        Ok(PmClient {
            inner: Arc::new(Inner {
                http,
                base,
                base_url,
                username: cfg.username,
                password: cfg.password,
                retry: cfg.retry,
                turn: Arc::new(Semaphore::new(1)),
            }),
        })
    }

    /// The base URI in use (no trailing slash).
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The PM username in use.
    pub fn username(&self) -> &str {
        &self.inner.username
    }

    // ---------------------------------------------------------------- raw reads

    /// `GET /notification/list?clear=...`: the 2xx body, unparsed.
    ///
    /// With `clear = true` PM marks everything it returns as read; it never comes back. If that
    /// response is lost (reset, timeout) and the call is retried, the retry cannot return the
    /// notifications PM already marked read: they are lost. This is inherent to PM; peek with
    /// `clear = false`, journal, then clear (the bridge's peek-then-clear mode) to avoid it.
    pub async fn notifications_raw(&self, clear: bool) -> Result<RawBody, ClientError> {
        self.execute(self.notifications_call(clear)?).await
    }

    /// `GET /notification/list?clear=...` with the body read as it arrives, for bodies of any
    /// size: retried like [`PmClient::notifications_raw`] until PM answers 2xx, never after.
    /// For `clear=true`, every byte [`BodyStream::chunk`] hands out is the only copy.
    pub async fn notifications_stream(&self, clear: bool) -> Result<BodyStream, ClientError> {
        self.execute_stream(self.notifications_call(clear)?).await
    }

    /// The one `GET /notification/list` call, read whole or as a stream.
    fn notifications_call(&self, clear: bool) -> Result<Call, ClientError> {
        Ok(Call {
            endpoint: "notification/list",
            method: Method::GET,
            url: self.url(&format!("/notification/list?clear={clear}"))?,
            body: None,
            idempotent: true,
        })
    }

    /// One page of a pending list: the first page with `next = None`, else the page a
    /// "next page" link (relative to the base URI, e.g. `/share/property/pending/list?page=2`) names.
    pub async fn pending_page_raw(
        &self,
        kind: PendingKind,
        next: Option<&str>,
    ) -> Result<RawBody, ClientError> {
        let url = match next {
            None => self.url(kind.list_path())?,
            Some(link) => self.join_link(link)?,
        };
        self.execute(Call {
            endpoint: kind.list_endpoint(),
            method: Method::GET,
            url,
            body: None,
            idempotent: true,
        })
        .await
    }

    // ---------------------------------------------------------------- typed reads

    /// `GET /notification/list?clear=...`, parsed. See [`PmClient::notifications_raw`] about `clear`.
    pub async fn notifications(&self, clear: bool) -> Result<NotificationList, ClientError> {
        let raw = self.notifications_raw(clear).await?;
        parse_body(&raw)
    }

    /// Every page of a pending list, following "next page" links to the end. The stream ends after
    /// the first error; a link loop or more than [`MAX_PAGES`] pages ends it with
    /// [`ClientError::Pagination`].
    pub fn pending_stream(
        &self,
        kind: PendingKind,
    ) -> impl Stream<Item = Result<PendingList, ClientError>> + Send + 'static {
        enum Cursor {
            First,
            Link(String),
            Fail(ClientError),
            Done,
        }
        struct State {
            client: PmClient,
            cursor: Cursor,
            seen: HashSet<String>,
            pages: usize,
        }
        let state = State {
            client: self.clone(),
            cursor: Cursor::First,
            seen: HashSet::new(),
            pages: 0,
        };
        futures::stream::unfold(state, move |mut st| async move {
            let link = match std::mem::replace(&mut st.cursor, Cursor::Done) {
                Cursor::Done => return None,
                Cursor::Fail(e) => return Some((Err(e), st)),
                Cursor::First => None,
                Cursor::Link(l) => Some(l),
            };
            let page = match st.client.pending_page_raw(kind, link.as_deref()).await {
                Ok(raw) => parse_body::<PendingList>(&raw),
                Err(e) => Err(e),
            };
            let page = match page {
                Ok(p) => p,
                Err(e) => return Some((Err(e), st)),
            };
            st.pages += 1;
            if let Some(next) = page.next_page() {
                let next = next.trim().to_string();
                st.cursor = if st.pages >= MAX_PAGES {
                    Cursor::Fail(ClientError::Pagination(format!(
                        "{} has more than {MAX_PAGES} pages; giving up",
                        kind.list_endpoint()
                    )))
                } else if !st.seen.insert(next.clone()) {
                    Cursor::Fail(ClientError::Pagination(format!(
                        "{}: next page link {next:?} was already followed (link loop)",
                        kind.list_endpoint()
                    )))
                } else {
                    Cursor::Link(next)
                };
            }
            Some((Ok(page), st))
        })
    }

    /// All pages of a pending list (see [`PmClient::pending_stream`]).
    pub async fn pending_all(&self, kind: PendingKind) -> Result<Vec<PendingList>, ClientError> {
        self.pending_stream(kind).try_collect().await
    }

    /// `GET /customer/list`: the connected customers.
    pub async fn customers(&self) -> Result<Vec<CustomerLink>, ClientError> {
        let url = self.url("/customer/list")?;
        let raw = self
            .execute(Call {
                endpoint: "customer/list",
                method: Method::GET,
                url,
                body: None,
                idempotent: true,
            })
            .await?;
        let resp: Response = parse_body(&raw)?;
        fail_on_error_status(&raw, &resp)?;
        let mut out = Vec::new();
        for link in resp.links.map(|l| l.link).unwrap_or_default() {
            // PM puts the id in the `id` attribute; fall back to the link's last path segment.
            let id = link.id.or_else(|| id_of_link(&link));
            match id {
                Some(id) => out.push(CustomerLink {
                    id,
                    hint: link.hint,
                }),
                None => {
                    tracing::warn!(link = ?link.link, "customer list link without an id; skipped")
                }
            }
        }
        Ok(out)
    }

    /// `GET /customer/{id}`.
    pub async fn customer(&self, id: i64) -> Result<Customer, ClientError> {
        let url = self.url(&format!("/customer/{id}"))?;
        let raw = self
            .execute(Call {
                endpoint: "customer/{id}",
                method: Method::GET,
                url,
                body: None,
                idempotent: true,
            })
            .await?;
        parse_body(&raw)
    }

    /// `GET /property/{id}`: name, address, gross floor area, ... PM refuses (403, sometimes
    /// 404) a property that is not shared with you: see [`ClientError::is_access_denied`].
    pub async fn property(&self, id: i64) -> Result<Property, ClientError> {
        let url = self.url(&format!("/property/{id}"))?;
        let raw = self
            .execute(Call {
                endpoint: "property/{id}",
                method: Method::GET,
                url,
                body: None,
                idempotent: true,
            })
            .await?;
        parse_body(&raw)
    }

    /// `GET /account|property|meter/{id}/customFieldList`.
    pub async fn custom_fields(
        &self,
        target: CustomFieldTarget,
    ) -> Result<Vec<CustomField>, ClientError> {
        let (path, endpoint) = match target {
            CustomFieldTarget::Account(id) => (
                format!("/account/{id}/customFieldList"),
                "account/{id}/customFieldList",
            ),
            CustomFieldTarget::Property(id) => (
                format!("/property/{id}/customFieldList"),
                "property/{id}/customFieldList",
            ),
            CustomFieldTarget::Meter(id) => (
                format!("/meter/{id}/customFieldList"),
                "meter/{id}/customFieldList",
            ),
        };
        let url = self.url(&path)?;
        let raw = self
            .execute(Call {
                endpoint,
                method: Method::GET,
                url,
                body: None,
                idempotent: true,
            })
            .await?;
        let values: CustomFieldValues = parse_body(&raw)?;
        Ok(values.fields)
    }

    // ---------------------------------------------------------------- writes

    /// Accept or reject a pending request: `POST /connect/account/{id}`, `/share/property/{id}` or
    /// `/share/meter/{id}` with a `<sharingResponse>` (a blank note is omitted). An already answered
    /// request fails with an error whose [`ClientError::is_already_resolved`] is true.
    pub async fn answer(
        &self,
        kind: PendingKind,
        id: i64,
        action: Action,
        note: Option<&str>,
    ) -> Result<(), ClientError> {
        let url = self.url(&format!("{}{id}", kind.answer_prefix()))?;
        let body = to_xml(&SharingResponse::new(action, note));
        let raw = self
            .execute(Call {
                endpoint: kind.answer_endpoint(),
                method: Method::POST,
                url,
                body: Some(body),
                // A repeat of an answer that did land gives "already resolved", which callers accept.
                idempotent: true,
            })
            .await?;
        check_ack(&raw)
    }

    /// `POST /disconnect/account/{id}?keepShares=...`. Already disconnected fails with an error whose
    /// [`ClientError::is_not_connected`] is true.
    pub async fn disconnect(
        &self,
        account_id: i64,
        keep_shares: bool,
        note: Option<&str>,
    ) -> Result<(), ClientError> {
        let url = self.url(&format!(
            "/disconnect/account/{account_id}?keepShares={keep_shares}"
        ))?;
        self.terminate("disconnect/account/{id}", url, note).await
    }

    /// `POST /unshare/property/{id}` (PM also removes that customer's meter shares on it).
    pub async fn unshare_property(
        &self,
        property_id: i64,
        note: Option<&str>,
    ) -> Result<(), ClientError> {
        let url = self.url(&format!("/unshare/property/{property_id}"))?;
        self.terminate("unshare/property/{id}", url, note).await
    }

    /// `POST /unshare/meter/{id}`.
    pub async fn unshare_meter(
        &self,
        meter_id: i64,
        note: Option<&str>,
    ) -> Result<(), ClientError> {
        let url = self.url(&format!("/unshare/meter/{meter_id}"))?;
        self.terminate("unshare/meter/{id}", url, note).await
    }

    async fn terminate(
        &self,
        endpoint: &'static str,
        url: Url,
        note: Option<&str>,
    ) -> Result<(), ClientError> {
        let body = to_xml(&TerminateSharingResponse::new(note));
        let raw = self
            .execute(Call {
                endpoint,
                method: Method::POST,
                url,
                body: Some(body),
                idempotent: true,
            })
            .await?;
        check_ack(&raw)
    }

    /// `POST /customer`: create a customer account (PM also connects it to you); returns its id.
    ///
    /// Not idempotent: after a timeout, reset or 500 the call is NOT repeated (PM may have created
    /// the account); only refused connections, 429, 502 and 503 are retried.
    pub async fn create_customer(&self, c: &NewCustomer) -> Result<i64, ClientError> {
        let url = self.url("/customer")?;
        let raw = self
            .execute(Call {
                endpoint: "customer",
                method: Method::POST,
                url,
                body: Some(to_xml(c)),
                idempotent: false,
            })
            .await?;
        let resp: Response = parse_body(&raw)?;
        fail_on_error_status(&raw, &resp)?;
        // PM's documented example answers with only a link to the new customer, no <id>.
        let from_link = || {
            resp.links
                .as_ref()?
                .link
                .iter()
                .find_map(|l| l.id.or_else(|| id_of_link(l)))
        };
        resp.id.or_else(from_link).ok_or_else(|| {
            ClientError::Xml(DocumentError::Malformed {
                root: Response::ROOT,
                message:
                    "neither an <id> nor a /customer/{id} link in the create-customer response"
                        .into(),
            })
        })
    }

    // ---------------------------------------------------------------- plumbing

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        let s = format!("{}{}", self.inner.base, path);
        Url::parse(&s).map_err(|e| ClientError::Config(format!("bad URL {s:?}: {e}")))
    }

    /// Join a "next page" link to the base URI. PM documents links as relative to the base URI
    /// (`/share/...`); links that already carry the base path (`/ws/share/...`) or are absolute
    /// URLs on the same origin are accepted too. Other hosts are refused: they would get our
    /// credentials.
    pub(crate) fn join_link(&self, link: &str) -> Result<Url, ClientError> {
        let link = link.trim();
        if link.is_empty() {
            return Err(ClientError::Pagination("empty next page link".into()));
        }
        let lower = link.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let u = Url::parse(link)
                .map_err(|e| ClientError::Pagination(format!("next page link {link:?}: {e}")))?;
            if u.origin() != self.inner.base_url.origin() {
                return Err(ClientError::Pagination(format!(
                    "next page link {link:?} points to another host"
                )));
            }
            return Ok(u);
        }
        let rel = if link.starts_with('/') {
            link.to_string()
        } else {
            format!("/{link}")
        };
        let base_path = self.inner.base_url.path().trim_end_matches('/');
        let origin = &self.inner.base_url[..url::Position::BeforePath];
        let full = if !base_path.is_empty() && rel.starts_with(&format!("{base_path}/")) {
            format!("{origin}{rel}")
        } else {
            format!("{}{rel}", self.inner.base)
        };
        Url::parse(&full)
            .map_err(|e| ClientError::Pagination(format!("next page link {link:?}: {e}")))
    }

    /// Run a call with retries: 429/500/502/503/504, timeouts and transport errors are retried
    /// with jittered exponential backoff, a larger `Retry-After` wins; other errors return at once.
    /// A failure after part of the body arrived is never retried (see [`ClientError::partial_body`]).
    async fn execute(&self, call: Call) -> Result<RawBody, ClientError> {
        self.with_retries(&call, |c, turn| self.attempt(c, turn))
            .await
    }

    /// [`PmClient::execute`] for a body read as it arrives: retries happen until PM answers
    /// 2xx; from then on the caller reads the body, and nothing is retried (for `clear=true`,
    /// PM has already handed the notifications out).
    async fn execute_stream(&self, call: Call) -> Result<BodyStream, ClientError> {
        self.with_retries(&call, |c, turn| self.attempt_stream(c, turn))
            .await
    }

    /// Run `attempt` under the retry policy: retryable errors are retried with backoff (a longer
    /// Retry-After wins) within the budget; a non-idempotent call only when PM certainly did not
    /// act on it.
    async fn with_retries<'a, T, F, Fut>(
        &self,
        call: &'a Call,
        attempt: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(&'a Call, OwnedSemaphorePermit) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let span = tracing::debug_span!("pm_call", endpoint = call.endpoint, method = %call.method);
        async {
            let policy = self.inner.retry;
            let mut backoff = policy.backoff();
            let started = Instant::now();
            let mut retries = 0u32;
            loop {
                // Never closed, so acquiring cannot fail; the permit is dropped before any sleep.
                let turn = self
                    .inner
                    .turn
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| ClientError::Config("client turn closed".into()))?;
                let err = match attempt(call, turn).await {
                    Ok(ok) => return Ok(ok),
                    Err(e) => e,
                };
                let allowed = if call.idempotent {
                    err.is_retryable()
                } else {
                    err.is_retryable() && err.certainly_not_processed()
                };
                // Part of the body arrived: for clear=true PM has already marked those
                // notifications read, and a retry cannot bring them back. Hand the bytes to the
                // caller (to journal) instead of dropping them for a retry.
                let received_some = err.partial_body().is_some_and(|b| !b.is_empty());
                if !allowed || received_some || retries >= policy.max_retries {
                    tracing::debug!(error = %err, retries, "PM call failed");
                    return Err(err);
                }
                let Some(computed) = backoff.next_backoff() else {
                    return Err(err);
                };
                let mut wait = computed.min(policy.max_interval);
                if let Some(ra) = err.retry_after() {
                    wait = wait.max(ra);
                }
                if started.elapsed().saturating_add(wait) > policy.max_elapsed {
                    tracing::debug!(error = %err, ?wait, "PM call failed; next wait exceeds the retry budget");
                    return Err(err);
                }
                retries += 1;
                let reason = err.retry_reason();
                metrics::counter!(
                    "espm_bridge_pm_retries_total",
                    "endpoint" => call.endpoint,
                    "reason" => reason
                )
                .increment(1);
                tracing::warn!(error = %err, retry = retries, ?wait, reason, "PM call failed; retrying");
                tokio::time::sleep(wait).await;
            }
        }
        .instrument(span)
        .await
    }

    async fn attempt_stream(
        &self,
        call: &Call,
        turn: OwnedSemaphorePermit,
    ) -> Result<BodyStream, ClientError> {
        let url_s = call.url.to_string();
        let resp = self
            .request(call)
            .send()
            .await
            .map_err(|e| transport_error(&url_s, &e, None))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            let content_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            return Ok(BodyStream {
                status,
                content_type,
                url: url_s,
                resp,
                _turn: turn,
            });
        }
        let retry_after = parse_retry_after(resp.headers(), SystemTime::now());
        let mut resp = resp;
        // An error page: only its start matters for the message.
        let mut buf = BytesMut::new();
        while buf.len() < ERROR_BODY_LIMIT {
            match resp.chunk().await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                Ok(None) | Err(_) => break,
            }
        }
        Err(classify_failure(status, &buf, url_s, retry_after))
    }

    fn request(&self, call: &Call) -> reqwest::RequestBuilder {
        let mut req = self
            .inner
            .http
            .request(call.method.clone(), call.url.clone())
            .basic_auth(&self.inner.username, Some(self.inner.password.expose()))
            .header(ACCEPT, "application/xml");
        if let Some(body) = &call.body {
            req = req
                .header(CONTENT_TYPE, "application/xml")
                .body(body.clone());
        }
        req
    }

    /// One HTTP attempt: a 2xx body is returned raw; everything else becomes a [`ClientError`].
    async fn attempt(
        &self,
        call: &Call,
        _turn: OwnedSemaphorePermit,
    ) -> Result<RawBody, ClientError> {
        let url_s = call.url.to_string();
        let mut resp = self
            .request(call)
            .send()
            .await
            .map_err(|e| transport_error(&url_s, &e, None))?;
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let retry_after = parse_retry_after(resp.headers(), SystemTime::now());
        // Read chunk by chunk so that a body cut off midway is still handed to the caller.
        let mut buf = BytesMut::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    let partial = (!buf.is_empty()).then(|| buf.freeze());
                    return Err(transport_error(&url_s, &e, partial));
                }
            }
        }
        let bytes = buf.freeze();
        tracing::debug!(status, len = bytes.len(), "PM answered");
        if (200..300).contains(&status) {
            return Ok(RawBody {
                status,
                content_type,
                bytes,
                url: url_s,
            });
        }
        Err(classify_failure(status, &bytes, url_s, retry_after))
    }
}

/// The id a link names as its last path segment (`/customer/23421` -> 23421), query ignored.
fn id_of_link(link: &espm_model::Link) -> Option<i64> {
    let path = link.link.as_deref()?.split(['?', '#']).next()?;
    path.trim()
        .trim_end_matches('/')
        .rsplit('/')
        .next()?
        .parse()
        .ok()
}

fn transport_error(url: &str, e: &reqwest::Error, partial: Option<Bytes>) -> ClientError {
    if e.is_timeout() {
        return ClientError::Timeout {
            url: url.to_string(),
            partial,
        };
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ClientError::Transport {
        url: url.to_string(),
        message,
        partial,
        connect: e.is_connect(),
    }
}

/// A non-2xx answer: PM's `<response>` errors when present, `NotXml` for HTML and other non-XML.
fn classify_failure(
    status: u16,
    bytes: &[u8],
    url: String,
    retry_after: Option<Duration>,
) -> ClientError {
    let is_blank = bytes.iter().all(u8::is_ascii_whitespace);
    let root = root_element(bytes);
    if status == 403 && (is_blank || root.as_deref() == Some(Response::ROOT)) {
        // PM's own 403 (an HTML page from a proxy stays `NotXml`).
        let errors = parse::<Response>(bytes)
            .map(|r| r.error_list().to_vec())
            .unwrap_or_default();
        let path = Url::parse(&url)
            .map(|u| u.path().to_string())
            .unwrap_or_else(|_| url.clone());
        return ClientError::AccessDenied {
            url,
            path,
            errors,
            snippet: snippet(bytes),
        };
    }
    match root {
        Some(root) if !root.eq_ignore_ascii_case("html") => {
            let errors = if root == Response::ROOT {
                parse::<Response>(bytes)
                    .map(|r| r.error_list().to_vec())
                    .unwrap_or_default()
            } else {
                Vec::new()
            };
            ClientError::Http {
                status,
                url,
                errors,
                snippet: snippet(bytes),
                retry_after,
            }
        }
        _ if is_blank => ClientError::Http {
            status,
            url,
            errors: Vec::new(),
            snippet: String::new(),
            retry_after,
        },
        _ => ClientError::NotXml {
            status,
            url,
            snippet: snippet(bytes),
            retry_after,
        },
    }
}

/// Parse a 2xx body as `T`. An HTML page becomes `NotXml`; a `<response status="Error">` where a
/// document was expected becomes `Http` with PM's errors.
fn parse_body<T: PmDocument>(raw: &RawBody) -> Result<T, ClientError> {
    match parse::<T>(&raw.bytes) {
        Ok(doc) => Ok(doc),
        Err(DocumentError::NotXml { snippet }) => Err(ClientError::NotXml {
            status: raw.status,
            url: raw.url.clone(),
            snippet,
            retry_after: None,
        }),
        Err(DocumentError::WrongRoot { found, .. }) if found == Response::ROOT => {
            match parse::<Response>(&raw.bytes) {
                Ok(r) if r.status == ResponseStatus::Error => Err(ClientError::Http {
                    status: raw.status,
                    url: raw.url.clone(),
                    errors: r.error_list().to_vec(),
                    snippet: snippet(&raw.bytes),
                    retry_after: None,
                }),
                _ => Err(ClientError::Xml(DocumentError::WrongRoot {
                    expected: T::ROOT,
                    found,
                })),
            }
        }
        Err(e) => Err(ClientError::Xml(e)),
    }
}

fn fail_on_error_status(raw: &RawBody, resp: &Response) -> Result<(), ClientError> {
    if resp.status == ResponseStatus::Error {
        return Err(ClientError::Http {
            status: raw.status,
            url: raw.url.clone(),
            errors: resp.error_list().to_vec(),
            snippet: snippet(&raw.bytes),
            retry_after: None,
        });
    }
    Ok(())
}

/// A 2xx answer to a POST: `<response status="Ok"/>`, or leniently an empty body or another
/// XML document. An HTML page or `status="Error"` is a failure.
fn check_ack(raw: &RawBody) -> Result<(), ClientError> {
    if raw.bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match root_element(&raw.bytes) {
        Some(root) if root == Response::ROOT => {
            let resp: Response = parse_body(raw)?;
            fail_on_error_status(raw, &resp)
        }
        Some(root) if !root.eq_ignore_ascii_case("html") => Ok(()),
        _ => Err(ClientError::NotXml {
            status: raw.status,
            url: raw.url.clone(),
            snippet: snippet(&raw.bytes),
            retry_after: None,
        }),
    }
}

/// `Retry-After` as delta-seconds or an HTTP date (a date in the past means "now").
pub(crate) fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn client(base: &str) -> PmClient {
        PmClient::new(ClientConfig::new(base, "u", "p")).unwrap()
    }

    #[test]
    fn joins_links_under_the_base_path() {
        let c = client("http://127.0.0.1:9/ws/");
        let cases = [
            (
                "/share/property/pending/list?page=2",
                "http://127.0.0.1:9/ws/share/property/pending/list?page=2",
            ),
            (
                "share/meter/pending/list?page=3",
                "http://127.0.0.1:9/ws/share/meter/pending/list?page=3",
            ),
            (
                "/ws/share/meter/pending/list?page=3",
                "http://127.0.0.1:9/ws/share/meter/pending/list?page=3",
            ),
            (
                "http://127.0.0.1:9/ws/connect/account/pending/list?page=4",
                "http://127.0.0.1:9/ws/connect/account/pending/list?page=4",
            ),
        ];
        for (link, want) in cases {
            assert_eq!(c.join_link(link).unwrap().as_str(), want, "{link}");
        }
        let t = client("https://portfoliomanager.energystar.gov/wstest");
        assert_eq!(
            t.join_link("/share/property/pending/list?page=2")
                .unwrap()
                .as_str(),
            "https://portfoliomanager.energystar.gov/wstest/share/property/pending/list?page=2"
        );
        // "/ws..." must not be mistaken for the "/wstest" prefix.
        assert_eq!(
            t.join_link("/wstest/share/x?page=2").unwrap().as_str(),
            "https://portfoliomanager.energystar.gov/wstest/share/x?page=2"
        );
        assert!(matches!(
            c.join_link("https://evil.example/ws/share/property/pending/list?page=2"),
            Err(ClientError::Pagination(_))
        ));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&later).unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        h.insert(RETRY_AFTER, HeaderValue::from_str(&earlier).unwrap());
        assert_eq!(parse_retry_after(&h, now), Some(Duration::ZERO));
        h.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(parse_retry_after(&h, now), None);
    }

    #[test]
    fn rejects_bad_configs() {
        for base in [
            "not a url",
            "ftp://x/ws",
            "http://u:p@host/ws",
            "http://h/ws?x=1",
        ] {
            assert!(
                matches!(
                    PmClient::new(ClientConfig::new(base, "u", "p")),
                    Err(ClientError::Config(_))
                ),
                "{base}"
            );
        }
        assert!(matches!(
            PmClient::new(ClientConfig::new("http://h/ws", " ", "p")),
            Err(ClientError::Config(_))
        ));
    }

    #[test]
    fn classifies_failures() {
        let e = classify_failure(
            400,
            br#"<response status="Error"><errors><error errorNumber="-200" errorDescription="The pending request doesn't exist or has been fulfilled"/></errors></response>"#,
            "u".into(),
            None,
        );
        assert!(e.is_already_resolved());
        assert!(!e.is_retryable());
        let e = classify_failure(
            502,
            b"<html><body>Down for maintenance</body></html>",
            "u".into(),
            None,
        );
        assert!(
            matches!(&e, ClientError::NotXml { snippet, .. } if snippet.contains("maintenance"))
        );
        assert!(e.is_retryable());
        let e = classify_failure(401, b"", "u".into(), None);
        assert!(matches!(e, ClientError::Http { status: 401, .. }));

        // PM's 403 is the typed AccessDenied, and says why.
        let e = classify_failure(
            403,
            br#"<response status="Error"><errors><error errorNumber="-200" errorDescription="Access Denied"/></errors></response>"#,
            "https://portfoliomanager.energystar.gov/wstest/unshare/property/42".into(),
            None,
        );
        match &e {
            ClientError::AccessDenied { path, errors, .. } => {
                assert_eq!(path, "/wstest/unshare/property/42");
                assert_eq!(
                    errors[0].error_description.as_deref(),
                    Some("Access Denied")
                );
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(e.status(), Some(403));
        assert!(e.is_access_denied() && !e.is_not_shared() && !e.is_retryable());
        let text = e.to_string();
        assert!(
            text.contains("PM denied access to /wstest/unshare/property/42")
                && text.contains("-200 Access Denied")
                && text.contains("in PM's test environment an unshare answers 403 Access Denied"),
            "{text}"
        );
        let read = classify_failure(403, b"", "http://h/ws/property/9".into(), None);
        assert!(matches!(read, ClientError::AccessDenied { .. }));
        assert!(
            read.to_string().contains("does not share this with you"),
            "{read}"
        );
        // A proxy's HTML 403 is not PM's answer.
        let html = classify_failure(403, b"<html>Forbidden</html>", "u".into(), None);
        assert!(matches!(html, ClientError::NotXml { status: 403, .. }));
        assert!(html.is_access_denied());
    }
}
