//! Grayline's routing model and decision engine.
//!
//! Pure code: no IO, no async runtime, no clock. The server uses it to validate what operators
//! write, the proxies to route live requests, and the console (compiled to wasm) to simulate
//! decisions — so all three run the very same engine.
//!
//! The flow is: a [`model::Service`] is checked and compiled once by
//! [`engine::CompiledService::compile`] (invalid input is reported as [`Invalid`], naming each
//! field), then [`engine::CompiledService::decide`] answers, for a request's facts, which
//! version serves it and why. [`catalog::Catalog`] does the same for every service a proxy
//! serves and finds the service a request belongs to.

pub mod api;
pub mod catalog;
pub mod condition;
pub mod describe;
pub mod engine;
pub mod invalid;
pub mod judged;
pub mod lane;
pub mod limits;
pub mod mirror;
pub mod model;
pub mod natural;
pub mod request;
pub mod split;
pub mod useragent;
mod validate;
pub mod version_number;

pub use catalog::Catalog;
pub use engine::{CompiledService, Decision, Lane, Matched, Sticky};
pub use invalid::{FieldError, Invalid};
pub use model::*;
pub use request::{Request, RequestFacts};
pub use validate::{DnsName, name_problem, parse_dns, parse_endpoint};
