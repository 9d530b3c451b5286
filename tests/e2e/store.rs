//! The store on disk: a damaged one never starts "healthy" and then fails reads, and
//! `grayline-server export` / `import` carry a whole store into a new data directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use grayline_proto::v1 as pb;
use grayline_routing::*;
use grayline_tests::server::Bearer;
use grayline_tests::{Server, eventually};
use serde_json::{Value, json};

use crate::fixtures::*;

/// Fills a store with a bit of everything: services created, changed, deleted, restored and
/// promoted, a finished rollout, and statistics reported by a proxy. Half of it before a
/// clean restart, half after: sled writes a snapshot when it opens a store, and pages from
/// before a snapshot are not read again (nor their checksums checked) when it next opens.
async fn populate(server: &mut Server) {
    populate_services(server).await;
    assert!(server.process.terminate(), "a clean stop");
    *server = Server::start_in(&server.dir, "127.0.0.1:0", "127.0.0.1:0", &[]);
    populate_changes(server).await;
}

async fn populate_services(server: &Server) {
    let api = server.json().as_actor("alice");
    // Long enough that sled keeps its history in blob files, which it reads (and checks)
    // only when a record in them is read.
    let mut blog = shop();
    blog.name = "blog".into();
    blog.hosts = (0..64)
        .map(|i| {
            let [a, b, c] = ["a", "b", "c"].map(|l| l.repeat(60));
            format!("b{i:02}-{}.{b}.{c}.{}.example.com", &a[..58], &a[..50])
        })
        .collect();
    let mut api_svc = shop();
    api_svc.name = "api".into();
    api_svc.hosts = vec!["api.example.com".into()];
    api_svc.path_prefix = "/v1".into();
    for s in [&shop(), &blog, &api_svc] {
        let (status, body) = api.post("/services", json!({ "service": s })).await;
        assert_eq!(status, 201, "{body}");
    }
    for i in 1..=20u32 {
        set_policy(server, "blog", &ramp(i)).await;
    }
    for i in 1..=10u32 {
        set_policy(server, "api", &ramp(i)).await;
    }
}

fn ramp(i: u32) -> Policy {
    policy(
        vec![header_rule("x-canary", &i.to_string(), "v2")],
        Some(split(
            &[("v1", 10_000 - i * 100), ("v2", i * 100)],
            Some(StickyKey::Cookie("uid".into())),
        )),
    )
}

