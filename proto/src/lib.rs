//! Grayline's gRPC protocol: generated messages, clients and servers for the config API, the
//! proxy config stream and the statistics stream, plus conversions to and from the routing
//! model (with field-path errors for what the wire allows but the model does not).

#![allow(missing_debug_implementations, clippy::all)]

pub mod v1 {
    tonic::include_proto!("grayline.v1");
}

pub mod codec;
mod convert;

pub use convert::{policy_from_pb, service_from_pb, version_from_pb};
