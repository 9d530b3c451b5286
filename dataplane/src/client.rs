//! The clients a proxy sends upstream requests with: pooled HTTP/1.1 connections, and pooled
//! HTTP/2 connections over plain TCP with prior knowledge (h2c), one chosen per request by
//! the version's `protocol` and the protocol the client spoke.

use std::time::Duration;

use grayline_routing::Protocol;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::body::UpstreamBody;

pub type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// Both pools; cheap to clone (the pools are shared).
#[derive(Clone, Debug)]
pub struct Clients {
    http1: UpstreamClient,
    h2c: UpstreamClient,
}

impl Default for Clients {
    fn default() -> Self {
        Clients::new()
    }
}

impl Clients {
    pub fn new() -> Clients {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(5)));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build(connector.clone());
        // One connection per endpoint carries every stream; the larger windows keep a busy
        // connection from stalling on flow control.
        let h2c = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(true)
            .http2_initial_stream_window_size(1 << 20)
            .http2_initial_connection_window_size(4 << 20)
            .build(connector);
        Clients { http1, h2c }
    }

    /// The client for a version speaking `protocol` to a request that arrived as
    /// `downstream`, and the HTTP version the upstream request must carry.
    pub fn pick(
        &self,
        protocol: Protocol,
        downstream: http::Version,
    ) -> (&UpstreamClient, http::Version) {
        match upstream_version(protocol, downstream) {
            http::Version::HTTP_2 => (&self.h2c, http::Version::HTTP_2),
            v => (&self.http1, v),
        }
    }
}

/// HTTP/2 for `h2c`, and for `auto` when the client spoke HTTP/2; HTTP/1.1 otherwise.
pub fn upstream_version(protocol: Protocol, downstream: http::Version) -> http::Version {
    match protocol {
        Protocol::H2c => http::Version::HTTP_2,
        Protocol::Auto if downstream == http::Version::HTTP_2 => http::Version::HTTP_2,
        Protocol::Auto | Protocol::Http1 => http::Version::HTTP_11,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Version as V;

    #[test]
    fn the_protocol_and_the_client_choose_the_upstream_version() {
        for (protocol, downstream, upstream) in [
            (Protocol::Http1, V::HTTP_11, V::HTTP_11),
            (Protocol::Http1, V::HTTP_2, V::HTTP_11),
            (Protocol::H2c, V::HTTP_11, V::HTTP_2),
            (Protocol::H2c, V::HTTP_2, V::HTTP_2),
            (Protocol::Auto, V::HTTP_10, V::HTTP_11),
            (Protocol::Auto, V::HTTP_11, V::HTTP_11),
            (Protocol::Auto, V::HTTP_2, V::HTTP_2),
        ] {
            assert_eq!(
                upstream_version(protocol, downstream),
                upstream,
                "{protocol:?} {downstream:?}"
            );
        }
    }
}
