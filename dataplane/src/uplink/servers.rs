//! The server replicas a proxy may talk to (`--server a,b,c`). Both streams prefer the
//! replica that last answered and move on to the next when it cannot be reached, so a proxy
//! whose replica dies is connected to another within its reconnect delay, and keeps serving
//! meanwhile.

use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::transport::Channel;

use grayline_proto::tls::ClientTls;

use crate::uplink::connect;

#[derive(Debug)]
pub struct Servers {
    list: Vec<String>,
    tls: ClientTls,
    /// The one that last answered.
    preferred: AtomicUsize,
}

impl Servers {
    /// The replicas, each checked against the TLS settings now (a CA file that cannot be
    /// read, TLS settings for a plaintext URL): an error names the flag.
    pub fn new(list: Vec<String>, tls: ClientTls) -> anyhow::Result<Servers> {
        anyhow::ensure!(!list.is_empty(), "--server: give at least one server");
        for server in &list {
            tls.endpoint(server)
                .map_err(|e| anyhow::anyhow!("--server {server}: {e}"))?;
        }
        Ok(Servers {
            list,
            tls,
            preferred: AtomicUsize::new(0),
        })
    }

    /// Connects to the preferred replica, else to each of the others in turn; says which
    /// one answered.
    pub async fn connect(&self) -> anyhow::Result<(Channel, &str)> {
        let start = self.preferred.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for k in 0..self.list.len() {
            let i = (start + k) % self.list.len();
            match connect(&self.list[i], &self.tls).await {
                Ok(channel) => {
                    if i != start {
                        tracing::info!(server = %self.list[i], "moving to another server");
                    }
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok((channel, &self.list[i]));
                }
                Err(e) => errors.push(format!("{}: {e:#}", self.list[i])),
            }
        }
        anyhow::bail!("no server could be reached: {}", errors.join("; "))
    }

    /// A stream that opened but failed: prefer the next replica for the next try.
    pub fn failed(&self, server: &str) {
        if let Some(i) = self.list.iter().position(|s| s == server)
            && self.list.len() > 1
        {
            let _ = self.preferred.compare_exchange(
                i,
                (i + 1) % self.list.len(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// For logs: `a, b, c`.
    pub fn describe(&self) -> String {
        self.list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn moves_past_servers_that_refuse() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_url = format!("http://{}", live.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let _ = live.accept().await;
            }
        });
        let servers = Servers::new(
            vec![dead_url.clone(), live_url.clone()],
            ClientTls::default(),
        )
        .unwrap();
        let (_, used) = servers.connect().await.unwrap();
        assert_eq!(used, live_url);
        assert_eq!(servers.preferred.load(Ordering::Relaxed), 1);
        servers.failed(&live_url);
        assert_eq!(servers.preferred.load(Ordering::Relaxed), 0);
        let only_dead = Servers::new(vec![dead_url], ClientTls::default()).unwrap();
        let err = only_dead.connect().await.unwrap_err();
        assert!(
            err.to_string().contains("no server could be reached"),
            "{err}"
        );
    }
}
