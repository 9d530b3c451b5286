//! TLS on the server's listeners, as a user on a network they do not own would run it:
//! certificates from a test CA, the console's JSON API, the config API, a proxy and the CLI
//! all over TLS; what is refused and how it says so; a certificate rotated on disk without
//! a restart and without dropping the proxy's stream.

use std::time::Duration;

use grayline_routing::*;
use grayline_tests::pki::Pki;
use grayline_tests::{Proxy, Server, Upstream, eventually};
use tempfile::TempDir;

use crate::fixtures::*;

/// The certificate the server's HTTP listener presents to a new connection (DER).
async fn presented(server: &Server) -> Result<Vec<u8>, String> {
    let client = reqwest::Client::builder()
        .tls_info(true)
        .tls_certs_only([reqwest::Certificate::from_pem(
            &std::fs::read(server.ca.as_ref().expect("a TLS server")).unwrap(),
        )
        .unwrap()])
        .build()
        .unwrap();
    let resp = client
        .get(server.http_url("/healthz"))
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "no peer certificate".to_string())
}

#[tokio::test]
async fn every_hop_to_the_server_is_tls_and_its_certificate_rotates_without_a_restart() {
    let root = TempDir::new().unwrap();
    let pki = Pki::new(&root.path().join("pki"), "grayline test ca");
    let leaf = pki.issue("server", &["127.0.0.1", "localhost"]);
    // An admin token of the operators' own, rotated below with the certificate.
    let tokens = root.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let token_file = |name: &str, token: &str| {
        use std::os::unix::fs::PermissionsExt as _;
        let path = tokens.join(format!("{name}.yaml"));
        std::fs::write(&path, format!("token: {token}\nrole: admin\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let (old_token, new_token) = ("ops-0123456789abcdef-old", "ops-0123456789abcdef-new");
    token_file("ops", old_token);
    let dir = tokens.display().to_string();
    let server = Server::start_tls(
        &root.path().join("server"),
        &pki.ca,
        &leaf,
        &["--tokens-dir", &dir],
    );

    // The config API (gRPC) and the JSON API over TLS; a proxy that checks the server
    // against the CA follows the config and serves.
    let up = Upstream::start("v1");
    let mut shop = Service::single("shop", Version::new("v1", &[&up.endpoint()]));
    shop.hosts = vec!["shop.example.com".into()];
    let revision = create(&server, &shop).await;
    let (status, body) = server.json().get("/services/shop").await;
    assert_eq!(status, 200, "{body}");
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;
    let traffic = grayline_tests::Traffic::new();
    let reply = traffic
        .send(&proxy.url("/"), &[("host", "shop.example.com")])
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(presented(&server).await.unwrap(), leaf.der);

    // Refused, each saying why: a plaintext client on the TLS port; a client that does not
    // trust the CA; TLS settings for a plaintext URL; a certificate that is not one.
    let plain = reqwest::get(format!("http://{}/healthz", server.http))
        .await
        .map(|r| r.status().as_u16());
    assert!(!matches!(plain, Ok(200)), "plaintext answered: {plain:?}");
    let untrusting = reqwest::Client::builder()
        .tls_certs_only([])
        .build()
        .unwrap()
        .get(server.http_url("/healthz"))
        .send()
        .await;
    assert!(untrusting.is_err(), "{untrusting:?}");
    let cli_dir = root.path().join("cli");
    std::fs::create_dir_all(&cli_dir).unwrap();
    let ca = pki.ca.display().to_string();
    let listed = grayline_tests::cli::grayline(&server, &cli_dir, &["list", "--ca", &ca]).await;
    let listed = listed.expect(0);
    assert!(listed.stdout.contains("shop"), "{}", listed.stdout);
    let unverified = grayline_tests::cli::grayline(&server, &cli_dir, &["list"]).await;
    assert_eq!(unverified.code, 6, "{unverified:?}");
    assert!(
        unverified.stderr.contains("cannot reach the server"),
        "{}",
        unverified.stderr
    );
    let plaintext_url = format!("http://{}", server.grpc);
    let mixed = grayline_tests::cli::grayline(
        &server,
        &cli_dir,
        &["list", "--server", &plaintext_url, "--ca", &ca],
    )
    .await;
    assert_ne!(mixed.code, 0);
    assert!(mixed.stderr.contains("plaintext"), "{}", mixed.stderr);

    // Rotation while traffic flows through the proxy (about a thousand requests a second):
    // a new certificate written over the files is presented to new connections within a
    // few seconds, the admin token of the tokens directory is replaced; the proxy's stream,
    // opened before, stays up and no request fails.
    let before = proxy_status(&server, "edge").await.unwrap();
    let load = grayline_tests::Load::start(
        &proxy.url("/"),
        &[("host", "shop.example.com")],
        8,
        Duration::from_millis(5),
    );
    let rotated = pki.issue("server", &["127.0.0.1", "localhost"]);
    assert_ne!(rotated.der, leaf.der);
    eventually(
        "the rotated certificate",
        Duration::from_secs(15),
        || async {
            let now = presented(&server).await?;
            (now == rotated.der)
                .then_some(())
                .ok_or("still the old certificate".to_string())
        },
    )
    .await;
    token_file("ops-next", new_token);
    std::fs::remove_file(tokens.join("ops.yaml")).unwrap();
    let as_token = |t: &str| {
        let mut api = server.json();
        api.token = Some(t.to_string());
        api
    };
    eventually("the rotated token", Duration::from_secs(15), || async {
        let (new, _) = as_token(new_token).get("/services").await;
        let (old, _) = as_token(old_token).get("/services").await;
        (new == 200 && old == 401)
            .then_some(())
            .ok_or(format!("new token {new}, old token {old}"))
    })
    .await;
    let (status, body) = as_token(new_token)
        .put(
            "/services/shop/policy",
            serde_json::json!({"policy": {"default_route": {"version": "v1"}}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let revision = body["revision"].as_u64().expect("revision");
    proxy.wait_revision(revision).await;
    let (sent, failed) = load.stop().await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed across the rotations"
    );
    println!("{sent} requests through the proxy across both rotations, none failed");
    let after = proxy_status(&server, "edge").await.unwrap();
    assert!(after.connected);
    assert_eq!(
        after.connected_since_unix_ms, before.connected_since_unix_ms,
        "the proxy's stream was not reopened"
    );

    // A pair that does not load is refused and the one in use kept.
    std::fs::write(&rotated.cert, "not a certificate").unwrap();
    eventually(
        "the broken pair reported",
        Duration::from_secs(15),
        || async {
            let log = server.process.log_text();
            log.contains("do not load; still serving the previous certificate")
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;
    assert_eq!(presented(&server).await.unwrap(), rotated.der);
}

#[tokio::test]
async fn a_plaintext_listener_beyond_loopback_is_refused_unless_the_operator_says_so() {
    let root = TempDir::new().unwrap();
    let exited = Server::try_start_in(
        &root.path().join("refused"),
        "0.0.0.0:0",
        "127.0.0.1:0",
        &[],
    )
    .expect_err("a plaintext wildcard listener is refused");
    assert!(
        exited
            .log
            .contains("--http-listen 0.0.0.0:0 reach beyond this machine without TLS"),
        "{}",
        exited.log
    );
    assert!(
        !root.path().join("refused/data").exists(),
        "nothing was created"
    );
    let server = Server::start_in(
        &root.path().join("allowed"),
        "0.0.0.0:0",
        "127.0.0.1:0",
        &["--insecure-plaintext"],
    );
    let log = server.process.log_text();
    assert!(
        log.contains("serving plaintext beyond this machine"),
        "{log}"
    );

    // A proxy given a CA for a plaintext server, or a CA file that is not one, does not
    // start, naming the flag.
    let pki = Pki::new(&root.path().join("pki"), "grayline test ca");
    let not_pem = root.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let token = root.path().join("proxy.token");
    std::fs::write(&token, &server.proxy_token).unwrap();
    let https = format!("https://{}", server.grpc);
    for (url, ca, wanted) in [
        (
            server.grpc_url(),
            pki.ca.display().to_string(),
            "is plaintext but TLS settings were given (--server-ca)",
        ),
        (
            https,
            not_pem.display().to_string(),
            "--server-ca {}: holds no PEM certificate",
        ),
    ] {
        let wanted = wanted.replace("{}", &ca);
        let out = std::process::Command::new(grayline_tests::process::bin_path("grayline-proxy"))
            .args(["--server", &url, "--server-ca", &ca, "--token-file"])
            .arg(&token)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--state-dir",
            ])
            .arg(root.path().join("state"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(&wanted), "{err}");
    }
}

#[tokio::test]
async fn a_server_that_requires_client_certificates_takes_only_the_proxy_a_certificate_names() {
    let root = TempDir::new().unwrap();
    let pki = Pki::new(&root.path().join("pki"), "grayline test ca");
    let leaf = pki.issue("server", &["127.0.0.1", "localhost"]);
    let edge = pki.issue("edge", &["edge"]);
    let revoked = pki.issue("revoked", &["gone"]);
    let expired = pki.issue_expired("expired", &["late"]);
    let later = pki.issue("later", &["later"]);
    let crl = pki.revoke("crl", &[&revoked]);
    let ca = pki.ca.display().to_string();
    let crl = crl.display().to_string();
    let server = Server::start_tls(
        &root.path().join("server"),
        &pki.ca,
        &leaf,
        &["--proxy-client-ca", &ca, "--proxy-client-crl", &crl],
    );
    // The admin APIs need no client certificate.
    let up = Upstream::start("v1");
    let revision = create(
        &server,
        &Service::single("shop", Version::new("v1", &[&up.endpoint()])),
    )
    .await;
    let with = |leaf: &grayline_tests::pki::Leaf| {
        vec![
            "--tls-cert".to_string(),
            leaf.cert.display().to_string(),
            "--tls-key".to_string(),
            leaf.key.display().to_string(),
        ]
    };
    let args = with(&edge);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let proxy = Proxy::start(&server, "edge", &args);
    proxy.wait_revision(revision).await;

    // Refused at the API, named on the proxy's entry: a certificate of another proxy, and
    // none at all.
    let impostor = Proxy::start(&server, "edge-2", &args);
    let bare = Proxy::start(&server, "bare", &[]);
    for (id, wanted) in [
        (
            "edge-2",
            "the client certificate does not name proxy `edge-2`",
        ),
        ("bare", "requires a client certificate from proxies"),
    ] {
        eventually(
            &format!("{id} refused"),
            Duration::from_secs(20),
            || async {
                let status = proxy_status(&server, id).await?;
                (!status.connected && status.token_error.contains(wanted))
                    .then_some(())
                    .ok_or(format!("{status:?}"))
            },
        )
        .await;
    }
    // Refused at the handshake: an expired certificate, a revoked one; each proxy says so.
    let args = with(&expired);
    let late = Proxy::start(
        &server,
        "late",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let args = with(&revoked);
    let gone = Proxy::start(
        &server,
        "gone",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for (p, wanted) in [(&late, "CertificateExpired"), (&gone, "CertificateRevoked")] {
        eventually(
            &format!("{} refused", p.id),
            Duration::from_secs(20),
            || async {
                let log = p.process.log_text();
                log.contains(wanted)
                    .then_some(())
                    .ok_or(log.lines().last().unwrap_or("").to_string())
            },
        )
        .await;
        assert!(
            proxy_status(&server, &p.id).await.is_err(),
            "{} never got in",
            p.id
        );
    }
    assert!(proxy_status(&server, "edge").await.unwrap().connected);
    drop((impostor, bare));

    // A certificate revoked by a list written while the server runs: its next handshake
    // fails, without a restart of the server.
    let args = with(&later);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = Proxy::start(&server, "later", &args);
    first.wait_revision(revision).await;
    drop(first);
    pki.revoke("crl", &[&revoked, &later]);
    eventually("the new list read", Duration::from_secs(15), || async {
        server
            .process
            .log_text()
            .contains("revocation lists read again")
            .then_some(())
            .ok_or("not yet".to_string())
    })
    .await;
    let again = Proxy::start(&server, "later", &args);
    eventually("later refused", Duration::from_secs(20), || async {
        let log = again.process.log_text();
        log.contains("CertificateRevoked")
            .then_some(())
            .ok_or(log.lines().last().unwrap_or("").to_string())
    })
    .await;
    assert!(proxy_status(&server, "edge").await.unwrap().connected);
}

#[tokio::test]
async fn a_server_keeps_its_store_on_an_etcd_that_serves_tls_and_requires_client_certificates() {
    let root = TempDir::new().unwrap();
    let pki = Pki::new(&root.path().join("pki"), "grayline test ca");
    let etcd = grayline_tests::etcd::Etcd::start_tls(1, &pki);
    let tls = etcd.tls.clone().unwrap();
    let (ca, cert, key) = (
        tls.ca.display().to_string(),
        tls.client.cert.display().to_string(),
        tls.client.key.display().to_string(),
    );
    let url = etcd.store_url("secure");
    assert!(url.starts_with("etcds://"), "{url}");
    let on = |store: &str, dir: &str| {
        let args = [
            "--store",
            store,
            "--etcd-ca",
            &ca,
            "--etcd-cert",
            &cert,
            "--etcd-key",
            &key,
        ];
        Server::try_start_in(&root.path().join(dir), "127.0.0.1:0", "127.0.0.1:0", &args)
    };
    let server = on(&url, "replica").expect("a replica on etcds://");
    let revision = create(
        &server,
        &Service::single("shop", Version::new("v1", &["127.0.0.1:9"])),
    )
    .await;
    let (ok, out) = etcd.ctl(&["get", "--prefix", "/secure", "--keys-only"], b"");
    assert!(ok && out.contains("/secure/"), "{out}");
    assert_eq!(revision, 1);

    // Refused at start, saying why: no client certificate for an etcd that wants one; the
    // etcd flags with a plaintext URL.
    let exited = Server::try_start_in(
        &root.path().join("no-cert"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--store", &url, "--etcd-ca", &ca],
    )
    .expect_err("etcd refuses a client without a certificate");
    assert!(
        exited
            .log
            .contains("does not answer over TLS: does it trust this client's certificate"),
        "{}",
        exited.log
    );
    let plaintext = url.replacen("etcds://", "etcd://", 1);
    let exited = on(&plaintext, "mixed").expect_err("TLS flags for a plaintext etcd URL");
    assert!(
        exited.log.contains("are for an etcds:// store"),
        "{}",
        exited.log
    );
}

#[tokio::test]
async fn every_hop_over_tls_two_replicas_on_a_tls_etcd_a_proxy_the_cli_and_the_console() {
    let root = TempDir::new().unwrap();
    let pki = Pki::new(&root.path().join("pki"), "grayline test ca");
    let etcd = grayline_tests::etcd::Etcd::start_tls(1, &pki);
    let etcd_tls = etcd.tls.clone().unwrap();
    let leaf = pki.issue("replicas", &["127.0.0.1", "localhost"]);
    let ca = pki.ca.display().to_string();
    let console = grayline_tests::browser::console_dir().display().to_string();
    let mut args = shared_tokens(root.path());
    let files = [
        ("--etcd-ca", &etcd_tls.ca),
        ("--etcd-cert", &etcd_tls.client.cert),
        ("--etcd-key", &etcd_tls.client.key),
    ];
    for (flag, path) in files {
        args.extend([flag.to_string(), path.display().to_string()]);
    }
    args.extend(["--store".into(), etcd.store_url("every-hop")]);
    args.extend([
        "--peer-ca".into(),
        ca.clone(),
        "--console-dir".into(),
        console,
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let replicas: Vec<Server> = (0..2)
        .map(|i| Server::start_tls(&root.path().join(format!("r{i}")), &pki.ca, &leaf, &args))
        .collect();

    // A service with two versions, created through the CLI over TLS on one replica.
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let mut shop = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    shop.versions.push(Version::new("v2", &[&v2.endpoint()]));
    shop.hosts = vec!["shop.example.com".into()];
    let file = root.path().join("shop.yaml");
    std::fs::write(&file, serde_json::to_string(&shop).unwrap()).unwrap();
    let cli_dir = root.path().join("cli");
    std::fs::create_dir_all(&cli_dir).unwrap();
    // Where the CLI harness looks for the admin token (the replicas read the shared one).
    std::fs::write(
        replicas[0].data_dir().join("admin.token"),
        &replicas[0].admin_token,
    )
    .unwrap();
    let file = file.display().to_string();
    grayline_tests::cli::grayline(&replicas[0], &cli_dir, &["apply", "-f", &file, "--ca", &ca])
        .await
        .expect(0);

    // A proxy on both replicas over TLS follows it and serves.
    let servers = format!("{},{}", replicas[0].grpc_url(), replicas[1].grpc_url());
    let proxy = Proxy::start(&replicas[0], "edge", &["--server", &servers]);
    proxy.wait_revision(1).await;
    let load = grayline_tests::Load::start(
        &proxy.url("/"),
        &[("host", "shop.example.com")],
        2,
        Duration::from_millis(20),
    );

    // A rollout started on the second replica (forwarded to the one that drives rollouts
    // over TLS), watched and aborted in the console over HTTPS on the first.
    let plan = serde_json::json!({"service": "shop", "canary": "v2",
        "steps": [{"weight": 2000, "min_seconds": 600}]});
    let (status, body) = replicas[1]
        .json()
        .post("/rollouts", serde_json::json!({"plan": plan}))
        .await;
    assert_eq!(status, 201, "{body}");
    let b = grayline_tests::browser::Browser::start_trusting(&[&leaf.spki_sha256]).await;
    b.goto(&replicas[0].http_url("/services/shop")).await;
    b.fill("#signin-token", &replicas[0].admin_token).await;
    b.fill("#signin-actor", "Ada").await;
    b.click("#signin-submit").await;
    b.wait_text("#rollout-phase", "running").await;
    b.screenshot("every-hop-tls-rollout").await;
    b.click("#rollout-abort").await;
    b.wait_text("#rollout-phase", "aborted").await;
    let (sent, failed) = load.stop().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
    let (_, record) = replicas[1].json().get("/services/shop").await;
    assert_eq!(
        record["service"]["policy"]["default_route"],
        serde_json::json!({"version": "v1"})
    );
    b.close().await;
}

#[tokio::test]
async fn the_proxy_terminates_tls_with_a_certificate_per_host_name_and_http2_by_alpn() {
    let root = TempDir::new().unwrap();
    let pki = Pki::new(&root.path().join("pki"), "grayline test ca");
    let default = pki.issue("edge", &["127.0.0.1", "edge.test"]);
    let site = pki.issue("shop-site", &["shop.example.com"]);
    let server = Server::start();
    let up = Upstream::start("v1");
    let mut shop = Service::single("shop", Version::new("v1", &[&up.endpoint()]));
    shop.hosts = vec!["shop.example.com".into()];
    let revision = create(&server, &shop).await;
    let path = |p: &std::path::Path| p.display().to_string();
    let sni = format!("shop.example.com={}:{}", path(&site.cert), path(&site.key));
    let (cert, key) = (path(&default.cert), path(&default.key));
    let flags = [
        "--listen-tls-cert",
        &cert,
        "--listen-tls-key",
        &key,
        "--listen-tls-sni",
        &sni,
    ];
    let proxy = Proxy::start(&server, "edge", &flags);
    proxy.wait_revision(revision).await;

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([ca])
        .tls_info(true)
        .resolve("shop.example.com", proxy.addr)
        .build()
        .unwrap();
    let presented = |resp: &reqwest::Response| {
        resp.extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .map(<[u8]>::to_vec)
    };
    // The host's own certificate by SNI, HTTP/2 by ALPN, and the upstream told it was HTTPS.
    let port = proxy.addr.port();
    let resp = client
        .get(format!("https://shop.example.com:{port}/hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(presented(&resp).unwrap(), site.der);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"], "https", "{body}");
    // No SNI (an address): the default certificate; the Host header still routes.
    let resp = client
        .get(format!("https://127.0.0.1:{port}/hello"))
        .header("host", "shop.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(presented(&resp).unwrap(), default.der);
    // Plaintext on the TLS listener gets no answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/hello")).await;
    assert!(plain.is_err(), "{plain:?}");

    // A host's certificate renewed on disk: new connections get it, without a restart; a
    // file that does not load keeps the one in use.
    let renewed = pki.issue("shop-site", &["shop.example.com"]);
    assert_ne!(renewed.der, site.der);
    let fresh = || {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap();
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .tls_info(true)
            .resolve("shop.example.com", proxy.addr)
            .build()
            .unwrap()
    };
    let now_presented = || async {
        let resp = fresh()
            .get(format!("https://shop.example.com:{port}/hello"))
            .send()
            .await
            .map_err(|e| format!("{e:?}"))?;
        presented(&resp).ok_or_else(|| "no certificate".to_string())
    };
    eventually(
        "the renewed certificate",
        Duration::from_secs(15),
        || async {
            let now = now_presented().await?;
            (now == renewed.der)
                .then_some(())
                .ok_or("still the old certificate".to_string())
        },
    )
    .await;
    std::fs::write(&renewed.cert, "not a certificate").unwrap();
    eventually(
        "the broken file reported",
        Duration::from_secs(15),
        || async {
            proxy
                .process
                .log_text()
                .contains("still serving the previous certificates")
                .then_some(())
                .ok_or("not yet".to_string())
        },
    )
    .await;
    assert_eq!(now_presented().await.unwrap(), renewed.der);

    // A certificate that cannot be read stops the proxy, naming the flag.
    let out = std::process::Command::new(grayline_tests::process::bin_path("grayline-proxy"))
        .args(["--server", &server.grpc_url(), "--token-file"])
        .arg(root.path().join("none.token"))
        .args([
            "--listen-tls-cert",
            "/nonexistent.pem",
            "--listen-tls-key",
            &key,
        ])
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--listen-tls-cert /nonexistent.pem"),
        "{err}"
    );
}

/// A client of the TLS upstream's own port: trusts `ca`, shows `leaf`.
fn upstream_client(ca: &std::path::Path, leaf: &grayline_tests::pki::Leaf) -> reqwest::Client {
    let mut pem = std::fs::read(&leaf.cert).unwrap();
    pem.extend(std::fs::read(&leaf.key).unwrap());
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap()])
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .resolve("shop-v2.internal", "127.0.0.1:0".parse().unwrap())
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_proxy_reaches_upstreams_over_tls_with_its_client_certificate_checks_their_health_and_speaks_h2_to_grpc()
 {
    let root = TempDir::new().unwrap();
    let pki = Pki::new(&root.path().join("pki"), "upstream ca");
    let other = Pki::new(&root.path().join("other"), "another ca");
    let site = pki.issue("shop-v2", &["shop-v2.internal"]);
    let edge = pki.issue("edge", &["edge.proxies.grayline"]);
    let path = |p: &std::path::Path| p.display().to_string();
    let tls_flags = [
        "--tls-cert".to_string(),
        path(&site.cert),
        "--tls-key".to_string(),
        path(&site.key),
        "--tls-client-ca".to_string(),
        path(&pki.ca),
    ];
    let tls_flags: Vec<&str> = tls_flags.iter().map(String::as_str).collect();
    let v1 = Upstream::start("v1");
    let (well, sick) = (
        Upstream::start_with("v2", &tls_flags),
        Upstream::start_with("v2-sick", &tls_flags),
    );
    // The sick one says so to its health checks, which only a client with a certificate of
    // the CA can ask.
    let direct = upstream_client(&pki.ca, &edge);
    let port = sick.endpoint().rsplit_once(':').unwrap().1.to_string();
    let told = direct
        .get(format!(
            "https://shop-v2.internal:{port}/__control/health?ok=false"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(told.status(), 200);

    let tls = UpstreamTls {
        ca: path(&pki.ca),
        server_name: "shop-v2.internal".into(),
        client_cert: path(&edge.cert),
        client_key: path(&edge.key),
    };
    let mut shop = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    let mut canary = Version::new("v2", &[&well.endpoint(), &sick.endpoint()]);
    canary.tls = Some(tls.clone());
    canary.protocol = Protocol::Auto;
    canary.health_check.enabled = true;
    canary.health_check.interval_ms = 200;
    canary.health_check.timeout_ms = 200;
    canary.health_check.unhealthy_threshold = 1;
    let canary_checks = canary.health_check.clone();
    // Failures on purpose below must not open its breaker or eject its endpoints.
    canary.breaker.enabled = false;
    canary.outlier_detection.enabled = false;
    shop.versions.push(canary);
    shop.policy.rules = vec![header_rule("x-canary", "1", "v2")];
    let mut greet = Service::single(
        "greet",
        Version::new("v2", &[&well.endpoint(), &sick.endpoint()]),
    );
    greet.hosts = vec!["greet.test".into()];
    greet.versions[0].tls = Some(tls.clone());
    greet.versions[0].protocol = Protocol::H2;
    greet.versions[0].health_check = canary_checks.clone();
    greet.versions[0].health_check.grpc = true;
    let server = Server::start();
    create(&server, &shop).await;
    let revision = create(&server, &greet).await;
    // A client key others can read is used, and the proxy's log says to make it private.
    std::fs::set_permissions(
        &edge.key,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
    )
    .unwrap();
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;
    let client = reqwest::Client::new();
    let get = |canary: bool| {
        let req = client.get(proxy.url("/hello")).header("host", "shop.test");
        if canary {
            req.header("x-canary", "1")
        } else {
            req
        }
    };

    // HTTP/1.1 over TLS with the proxy's client certificate, the sick endpoint out of
    // rotation by its health checks (asked over TLS too: plaintext ones would fail on both,
    // and with none healthy the version would ignore health and send to both).
    let served = eventually(
        "only the healthy TLS endpoint serves the canary",
        Duration::from_secs(10),
        || async {
            let mut seen = Vec::new();
            for _ in 0..20 {
                let resp = get(true).send().await.map_err(|e| e.to_string())?;
                let status = resp.status();
                let body: serde_json::Value = resp.json().await.map_err(|e| e.to_string())?;
                if status != 200 {
                    return Err(format!("{status}: {body}"));
                }
                seen.push(body);
            }
            seen.iter()
                .all(|b| b["version"] == "v2")
                .then_some(seen.clone())
                .ok_or_else(|| {
                    format!(
                        "{:?}",
                        seen.iter()
                            .map(|b| b["version"].clone())
                            .collect::<Vec<_>>()
                    )
                })
        },
    )
    .await;
    assert_eq!(served[0]["tls"], true, "{}", served[0]);
    assert!(
        proxy
            .process
            .log_text()
            .contains("an upstream TLS client key every user of this host can read"),
        "no warning about the readable key"
    );
    assert_eq!(served[0]["client_cert"], true, "{}", served[0]);
    let plain: serde_json::Value = get(false).send().await.unwrap().json().await.unwrap();
    assert_eq!(plain["version"], "v1");
    assert!(plain.get("tls").is_none(), "{plain}");

    // gRPC over HTTP/2 over TLS (ALPN h2), its endpoint checked with the gRPC health protocol.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", proxy.addr))
        .unwrap()
        .origin("http://greet.test".parse().unwrap())
        .connect()
        .await
        .unwrap();
    let demo = grayline_proto::v1::demo_client::DemoClient::new(channel);
    // The sick endpoint is NOT_SERVING to the gRPC health protocol, asked over TLS: only
    // the healthy one answers (plaintext checks would fail on both, and with none healthy
    // both would take calls).
    eventually(
        "only the healthy endpoint answers gRPC calls",
        Duration::from_secs(10),
        || async {
            let mut answered = Vec::new();
            for _ in 0..10 {
                let reply = demo
                    .clone()
                    .hello(grayline_proto::v1::HelloRequest { name: "ada".into() })
                    .await
                    .map_err(|e| format!("gRPC over h2 with TLS: {e}"))?
                    .into_inner();
                answered.push(reply.version);
            }
            answered
                .iter()
                .all(|v| v == "v2")
                .then_some(())
                .ok_or(format!("{answered:?}"))
        },
    )
    .await;

    // A CA that did not sign the upstream's certificate: 502, saying why.
    let ca_file = root.path().join("upstream-ca.pem");
    std::fs::copy(&other.ca, &ca_file).unwrap();
    shop.versions[1].tls = Some(UpstreamTls {
        ca: path(&ca_file),
        ..tls.clone()
    });
    let revision = update(&server, &shop).await;
    proxy.wait_revision(revision).await;
    let resp = get(true).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let body = resp.text().await.unwrap();
    println!("an unknown CA: {body}");
    assert!(
        body.contains("TLS handshake with") && body.contains("certificate"),
        "{body}"
    );
    // The right CA written over the file: read again without a config push.
    std::fs::copy(&pki.ca, &ca_file).unwrap();
    eventually(
        "the rewritten CA file is used",
        Duration::from_secs(10),
        || async {
            let resp = get(true).send().await.map_err(|e| e.to_string())?;
            (resp.status() == 200)
                .then_some(())
                .ok_or(format!("{}", resp.status()))
        },
    )
    .await;

    // No client certificate for an upstream that demands one: 502.
    shop.versions[1].tls = Some(UpstreamTls {
        client_cert: String::new(),
        client_key: String::new(),
        ..tls.clone()
    });
    let revision = update(&server, &shop).await;
    proxy.wait_revision(revision).await;
    let resp = get(true).send().await.unwrap();
    assert_eq!(resp.status(), 502, "{:?}", resp.text().await);

    // A file this proxy cannot read, or a device that would never end: it refuses the
    // config, naming the field and the file, and serves on with the last one.
    for (ca, said) in [
        (
            "/nonexistent/ca.pem",
            "services[shop].versions[1].tls.ca /nonexistent/ca.pem",
        ),
        ("/dev/zero", "tls.ca /dev/zero: not a regular file"),
    ] {
        shop.versions[1].tls = Some(UpstreamTls {
            ca: ca.into(),
            ..tls.clone()
        });
        let rejected = update(&server, &shop).await;
        let status = eventually(
            &format!("the NACK of {ca}"),
            Duration::from_secs(10),
            || async {
                let p = proxy_status(&server, "edge").await?;
                (p.nack_revision == rejected)
                    .then_some(p.clone())
                    .ok_or(format!("{p:?}"))
            },
        )
        .await;
        assert!(status.nack_error.contains(said), "{}", status.nack_error);
    }
    assert_eq!(get(false).send().await.unwrap().status(), 200);

    // What the server refuses outright, naming the field.
    let mut bad = shop.clone();
    bad.versions[1].tls = Some(UpstreamTls {
        ca: "relative/ca.pem".into(),
        client_key: String::new(),
        ..tls.clone()
    });
    bad.versions[1].protocol = Protocol::H2c;
    let (status, body) = server
        .json()
        .put("/services/shop", serde_json::json!({ "service": bad }))
        .await;
    assert_eq!(status, 400, "{body}");
    let text = body.to_string();
    for field in [
        "versions[1].tls.ca",
        "versions[1].tls.client_key",
        "versions[1].protocol",
    ] {
        assert!(text.contains(field), "{field}: {text}");
    }
}
