//! The way to the upstreams: pooled HTTP/1.1 and h2c clients and endpoints ([`client`]),
//! the request bodies they send, given back for a retry and copied for a mirror ([`body`]),
//! bodies passed through while something watches their frames ([`observed`]), and gRPC on
//! the wire ([`grpc`]). Knows nothing of versions or policies.

pub mod body;
pub mod client;
pub mod grpc;
pub mod observed;
