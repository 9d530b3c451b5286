//! The catalog in etcd, for several server replicas: each accepted change is one etcd
//! transaction that checks the catalog revision and writes the service, its history entry,
//! the per-service index and the next revision — committed by etcd's quorum before the
//! writer answers. Revisions stay dense and monotonic across replicas; two replicas racing
//! get one winner, the other sees the catalog moved and tries again on the new state.
//!
//! Keys, under the prefix (`/grayline` by default):
//!
//! - `meta/revision`: the catalog revision, decimal;
//! - `services/<name>`: the service record (JSON, as in sled);
//! - `history/<revision, 20 digits>`: the history entry (JSON);
//! - `by_service/<name>/<revision, 20 digits>`: empty, to page one service's history.
//!
//! Every replica watches the prefix: changes written by others arrive as history entries in
//! revision order.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, SortOrder, SortTarget, Txn,
    TxnOp, WatchOptions,
};
use tokio::sync::mpsc;

mod upkeep;

use super::{Catalog, HistoryEntry, ServiceRecord};
use crate::error::ApiError;

/// Where a replica finds the store: `etcd://host:port[,host:port…][/prefix]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdUrl {
    pub endpoints: Vec<String>,
    /// Without a trailing slash, e.g. `/grayline`.
    pub prefix: String,
    /// `etcds://`: TLS to every endpoint, with `tls` (the `--etcd-*` flags).
    pub secure: bool,
    pub tls: grayline_proto::tls::ClientTls,
}

impl EtcdUrl {
    pub fn parse(url: &str) -> Result<EtcdUrl, String> {
        let (secure, rest) = match (url.strip_prefix("etcd://"), url.strip_prefix("etcds://")) {
            (Some(rest), _) => (false, rest),
            (_, Some(rest)) => (true, rest),
            _ => {
                return Err(format!(
                    "`{url}` is not an etcd://host:port[,host:port…][/prefix] URL (etcds:// for TLS)"
                ));
            }
        };
        let (hosts, prefix) = match rest.split_once('/') {
            Some((h, p)) => (h, format!("/{}", p.trim_end_matches('/'))),
            None => (rest, "/grayline".to_string()),
        };
        if prefix == "/" {
            return Err(format!("`{url}`: the prefix must not be empty"));
        }
        let endpoints: Vec<String> = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_string)
            .collect();
        if endpoints.is_empty() {
            return Err(format!("`{url}` names no etcd endpoint"));
        }
        for e in &endpoints {
            grayline_routing::parse_endpoint(e)
                .map_err(|why| format!("`{e}` in `{url}`: {why}"))?;
        }
        Ok(EtcdUrl {
            endpoints,
            prefix,
            secure,
            tls: grayline_proto::tls::ClientTls {
                flags: ("--etcd-ca", "--etcd-cert", "--etcd-key"),
                ..Default::default()
            },
        })
    }

    /// For messages: `etcd at 127.0.0.1:2379,…`.
    pub fn describe(&self) -> String {
        format!("etcd at {}", self.endpoints.join(","))
    }
}

/// One change of a key: its new value, or `None` when it was deleted.
#[derive(Clone, Debug)]
pub struct Change {
    pub key: String,
    pub value: Option<Vec<u8>>,
    pub mod_revision: i64,
}

/// How long one etcd request may take before the store is called unavailable.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Tries of one commit whose answer is lost, before the store is reported unavailable.
const COMMIT_ATTEMPTS: u32 = 3;
/// Tries of one read that a member could not take (refused the connection: it is down or
/// still starting). The client balances over the members, so the next try usually lands on
/// a live one; only when every try fails is the store reported unavailable.
const READ_ATTEMPTS: u32 = 5;

/// The pause before try `attempt + 1` (20, 40, 80, 160 ms…): long enough for the client to
/// notice a member is down, short enough that a read with a member lost stays quick.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(20 << attempt.min(6).saturating_sub(1))
}