async fn populate_changes(server: &Server) {
    let api = server.json().as_actor("alice");
    for i in 1..=20u32 {
        let p = ramp(i);
        let service = ["shop", "blog"][i as usize % 2];
        let (status, body) = api
            .put(
                &format!("/services/{service}/policy"),
                json!({ "policy": p }),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(api.delete("/services/api").await.0, 200);
    let (status, body) = api
        .post("/services/api/restore", json!({"revision": 3}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .post("/services/blog/promote", json!({"version": "v2"}))
        .await;
    assert_eq!(status, 200, "{body}");
    // A rollout, aborted: its record (plan, transitions) stays in the store.
    let (status, view) = api
        .post(
            "/rollouts",
            json!({"plan": {"service": "shop", "canary": "v2", "steps": [{"weight": 500}, {"weight": 5000}]}}),
        )
        .await;
    assert_eq!(status, 201, "{view}");
    let id = view["rollout"]["id"].as_u64().expect("rollout id");
    let (status, body) = api.post(&format!("/rollouts/{id}/abort"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    // The abort takes the canary's weight back: a second write by the rollout.
    eventually(
        "the rollout's second write",
        Duration::from_secs(10),
        || async {
            let (_, history) = api.get("/services/shop/history").await;
            let by_rollout = history["entries"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["actor"] == format!("rollout {id}"))
                .count();
            (by_rollout == 2)
                .then_some(())
                .ok_or(format!("{by_rollout}"))
        },
    )
    .await;
    report_statistics(server).await;
}

/// Reports a few seconds of `shop`'s traffic as a proxy would, and waits for the server to
/// acknowledge them (which it does once they are on disk).
async fn report_statistics(server: &Server) {
    let channel = tonic::transport::Channel::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = pb::stats_client::StatsClient::with_interceptor(
        channel,
        Bearer::new(Some(&server.proxy_token), None),
    );
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let reports: Vec<pb::StatsReport> = (1..=5u64)
        .map(|sequence| pb::StatsReport {
            proxy_id: "edge".into(),
            boot_id: "boot-1".into(),
            sequence,
            time_unix_ms: now_ms - 10_000 + sequence as i64 * 1000,
            versions: ["v1", "v2"]
                .iter()
                .map(|v| pb::VersionStats {
                    service: "shop".into(),
                    version: v.to_string(),
                    status_2xx: 40 + sequence,
                    status_5xx: 1,
                    ..Default::default()
                })
                .collect(),
        })
        .collect();
    let mut acks = client
        .report(tokio_stream::iter(reports))
        .await
        .expect("stats stream")
        .into_inner();
    let mut last = 0;
    while last < 5 {
        let ack = tokio::time::timeout(Duration::from_secs(10), acks.message())
            .await
            .expect("an ack in time")
            .expect("ack")
            .expect("stream open");
        last = ack.sequence;
    }
}

/// Everything the store holds, read through the JSON API, or the first read that failed.
async fn read_everything(server: &Server) -> Result<Value, String> {
    let api = server.json();
    let get = |path: String| {
        let api = api.clone();
        async move {
            let (status, body) = api.get(&path).await;
            if status == 200 {
                Ok(body)
            } else {
                Err(format!("GET {path}: {status} {body}"))
            }
        }
    };
    let health = reqwest::get(server.http_url("/healthz"))
        .await
        .map_err(|e| e.to_string())?
        .status();
    if health != 200 {
        return Err(format!("/healthz: {health}"));
    }
    let services = get("/services".into()).await?;
    let mut out = json!({
        "services": services,
        "history": get("/history?limit=1000".into()).await?,
        "rollouts": get("/rollouts".into()).await?,
    });
    for s in services["services"].as_array().into_iter().flatten() {
        let name = s["service"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        out[format!("service {name}")] = get(format!("/services/{name}")).await?;
        out[format!("history {name}")] =
            get(format!("/services/{name}/history?limit=1000")).await?;
    }
    for name in ["shop", "blog", "api"] {
        // A deleted service's history is still there.
        out[format!("history {name}")] =
            get(format!("/services/{name}/history?limit=1000")).await?;
    }
    let ids: Vec<u64> = out["rollouts"]["rollouts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["rollout"]["id"].as_u64())
        .collect();
    for id in ids {
        out[format!("rollout {id}")] = get(format!("/rollouts/{id}")).await?;
    }
    let stats = get("/stats?service=shop&window=3600".into()).await?;
    let totals: Vec<Value> = stats["series"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| json!([s["version"], s["totals"]["requests"]]))
        .collect();
    out["statistics"] = json!(totals);
    Ok(out)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_under(&entry.path()));
        } else {
            out.push((entry.path(), entry.metadata().unwrap().len()));
        }
    }
    out.sort();
    out
}

/// Where the store's records sit in sled's files: offsets of bytes every stored service,
/// history entry and rollout contains, so flips land in live data and not only in free space.
fn record_offsets(files: &[(PathBuf, u64)]) -> Vec<(usize, usize)> {
    let markers: [&[u8]; 4] = [b"\"summary\"", b"\"hosts\"", b"\"transitions\"", b"edge"];
    let mut out = Vec::new();
    for (i, (path, _)) in files.iter().enumerate() {
        let bytes = std::fs::read(path).unwrap();
        for marker in markers {
            let mut from = 0;
            while let Some(at) = bytes[from..]
                .windows(marker.len())
                .position(|w| w == marker)
            {
                out.push((i, from + at));
                from += at + 1;
            }
        }
    }
    out
}

#[derive(Debug, Default)]
struct Tally {
    refused: usize,
    /// Refusals by what noticed the damage.
    refused_because: std::collections::BTreeMap<&'static str, usize>,
    served_all: usize,
    served_something_else: Vec<String>,
    healthy_then_failed: Vec<String>,
    unclear_refusals: Vec<String>,
}

/// Flips one bit in sled's files after a clean stop, many times over (seeded; the seed is
/// printed, `GRAYLINE_FLIP_SEED` picks another): every time, the server either refuses to
/// start with a message that says what is damaged and what to do, or starts and serves
/// everything it holds, exactly as before — never healthy and then failing reads, never an
/// older store.
#[tokio::test]
async fn a_damaged_store_refuses_to_start_or_serves_everything() {
    let base = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(base.path(), "127.0.0.1:0", "127.0.0.1:0", &[]);
    populate(&mut server).await;
    assert!(server.process.terminate(), "a clean stop");
    let pristine = server.data_dir();
    // What an undamaged copy serves after a restart is what every trial must serve.
    let expected = {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&pristine, &dir.path().join("data"));
        let mut copy = Server::start_in(dir.path(), "127.0.0.1:0", "127.0.0.1:0", &[]);
        let expected = read_everything(&copy).await.expect("a healthy store reads");
        copy.kill9();
        expected
    };
    let files = files_under(&pristine.join("db"));
    let records = record_offsets(&files);
    assert!(
        !records.is_empty(),
        "the records are somewhere in {files:?}"
    );

    // A fixed seed, so every run flips the same bits (where the same records lie).
    let seed = std::env::var("GRAYLINE_FLIP_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!("bit flips: seed {seed} (GRAYLINE_FLIP_SEED=<n> flips others)");
    println!(
        "bit flips: sled's files: {}",
        files
            .iter()
            .map(|(path, len)| format!(
                "{} ({len} bytes)",
                path.strip_prefix(&pristine).unwrap().display()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut rng = fastrand::Rng::with_seed(seed);
    let trials = 60;
    let mut tally = Tally::default();
    for trial in 0..trials {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&pristine, &dir.path().join("data"));
        // Half the flips land in a record's bytes, half anywhere in any file.
        let (file, offset) = if trial % 2 == 0 {
            let (file, at) = records[rng.usize(..records.len())];
            let len = files[file].1 as usize;
            (file, (at + rng.usize(..256)).min(len - 1))
        } else {
            let total: u64 = files.iter().map(|(_, len)| len).sum();
            let mut at = rng.u64(..total);
            let mut file = 0;
            while at >= files[file].1 {
                at -= files[file].1;
                file += 1;
            }
            (file, at as usize)
        };
        let bit = rng.u8(..8);
        let relative = files[file].0.strip_prefix(&pristine).unwrap();
        let target = dir.path().join("data").join(relative);
        let mut bytes = std::fs::read(&target).unwrap();
        bytes[offset] ^= 1 << bit;
        std::fs::write(&target, bytes).unwrap();
        let what = format!(
            "trial {trial}: bit {bit} of byte {offset} of {}",
            relative.display()
        );

        match Server::try_start_in(dir.path(), "127.0.0.1:0", "127.0.0.1:0", &[]) {
            Err(exited) => {
                let clear = !exited.status.success()
                    && exited.log.contains("is damaged")
                    && exited.log.contains("grayline-server import");
                if clear {
                    tally.refused += 1;
                    let because = [
                        ("sled gave back", "the seal (sled dropped records)"),
                        ("cannot be read", "reading every record"),
                        ("does not decode", "decoding every record"),
                        ("cannot be opened", "sled itself"),
                    ]
                    .into_iter()
                    .find(|(text, _)| exited.log.contains(text))
                    .map_or("a cross-check", |(_, why)| why);
                    let seen = tally.refused_because.entry(because).or_default();
                    if *seen == 0 {
                        let said = exited.log.lines().find(|l| l.contains("is damaged"));
                        println!("bit flips: {what}: {}", said.unwrap_or_default());
                    }
                    *seen += 1;
                } else {
                    tally
                        .unclear_refusals
                        .push(format!("{what}: {}\n{}", exited.status, exited.log));
                }
            }
            Ok(mut started) => {
                match read_everything(&started).await {
                    Ok(got) if got == expected => tally.served_all += 1,
                    Ok(got) => tally
                        .served_something_else
                        .push(format!("{what}: {}", first_difference(&expected, &got))),
                    Err(e) => tally.healthy_then_failed.push(format!("{what}: {e}")),
                }
                started.kill9();
            }
        }
    }
    println!(
        "bit flips: {trials} trials: {} refused to start with a clear message ({:?}), {} started \
         and served everything, {} served something else, {} started healthy and then failed, \
         {} refused unclearly",
        tally.refused,
        tally.refused_because,
        tally.served_all,
        tally.served_something_else.len(),
        tally.healthy_then_failed.len(),
        tally.unclear_refusals.len()
    );
    assert!(
        tally.healthy_then_failed.is_empty(),
        "started healthy, then a read failed:\n{}",
        tally.healthy_then_failed.join("\n")
    );
    assert!(
        tally.unclear_refusals.is_empty(),
        "refused without saying what is damaged and what to do:\n{}",
        tally.unclear_refusals.join("\n---\n")
    );
    assert!(
        tally.served_something_else.is_empty(),
        "started and served other data than was stored:\n{}",
        tally.served_something_else.join("\n")
    );
    assert!(
        tally.refused > 0,
        "no flip was noticed at all, so the check proved nothing (seed {seed})"
    );
}

/// The first key at which two JSON documents differ, for a readable failure.
fn first_difference(a: &Value, b: &Value) -> String {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) if w == v => {}
                    Some(w) => return format!("{k}: {}", first_difference(v, w)),
                    None => return format!("{k} missing"),
                }
            }
            format!(
                "extra keys: {:?}",
                y.keys().filter(|k| !x.contains_key(*k)).collect::<Vec<_>>()
            )
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find(|(_, (v, w))| v != w)
            .map(|(i, (v, w))| format!("[{i}]: {}", first_difference(v, w)))
            .unwrap_or_default(),
        (Value::Array(x), Value::Array(y)) => format!("{} items became {}", x.len(), y.len()),
        _ => format!("{a} became {b}"),
    }
}

/// Runs `grayline-server` with `args` (a subcommand) and returns its exit status, stdout and
/// stderr.
fn server_command(args: &[&str]) -> (bool, String, String) {
    let out = grayline_tests::process::run("grayline-server", args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn export_then_import_into_a_new_directory_serves_the_same_store() {
    let old = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(old.path(), "127.0.0.1:0", "127.0.0.1:0", &[]);
    populate(&mut server).await;
    let before = read_everything(&server).await.expect("readable");
    let last_revision = before["services"]["revision"].as_u64().unwrap();

    // The store is sled's alone while the server runs.
    let data = server.data_dir();
    let data = data.to_str().unwrap();
    let (ok, _, err) = server_command(&["export", "--data-dir", data]);
    assert!(!ok && err.contains("in use"), "{err}");
    assert!(server.process.terminate(), "a clean stop");

    let backup = old.path().join("backup.json");
    let (ok, stdout, err) = server_command(&[
        "export",
        "--data-dir",
        data,
        "--output",
        backup.to_str().unwrap(),
    ]);
    assert!(ok, "export failed: {err}");
    assert!(stdout.is_empty(), "{stdout}");
    let exported: Value = serde_json::from_slice(&std::fs::read(&backup).unwrap()).unwrap();
    assert_eq!(exported["revision"].as_u64(), Some(last_revision));
    assert_eq!(
        exported["history"].as_array().map(Vec::len),
        Some(last_revision as usize),
        "the complete history"
    );
    // Without --output it goes to stdout, the same bytes.
    let (ok, stdout, err) = server_command(&["export", "--data-dir", data]);
    assert!(ok, "{err}");
    assert_eq!(stdout.as_bytes(), std::fs::read(&backup).unwrap());

    // Into a directory that holds a store: refused, nothing touched.
    let (ok, _, err) = server_command(&["import", "--data-dir", data, backup.to_str().unwrap()]);
    assert!(!ok && err.contains("not empty"), "{err}");

    // Into a new one: the same services, revisions, history and rollouts.
    let new = tempfile::tempdir().unwrap();
    let new_data = new.path().join("data");
    let (ok, _, err) = server_command(&[
        "import",
        "--data-dir",
        new_data.to_str().unwrap(),
        backup.to_str().unwrap(),
    ]);
    assert!(ok, "import failed: {err}");
    assert!(err.contains(&format!("revision {last_revision}")), "{err}");
    let mut imported = Server::start_in(new.path(), "127.0.0.1:0", "127.0.0.1:0", &[]);
    let mut after = read_everything(&imported).await.expect("readable");
    // Statistics are not part of an export.
    assert_eq!(after["statistics"], json!([]));
    after["statistics"] = before["statistics"].clone();
    assert_eq!(
        after,
        before,
        "first difference: {}",
        first_difference(&before, &after)
    );
    // New writes continue from the next revision, and a restore reaches back into the
    // imported history.
    let next = set_policy(&imported, "shop", &Policy::default()).await;
    assert_eq!(next, last_revision + 1);
    let (status, restored) = imported
        .json()
        .post("/services/shop/restore", json!({"revision": 1}))
        .await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["revision"].as_u64(), Some(last_revision + 2));
    let (_, rollouts) = imported.json().get("/rollouts").await;
    assert_eq!(
        rollouts["rollouts"][0]["rollout"]["phase"]["state"],
        "aborted"
    );
    let (status, view) = imported
        .json()
        .post(
            "/rollouts",
            json!({"plan": {"service": "shop", "canary": "v2", "steps": [{"weight": 500}]}}),
        )
        .await;
    assert_eq!(status, 201, "{view}");
    assert_eq!(view["rollout"]["id"], 2, "rollout ids continue too");

    // And the imported store exports to what it was given, plus the new writes.
    assert!(imported.process.terminate());
    let (ok, again, err) = server_command(&["export", "--data-dir", new_data.to_str().unwrap()]);
    assert!(ok, "{err}");
    let again: Value = serde_json::from_str(&again).unwrap();
    let history = again["history"].as_array().unwrap();
    assert_eq!(
        &history[..last_revision as usize],
        exported["history"].as_array().unwrap().as_slice()
    );
}
