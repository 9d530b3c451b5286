//! How a proxy protects versions and endpoints: the circuit breaker per version
//! ([`breaker`]), passive outlier detection per endpoint ([`outlier`]) and the retry budget
//! ([`retry_budget`]). Lock-free, and unaware of requests, routes or the server.

pub mod breaker;
pub mod outlier;
pub mod retry_budget;
