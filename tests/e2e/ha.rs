//! High availability end to end: real etcd members (Debian's etcd 3.4) and several
//! `grayline-server` replicas on them, with proxies spread over the replicas — writes through
//! every replica, a replica killed under load, an etcd member lost and the quorum lost,
//! replicas racing on one service, statistics from every proxy on every replica, and a
//! rollout that survives the loss of the replica driving it, and instances that renew
//! through another replica when the one they registered with dies.

use std::path::Path;
use std::time::{Duration, Instant};

use grayline_proto::v1 as pb;
use grayline_routing::*;
use grayline_tests::etcd::Etcd;
use grayline_tests::{Load, Proxy, Server, Upstream, eventually};
use serde_json::json;
use tempfile::TempDir;

use crate::fixtures::*;

/// Token files every replica shares (a real deployment mounts them like any secret), given
/// by flag: `--admin-token-file` and the like, in `root`.
/// A replica on `etcd` under `prefix` in `root/<name>`, with the shared tokens.
fn replica(etcd: &Etcd, prefix: &str, root: &Path, name: &str) -> Server {
    let mut args = shared_tokens(root);
    args.extend(["--store".to_string(), etcd.store_url(prefix)]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start_in(&root.join(name), "127.0.0.1:0", "127.0.0.1:0", &args)
}

/// `n` replicas on `etcd` under `prefix`, each in its own directory.
fn replicas(etcd: &Etcd, prefix: &str, n: usize, root: &Path) -> Vec<Server> {
    (0..n)
        .map(|i| replica(etcd, prefix, root, &format!("replica-{i}")))
        .collect()
}

fn servers_flag(rs: &[&Server]) -> String {
    rs.iter()
        .map(|s| s.grpc_url())
        .collect::<Vec<_>>()
        .join(",")
}

/// `shop` with v1 and v2 on real upstreams, created through the first replica, and a proxy
/// that knows both replicas (connected to the first).
async fn shop_behind_two_replicas(rs: &[Server]) -> ([Upstream; 2], Proxy) {
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start("v2");
    let mut s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    s.versions.push(Version::new("v2", &[&v2.endpoint()]));
    create(&rs[0], &s).await;
    let proxy = Proxy::start(
        &rs[0],
        "edge",
        &["--server", &servers_flag(&[&rs[0], &rs[1]])],
    );
    proxy.wait_revision(1).await;
    ([v1, v2], proxy)
}

async fn revision_of(s: &Server) -> u64 {
    s.json().get("/services").await.1["revision"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn replicas_share_one_catalog_and_proxies_on_any_replica_follow_it() {
    let etcd = Etcd::start(3);
    let root = TempDir::new().unwrap();
    let rs = replicas(&etcd, "catalog", 3, root.path());
    let proxies: Vec<Proxy> = rs
        .iter()
        .enumerate()
        .map(|(i, r)| Proxy::start(r, &format!("edge-{i}"), &[]))
        .collect();
    // A write through every replica.
    create(&rs[0], &shop()).await;
    let mut s = shop();
    s.path_prefix = "/shop".into();
    update(&rs[1], &s).await;
    let last = set_policy(
        &rs[2],
        "shop",
        &policy(vec![], Some(split(&[("v1", 7000), ("v2", 3000)], None))),
    )
    .await;
    assert_eq!(last, 3, "revisions stay dense across replicas");
    for r in &rs {
        eventually(
            "every replica at revision 3",
            Duration::from_secs(10),
            || async {
                let rev = revision_of(r).await;
                (rev == 3).then_some(()).ok_or(format!("{rev}"))
            },
        )
        .await;
        let (_, record) = r.json().get("/services/shop").await;
        assert_eq!(record["service"]["path_prefix"], "/shop");
        let (_, history) = r.json().get("/services/shop/history").await;
        assert_eq!(history["entries"].as_array().unwrap().len(), 3);
    }
    // A change made on one replica reaches proxies connected to the others.
    for p in &proxies {
        p.wait_revision(3).await;
    }
    // Every replica lists every proxy.
    for r in &rs {
        eventually("every proxy listed", Duration::from_secs(10), || async {
            let list = r.json().get("/proxies").await.1;
            let n = list["proxies"]
                .as_array()
                .map_or(0, |a| a.iter().filter(|p| p["connected"] == true).count());
            (n == 3).then_some(()).ok_or(format!("{n} proxies: {list}"))
        })
        .await;
    }
}

#[tokio::test]
async fn an_instance_renewing_through_another_replica_outlives_the_one_it_registered_with() {
    let etcd = Etcd::start(1);
    let root = TempDir::new().unwrap();
    let mut rs = replicas(&etcd, "instances", 2, root.path());
    let mut shop = Service::single("shop", Version::tagged("v2", "1.1.2"));
    shop.stable = "v2".into();
    create(&rs[0], &shop).await;
    // The instance's proxy registers through replica 0 (it knows both); the edge follows
    // replica 1 only.
    let app = Upstream::start("v2");
    let sidecar = Proxy::registering(
        &rs[0],
        "side",
        ("shop", "1.1.2", &app.endpoint()),
        "3",
        &["--server", &servers_flag(&[&rs[0], &rs[1]])],
    );
    let edge = Proxy::start(&rs[1], "edge", &[]);
    let served = || edge.answers_ok("/");
    eventually(
        "the edge on replica 1 reaches the instance",
        Duration::from_secs(10),
        served,
    )
    .await;
    let (_, listed) = rs[1].json().get("/instances").await;
    assert_eq!(
        listed["instances"][0]["registered_by"], "proxy side",
        "{listed}"
    );

    rs[0].kill9();
    // Three TTLs later the instance is still registered: its proxy renews through replica 1.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(9) {
        served().await.expect("the instance stays");
        let (_, listed) = rs[1].json().get("/instances?service=shop").await;
        assert_eq!(
            listed["instances"].as_array().map_or(0, Vec::len),
            1,
            "{listed}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, proxies) = rs[1].json().get("/proxies").await;
    assert!(proxies.to_string().contains("\"side\""), "{proxies}");
    drop(sidecar);
}

#[tokio::test]
async fn racing_replicas_get_exactly_one_winner_per_revision() {
    let etcd = Etcd::start(1);
    let root = TempDir::new().unwrap();
    let rs = replicas(&etcd, "race", 2, root.path());
    create(&rs[0], &shop()).await;
    for round in 0..10u64 {
        let expected = 1 + round;
        let mut a = shop();
        a.path_prefix = format!("/a{round}");
        let mut b = shop();
        b.path_prefix = format!("/b{round}");
        let (ca, cb) = (rs[0].admin().await, rs[1].admin().await);
        let req = |s: &Service| pb::UpdateServiceRequest {
            service: Some(pb_service(s)),
            expected_revision: Some(expected),
            dry_run: false,
        };
        let (ra, rb) = tokio::join!(
            async move { ca.clone().update_service(req(&a)).await },
            async move { cb.clone().update_service(req(&b)).await },
        );
        let wins = [&ra, &rb].iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "round {round}: {ra:?} {rb:?}");
        let loser = match (ra, rb) {
            (Err(e), _) | (_, Err(e)) => e,
            (Ok(_), Ok(_)) => unreachable!("one won"),
        };
        assert_eq!(loser.code(), tonic::Code::FailedPrecondition, "{loser:?}");
    }
    assert_eq!(revision_of(&rs[0]).await, 11);
    eventually("both at 11", Duration::from_secs(10), || async {
        let rev = revision_of(&rs[1]).await;
        (rev == 11).then_some(()).ok_or(format!("{rev}"))
    })
    .await;

    // A change acknowledged by one replica is the ground for the next write on any other,
    // even before that one's watch has brought it: no "not found" for a service just
    // created elsewhere, no conflict for the revision just written.
    for i in 0..10 {
        let mut s = shop();
        s.name = format!("fresh{i}");
        s.hosts = vec![format!("fresh{i}.example")];
        let created = create(&rs[0], &s).await;
        s.path_prefix = "/next".into();
        let updated = rs[1]
            .admin()
            .await
            .update_service(pb::UpdateServiceRequest {
                service: Some(pb_service(&s)),
                expected_revision: Some(created),
                dry_run: false,
            })
            .await;
        assert!(updated.is_ok(), "fresh{i}: {updated:?}");
    }
}

#[tokio::test]
async fn a_replica_killed_under_load_fails_no_request_and_loses_no_acknowledged_write() {
    let etcd = Etcd::start(3);
    let root = TempDir::new().unwrap();
    let mut rs = replicas(&etcd, "failover", 2, root.path());
    let (_upstreams, proxy) = shop_behind_two_replicas(&rs).await;
    let load = Load::start(&proxy.url("/"), &[], 4, Duration::from_millis(20));
    // Writes through both replicas while the first dies.
    let mut acknowledged = Vec::new();
    for i in 0..5u32 {
        let p = policy(
            vec![],
            Some(split(
                &[("v1", 10_000 - 100 * (i + 1)), ("v2", 100 * (i + 1))],
                None,
            )),
        );
        acknowledged.push(set_policy(&rs[(i % 2) as usize], "shop", &p).await);
    }
    rs[0].kill9();
    let killed = Instant::now();
    for i in 5..10u32 {
        let p = policy(
            vec![],
            Some(split(
                &[("v1", 10_000 - 100 * (i + 1)), ("v2", 100 * (i + 1))],
                None,
            )),
        );
        acknowledged.push(set_policy(&rs[1], "shop", &p).await);
    }
    // The proxy moved to the live replica and runs the newest change.
    proxy.wait_revision(*acknowledged.last().unwrap()).await;
    println!(
        "proxy back on a replica {:.1?} after the kill",
        killed.elapsed()
    );
    // Traffic goes on after the move, too.
    let base = load.sent();
    eventually(
        "traffic after the move",
        Duration::from_secs(20),
        || async {
            let n = load.sent() - base;
            (n >= 200).then_some(()).ok_or(format!("{n}"))
        },
    )
    .await;
    let (sent, failed) = load.stop().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    let (_, history) = rs[1].json().get("/services/shop/history?limit=100").await;
    let revisions: Vec<u64> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    for r in &acknowledged {
        assert!(
            revisions.contains(r),
            "acknowledged revision {r} is in the history: {revisions:?}"
        );
    }
    println!(
        "{sent} requests through the kill, 0 failed; {} acknowledged writes all kept",
        acknowledged.len()
    );
}

#[tokio::test]
async fn losing_an_etcd_member_is_fine_and_losing_the_quorum_stops_only_writes() {
    let mut etcd = Etcd::start(3);
    let root = TempDir::new().unwrap();
    let rs = replicas(&etcd, "quorum", 1, root.path());
    let v1 = Upstream::start("v1");
    let s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    create(&rs[0], &s).await;
    let proxy = Proxy::start(&rs[0], "edge", &[]);
    proxy.wait_revision(1).await;
    etcd.kill(0);
    let mut s2 = s.clone();
    s2.path_prefix = "/one-member-down".into();
    assert_eq!(
        update(&rs[0], &s2).await,
        2,
        "writes go on with one member lost"
    );
    // Reads too: the client balances over all three members, and the dead one's refused
    // connections are tried again on the others rather than shown to the operator.
    for i in 0..30 {
        let (status, history) = rs[0].json().get("/services/shop/history").await;
        assert_eq!(
            status, 200,
            "history read {i} with one member lost: {history}"
        );
    }
    etcd.kill(1);
    let mut s3 = s.clone();
    s3.path_prefix = "/no-quorum".into();
    let err = rs[0]
        .admin()
        .await
        .update_service(pb::UpdateServiceRequest {
            service: Some(pb_service(&s3)),
            expected_revision: None,
            dry_run: false,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("etcd at"), "{}", err.message());
    let (status, body) = rs[0]
        .json()
        .put("/services/shop", json!({"service": s3}))
        .await;
    assert_eq!(status, 503, "{body}");
    // Reads and traffic go on.
    let (status, record) = rs[0].json().get("/services/shop").await;
    assert_eq!((status, record["revision"].as_u64()), (200, Some(2)));
    let r = grayline_tests::Traffic::new()
        .send(&proxy.url("/one-member-down/x"), &[])
        .await;
    assert_eq!(r.status, 200);
    // The quorum back: writes resume.
    etcd.restart(0);
    etcd.restart(1);
    let done = eventually("writes resume", Duration::from_secs(30), || async {
        let r = rs[0]
            .admin()
            .await
            .update_service(pb::UpdateServiceRequest {
                service: Some(pb_service(&s3)),
                expected_revision: None,
                dry_run: false,
            })
            .await;
        r.map(|r| r.into_inner().revision)
            .map_err(|e| e.message().to_string())
    })
    .await;
    // 3, or 4 when a try whose answer was lost while etcd elected a leader had landed (its
    // error says the change may have been applied): then revision 3 is the same change.
    assert!(done == 3 || done == 4, "{done}");
    let (_, history) = rs[0].json().get("/services/shop/history").await;
    for entry in history["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{history}"))
    {
        if entry["revision"].as_u64().unwrap_or(0) > 2 {
            assert_eq!(
                entry["after"]["path_prefix"], s3.path_prefix,
                "only the resumed write after the outage: {history}"
            );
        }
    }
}

#[tokio::test]
async fn every_replica_shows_all_traffic_and_a_dead_replica_loses_no_statistics() {
    let etcd = Etcd::start(3);
    let root = TempDir::new().unwrap();
    let mut rs = replicas(&etcd, "stats", 2, root.path());
    let v1 = Upstream::start("v1");
    let s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    create(&rs[0], &s).await;
    let both = servers_flag(&[&rs[0], &rs[1]]);
    let a = Proxy::start(&rs[0], "edge-a", &["--server", &both]);
    let b = Proxy::start(
        &rs[1],
        "edge-b",
        &["--server", &servers_flag(&[&rs[1], &rs[0]])],
    );
    a.wait_revision(1).await;
    b.wait_revision(1).await;
    let loads = [
        Load::start(&a.url("/"), &[], 3, Duration::from_millis(20)),
        Load::start(&b.url("/"), &[], 3, Duration::from_millis(20)),
    ];
    eventually("traffic counted", Duration::from_secs(20), || async {
        let t: u64 = server_totals(&rs[1]).await.values().sum();
        (t > 300).then_some(()).ok_or(format!("{t}"))
    })
    .await;
    rs[0].kill9();
    let mut sent = 0;
    for l in loads {
        let (n, failed) = l.stop().await;
        assert_eq!(failed, 0);
        sent += n;
    }
    eventually(
        &format!("all {sent} requests on the surviving replica"),
        Duration::from_secs(30),
        || async {
            let t: u64 = server_totals(&rs[1]).await.values().sum();
            (t == sent).then_some(()).ok_or(format!("{t} of {sent}"))
        },
    )
    .await;
    // And a replica that starts now reads them all from the store.
    let late = replica(&etcd, "stats", root.path(), "replica-late");
    eventually(
        &format!("all {sent} requests on a replica started after them"),
        Duration::from_secs(15),
        || async {
            let t: u64 = server_totals(&late).await.values().sum();
            (t == sent).then_some(()).ok_or(format!("{t} of {sent}"))
        },
    )
    .await;
}

#[tokio::test]
async fn a_rollout_survives_the_loss_of_the_replica_driving_it() {
    let etcd = Etcd::start(3);
    let root = TempDir::new().unwrap();
    let mut rs = replicas(&etcd, "rollout", 2, root.path());
    let (_upstreams, proxy) = shop_behind_two_replicas(&rs).await;
    let load = Load::start(&proxy.url("/"), &[], 6, Duration::from_millis(25));
    // A webhook that refuses every call until the leader is killed: the deliveries of the
    // transitions before it are left to the next leader, which sends them with their ids.
    let hook = Hook::start().await;
    let plan = json!({"service": "shop", "canary": "v2", "warmup_seconds": 1, "steps": [
        {"weight": 1000, "min_seconds": 2, "min_requests": 20, "max_seconds": 8, "approval": true},
        {"weight": 3000, "min_seconds": 2, "max_seconds": 4, "on_timeout": "promote"}],
        "webhooks": [{"url": hook.url, "retries": 10, "timeout_ms": 1000}]});
    // Started through the replica that does not lead: it forwards to the one that does.
    let leader = eventually("a leader", Duration::from_secs(20), || async {
        let l = rs[0].json().get("/rollouts/leader").await.1;
        l["leader"]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("{l}"))
    })
    .await;
    let follower = if leader == rs[0].grpc_url() { 1 } else { 0 };
    // A watcher of the replica that does not lead sees the leader's transitions.
    let mut watch = watch_shop(&rs[follower]).await;
    let watched = tokio::spawn(async move {
        let mut to = Vec::new();
        while let Ok(Some(e)) = watch.message().await {
            let state = e.transition.map(|t| t.to).unwrap_or_default();
            let done = state == "awaiting_approval";
            to.push(state);
            if done {
                break;
            }
        }
        to
    });
    // A second watcher of that replica, which leads after the kill, until the end: every
    // transition once, in order, across its change of role.
    let mut whole = watch_shop(&rs[follower]).await;
    let whole = tokio::spawn(async move {
        let mut seqs = Vec::new();
        while let Ok(Some(e)) = whole.message().await {
            let t = e.transition.unwrap_or_default();
            seqs.push(t.seq);
            if t.to == "promoted" {
                break;
            }
        }
        seqs
    });
    let (status, view) = rs[follower]
        .json()
        .post("/rollouts", json!({"plan": plan}))
        .await;
    assert_eq!(status, 201, "{view}");
    let id = view["rollout"]["id"].as_u64().unwrap();
    let waiting = eventually("awaiting approval", Duration::from_secs(60), || async {
        let v = rs[follower].json().get(&format!("/rollouts/{id}")).await.1;
        (v["rollout"]["phase"]["state"] == "awaiting_approval")
            .then_some(v.clone())
            .ok_or(format!("{}", v["rollout"]["phase"]))
    })
    .await;
    let evidence = waiting["rollout"]["gates"][0]["canary"]["requests"]
        .as_u64()
        .unwrap();
    assert!(evidence > 0);
    let to = tokio::time::timeout(Duration::from_secs(10), watched)
        .await
        .expect("the follower's watch ends at awaiting_approval")
        .unwrap();
    assert_eq!(
        to.last().map(String::as_str),
        Some("awaiting_approval"),
        "{to:?}"
    );
    // Kill the replica that leads; the other takes over at the same step, with the same
    // evidence.
    let (dead, live) = (1 - follower, follower);
    let refused = eventually(
        "the webhook refused the transitions so far",
        Duration::from_secs(10),
        || async {
            let refused = hook.deliveries(false);
            (refused.contains(&format!("{id}-2")))
                .then_some(refused.clone())
                .ok_or(format!("{refused:?}"))
        },
    )
    .await;
    rs[dead].kill9();
    let killed = Instant::now();
    hook.accept();
    let after = eventually(
        "the other replica drives it",
        Duration::from_secs(30),
        || async {
            let v = rs[live].json().get(&format!("/rollouts/{id}")).await.1;
            let l = rs[live].json().get("/rollouts/leader").await.1;
            (l["leader"] == rs[live].grpc_url())
                .then_some(v)
                .ok_or(format!("{l}"))
        },
    )
    .await;
    println!(
        "the surviving replica drives the rollout {:.1?} after the leader was killed",
        killed.elapsed()
    );
    assert_eq!(after["rollout"]["phase"]["state"], "awaiting_approval");
    assert!(
        after["rollout"]["gates"][0]["canary"]["requests"]
            .as_u64()
            .unwrap()
            >= evidence
    );
    let (status, body) = rs[live]
        .json()
        .as_actor("alice")
        .post(&format!("/rollouts/{id}/approve"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("promoted", Duration::from_secs(60), || async {
        let v = rs[live].json().get(&format!("/rollouts/{id}")).await.1;
        (v["rollout"]["phase"]["state"] == "promoted")
            .then_some(())
            .ok_or(format!("{}", v["rollout"]["phase"]))
    })
    .await;
    // Every delivery the dead leader could not make was made by the live one, same id.
    hook.wait_accepted("the deliveries the dead leader left are made", &refused)
        .await;
    // Deliveries that ended leave the record's outbox.
    eventually(
        "the rollout's outbox is empty",
        Duration::from_secs(30),
        || async {
            let (ok, out) = etcd.ctl(&["get", "--prefix", "", "--print-value-only"], b"");
            let record = out
                .lines()
                .find(|l| l.contains("\"rollout\"") && l.contains("\"pending\""))
                .unwrap_or_default();
            (ok && !record.is_empty() && !record.contains("\"outbox\""))
                .then_some(())
                .ok_or(record.to_string())
        },
    )
    .await;
    let seqs = tokio::time::timeout(Duration::from_secs(10), whole)
        .await
        .expect("the watcher sees the promotion")
        .unwrap();
    let n = seqs.len() as u32;
    assert_eq!(
        seqs,
        (1..=n).collect::<Vec<_>>(),
        "every transition once, in order"
    );
    let (_, failed) = load.stop().await;
    assert_eq!(failed, 0);
}

/// `WatchRollouts` of `shop` on `server`.
async fn watch_shop(server: &Server) -> tonic::Streaming<pb::RolloutEvent> {
    server
        .rollouts("watcher")
        .await
        .watch_rollouts(pb::WatchRolloutsRequest {
            service: "shop".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// `grayline-server <args>` to completion: its exit status, stdout and stderr.
fn server_command(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(grayline_tests::bin_path("grayline-server"))
        .args(args)
        .output()
        .expect("running grayline-server");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The whole history as (revision, service, actor, action), and the rollouts by id and state.
async fn everything(s: &Server) -> (Vec<(u64, String, String, String)>, Vec<(u64, String)>) {
    let (_, h) = s.json().get("/history?limit=1000").await;
    let history = h["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("{h}"))
        .iter()
        .map(|e| {
            (
                e["revision"].as_u64().unwrap(),
                e["service"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let (_, r) = s.json().get("/rollouts").await;
    let rollouts = r["rollouts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["rollout"]["id"].as_u64().unwrap(),
                v["rollout"]["phase"]["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (history, rollouts)
}

#[tokio::test]
async fn migrate_moves_a_sled_store_into_etcd_and_back_with_its_whole_history_and_statistics() {
    let etcd = Etcd::start(1);
    let root = TempDir::new().unwrap();
    let sled_dir = root.path().join("single");
    let mut single = Server::start_in(&sled_dir, "127.0.0.1:0", "127.0.0.1:0", &[]);
    let up = Upstream::start("v1");
    let mut s = Service::single("shop", Version::new("v1", &[&up.endpoint()]));
    s.versions.push(Version::new("v2", &[&up.endpoint()]));
    create(&single, &s).await;
    let mut cart = Service::single("cart", Version::new("v1", &["127.0.0.1:9"]));
    cart.path_prefix = "/cart".into();
    create(&single, &cart).await;
    set_policy(
        &single,
        "shop",
        &policy(vec![], Some(split(&[("v1", 9000), ("v2", 1000)], None))),
    )
    .await;
    let plan =
        json!({"service": "shop", "canary": "v2", "steps": [{"weight": 2000, "min_seconds": 60}]});
    let (status, view) = single.json().post("/rollouts", json!({"plan": plan})).await;
    assert_eq!(status, 201, "{view}");
    let id = view["rollout"]["id"].as_u64().unwrap();
    let (status, body) = single
        .json()
        .post(&format!("/rollouts/{id}/abort"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let before = everything(&single).await;
    assert!(before.0.len() >= 3 && before.1.len() == 1, "{before:?}");
    // Statistics: traffic through a proxy, counted per second and, once its minute is over,
    // in the per-minute history.
    let proxy = Proxy::start(&single, "edge", &[]);
    proxy.wait_revision(before.0.len() as u64).await;
    let load = Load::start(&proxy.url("/"), &[], 2, Duration::from_millis(10));
    eventually("traffic counted", Duration::from_secs(20), || async {
        let t: u64 = server_totals(&single).await.values().sum();
        (t > 200).then_some(()).ok_or(format!("{t}"))
    })
    .await;
    let (sent, failed) = load.stop().await;
    assert_eq!(failed, 0);
    eventually(
        &format!("all {sent} requests counted, per second and per minute"),
        Duration::from_secs(90),
        || async {
            let seconds: u64 = server_totals(&single).await.values().sum();
            let minutes = history_total(&single).await;
            (seconds == sent && minutes == sent)
                .then_some(())
                .ok_or(format!("{seconds} and {minutes} of {sent}"))
        },
    )
    .await;
    drop(proxy);
    let totals = server_totals(&single).await;
    assert!(
        single.process.terminate(),
        "the single server stops cleanly"
    );

    // Into etcd: a replica there has the same history, rollouts and revision.
    let data = sled_dir.join("data").display().to_string();
    let url = etcd.store_url("migrated");
    let (ok, out, err) = server_command(&["migrate", "--data-dir", &data, "--to", &url]);
    assert!(ok, "{err}");
    let revision = before.0.len() as u64;
    assert!(out.contains(&format!("\"revision\":{revision}")), "{out}");
    assert!(out.contains(&format!("\"requests\":{sent}")), "{out}");
    assert!(out.contains("\"watermarks\":1"), "{out}");
    let replica = Server::start_in(
        &root.path().join("replica"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--store", &url],
    );
    assert_eq!(everything(&replica).await, before);
    assert_eq!(server_totals(&replica).await, totals);
    assert_eq!(history_total(&replica).await, sent);
    // It is a working store: a new write continues the revisions.
    cart.path_prefix = "/basket".into();
    assert_eq!(update(&replica, &cart).await, revision + 1);

    // Into a store that is not empty: refused, nothing written.
    let (ok, _, err) = server_command(&["migrate", "--data-dir", &data, "--to", &url]);
    assert!(!ok);
    assert!(err.contains("already holds revision"), "{err}");

    // Exported from etcd while the replica runs, imported into another prefix: the same.
    let after = everything(&replica).await;
    let backup = root.path().join("etcd-backup.json");
    let backup = backup.to_str().unwrap();
    let (ok, _, err) = server_command(&["export", "--store", &url, "--output", backup]);
    assert!(ok, "export from etcd failed: {err}");
    let copy = etcd.store_url("imported");
    let (ok, _, err) = server_command(&["import", "--store", &copy, backup]);
    assert!(ok, "import into etcd failed: {err}");
    assert!(err.contains(&format!("revision {}", revision + 1)), "{err}");
    let (ok, _, err) = server_command(&["import", "--store", &copy, backup]);
    assert!(!ok && err.contains("already holds revision"), "{err}");
    let imported = Server::start_in(
        &root.path().join("imported"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--store", &copy],
    );
    assert_eq!(everything(&imported).await, after);
    drop(imported);

    // And back out into a new sled directory.
    let back = root.path().join("back");
    let (ok, _, err) = server_command(&[
        "migrate",
        "--store",
        &url,
        "--to",
        &format!("sled:{}", back.join("data").display()),
    ]);
    assert!(ok, "{err}");
    drop(replica);
    let again = Server::start_in(&back, "127.0.0.1:0", "127.0.0.1:0", &[]);
    assert_eq!(everything(&again).await, after);
    assert_eq!(server_totals(&again).await, totals);
    assert_eq!(history_total(&again).await, sent);
    single.restart();
    assert_eq!(
        everything(&single).await,
        before,
        "the source is left as it was"
    );
}

/// `(status, body)` of a plain GET on the server's HTTP port.
async fn plain_get(server: &Server, path: &str) -> (u16, String) {
    let resp = reqwest::get(server.http_url(path)).await.expect(path);
    (
        resp.status().as_u16(),
        resp.text().await.unwrap_or_default(),
    )
}

#[tokio::test]
async fn a_full_store_is_named_shown_and_writable_again_after_the_documented_repair() {
    // A small quota, filled from outside as another tenant of a shared etcd would.
    let etcd = Etcd::start_with(1, &["--quota-backend-bytes", "16777216"]);
    let root = TempDir::new().unwrap();
    let mut args = shared_tokens(root.path());
    args.extend(["--store".to_string(), etcd.store_url("full")]);
    let console = grayline_tests::browser::console_dir();
    args.extend(["--console-dir".to_string(), console.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_in(
        &root.path().join("replica"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &args,
    );
    let up = Upstream::start("v1");
    let mut shop = Service::single("shop", Version::new("v1", &[&up.endpoint()]));
    shop.hosts = vec!["shop.example.com".into()];
    create(&server, &shop).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(1).await;
    let traffic = grayline_tests::Traffic::new();
    let (status, body) = plain_get(&server, "/readyz").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let value = vec![b'x'; 1 << 20];
    let mut filled = false;
    for i in 0..200 {
        let (ok, out) = etcd.ctl(&["put", &format!("junk/{i}")], &value);
        if !ok {
            assert!(out.contains("database space exceeded"), "{out}");
            filled = true;
            break;
        }
    }
    assert!(filled, "etcd took 200 MiB under a 16 MiB quota");
    let before = server.json().get("/services/shop").await.1;
    // Traffic goes on; its statistics cannot be counted now and stay with the proxy.
    let sent = 40;
    for r in traffic
        .burst(&proxy.url("/"), &[("host", "shop.example.com")], sent, 4)
        .await
    {
        assert_eq!(r.status, 200, "{r:?}");
    }
    // A write: refused by name, in etcd's words, and known not to be applied.
    let mut changed = shop.clone();
    changed.path_prefix = "/changed".into();
    let (status, body) = server
        .json()
        .put("/services/shop", json!({ "service": changed }))
        .await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(body["error"]["code"], "store_full", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("database space exceeded")
            && message.contains("nothing was applied")
            && !message.contains("may have been applied"),
        "{message}"
    );
    assert_eq!(server.json().get("/services/shop").await.1, before);
    // The replica says so where monitoring looks.
    eventually("/readyz says why", Duration::from_secs(20), || async {
        let (status, body) = plain_get(&server, "/readyz").await;
        (status == 503 && body.contains("NOSPACE"))
            .then_some(())
            .ok_or(format!("{status} {body}"))
    })
    .await;
    let (_, metrics) = plain_get(&server, "/metrics").await;
    assert!(
        metrics.contains("grayline_server_store_refusing_writes 1"),
        "{metrics}"
    );
    // And the console, on every page.
    let b = grayline_tests::browser::Browser::start().await;
    b.goto(&server.http_url("/")).await;
    b.fill("#signin-token", &server.admin_token).await;
    b.click("#signin-submit").await;
    let banner = b.wait_text("#store-banner", "NOSPACE").await;
    assert!(banner.contains("Changes cannot be saved now"), "{banner}");
    b.screenshot("store-full-banner").await;
    // Reads still work.
    assert_eq!(server.json().get("/services").await.0, 200);

    // The repair docs/operations.md gives: make room, compact, defragment, disarm.
    let (ok, out) = etcd.ctl(&["del", "--prefix", "junk/"], b"");
    assert!(ok, "{out}");
    let (ok, out) = etcd.ctl(&["get", "none", "-w", "json"], b"");
    assert!(ok, "{out}");
    let revision = serde_json::from_str::<serde_json::Value>(&out).unwrap()["header"]["revision"]
        .as_u64()
        .unwrap();
    for args in [
        vec!["compact".to_string(), revision.to_string()],
        vec!["defrag".to_string()],
        vec!["alarm".to_string(), "disarm".to_string()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out) = etcd.ctl(&args, b"");
        assert!(ok, "etcdctl {args:?}: {out}");
    }
    eventually("ready again", Duration::from_secs(20), || async {
        let (status, body) = plain_get(&server, "/readyz").await;
        (status == 200)
            .then_some(())
            .ok_or(format!("{status} {body}"))
    })
    .await;
    eventually("the banner gone", Duration::from_secs(20), || async {
        (!b.exists("#store-banner").await)
            .then_some(())
            .ok_or("still shown".to_string())
    })
    .await;
    b.close().await;
    let (status, body) = server
        .json()
        .put("/services/shop", json!({ "service": changed }))
        .await;
    assert_eq!(status, 200, "{body}");
    // The proxy's queued statistics arrive (it backs off up to 30 s while refused).
    eventually(
        &format!("all {sent} requests counted"),
        Duration::from_secs(60),
        || async {
            let counted: u64 = server_totals(&server).await.values().sum();
            (counted == sent as u64)
                .then_some(())
                .ok_or(format!("{counted} of {sent}"))
        },
    )
    .await;
}
