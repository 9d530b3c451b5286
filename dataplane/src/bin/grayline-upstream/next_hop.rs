//! The next service in a call chain: an upstream started with `--next-hop` calls it for every
//! request it answers with JSON (same path and query), passing on the headers a chain must
//! carry (the lane header, by default), and puts the answer in its own under `next` — so a
//! test sees, in one response, which version of every service in the chain served it.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

#[derive(Debug)]
pub struct NextHop {
    /// `http://host:port`, the next service's proxy.
    base: String,
    /// The `Host` to send, when not the URL's (the next service's host name).
    host: Option<HeaderValue>,
    propagate: Vec<HeaderName>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl NextHop {
    pub fn new(base: &str, host: Option<&str>, propagate: &[String]) -> anyhow::Result<NextHop> {
        let base = base.trim_end_matches('/').to_string();
        base.parse::<Uri>()
            .map_err(|e| anyhow::anyhow!("--next-hop `{base}` is not a URL: {e}"))?;
        let propagate = propagate
            .iter()
            .map(|h| {
                HeaderName::from_bytes(h.trim().as_bytes())
                    .map_err(|_| anyhow::anyhow!("--propagate `{h}` is not a header name"))
            })
            .collect::<anyhow::Result<_>>()?;
        let host = host
            .map(|h| {
                HeaderValue::from_str(h)
                    .map_err(|_| anyhow::anyhow!("--next-hop-host `{h}` is not a host name"))
            })
            .transpose()?;
        Ok(NextHop {
            base,
            host,
            propagate,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
        })
    }

    /// Calls the next hop with `path_and_query` and the propagated headers of `incoming`:
    /// its JSON answer (with its status), or what went wrong.
    pub async fn call(&self, path_and_query: &str, incoming: &HeaderMap) -> serde_json::Value {
        let mut req = Request::new(Full::new(Bytes::new()));
        *req.uri_mut() = match format!("{}{path_and_query}", self.base).parse() {
            Ok(uri) => uri,
            Err(e) => return serde_json::json!({"error": format!("bad URI: {e}")}),
        };
        if let Some(host) = &self.host {
            req.headers_mut().insert(header::HOST, host.clone());
        }
        for name in &self.propagate {
            for value in incoming.get_all(name) {
                req.headers_mut().append(name.clone(), value.clone());
            }
        }
        let resp = match self.client.request(req).await {
            Ok(resp) => resp,
            Err(e) => return serde_json::json!({"error": format!("next hop failed: {e}")}),
        };
        let status = resp.status().as_u16();
        let body = match resp.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return serde_json::json!({"status": status, "error": e.to_string()}),
        };
        let mut value = serde_json::from_slice(&body).unwrap_or_else(
            |_| serde_json::json!({"body": String::from_utf8_lossy(&body).to_string()}),
        );
        if let Some(obj) = value.as_object_mut() {
            obj.insert("status".into(), status.into());
        }
        value
    }
}
