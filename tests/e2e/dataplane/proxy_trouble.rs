//! A proxy's own troubles — a token the server rejects, a config it cannot save, a saved
//! config it cannot read, a server that comes back — are told on `/config`, `/readyz`,
//! `/metrics` and to the server, not only in the proxy's log.

use std::time::{Duration, Instant};

use grayline_routing::*;
use grayline_tests::{Proxy, Server, Upstream, eventually};

use crate::fixtures::*;

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn a_rejected_token_shows_on_the_proxy_and_on_the_server() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-proxy-token-at-all").unwrap();
    let proxy = Proxy::start(
        &server,
        "locked-out",
        &["--token-file", &wrong.display().to_string()],
    );

    let config = eventually(
        "/config says the token was rejected",
        Duration::from_secs(10),
        || async {
            let c = proxy.config().await;
            (c["token_rejected"] == true)
                .then_some(c.clone())
                .ok_or(format!("{c}"))
        },
    )
    .await;
    let last_error = config["last_error"].as_str().unwrap();
    assert!(
        last_error.contains("rejected this proxy's token"),
        "{last_error}"
    );
    assert!(
        last_error.contains("proxy.token"),
        "names the file: {last_error}"
    );
    assert_eq!(config["server_connected"], false);

    let (status, body) = proxy.admin_get("/readyz").await;
    assert_eq!(status, 503);
    assert!(!body.contains("never reached"), "{body}");
    assert!(body.contains("rejected this proxy's token"), "{body}");

    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert_eq!(
        metric(&metrics, "grayline_proxy_server_token_rejected"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metric(&metrics, "grayline_proxy_server_token_rejections_total").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );

    // The server lists the proxy, with the rejection.
    let status = eventually(
        "the server shows the rejected token",
        Duration::from_secs(10),
        || async {
            let p = proxy_status(&server, "locked-out").await?;
            (!p.token_error.is_empty())
                .then_some(p.clone())
                .ok_or(format!("{p:?}"))
        },
    )
    .await;
    assert!(!status.connected);
    assert!(status.token_rejected_unix_ms > 0);
    assert!(
        status.token_error.contains("wrong proxy token"),
        "{}",
        status.token_error
    );
    let (_, json) = server.json().get("/proxies").await;
    assert_eq!(json["proxies"][0]["id"], "locked-out");
    assert_eq!(
        json["proxies"][0]["token_error"],
        status.token_error.as_str()
    );
}

#[tokio::test]
async fn a_config_that_cannot_be_saved_is_acked_with_a_warning_and_leaves_no_temporary_file() {
    let server = Server::start();
    let v1 = Upstream::start("v1");
    let mut s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    let first = create(&server, &s).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(first).await;
    let saved = proxy.state_dir.join("config.json");
    let saved_revision = || {
        let text = std::fs::read_to_string(&saved).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text).ok()?["revision"].as_u64()
    };
    // The proxy serves a push before it saves it.
    eventually(
        "the first config is saved",
        Duration::from_secs(10),
        || async {
            (saved_revision() == Some(first))
                .then_some(())
                .ok_or(format!("{:?}", saved_revision()))
        },
    )
    .await;

    // The disk is full: writing the temporary file fails with ENOSPC.
    let tmp = proxy.state_dir.join("config.json.tmp");
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    s.versions[0].timeout_ms = 1234;
    let second = update(&server, &s).await;
    let status = eventually(
        "the server shows the ACK's warning",
        Duration::from_secs(10),
        || async {
            let p = proxy_status(&server, "edge").await?;
            (p.applied_revision == second && !p.ack_warning.is_empty())
                .then_some(p.clone())
                .ok_or(format!("{p:?}"))
        },
    )
    .await;
    println!("ACK warning: {}", status.ack_warning);
    assert!(
        status.ack_warning.contains("could not be saved"),
        "{}",
        status.ack_warning
    );
    assert!(
        status.ack_warning.contains("config.json.tmp"),
        "{}",
        status.ack_warning
    );
    let config = proxy.config().await;
    assert_eq!(config["revision"], second, "served all the same");
    assert!(
        config["save_error"]
            .as_str()
            .unwrap()
            .contains("could not be saved")
    );
    assert!(
        config["last_error"]
            .as_str()
            .unwrap()
            .contains("could not be saved")
    );
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert_eq!(
        metric(&metrics, "grayline_proxy_config_unsaved"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "grayline_proxy_config_save_failures_total"),
        Some(1.0)
    );
    assert!(
        tmp.symlink_metadata().is_err(),
        "the temporary file was removed"
    );
    assert_eq!(
        saved_revision(),
        Some(first),
        "the saved config is the older, intact one"
    );

    // Space again: the next push is saved and every warning clears.
    s.versions[0].timeout_ms = 2345;
    let third = update(&server, &s).await;
    eventually("the warning clears", Duration::from_secs(10), || async {
        let p = proxy_status(&server, "edge").await?;
        (p.applied_revision == third && p.ack_warning.is_empty())
            .then_some(())
            .ok_or(format!("{p:?}"))
    })
    .await;
    assert_eq!(saved_revision(), Some(third));
    let config = proxy.config().await;
    assert_eq!(
        (config["save_error"].as_str(), config["last_error"].as_str()),
        (Some(""), Some(""))
    );
    let (_, metrics) = proxy.admin_get("/metrics").await;
    assert_eq!(metric(&metrics, "grayline_proxy_config_unsaved"), Some(0.0));
}

