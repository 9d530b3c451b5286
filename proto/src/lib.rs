//! Grayline's gRPC protocol: generated messages, clients and servers for the config API, the
//! proxy config stream, the statistics stream and rollouts, plus conversions to and from the routing
//! model (with field-path errors for what the wire allows but the model does not). The demo
//! upstream's gRPC service (`Demo`) is here too, for the demo, the tests and the benchmark.

#![allow(missing_debug_implementations, clippy::all)]

pub mod v1 {
    tonic::include_proto!("grayline.v1");
}

mod api;
pub mod codec;
mod convert;
pub mod parts;
mod rollout;
pub mod tls;

pub use convert::{policy_from_pb, service_from_pb, version_from_pb};

/// A service's digest for the config stream: XXH3 of its protobuf encoding. The model
/// protos have no maps, so the encoding — and the digest — of equal services are equal, in
/// the server and in the proxy alike; a service that differs in anything digests
/// differently but for a 2⁻⁶⁴ chance.
pub fn digest(service: &grayline_routing::Service) -> u64 {
    use prost::Message as _;
    xxhash_rust::xxh3::xxh3_64(&v1::Service::from(service).encode_to_vec())
}
pub use rollout::{
    plan_from_pb, plan_to_pb, preview_from_pb, preview_to_pb, status_to_pb, transition_to_pb,
};
