//! A small LAPI client on hyper's HTTP/1 client connection (hyper is
//! already our HTTP server; its client half adds two tiny crates and no
//! TLS stack). One connection per request: a pull every few seconds does
//! not need a pool.
//!
//! Plain `http://` only. A LAPI on another host is reached over a private
//! network or tunnel (WireGuard, stunnel); see the README.
//!
//! Every answer is bounded: a body larger than [`MAX_BODY`] or slower than
//! the request timeout is an error, never an allocation without end.

use super::decision::{parse_stream, Stream, MAX_BODY};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// How long one request may take, connect to last byte.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed. Messages carry no secrets (no key, no token).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LapiError {
    #[error("LAPI {0} is unreachable: {1}")]
    Unreachable(String, String),
    #[error("LAPI did not answer within {0:?}")]
    Timeout(Duration),
    /// 401/403: wrong bouncer key, wrong machine password, expired token.
    #[error("LAPI refused our credentials ({code}): {body}")]
    Auth { code: u16, body: String },
    #[error("LAPI answered {code}: {body}")]
    Status { code: u16, body: String },
    #[error("LAPI answer too large (more than {0} bytes)")]
    TooBig(usize),
    #[error("LAPI answer malformed: {0}")]
    Malformed(String),
    #[error("{0}")]
    Config(String),
}

impl LapiError {
    /// A fixed word for metrics and rate limiting.
    pub fn kind(&self) -> &'static str {
        match self {
            LapiError::Unreachable(..) => "unreachable",
            LapiError::Timeout(_) => "timeout",
            LapiError::Auth { .. } => "auth",
            LapiError::Status { .. } => "status",
            LapiError::TooBig(_) => "too_big",
            LapiError::Malformed(_) => "malformed",
            LapiError::Config(_) => "config",
        }
    }
}

/// Where LAPI is: `http://host:port/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// Path prefix without trailing slash (usually empty).
    pub prefix: String,
}