/// Whether `e` says the member asked could not take the request (gRPC `Unavailable`: a
/// refused or broken connection), so another member may. The request may have reached it.
fn member_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::Unavailable,
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// Whether `e` is etcd refusing a write for want of space (`mvcc: database space exceeded`:
/// its backend reached `--quota-backend-bytes`, and its NOSPACE alarm is raised). etcd
/// applied nothing.
pub fn store_full(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::ResourceExhausted
                || s.message().contains("database space exceeded")
        }
        _ => false,
    }
}

/// What etcd said, without the transport's wrapping.
fn grpc_words(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => s.message().to_string(),
        other => other.to_string(),
    }
}

/// Whether `e` is a request that ran out of [`REQUEST_TIMEOUT`] (the member asked did not
/// answer: it may be restarting, or cut off).
fn timed_out(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if matches!(s.code(), tonic::Code::Cancelled | tonic::Code::DeadlineExceeded))
}

/// Whether `e` is a member refusing the connection: the request was never sent, so even a
/// write is safe to send again (to another member).
fn connection_refused(e: &etcd_client::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(s) => Some(s),
        etcd_client::Error::TransportError(t) => Some(t),
        etcd_client::Error::IoError(io) => Some(io),
        _ => None,
    };
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        source = err.source();
    }
    false
}

