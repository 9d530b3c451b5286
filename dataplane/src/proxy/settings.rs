//! The request path's settings that do not come from the server: the proxy's command line.

use http::header::HeaderName;
use ipnet::IpNet;

/// Settings of the request path that do not come from the server.
#[derive(Clone, Debug)]
pub struct Settings {
    pub trusted_proxies: Vec<IpNet>,
    pub version_header: HeaderName,
    /// The full-link lane header, read from trusted sources and stamped upstream.
    pub lane_header: HeaderName,
    pub tag_responses: bool,
    pub stats: bool,
}
