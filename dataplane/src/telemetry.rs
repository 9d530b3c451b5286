//! What a proxy tells about itself: the per-version statistics it reports to the server
//! every second ([`report`]), its Prometheus metrics ([`metrics`]) and the admin port that
//! serves them with its health and config ([`admin`]).

pub mod admin;
pub mod metrics;
pub mod report;
