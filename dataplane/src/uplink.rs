//! The proxy's line to the Grayline servers, which both of its streams (the config and the
//! statistics) use: the replicas it may talk to and which one answered last
//! ([`servers::Servers`]), how it connects, the backoff between tries and the token on every
//! call.

pub mod servers;

use std::time::Duration;

use grayline_proto::tls::ClientTls;
use tonic::transport::Channel;

/// Waits between tries while the server cannot be reached. A refused connection costs both
/// sides next to nothing, so the wait stays short and a returning server gets its proxies
/// back within a second.
pub const UNREACHABLE: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));
/// Exponential backoff with jitter: each wait is uniform in [d/2, d], d doubling from
/// `base` up to `max`.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let d = self
            .base
            .saturating_mul(1 << self.attempt.min(16))
            .min(self.max);
        self.attempt += 1;
        let half = d / 2;
        half + half.mul_f64(fastrand::f64())
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Connects to the server's gRPC address with a short timeout and HTTP/2 keep-alives, so a
/// dead server is noticed within seconds.
pub async fn connect(server: &str, tls: &ClientTls) -> anyhow::Result<Channel> {
    Ok(tls
        .endpoint(server)
        .map_err(anyhow::Error::msg)?
        .connect_timeout(Duration::from_secs(2))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true)
        .connect()
        .await?)
}

/// Adds the proxy token to every call.
pub fn bearer(
    token: &str,
) -> anyhow::Result<
    impl FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Clone,
> {
    let value: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    Ok(move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", value.clone());
        Ok(req)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_server_is_tried_again_within_a_second() {
        let mut b = Backoff::new(UNREACHABLE.0, UNREACHABLE.1);
        // However long the outage, the next try is at most a second away.
        let waits: Vec<Duration> = (0..100).map(|_| b.next_delay()).collect();
        assert!(
            waits.iter().all(|w| *w <= Duration::from_secs(1)),
            "{waits:?}"
        );
        assert!(waits[99] >= Duration::from_millis(500));
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            b.next_delay();
        }
        let late = b.next_delay();
        assert!(
            late >= Duration::from_secs(5) && late <= Duration::from_secs(10),
            "{late:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
