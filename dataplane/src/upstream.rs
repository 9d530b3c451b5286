//! The way to the upstreams: pooled HTTP/1.1 and HTTP/2 clients and endpoints ([`client`]),
//! TLS to them ([`tls`]),
//! the request bodies they send, given back for a retry and copied for a mirror ([`body`]),
//! bodies passed through while something watches their frames ([`observed`]), and gRPC on
//! the wire ([`grpc`]). Knows nothing of versions or policies.

pub mod body;
pub mod client;
pub mod grpc;
pub mod observed;
pub mod tls;

/// The error and its causes on one line: "client error (Connect): tcp connect error: …".
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