#[tokio::test]
async fn a_truncated_saved_config_is_not_called_the_last_good_one() {
    let server = Server::start();
    let state = tempfile::tempdir().unwrap();
    std::fs::write(
        state.path().join("config.json"),
        br#"{"revision": 4, "servi"#,
    )
    .unwrap();
    // A server that hangs up on every connection. One try of the proxy may open two (the
    // channel reconnects once when the hang-up comes after the handshake), so the third
    // connection comes after the first try failed.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", dead.local_addr().unwrap());
    let proxy = Proxy::start(
        &server,
        "amnesiac",
        &[
            "--server",
            &address,
            "--state-dir",
            &state.path().display().to_string(),
            // Only the config stream connects, so the tries below are its own.
            "--no-stats",
        ],
    );
    for _ in 0..3 {
        let (conn, _) = tokio::time::timeout(Duration::from_secs(10), dead.accept())
            .await
            .expect("the proxy tries to connect")
            .unwrap();
        drop(conn);
    }
    let log = proxy.process.log_text();
    assert!(!log.contains("last good config"), "{log}");
    assert!(log.contains("no config to serve yet"), "{log}");
    let (status, body) = proxy.admin_get("/readyz").await;
    assert_eq!(status, 503);
    assert!(body.contains("the saved one is unusable"), "{body}");
    assert!(body.contains("config.json"), "{body}");
    let config = proxy.config().await;
    assert!(config["revision"].is_null());
    assert!(
        config["last_error"]
            .as_str()
            .unwrap()
            .contains("config.json"),
        "{config}"
    );
}

#[tokio::test]
async fn through_an_outage_the_proxy_keeps_trying_every_second_and_is_back_at_once() {
    let mut server = Server::start();
    let v1 = Upstream::start("v1");
    let revision = create(
        &server,
        &Service::single("shop", Version::new("v1", &[&v1.endpoint()])),
    )
    .await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;
    server.kill9();

    // Stand in for the dead server on its address for 8 s, and note every try to connect.
    let listener = tokio::net::TcpListener::bind(server.grpc).await.unwrap();
    let outage = Instant::now();
    let mut tries = Vec::new();
    while outage.elapsed() < Duration::from_secs(8) {
        let left = Duration::from_secs(8).saturating_sub(outage.elapsed());
        if let Ok(Ok((conn, _))) = tokio::time::timeout(left, listener.accept()).await {
            tries.push(outage.elapsed());
            drop(conn);
        }
    }
    drop(listener);
    let mut gaps: Vec<Duration> = tries.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.push(Duration::from_secs(8).saturating_sub(*tries.last().unwrap_or(&Duration::ZERO)));
    let longest = gaps.iter().max().copied().unwrap_or_default();
    println!(
        "{} tries in an 8 s outage, the longest wait {longest:?}",
        tries.len()
    );
    assert!(longest < Duration::from_millis(1500), "{tries:?}");

    server.restart();
    let back = Instant::now();
    eventually("the proxy is back", Duration::from_secs(15), || async {
        let p = proxy_status(&server, "edge").await?;
        p.connected.then_some(()).ok_or(format!("{p:?}"))
    })
    .await;
    let took = back.elapsed();
    println!("the proxy reconnected {took:?} after the server came back");
    assert!(took < Duration::from_secs(2), "{took:?}");
}
