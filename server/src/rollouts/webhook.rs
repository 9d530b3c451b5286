//! Webhooks of rollouts: every transition is POSTed as JSON to each of the plan's webhooks,
//! signed with the server's webhook secret, with a timeout and retries with doubling backoff;
//! asking webhooks must also answer 2xx before each advance.
//!
//! Headers: `content-type: application/json`, `x-grayline-event: transition | ask`,
//! `x-grayline-delivery: <rollout>-<transition seq>` and
//! `x-grayline-signature: sha256=<hex HMAC-SHA256 of the body with the secret>`.

use std::sync::Arc;
use std::time::Duration;

use grayline_rollout::Webhook;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Delivers webhook calls.
#[derive(Clone)]
pub struct Webhooks {
    client: reqwest::Client,
    secret: Arc<Vec<u8>>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").finish_non_exhaustive()
    }
}

/// The signature header's value for `body`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

impl Webhooks {
    pub fn new(secret: Vec<u8>) -> anyhow::Result<Webhooks> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("grayline-server/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Webhooks {
            client,
            secret: Arc::new(secret),
        })
    }

    /// One attempt: `Ok` on a 2xx, else what went wrong in words.
    async fn post(
        &self,
        hook: &Webhook,
        event: &str,
        delivery: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let answer = self
            .client
            .post(&hook.url)
            .timeout(Duration::from_millis(u64::from(hook.timeout_ms)))
            .header("content-type", "application/json")
            .header("x-grayline-event", event)
            .header("x-grayline-delivery", delivery)
            .header("x-grayline-signature", signature(&self.secret, body))
            .body(body.to_vec())
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                let text: String = text.chars().take(200).collect();
                Err(format!(
                    "{} answered {status}{}",
                    hook.url,
                    if text.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", text.trim())
                    }
                ))
            }
            Err(e) if e.is_timeout() => Err(format!(
                "{} did not answer within {} ms",
                hook.url, hook.timeout_ms
            )),
            Err(e) => Err(format!(
                "{} could not be reached: {}",
                hook.url,
                root_cause(&e)
            )),
        }
    }

    /// Tries `1 + hook.retries` times, waiting 1 s, 2 s, 4 s, … between attempts.
    pub async fn deliver(
        &self,
        hook: &Webhook,
        event: &str,
        delivery: &str,
        body: &[u8],
    ) -> Result<(), String> {
        let mut wait = Duration::from_secs(1);
        let mut attempt = 0;
        loop {
            match self.post(hook, event, delivery, body).await {
                Ok(()) => return Ok(()),
                Err(e) if attempt >= hook.retries => return Err(e),
                Err(e) => {
                    tracing::warn!(url = %hook.url, delivery, error = %e, "webhook failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(60));
                    attempt += 1;
                }
            }
        }
    }

    /// Asks every asking webhook; `Err` names the first that refused.
    pub async fn ask(&self, hooks: &[Webhook], delivery: &str, body: &[u8]) -> Result<(), String> {
        let asking = hooks.iter().filter(|h| h.ask);
        let answers =
            futures::future::join_all(asking.map(|h| self.deliver(h, "ask", delivery, body))).await;
        answers
            .into_iter()
            .collect::<Result<Vec<()>, String>>()
            .map(|_| ())
    }
}

pub(super) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