#[derive(Clone)]
pub struct Etcd {
    client: Client,
    pub url: EtcdUrl,
    /// Why the store refuses writes now (its NOSPACE alarm), as last seen; see `upkeep`.
    refusing: Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn rev_key(revision: u64) -> String {
    format!("{revision:020}")
}

impl Etcd {
    pub async fn connect(url: EtcdUrl) -> anyhow::Result<Etcd> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5))
            .with_require_leader(true);
        let scheme = if url.secure {
            options = options.with_tls(url.tls.config().map_err(anyhow::Error::msg)?);
            "https"
        } else {
            anyhow::ensure!(
                !url.tls.is_set(),
                "--etcd-ca, --etcd-cert and --etcd-key are for an etcds:// store; `--store` names a plaintext etcd:// one"
            );
            "http"
        };
        let endpoints: Vec<String> = url
            .endpoints
            .iter()
            .map(|e| format!("{scheme}://{e}"))
            .collect();
        let mut client = Client::connect(&endpoints, Some(options))
            .await
            .with_context(|| format!("connecting to {}", url.describe()))?;
        if url.secure {
            // The handshake happens on the first call: fail here, saying what TLS needs,
            // rather than on the first read with "connection closed".
            client.status().await.with_context(|| {
                format!(
                    "{} does not answer over TLS: does it trust this client's certificate \
                     (--etcd-cert, --etcd-key; etcd's --client-cert-auth needs one), and does \
                     --etcd-ca hold the CA of its own?",
                    url.describe()
                )
            })?;
        }
        Ok(Etcd {
            client,
            url,
            refusing: Arc::default(),
        })
    }

    /// Why the store refuses writes now, if it does (etcd's space quota used up).
    pub fn refusing(&self) -> Option<String> {
        self.refusing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn set_refusing(&self, why: Option<String>) {
        *self.refusing.lock().unwrap_or_else(|e| e.into_inner()) = why;
    }

    pub fn key(&self, rest: &str) -> String {
        format!("{}/{rest}", self.url.prefix)
    }

    /// An etcd failure as the APIs show it: the store refuses writes because its space quota
    /// is used up (nothing was applied), or it is unavailable; in etcd's own words, and which
    /// store it is.
    pub fn unavailable(&self, e: etcd_client::Error) -> ApiError {
        if store_full(&e) {
            self.set_refusing(Some(format!("etcd said `{}`", grpc_words(&e))));
            return ApiError::StoreFull(format!(
                "the store ({}) refuses writes: {}; nothing was applied. etcd's space quota \
                 is used up: compact and defragment it, or raise --quota-backend-bytes, then \
                 disarm its NOSPACE alarm (docs/operations.md)",
                self.url.describe(),
                grpc_words(&e)
            ));
        }
        ApiError::Unavailable(format!(
            "the store ({}) is unavailable: {e}",
            self.url.describe()
        ))
    }

    /// The catalog, and the etcd revision it was read at (to watch from).
    pub async fn load(&self) -> anyhow::Result<(Catalog, i64)> {
        let mut kv = self.client.kv_client();
        let services = self.key("services/");
        let txn = Txn::new().and_then([
            TxnOp::get(self.key("meta/revision"), None),
            TxnOp::get(services.clone(), Some(GetOptions::new().with_prefix())),
        ]);
        let resp = kv
            .txn(txn)
            .await
            .with_context(|| format!("reading the catalog from {}", self.url.describe()))?;
        let etcd_revision = resp.header().map_or(0, |h| h.revision());
        let mut catalog = Catalog::default();
        for (i, op) in resp.op_responses().into_iter().enumerate() {
            let etcd_client::TxnOpResponse::Get(get) = op else {
                continue;
            };
            for kv in get.kvs() {
                if i == 0 {
                    let text = kv.value_str().context("the catalog revision is not text")?;
                    catalog.revision = text
                        .parse()
                        .with_context(|| format!("the catalog revision `{text}` is damaged"))?;
                } else {
                    let key = kv.key_str().unwrap_or("?").to_string();
                    let record: ServiceRecord = serde_json::from_slice(kv.value())
                        .with_context(|| format!("the stored service {key} is damaged"))?;
                    catalog
                        .services
                        .insert(record.service.name.clone(), Arc::new(record));
                }
            }
        }
        Ok((catalog, etcd_revision))
    }

    /// One read, tried again on another member while the one asked is unavailable, and once
    /// after a try that timed out (a member just restarted may take a while). Reads are
    /// idempotent, so a try whose answer was lost is safe to repeat.
    pub async fn get(
        &self,
        key: impl Into<Vec<u8>>,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, etcd_client::Error> {
        let key = key.into();
        let mut timeouts = 0;
        self.tried(
            || {
                let (mut kv, key, options) =
                    (self.client.kv_client(), key.clone(), options.clone());
                async move { kv.get(key, options).await }
            },
            |e, attempt| {
                if member_unavailable(e) {
                    Some(backoff(attempt))
                } else if timed_out(e) && timeouts == 0 {
                    // It waited out its timeout already.
                    timeouts += 1;
                    Some(Duration::ZERO)
                } else {
                    None
                }
            },
        )
        .await
    }

    /// One transaction, sent again on another member while the one asked refuses the
    /// connection (it never saw the transaction). Any other error is returned as it is: the
    /// transaction may have been applied.
    pub async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, etcd_client::Error> {
        self.tried(
            || {
                let (mut kv, txn) = (self.client.kv_client(), txn.clone());
                async move { kv.txn(txn).await }
            },
            |e, attempt| connection_refused(e).then(|| backoff(attempt)),
        )
        .await
    }

    /// Runs `op` until it succeeds, fails in a way `again` does not try again (it answers the
    /// pause before the next try), or [`READ_ATTEMPTS`] tries are spent.
    async fn tried<T, Fut>(
        &self,
        mut op: impl FnMut() -> Fut,
        mut again: impl FnMut(&etcd_client::Error, u32) -> Option<Duration>,
    ) -> Result<T, etcd_client::Error>
    where
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 1;
        loop {
            let e = match op().await {
                Err(e) if attempt < READ_ATTEMPTS => e,
                done => return done,
            };
            let Some(pause) = again(&e, attempt) else {
                return Err(e);
            };
            tracing::debug!(error = %e, attempt, store = %self.url.describe(), "a store member could not take a request; trying another");
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }

    /// The value of `key` as the quorum has it now (a linearizable read, not a member's
    /// possibly stale copy).
    async fn quorum_get(&self, key: &str) -> Result<Option<Vec<u8>>, ApiError> {
        let resp = self.get(key, None).await.map_err(|e| self.unavailable(e))?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    /// The catalog revision as the quorum has it now.
    pub async fn revision(&self) -> Result<u64, ApiError> {
        let key = self.key("meta/revision");
        match self.quorum_get(&key).await? {
            None => Ok(0),
            Some(v) => std::str::from_utf8(&v)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("{key} is not a revision"))),
        }
    }

    /// Writes one change if the catalog is still at `base`. `Ok(false)`: another writer was
    /// first (the caller refreshes and tries again).
    pub async fn commit(
        &self,
        base: u64,
        record: Option<&ServiceRecord>,
        entry: &HistoryEntry,
    ) -> Result<bool, ApiError> {
        let revision_key = self.key("meta/revision");
        let guard = if base == 0 {
            Compare::version(revision_key.clone(), CompareOp::Equal, 0)
        } else {
            Compare::value(revision_key.clone(), CompareOp::Equal, base.to_string())
        };
        let service_key = self.key(&format!("services/{}", entry.service));
        let write = match record {
            Some(r) => TxnOp::put(
                service_key,
                serde_json::to_vec(r).context("encoding a service")?,
                None,
            ),
            None => TxnOp::delete(service_key, None),
        };
        let txn = Txn::new().when([guard]).and_then([
            write,
            TxnOp::put(
                self.key(&format!("history/{}", rev_key(entry.revision))),
                serde_json::to_vec(entry).context("encoding a history entry")?,
                None,
            ),
            TxnOp::put(
                self.key(&format!(
                    "by_service/{}/{}",
                    entry.service,
                    rev_key(entry.revision)
                )),
                Vec::new(),
                None,
            ),
            TxnOp::put(revision_key, entry.revision.to_string(), None),
        ]);
        let mut attempt = 1;
        let mut ambiguous = false;
        loop {
            match self.txn(txn.clone()).await {
                Ok(resp) if resp.succeeded() => return Ok(true),
                Ok(_) if !ambiguous => return Ok(false),
                // The guard failed after an answer was lost: perhaps because that try landed.
                Ok(_) => {
                    return Ok(self.stored_entry(entry.revision).await?.as_ref() == Some(entry));
                }
                // Every try was refused a connection: nothing was sent, nothing applied.
                Err(e) if !ambiguous && connection_refused(&e) => {
                    return Err(self.unavailable(e));
                }
                // etcd refused it for want of space: this try applied nothing (an earlier
                // one whose answer was lost may have).
                Err(e) if store_full(&e) => {
                    if ambiguous && self.stored_entry(entry.revision).await?.as_ref() == Some(entry)
                    {
                        return Ok(true);
                    }
                    return Err(self.unavailable(e));
                }
                Err(e) if attempt == COMMIT_ATTEMPTS && ambiguous => {
                    return Err(ApiError::Unavailable(format!(
                        "the store ({}) is unavailable: {e}; the change may have been applied \
                         (an answer was lost): read the service before writing it again",
                        self.url.describe()
                    )));
                }
                Err(e) if attempt == COMMIT_ATTEMPTS => return Err(self.unavailable(e)),
                Err(e) => {
                    // The answer was lost (the member asked died, or etcd was electing a
                    // leader): the commit may or may not have happened. The guard makes
                    // trying again safe.
                    tracing::warn!(error = %e, revision = entry.revision, "a commit's answer was lost; trying again");
                    ambiguous = true;
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// The history entry of `revision` as the quorum has it (not a member's possibly stale
    /// copy).
    async fn stored_entry(&self, revision: u64) -> Result<Option<HistoryEntry>, ApiError> {
        let key = self.key(&format!("history/{}", rev_key(revision)));
        self.quorum_get(&key)
            .await?
            .map(|v| decode_entry(&v, &key))
            .transpose()
    }

    async fn entries(&self, keys: Vec<String>) -> Result<Vec<HistoryEntry>, ApiError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            // Serializable: a member cut off from the quorum still answers reads.
            let resp = self
                .get(key.clone(), Some(GetOptions::new().with_serializable()))
                .await
                .map_err(|e| self.unavailable(e))?;
            if let Some(kv) = resp.kvs().first() {
                out.push(decode_entry(kv.value(), &key)?);
            }
        }
        Ok(out)
    }

    pub async fn entry(&self, revision: u64) -> Result<Option<HistoryEntry>, ApiError> {
        let key = self.key(&format!("history/{}", rev_key(revision)));
        Ok(self.entries(vec![key]).await?.pop())
    }

    /// Newest first: up to `limit` entries below `before` (0: no bound), of one service or all.
    pub async fn history(
        &self,
        service: Option<&str>,
        before: u64,
        limit: usize,
    ) -> Result<Vec<HistoryEntry>, ApiError> {
        let upper = if before == 0 { u64::MAX } else { before };
        let (from, to) = match service {
            None => (
                self.key("history/"),
                self.key(&format!("history/{}", rev_key(upper))),
            ),
            Some(s) => (
                self.key(&format!("by_service/{s}/")),
                self.key(&format!("by_service/{s}/{}", rev_key(upper))),
            ),
        };
        let options = GetOptions::new()
            .with_range(to)
            .with_sort(SortTarget::Key, SortOrder::Descend)
            .with_limit(limit as i64)
            .with_serializable();
        let keys_only = service.is_some();
        let resp = self
            .get(
                from,
                Some(if keys_only {
                    options.with_keys_only()
                } else {
                    options
                }),
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        if keys_only {
            let keys = resp
                .kvs()
                .iter()
                .filter_map(|kv| kv.key_str().ok())
                .filter_map(|k| k.rsplit('/').next())
                .map(|rev| self.key(&format!("history/{rev}")))
                .collect();
            self.entries(keys).await
        } else {
            resp.kvs()
                .iter()
                .map(|kv| decode_entry(kv.value(), kv.key_str().unwrap_or("?")))
                .collect()
        }
    }

    /// Oldest first: every entry above `after`.
    pub async fn history_after(&self, after: u64) -> Result<Vec<HistoryEntry>, ApiError> {
        let options = GetOptions::new()
            .with_range(self.key("history0"))
            .with_serializable();
        let resp = self
            .get(
                self.key(&format!("history/{}", rev_key(after.saturating_add(1)))),
                Some(options),
            )
            .await
            .map_err(|e| self.unavailable(e))?;
        resp.kvs()
            .iter()
            .map(|kv| decode_entry(kv.value(), kv.key_str().unwrap_or("?")))
            .collect()
    }

    /// History entries written after etcd revision `from` (by anyone), in order, until the
    /// receiver is dropped.
    pub fn watch(&self, from: i64) -> mpsc::Receiver<HistoryEntry> {
        let mut changes = self.watch_prefix(self.key("history/"), from);
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                let Some(value) = change.value else { continue };
                match decode_entry(&value, &change.key) {
                    Ok(entry) => {
                        if tx.send(entry).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "a history entry in the store is damaged")
                    }
                }
            }
        });
        rx
    }

    /// Every change under `prefix` after etcd revision `from`, in order, until the receiver is
    /// dropped. Reconnects after errors and resumes where it was, so nothing is missed
    /// (unless etcd compacted its history meanwhile, which is logged).
    pub fn watch_prefix(&self, prefix: String, from: i64) -> mpsc::Receiver<Change> {
        let (tx, rx) = mpsc::channel(1024);
        let this = self.clone();
        tokio::spawn(async move {
            let mut next = from + 1;
            loop {
                let options = WatchOptions::new().with_prefix().with_start_revision(next);
                let stream = this
                    .client
                    .watch_client()
                    .watch(prefix.clone(), Some(options))
                    .await;
                let mut stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, store = %this.url.describe(), "cannot watch the store; trying again");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if tx.is_closed() {
                            return;
                        }
                        continue;
                    }
                };
                loop {
                    match stream.message().await {
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 {
                                tracing::warn!(
                                    compacted = resp.compact_revision(),
                                    prefix,
                                    "the store's history was compacted under a watch"
                                );
                                next = resp.compact_revision();
                                break;
                            }
                            for ev in resp.events() {
                                let Some(kv) = ev.kv() else { continue };
                                next = next.max(kv.mod_revision() + 1);
                                let change = Change {
                                    key: kv.key_str().unwrap_or("?").to_string(),
                                    value: (ev.event_type() == EventType::Put)
                                        .then(|| kv.value().to_vec()),
                                    mod_revision: kv.mod_revision(),
                                };
                                if tx.send(change).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, store = %this.url.describe(), "the store's watch broke; resuming");
                            break;
                        }
                    }
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        rx
    }

    /// The client, for the other parts kept in etcd (statistics, rollouts, proxies).
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

