//! One POST over HTTP/1.1, plain or TLS: hyper's client connection (already
//! our HTTP stack) over a TCP stream, wrapped by rustls when the URL is
//! `https://`. AbuseIPDB is HTTPS only.
//!
//! TLS is rustls (through tokio-rustls, its tokio adapter) with the `ring`
//! provider and the Mozilla root store compiled in (webpki-roots): no
//! OpenSSL, no C toolchain beyond what `ring` brings, and the same roots on
//! every machine; `ca_file` adds roots (a private CA, a test CA).
//!
//! One connection per request: reports are a few per minute at most.
//! Answers are bounded ([`MAX_BODY`]) and the whole request is bounded by
//! its timeout. Errors name the host, never a header value.

use super::policy::Answer;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Largest answer body read.
pub const MAX_BODY: usize = 64 * 1024;

/// Where to POST: `http(s)://host[:port]/path[?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(s: &str) -> Result<Url, String> {
        let uri: hyper::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{s:?}: expected an http:// or https:// URL")),
        };
        let auth = uri.authority().ok_or_else(|| format!("{s:?}: no host"))?;
        if auth.as_str().contains('@') {
            return Err(format!(
                "{s:?}: no credentials in the URL (use a headers_file)"
            ));
        }
        let host = auth.host().trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        let port = auth.port_u16().unwrap_or(if https { 443 } else { 80 });
        if port == 0 {
            return Err(format!("{s:?}: bad port"));
        }
        let path = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "/".into());
        Ok(Url {
            https,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// `host:port` (IPv6 in brackets), for the Host header and messages.
    pub fn authority(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }
}

/// The TLS settings: the built-in roots plus the PEM certificates in
/// `ca_file`.
pub fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(p) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if certs.is_empty() {
            return Err(format!("{}: no PEM certificate in it", p.display()));
        }
        for c in certs {
            roots.add(c).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// POSTs `body` to `url` with `headers`; never fails: no answer is
/// [`Answer::Failed`] with the reason.
pub async fn post(
    url: &Url,
    tls: &Arc<rustls::ClientConfig>,
    headers: &[(String, String)],
    content_type: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Answer {
    match tokio::time::timeout(timeout, post_inner(url, tls, headers, content_type, body)).await {
        Ok(Ok(a)) => a,
        Ok(Err(e)) => Answer::Failed(format!("{}: {e}", url.authority())),
        Err(_) => Answer::Failed(format!(
            "{}: no answer within {}",
            url.authority(),
            humantime::format_duration(timeout)
        )),
    }
}

async fn post_inner(
    url: &Url,
    tls: &Arc<rustls::ClientConfig>,
    headers: &[(String, String)],
    content_type: &str,
    body: Vec<u8>,
) -> Result<Answer, String> {
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| e.to_string())?;
    if url.https {
        let name = ServerName::try_from(url.host.clone())
            .map_err(|e| format!("not a TLS server name: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        exchange(TokioIo::new(stream), url, headers, content_type, body).await
    } else {
        exchange(TokioIo::new(tcp), url, headers, content_type, body).await
    }
}

async fn exchange<IO>(
    io: IO,
    url: &Url,
    headers: &[(String, String)],
    content_type: &str,
    body: Vec<u8>,
) -> Result<Answer, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(url.path.as_str())
        .header("host", url.authority())
        .header("user-agent", concat!("tarpit/", env!("CARGO_PKG_VERSION")))
        .header("content-type", content_type);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| "a header name or value is not valid HTTP".to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string());
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            driver.abort();
            return Err(e);
        }
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(64).collect());
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        // An answer too large or cut short still has its status.
        .unwrap_or_default();
    driver.abort();
    Ok(Answer::Http {
        status,
        retry_after,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("https://api.abuseipdb.com/api/v2/report").unwrap();
        assert_eq!(
            (u.https, u.host.as_str(), u.port, u.path.as_str()),
            (true, "api.abuseipdb.com", 443, "/api/v2/report")
        );
        assert_eq!(u.authority(), "api.abuseipdb.com");
        let u = Url::parse("http://[::1]:8080/hook?x=1").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.path, "/hook?x=1");
        assert_eq!(u.authority(), "[::1]:8080");
        assert_eq!(Url::parse("http://127.0.0.1").unwrap().path, "/");
        for bad in [
            "ftp://x/",
            "127.0.0.1:80",
            "http://u:p@x/",
            "https://",
            "http://x:0/",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_config_reads_a_ca_file() {
        assert!(tls_config(None).is_ok());
        let p = std::env::temp_dir().join(format!("tarpit-ca-{}", std::process::id()));
        std::fs::write(&p, "not pem").unwrap();
        assert!(tls_config(Some(&p)).unwrap_err().contains("no PEM"));
        let _ = std::fs::remove_file(&p);
        assert!(tls_config(Some(Path::new("/nonexistent/ca.pem"))).is_err());
    }
}
