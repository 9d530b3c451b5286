//! The HTTP side: the JSON API (mirroring the gRPC config API, for the console), health,
//! and the console's static files with an index fallback so deep links survive a reload.

mod api;
mod body;
mod live;
mod registry;
mod rollouts;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{OriginalUri, Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{any, get};
use tokio_util::sync::CancellationToken;
use tower_http::services::{ServeDir, ServeFile};

use crate::access::Caller;
use crate::auth::Tokens;
use crate::error::ApiError;
use crate::operations::Operations;

/// Largest JSON body the API accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Shared by every handler.
#[derive(Debug)]
pub struct AppState {
    pub ops: Arc<Operations>,
    pub tokens: Tokens,
    pub shutdown: CancellationToken,
}

/// The whole HTTP application. `console_dir` holds the built console (Trunk's `dist`).
pub fn app(state: Arc<AppState>, console_dir: Option<PathBuf>) -> Router {
    // Bodies are limited by the JSON extractor itself (see `body.rs`).
    let admin = || middleware::from_fn_with_state(state.clone(), require_admin);
    let api = api::routes()
        .merge(rollouts::routes())
        .route("/instances", get(registry::list))
        .method_not_allowed_fallback(unsupported_method)
        .layer(admin());
    // A path under `/api` that names no operation is a JSON 404 (after the token check,
    // like every API path), never the console's page: a script with a typo must not read
    // HTML as success.
    let unknown = Router::new()
        .route("/api", any(unknown_api_path))
        .route("/api/", any(unknown_api_path))
        .route("/api/{*rest}", any(unknown_api_path))
        .route_layer(admin());
    let registrants = registry::routes()
        .method_not_allowed_fallback(unsupported_method)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            registry::require_registrant,
        ));
    let router = Router::new()
        .nest("/api/v1/registry", registrants)
        .nest("/api/v1", api)
        .merge(unknown)
        // The browser cannot put a header on a WebSocket; it authenticates in-band.
        .route("/api/v1/live", get(live::live))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state);
    match console_dir {
        Some(dir) => {
            let index = dir.join("index.html");
            let policy =
                content_security_policy(&std::fs::read_to_string(&index).unwrap_or_default());
            let policy = http::HeaderValue::from_str(&policy)
                .expect("the policy is made of header-safe characters");
            let header = |name: &'static str, value: http::HeaderValue| {
                tower_http::set_header::SetResponseHeaderLayer::overriding(
                    http::HeaderName::from_static(name),
                    value,
                )
            };
            // The wasm is large; gzip takes it to about a third over the wire.
            router.fallback_service(
                tower::ServiceBuilder::new()
                    .layer(header("content-security-policy", policy))
                    .layer(header(
                        "x-content-type-options",
                        http::HeaderValue::from_static("nosniff"),
                    ))
                    .layer(header(
                        "referrer-policy",
                        http::HeaderValue::from_static("no-referrer"),
                    ))
                    .layer(tower_http::compression::CompressionLayer::new())
                    .service(ServeDir::new(dir).fallback(ServeFile::new(index))),
            )
        }
        None => router.fallback(get(no_console)),
    }
}

/// The console's `Content-Security-Policy`: scripts only from the server itself, plus the one
/// inline loader Trunk writes into `index.html`, allowed by its hash (so no other inline
/// script runs: an injected `<script>` or `onclick=` is refused by the browser); WebAssembly
/// may be compiled; connections only to the server (the JSON API, the live WebSocket);
/// styles from the server and in `style` attributes (the charts' widths and colours); no
/// frames, plugins, or `<base>`.
pub fn content_security_policy(index_html: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut hashes = String::new();
    let mut rest = index_html;
    while let Some(open) = rest.find("<script") {
        let after = &rest[open..];
        let Some(tag_end) = after.find('>') else {
            break;
        };
        let tag = &after[..tag_end];
        let body = &after[tag_end + 1..];
        let Some(close) = body.find("</script>") else {
            break;
        };
        if !tag.contains(" src=") {
            let digest = sha2::Sha256::digest(&body.as_bytes()[..close]);
            let encoded = base64::engine::general_purpose::STANDARD.encode(digest);
            hashes.push_str(&format!(" 'sha256-{encoded}'"));
        }
        rest = &body[close..];
    }
    format!(
        "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'{hashes}; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
         font-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'; object-src 'none'"
    )
}

/// 200 while the store takes writes; 503 saying why while it refuses them (reads, the
/// console and the proxies' configs still work then; changes, rollouts and statistics do
/// not).
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    match state.ops.store.refusing_writes() {
        None => "ready\n".into_response(),
        Some(why) => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: the store refuses writes: {why}\n"),
        )
            .into_response(),
    }
}

/// Lets in the admin token and the tokens with roles, each request carrying its
/// [`Caller`] for the operations to check what its role allows.
async fn require_admin(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.tokens.caller(header) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(message) => ApiError::Unauthenticated(message).into_response(),
    }
}

/// Who asks: the caller its token is (set by `require_admin`), and the request's headers.
#[derive(Debug)]
pub(crate) struct Who {
    pub caller: Caller,
    pub headers: axum::http::HeaderMap,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Who {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Who, ApiError> {
        let caller = parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Internal(anyhow::anyhow!(
                "a request reached the API without a caller"
            ))
        })?;
        Ok(Who {
            caller,
            headers: parts.headers.clone(),
        })
    }
}

async fn unknown_api_path(OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::NotFound(format!(
        "no API operation at `{}`; docs/api.md lists them",
        uri.path()
    ))
}

async fn unsupported_method(method: Method, OriginalUri(uri): OriginalUri) -> ApiError {
    ApiError::MethodNotAllowed(format!(
        "`{method} {}` is not an API operation; docs/api.md lists the methods of each path",
        uri.path()
    ))
}

async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.ops.metrics_text(),
    )
}

async fn no_console() -> Html<&'static str> {
    Html(
        "<!doctype html><title>Grayline</title><h1>Grayline</h1>\
         <p>The console is not built. Run <code>trunk build --release</code> in the repository \
         and start the server with <code>--console-dir dist</code>, or use <code>scripts/run</code>.\
         <p>The JSON API is at <code>/api/v1</code>.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_inline_scripts_of_the_page_are_allowed_by_their_hash() {
        let page = r#"<html><head><script type="module">alert(1)</script>
            <script src="/app.js"></script></head></html>"#;
        let policy = content_security_policy(page);
        assert!(
            policy.contains(
                "script-src 'self' 'wasm-unsafe-eval' 'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI=';"
            ),
            "{policy}"
        );
        assert_eq!(policy.matches("sha256-").count(), 1, "{policy}");
        let script = policy
            .split(';')
            .find(|d| d.trim_start().starts_with("script-src"))
            .unwrap();
        assert!(!script.contains("unsafe-inline"), "{script}");
        assert!(policy.contains("frame-ancestors 'none'"));
        // A page without inline script allows none.
        let bare = content_security_policy("<html></html>");
        assert!(
            bare.contains("script-src 'self' 'wasm-unsafe-eval';"),
            "{bare}"
        );
    }
}
