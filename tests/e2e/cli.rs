//! The `grayline` command line end to end: the real binary against a real server and
//! proxies — config as code, dry runs, errors that name file, line and field, `--wait` for
//! every proxy, racing pipelines, rollouts gated on their outcome, exit codes.

use std::path::Path;
use std::time::Duration;

use grayline_tests::cli::grayline;
use grayline_tests::{Load, Proxy, Server, Upstream, eventually};
use tempfile::TempDir;

async fn catalog_revision(server: &Server) -> u64 {
    server.json().get("/services").await.1["revision"]
        .as_u64()
        .unwrap()
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn service(name: &str, endpoint: &str, canary_weight: u32) -> String {
    format!(
        "name: {name}\nhosts: [{name}.example.com]\nversions:\n  - name: v1\n    endpoints: [\"{endpoint}\"]\n  - name: v2\n    endpoints: [\"{endpoint}\"]\nstable: v1\npolicy:\n  default_route:\n    split:\n      weights:\n        - {{version: v1, weight: {}}}\n        - {{version: v2, weight: {canary_weight}}}\n",
        10_000 - canary_weight
    )
}

#[tokio::test]
async fn config_as_code_apply_export_diff_and_dry_run() {
    let server = Server::start();
    let work = TempDir::new().unwrap();
    let dir = work.path().join("services");
    std::fs::create_dir(&dir).unwrap();
    write(&dir, "shop.yaml", &service("shop", "127.0.0.1:9001", 1000));
    write(&dir, "blog.yaml", &service("blog", "127.0.0.1:9002", 0));
    let w = work.path();

    // A directory: both created.
    let out = grayline(&server, w, &["apply", "-f", "services"])
        .await
        .expect(0);
    assert!(
        out.stdout.contains("service blog: created (revision 1)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("service shop: created (revision 2)"),
        "{}",
        out.stdout
    );
    // Again, unchanged: no new revision.
    let out = grayline(&server, w, &["apply", "-f", "services"])
        .await
        .expect(0);
    assert!(
        out.stdout.contains("service shop: unchanged (revision 2)"),
        "{}",
        out.stdout
    );
    assert_eq!(catalog_revision(&server).await, 2);

    // Export, then apply the export: a round trip that changes nothing.
    let out = grayline(&server, w, &["export"]).await.expect(0);
    write(w, "export.yaml", &out.stdout);
    let again = grayline(&server, w, &["apply", "-f", "export.yaml"])
        .await
        .expect(0);
    assert!(again.stdout.contains("unchanged"), "{}", again.stdout);
    assert_eq!(catalog_revision(&server).await, 2);
    let json = grayline(&server, w, &["export", "shop", "-o", "json"])
        .await
        .expect(0);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v[0]["revision"], 2);

    // A change: diff shows it (exit 10), a dry run checks it on the server and changes
    // nothing, apply makes it.
    write(&dir, "shop.yaml", &service("shop", "127.0.0.1:9001", 2500));
    let out = grayline(&server, w, &["diff", "-f", "services"])
        .await
        .expect(10);
    assert!(
        out.stdout.contains("-        weight: 1000")
            && out.stdout.contains("+        weight: 2500"),
        "{}",
        out.stdout
    );
    let out = grayline(&server, w, &["apply", "-f", "services", "--dry-run"])
        .await
        .expect(0);
    assert!(
        out.stdout.contains("service shop: would update"),
        "{}",
        out.stdout
    );
    assert_eq!(
        catalog_revision(&server).await,
        2,
        "a dry run changes nothing"
    );
    let out = grayline(&server, w, &["apply", "-f", "services"])
        .await
        .expect(0);
    assert!(
        out.stdout.contains("service shop: updated, revision 2 → 3"),
        "{}",
        out.stdout
    );
    grayline(&server, w, &["diff", "-f", "services"])
        .await
        .expect(0);

    // A bad file names file, line and field, and changes nothing (even the good service
    // beside it).
    write(
        &dir,
        "blog.yaml",
        &service("blog", "127.0.0.1:9002", 0).replace(
            "9002\"]\n  - name: v2",
            "9002\"]\n    timeout_ms: 5\n  - name: v2",
        ),
    );
    write(&dir, "shop.yaml", &service("shop", "nope", 3000));
    let out = grayline(&server, w, &["apply", "-f", "services"])
        .await
        .expect(2);
    assert!(
        out.stderr
            .contains("services/shop.yaml:5: service.versions[0].endpoints[0]: `nope`"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was changed"), "{}", out.stderr);
    assert_eq!(catalog_revision(&server).await, 3);
    write(
        &dir,
        "shop.yaml",
        "name: shop\nversions:\n  - name: v1\n    endpoints: [\"127.0.0.1:1\"\nstable: v1\n",
    );
    let out = grayline(&server, w, &["apply", "-f", "services/shop.yaml"])
        .await
        .expect(2);
    assert!(out.stderr.contains("services/shop.yaml:"), "{}", out.stderr);
    write(
        &dir,
        "shop.yaml",
        &service("shop", "127.0.0.1:9001", 2500).replace("stable: v1", "stable: v1\nstabel: v2"),
    );
    let out = grayline(&server, w, &["apply", "-f", "services/shop.yaml"])
        .await
        .expect(2);
    assert!(
        out.stderr
            .contains("services/shop.yaml:9: service.stabel: unknown field"),
        "{}",
        out.stderr
    );

    // Prune only when asked.
    write(&dir, "shop.yaml", &service("shop", "127.0.0.1:9001", 2500));
    std::fs::remove_file(dir.join("blog.yaml")).unwrap();
    grayline(&server, w, &["apply", "-f", "services"])
        .await
        .expect(0);
    assert_eq!(server.json().get("/services/blog").await.0, 200);
    let out = grayline(&server, w, &["apply", "-f", "services", "--prune"])
        .await
        .expect(0);
    assert!(
        out.stdout.contains("service blog: deleted"),
        "{}",
        out.stdout
    );
    assert_eq!(server.json().get("/services/blog").await.0, 404);

    // Operations: history with the actor, set-weight, undo, get, not found.
    let out = grayline(&server, w, &["set-weight", "shop", "v2=40%"])
        .await
        .expect(0);
    assert!(out.stdout.contains("is at revision 5"), "{}", out.stdout);
    let out = grayline(&server, w, &["history", "shop"]).await.expect(0);
    assert!(
        out.stdout.contains("pipeline") && out.stdout.contains("60 % to v1, 40 % to v2"),
        "{}",
        out.stdout
    );
    grayline(&server, w, &["undo", "shop"]).await.expect(0);
    let (_, record) = server.json().get("/services/shop").await;
    assert_eq!(
        record["service"]["policy"]["default_route"]["split"]["weights"][1]["weight"],
        2500
    );
    let out = grayline(&server, w, &["history", "shop", "--diff", "5", "6"])
        .await
        .expect(0);
    assert!(
        out.stdout.contains("-        weight: 4000"),
        "{}",
        out.stdout
    );
    grayline(&server, w, &["get", "nope"]).await.expect(4);
    let out = grayline(&server, w, &["simulate", "shop", "-H", "x-user: 1"])
        .await
        .expect(0);
    assert!(out.stdout.starts_with("→ v"), "{}", out.stdout);
    let out = grayline(&server, w, &["completions", "bash"])
        .await
        .expect(0);
    assert!(
        out.stdout.contains("complete") && out.stdout.contains("grayline"),
        "completions"
    );
}

#[tokio::test]
async fn wait_returns_once_every_proxy_runs_the_change_and_fails_on_a_rejection() {
    let server = Server::start();
    let work = TempDir::new().unwrap();
    let w = work.path();
    let a = Proxy::start(&server, "edge-a", &[]);
    write(w, "shop.yaml", &service("shop", "127.0.0.1:9001", 1000));
    let out = grayline(&server, w, &["apply", "-f", "shop.yaml", "--wait=20s"])
        .await
        .expect(0);
    assert!(
        out.stderr
            .contains("revision 1 of shop is live on 1 proxy: edge-a"),
        "{}",
        out.stderr
    );
    // It returned after the ACK: the proxy runs it now.
    assert_eq!(a.config().await["revision"], 1);

    // A proxy that may only reach 10.0.0.0/8 rejects endpoints on 127.0.0.1.
    let _b = Proxy::start(&server, "edge-b", &["--upstream-allow", "10.0.0.0/8"]);
    eventually("edge-b connected", Duration::from_secs(10), || async {
        let p = server.json().get("/proxies").await.1;
        let n = p["proxies"]
            .as_array()
            .map_or(0, |a| a.iter().filter(|p| p["connected"] == true).count());
        (n == 2).then_some(()).ok_or(format!("{n}"))
    })
    .await;
    write(w, "shop.yaml", &service("shop", "127.0.0.1:9001", 2000));
    let out = grayline(&server, w, &["apply", "-f", "shop.yaml", "--wait=20s"])
        .await
        .expect(8);
    assert!(
        out.stderr.contains("edge-b rejected revision 2"),
        "{}",
        out.stderr
    );
    // A timeout names who is behind.
    let out = grayline(&server, w, &["promote", "shop", "v2", "--wait=1s"])
        .await
        .expect(8);
    assert!(out.stderr.contains("edge-b"), "{}", out.stderr);
}

#[tokio::test]
async fn two_pipelines_racing_on_one_service_get_one_winner_and_one_conflict() {
    let server = Server::start();
    let work = TempDir::new().unwrap();
    let w = work.path();
    write(w, "shop.yaml", &service("shop", "127.0.0.1:9001", 1000));
    grayline(&server, w, &["apply", "-f", "shop.yaml"])
        .await
        .expect(0);
    // Both pipelines start from the same export, so both files record revision 1.
    let export = grayline(&server, w, &["export", "shop"])
        .await
        .expect(0)
        .stdout;
    write(
        w,
        "a.yaml",
        &export
            .replace("weight: 1000", "weight: 2000")
            .replace("weight: 9000", "weight: 8000"),
    );
    write(
        w,
        "b.yaml",
        &export
            .replace("weight: 1000", "weight: 3000")
            .replace("weight: 9000", "weight: 7000"),
    );
    let (a, b) = tokio::join!(
        grayline(&server, w, &["apply", "-f", "a.yaml"]),
        grayline(&server, w, &["apply", "-f", "b.yaml"]),
    );
    let mut codes = [a.code, b.code];
    codes.sort_unstable();
    assert_eq!(codes, [0, 3], "one winner, one conflict:\n{a:?}\n{b:?}");
    let loser = if a.code == 3 { &a } else { &b };
    assert!(
        loser.stderr.contains("is at revision 2, not 1 as expected"),
        "{}",
        loser.stderr
    );
    assert_eq!(catalog_revision(&server).await, 2);
}

#[tokio::test]
async fn a_pipeline_gates_on_a_rollout_and_controls_it() {
    let server = Server::start();
    let v1 = Upstream::start("v1");
    let v2 = Upstream::start_with("v2", &["--fail-rate", "0.3"]);
    let work = TempDir::new().unwrap();
    let w = work.path();
    let text = format!(
        "name: shop\nversions:\n  - {{name: v1, endpoints: [\"{}\"]}}\n  - {{name: v2, endpoints: [\"{}\"]}}\nstable: v1\n",
        v1.endpoint(),
        v2.endpoint()
    );
    write(w, "shop.yaml", &text);
    let proxy = Proxy::start(&server, "edge", &[]);
    grayline(&server, w, &["apply", "-f", "shop.yaml", "--wait=20s"])
        .await
        .expect(0);
    let load = Load::start(&proxy.url("/"), &[], 6, Duration::from_millis(25));

    // A bad plan names its file, line and field.
    write(
        w,
        "bad.yaml",
        "service: shop\ncanary: v2\nsteps:\n  - weight: 500\n  - weight: 100\n",
    );
    let out = grayline(&server, w, &["rollout", "start", "-f", "bad.yaml"])
        .await
        .expect(2);
    assert!(
        out.stderr.contains("bad.yaml:5: plan.steps[1].weight"),
        "{}",
        out.stderr
    );

    // A failing canary: `--wait` exits 7 when it is rolled back.
    write(
        w,
        "plan.yaml",
        "service: shop\ncanary: v2\nwarmup_seconds: 2\nsteps:\n  - {weight: 2000, min_seconds: 2, max_seconds: 120}\n  - {weight: 5000}\n",
    );
    let out = grayline(
        &server,
        w,
        &["rollout", "start", "-f", "plan.yaml", "--wait=2m"],
    )
    .await
    .expect(7);
    assert!(
        out.stderr.contains("rolled back: error rate: harm shown"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("started: v2 against v1"),
        "{}",
        out.stdout
    );

    // The controls, by service name, and the status as JSON.
    v2.set_faults(0.0, 0).await;
    grayline(&server, w, &["rollout", "retry", "shop"])
        .await
        .expect(0);
    let out = grayline(&server, w, &["rollout", "pause", "shop"])
        .await
        .expect(0);
    assert!(out.stdout.contains("paused"), "{}", out.stdout);
    grayline(&server, w, &["rollout", "approve", "shop"])
        .await
        .expect(3);
    let out = grayline(&server, w, &["rollout", "status", "shop", "-o", "json"])
        .await
        .expect(0);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        (v["phase"].as_str(), v["attempt"].as_u64()),
        (Some("paused"), Some(2))
    );
    grayline(&server, w, &["rollout", "abort", "shop"])
        .await
        .expect(0);
    let out = grayline(&server, w, &["rollout", "list"]).await.expect(0);
    assert!(out.stdout.contains("aborted"), "{}", out.stdout);

    // Promoted on time alone, as the plan asked: `--wait` says so and exits 9, not 0.
    write(
        w,
        "on-time.yaml",
        "service: shop\ncanary: v2\nwarmup_seconds: 0\nsteps:\n  - {weight: 2000, min_seconds: 1, max_seconds: 3, on_timeout: promote}\n",
    );
    let out = grayline(
        &server,
        w,
        &["rollout", "start", "-f", "on-time.yaml", "--wait=1m"],
    )
    .await
    .expect(9);
    assert!(
        out.stderr.contains("promoted without safety shown"),
        "{}",
        out.stderr
    );
    load.stop().await;

    // No server there: exit 6.
    let mut gone = grayline_tests::cli::command(&server, w);
    gone.args(["--server", "http://127.0.0.1:1", "list"]);
    let code = tokio::task::spawn_blocking(move || gone.output().unwrap().status.code())
        .await
        .unwrap();
    assert_eq!(code, Some(6));
}

#[tokio::test]
async fn list_finds_services_by_name_and_by_what_is_wrong_in_natural_order() {
    let server = Server::start();
    let work = TempDir::new().unwrap();
    let w = work.path();
    let good = Upstream::start("good");
    let bad = Upstream::start_with("bad", &["--fail-rate", "0.5"]);
    let mut files = Vec::new();
    for name in ["svc10", "svc2", "svc1", "svc100"] {
        let file = format!("{name}.yaml");
        write(w, &file, &service(name, &good.endpoint(), 0));
        files.extend(["-f".to_string(), file]);
    }
    // `pay` sends half its traffic to a version that fails half of it.
    write(
        w,
        "pay.yaml",
        &format!(
            "name: pay\nhosts: [pay.example.com]\nversions:\n  - name: v1\n    endpoints: [\"{}\"]\n  - name: v2\n    endpoints: [\"{}\"]\nstable: v1\npolicy:\n  default_route:\n    split:\n      weights:\n        - {{version: v1, weight: 5000}}\n        - {{version: v2, weight: 5000}}\n",
            good.endpoint(),
            bad.endpoint()
        ),
    );
    files.extend(["-f".to_string(), "pay.yaml".to_string()]);
    let mut apply = vec!["apply"];
    apply.extend(files.iter().map(String::as_str));
    grayline(&server, w, &apply).await.expect(0);
    let names = |stdout: &str| -> Vec<String> {
        serde_json::from_str::<Vec<serde_json::Value>>(stdout)
            .unwrap()
            .iter()
            .map(|r| r["service"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    let list = |args: &'static [&'static str]| {
        let (server, w) = (&server, w);
        async move {
            let mut all = vec!["list", "-o", "json"];
            all.extend(args);
            names(&grayline(server, w, &all).await.expect(0).stdout)
        }
    };
    assert_eq!(list(&[]).await, ["pay", "svc1", "svc2", "svc10", "svc100"]);
    assert_eq!(
        list(&["--filter", "SVC1"]).await,
        ["svc1", "svc10", "svc100"]
    );
    assert_eq!(
        list(&["--filter", "svc1", "--filter", "0"]).await,
        ["svc10", "svc100"]
    );
    assert!(list(&["--filter", "rollout"]).await.is_empty());
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(catalog_revision(&server).await).await;
    let load = Load::start(
        &proxy.url("/"),
        &[("host", "pay.example.com")],
        4,
        Duration::from_millis(20),
    );
    eventually("pay's errors counted", Duration::from_secs(20), || async {
        let found = list(&["--filter", "errors"]).await;
        (found == ["pay"]).then_some(()).ok_or(format!("{found:?}"))
    })
    .await;
    load.stop().await;
    let by_errors = list(&["--sort", "errors"]).await;
    assert_eq!(by_errors[0], "pay", "{by_errors:?}");
    assert_eq!(list(&["--sort", "traffic"]).await[0], "pay");
    // The table says what it sorted by.
    let out = grayline(&server, w, &["list", "--filter", "pay"])
        .await
        .expect(0);
    assert!(out.stdout.contains("WORST 5XX %"), "{}", out.stdout);
}
