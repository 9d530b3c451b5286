//! How a proxy protects versions and endpoints: the circuit breaker per version
//! ([`breaker`]), passive outlier detection per endpoint ([`outlier`]), what active health
//! checks found per endpoint ([`health`]) and the retry budget ([`retry_budget`]). Lock-free, and unaware of requests, routes or the server.

pub mod breaker;
pub mod health;
pub mod outlier;
pub mod retry_budget;
