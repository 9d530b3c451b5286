//! Grayline end to end: the real server, proxies and upstreams as separate processes on
//! port 0, talking over real sockets. One binary, so the build happens once.

mod access;
mod cli;
mod console;
mod control_plane;
mod dataplane;
mod dns;
mod events;
mod field;
mod fixtures;
mod ha;
mod instances;
mod metrics;
mod parity;
mod proxy_stream;
mod rollouts;
mod sample_ratio;
mod statistics;
mod store;
mod tls;
