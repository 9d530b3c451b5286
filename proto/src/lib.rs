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
mod rollout;

pub use convert::{policy_from_pb, service_from_pb, version_from_pb};
pub use rollout::{plan_from_pb, plan_to_pb, status_to_pb, transition_to_pb};