impl Endpoint {
    /// Parses `http://127.0.0.1:8080/` (or a name, or `[::1]:8080`).
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = match url.split_once("://") {
            Some(("http", r)) => r,
            Some(("https", _)) => {
                return Err("https is not supported: use http:// to a LAPI on this host or over a private network/tunnel".into())
            }
            _ => return Err(format!("{url:?} is not an http:// URL")),
        };
        let (auth, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if auth.is_empty() || auth.contains('@') {
            return Err(format!("{url:?}: expected http://HOST:PORT/"));
        }
        let (host, port) = if let Some(r) = auth.strip_prefix('[') {
            let (h, p) = r
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed ["))?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match auth.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (auth.to_string(), None),
            }
        };
        let port = match port {
            None => 80,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{url:?}: bad port"))?,
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        {
            return Err(format!("{url:?}: bad host"));
        }
        if path.contains(['?', '#', ' ']) {
            return Err(format!("{url:?}: no query or fragment, please"));
        }
        Ok(Endpoint {
            host,
            port,
            prefix: path.trim_end_matches('/').to_string(),
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Text from LAPI for a log line: escaped and cut short.
pub fn snippet(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(300)]);
    let mut out: String = s.escape_debug().collect();
    if b.len() > 300 {
        out.push('…');
    }
    out
}

/// The machine's credentials (`machine_id`, password).
#[derive(Clone)]
pub struct Machine {
    pub id: String,
    pub password: String,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Machine({:?}, password hidden)", self.id)
    }
}

pub struct Client {
    pub endpoint: Endpoint,
    api_key: Option<String>,
    machine: Option<Machine>,
    token: Option<String>,
    pub timeout: Duration,
    /// How many logins were made (for tests of the re-login on 401).
    pub logins: u64,
}

impl Client {
    pub fn new(endpoint: Endpoint, api_key: Option<String>, machine: Option<Machine>) -> Client {
        Client {
            endpoint,
            api_key,
            machine,
            token: None,
            timeout: REQUEST_TIMEOUT,
            logins: 0,
        }
    }

    /// Forgets the token (tests: an expired token).
    pub fn set_token(&mut self, t: Option<String>) {
        self.token = t;
    }

    async fn request(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), LapiError> {
        let fut = self.request_inner(method, path_and_query, headers, body);
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(LapiError::Timeout(self.timeout)),
        }
    }

    async fn request_inner(
        &self,
        method: Method,
        path_and_query: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), LapiError> {
        let ep = &self.endpoint;
        let where_ = ep.authority();
        let stream = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| LapiError::Unreachable(where_.clone(), e.to_string()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| LapiError::Unreachable(where_.clone(), e.to_string()))?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", ep.prefix))
            .header("host", where_.as_str())
            .header("user-agent", concat!("tarpit/", env!("CARGO_PKG_VERSION")));
        for (k, v) in headers {
            req = req.header(*k, v.as_str());
        }
        let has_body = body.is_some();
        if has_body {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| LapiError::Config(format!("cannot build request: {e}")))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| LapiError::Unreachable(where_.clone(), e.to_string()))?;
        let status = resp.status();
        if let Some(len) = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len > MAX_BODY as u64 {
                driver.abort();
                return Err(LapiError::TooBig(MAX_BODY));
            }
        }
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    LapiError::TooBig(MAX_BODY)
                } else {
                    LapiError::Unreachable(where_.clone(), e.to_string())
                }
            })?
            .to_bytes();
        driver.abort();
        Ok((status, body))
    }

    fn check(status: StatusCode, body: &Bytes, want: &[u16]) -> Result<(), LapiError> {
        let code = status.as_u16();
        if want.contains(&code) {
            return Ok(());
        }
        let body = snippet(body);
        if code == 401 || code == 403 {
            Err(LapiError::Auth { code, body })
        } else {
            Err(LapiError::Status { code, body })
        }
    }

    /// `GET /v1/decisions/stream?startup=…&scopes=ip,range` as a bouncer.
    pub async fn pull(&self, startup: bool) -> Result<Stream, LapiError> {
        let key = self
            .api_key
            .clone()
            .ok_or_else(|| LapiError::Config("no bouncer api key configured".into()))?;
        let (st, body) = self
            .request(
                Method::GET,
                &format!("/v1/decisions/stream?startup={startup}&scopes=ip,range"),
                &[("x-api-key", key)],
                None,
            )
            .await?;
        Self::check(st, &body, &[200])?;
        parse_stream(&body).map_err(LapiError::Malformed)
    }

    /// Tests the bouncer key without touching the stream's position
    /// (`GET /v1/decisions?ip=127.0.0.1`: 200 with a good key, 403 without).
    pub async fn check_key(&self) -> Result<(), LapiError> {
        let key = self
            .api_key
            .clone()
            .ok_or_else(|| LapiError::Config("no bouncer api key configured".into()))?;
        let (st, body) = self
            .request(
                Method::GET,
                "/v1/decisions?ip=127.0.0.1",
                &[("x-api-key", key)],
                None,
            )
            .await?;
        Self::check(st, &body, &[200])
    }

    /// `POST /v1/watchers/login`: a JWT for the machine.
    pub async fn login(&mut self) -> Result<(), LapiError> {
        let m = self
            .machine
            .clone()
            .ok_or_else(|| LapiError::Config("no machine_id/password configured".into()))?;
        let body = serde_json::json!({"machine_id": m.id, "password": m.password}).to_string();
        let (st, body) = self
            .request(
                Method::POST,
                "/v1/watchers/login",
                &[],
                Some(body.into_bytes()),
            )
            .await?;
        Self::check(st, &body, &[200])?;
        #[derive(serde::Deserialize)]
        struct Login {
            token: String,
        }
        let l: Login = serde_json::from_slice(&body)
            .map_err(|e| LapiError::Malformed(format!("login answer: {e}")))?;
        if l.token.is_empty() || l.token.len() > 8192 {
            return Err(LapiError::Malformed("login answer: unusable token".into()));
        }
        self.logins += 1;
        self.token = Some(l.token);
        Ok(())
    }

    /// `POST /v1/alerts` as the machine: logs in when needed, and once more
    /// when the token was refused (it lasts an hour).
    pub async fn push(&mut self, alerts: &serde_json::Value) -> Result<(), LapiError> {
        let body = alerts.to_string().into_bytes();
        for attempt in 0..2 {
            if self.token.is_none() {
                self.login().await?;
            }
            let tok = self.token.clone().unwrap_or_default();
            let (st, resp) = self
                .request(
                    Method::POST,
                    "/v1/alerts",
                    &[("authorization", format!("Bearer {tok}"))],
                    Some(body.clone()),
                )
                .await?;
            if st == StatusCode::UNAUTHORIZED && attempt == 0 {
                self.token = None;
                continue;
            }
            return Self::check(st, &resp, &[200, 201]);
        }
        Err(LapiError::Auth {
            code: 401,
            body: "token refused after a fresh login".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = Endpoint::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("127.0.0.1", 8080, "")
        );
        let e = Endpoint::parse("http://[::1]:81/lapi/").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.prefix.as_str()),
            ("::1", 81, "/lapi")
        );
        assert_eq!(e.authority(), "[::1]:81");
        assert_eq!(Endpoint::parse("http://lapi.internal").unwrap().port, 80);
        for bad in [
            "https://x:1/",
            "ftp://x/",
            "127.0.0.1:8080",
            "http://",
            "http://u:p@x:1/",
            "http://x:0/",
            "http://x:99999/",
            "http://x y:1/",
            "http://x:1/?a=b",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn snippets_are_escaped_and_short() {
        assert_eq!(snippet(b"a\nb\x1b"), "a\\nb\\u{1b}");
        assert!(snippet(&[b'x'; 1000]).ends_with('…'));
    }
}