fn decode_entry(bytes: &[u8], key: &str) -> Result<HistoryEntry, ApiError> {
    Ok(serde_json::from_slice(bytes)
        .with_context(|| format!("the history entry {key} is damaged"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = EtcdUrl::parse("etcd://127.0.0.1:2379,127.0.0.1:2380/prod").unwrap();
        assert_eq!(u.endpoints, ["127.0.0.1:2379", "127.0.0.1:2380"]);
        assert_eq!(u.prefix, "/prod");
        assert_eq!(
            EtcdUrl::parse("etcd://10.0.0.1:2379").unwrap().prefix,
            "/grayline"
        );
        assert_eq!(
            EtcdUrl::parse("etcd://10.0.0.1:2379/a/b/").unwrap().prefix,
            "/a/b"
        );
        assert!(EtcdUrl::parse("http://10.0.0.1:2379").is_err());
        assert!(EtcdUrl::parse("etcd:///x").is_err());
        assert!(EtcdUrl::parse("etcd://nohost/x").is_err());
        assert!(EtcdUrl::parse("etcd://10.0.0.1:2379/").is_err());
        assert_eq!(rev_key(42), "00000000000000000042");
    }

    #[test]
    fn only_a_refused_connection_makes_a_write_safe_to_send_again() {
        use std::io::{Error as Io, ErrorKind};
        let refused = || Io::from(ErrorKind::ConnectionRefused);
        // As the balanced channel reports it: a status whose source chain ends in the refusal.
        let wrapped =
            etcd_client::Error::GRpcStatus(tonic::Status::from_error(Box::new(refused())));
        assert!(connection_refused(&wrapped));
        assert!(connection_refused(&etcd_client::Error::IoError(refused())));
        // Unavailable without a refusal: the member may have seen the request.
        let lost = etcd_client::Error::GRpcStatus(tonic::Status::unavailable("connection reset"));
        assert!(!connection_refused(&lost));
        assert!(member_unavailable(&lost), "a read is tried again");
        let reset = etcd_client::Error::IoError(Io::from(ErrorKind::ConnectionReset));
        assert!(!connection_refused(&reset));
        let denied = etcd_client::Error::GRpcStatus(tonic::Status::permission_denied("no"));
        assert!(!member_unavailable(&denied) && !connection_refused(&denied));
        assert!(!timed_out(&denied) && !timed_out(&lost));
        // As tonic reports a request that ran out of its timeout.
        let late = etcd_client::Error::GRpcStatus(tonic::Status::cancelled("Timeout expired"));
        assert!(timed_out(&late) && !connection_refused(&late));
        assert_eq!(
            (1..=4).map(|a| backoff(a).as_millis()).collect::<Vec<_>>(),
            [20, 40, 80, 160]
        );
    }
}
