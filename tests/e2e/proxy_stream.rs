//! The proxy config stream, driven by a test client that plays the proxy: snapshots arrive
//! within a second of a change, ACKs and NACKs show in the API, pushes wait for the answer
//! and coalesce, a proxy only receives its services, and one that takes incremental pushes
//! gets only what changed.

use std::time::Duration;

use grayline_proto::v1 as pb;
use grayline_proto::v1::proxy_message::Kind;
use grayline_routing::*;
use grayline_tests::{Server, eventually};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

use crate::fixtures::*;

/// Opens a proxy stream and says Hello.
pub async fn connect(
    server: &Server,
    id: &str,
    services: &[&str],
) -> (
    mpsc::Sender<pb::ProxyMessage>,
    tonic::Streaming<pb::ConfigPush>,
) {
    connect_with(
        server,
        pb::Hello {
            proxy_id: id.into(),
            last_applied_revision: 0,
            services: services.iter().map(|s| s.to_string()).collect(),
            proxy_version: "test".into(),
            ..Default::default()
        },
    )
    .await
}

/// Opens a proxy stream with `hello`.
async fn connect_with(
    server: &Server,
    hello: pb::Hello,
) -> (
    mpsc::Sender<pb::ProxyMessage>,
    tonic::Streaming<pb::ConfigPush>,
) {
    let (tx, stream) = open_with(server, hello, Vec::new()).await;
    (tx, stream.expect("open stream"))
}

/// Opens a proxy stream with `hello` and then `more` messages; the server's answer.
async fn open_with(
    server: &Server,
    hello: pb::Hello,
    more: Vec<Kind>,
) -> (
    mpsc::Sender<pb::ProxyMessage>,
    Result<tonic::Streaming<pb::ConfigPush>, tonic::Status>,
) {
    let mut client = server.proxy_client().await;
    let (tx, rx) = mpsc::channel(64);
    for kind in std::iter::once(Kind::Hello(hello)).chain(more) {
        tx.send(pb::ProxyMessage { kind: Some(kind) })
            .await
            .unwrap();
    }
    let stream = client
        .stream(ReceiverStream::new(rx))
        .await
        .map(|r| r.into_inner());
    (tx, stream)
}

async fn next_push(
    stream: &mut tonic::Streaming<pb::ConfigPush>,
    within: Duration,
) -> pb::ConfigPush {
    tokio::time::timeout(within, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no push within {within:?}"))
        .expect("stream error")
        .expect("stream ended")
}

async fn no_push(stream: &mut tonic::Streaming<pb::ConfigPush>) {
    if let Ok(m) = tokio::time::timeout(Duration::from_millis(400), stream.message()).await {
        panic!("unexpected push: {m:?}");
    }
}

async fn ack(tx: &mpsc::Sender<pb::ProxyMessage>, push: &pb::ConfigPush) {
    tx.send(pb::ProxyMessage {
        kind: Some(Kind::Ack(pb::Ack {
            nonce: push.nonce.clone(),
            revision: push.revision,
            warning: String::new(),
        })),
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_change_reaches_the_proxy_within_a_second_and_its_ack_shows() {
    let server = Server::start();
    create(&server, &shop()).await;
    let (tx, mut stream) = connect(&server, "edge-1", &[]).await;

    let first = next_push(&mut stream, Duration::from_secs(5)).await;
    assert_eq!((first.revision, first.services.len()), (1, 1));
    ack(&tx, &first).await;
    eventually(
        "edge-1 applied revision 1",
        Duration::from_secs(5),
        || async {
            let s = proxy_status(&server, "edge-1").await?;
            (s.connected && s.applied_revision == 1)
                .then_some(())
                .ok_or(format!("{s:?}"))
        },
    )
    .await;

    let p = policy(vec![], Some(split(&[("v1", 9000), ("v2", 1000)], None)));
    let started = std::time::Instant::now();
    let revision = set_policy(&server, "shop", &p).await;
    let push = next_push(&mut stream, Duration::from_secs(1)).await;
    let elapsed = started.elapsed();
    println!("write acknowledged and pushed to the proxy in {elapsed:?}");
    assert_eq!(push.revision, revision);
    assert_eq!(from_pb(push.services.into_iter().next()).policy, p);
    let push = pb::ConfigPush {
        services: vec![],
        ..push
    };
    ack(&tx, &push).await;
    eventually(
        "the ACK shows in both APIs",
        Duration::from_secs(5),
        || async {
            let s = proxy_status(&server, "edge-1").await?;
            let (_, json) = server.json().get("/proxies").await;
            let j = &json["proxies"][0];
            (s.applied_revision == revision
                && j["applied_revision"] == revision
                && j["connected"] == true)
                .then_some(())
                .ok_or(format!("grpc {s:?}, json {json}"))
        },
    )
    .await;

    drop(tx);
    drop(stream);
    eventually(
        "edge-1 shows as disconnected",
        Duration::from_secs(5),
        || async {
            let s = proxy_status(&server, "edge-1").await?;
            (!s.connected).then_some(()).ok_or(format!("{s:?}"))
        },
    )
    .await;
}

#[tokio::test]
async fn a_nack_shows_its_error_until_a_later_ack() {
    let server = Server::start();
    create(&server, &shop()).await;
    let (tx, mut stream) = connect(&server, "edge-2", &[]).await;
    let first = next_push(&mut stream, Duration::from_secs(5)).await;
    ack(&tx, &first).await;
    let revision = set_policy(
        &server,
        "shop",
        &policy(vec![header_rule("x", "1", "v2")], None),
    )
    .await;
    let push = next_push(&mut stream, Duration::from_secs(1)).await;
    tx.send(pb::ProxyMessage {
        kind: Some(Kind::Nack(pb::Nack {
            nonce: push.nonce.clone(),
            revision: push.revision,
            error: "services[shop].policy: this proxy cannot apply it".into(),
        })),
    })
    .await
    .unwrap();
    let s = eventually("the NACK shows", Duration::from_secs(5), || async {
        let s = proxy_status(&server, "edge-2").await?;
        (s.nack_revision == revision)
            .then_some(s.clone())
            .ok_or(format!("{s:?}"))
    })
    .await;
    assert_eq!(
        s.applied_revision, first.revision,
        "a NACK keeps the last good revision"
    );
    assert!(s.nack_error.contains("cannot apply"));
    let (_, json) = server.json().get("/proxies").await;
    assert_eq!(json["proxies"][0]["nack_error"], s.nack_error);

    let next = set_policy(&server, "shop", &Policy::default()).await;
    let push = next_push(&mut stream, Duration::from_secs(1)).await;
    ack(&tx, &push).await;
    eventually(
        "a later ACK clears the NACK",
        Duration::from_secs(5),
        || async {
            let s = proxy_status(&server, "edge-2").await?;
            (s.applied_revision == next && s.nack_error.is_empty())
                .then_some(())
                .ok_or(format!("{s:?}"))
        },
    )
    .await;
}

#[tokio::test]
async fn pushes_wait_for_the_answer_and_coalesce() {
    let server = Server::start();
    create(&server, &shop()).await;
    let (tx, mut stream) = connect(&server, "edge-3", &[]).await;
    let first = next_push(&mut stream, Duration::from_secs(5)).await;

    // Three changes while the first push is unanswered: nothing more is sent...
    let mut last = 0;
    for w in [1000, 2000, 3000] {
        last = set_policy(
            &server,
            "shop",
            &policy(vec![], Some(split(&[("v1", 10_000 - w), ("v2", w)], None))),
        )
        .await;
    }
    no_push(&mut stream).await;
    // ...until the ACK, and then one push carries the newest state.
    ack(&tx, &first).await;
    let push = next_push(&mut stream, Duration::from_secs(1)).await;
    assert_eq!(push.revision, last);
    let s = from_pb(push.services.into_iter().next());
    assert_eq!(
        s.policy.default_route,
        Some(split(&[("v1", 7000), ("v2", 3000)], None))
    );
}

#[tokio::test]
async fn a_proxy_receives_only_its_services() {
    let server = Server::start();
    create(&server, &shop()).await;
    let mut blog = shop();
    blog.name = "blog".into();
    blog.hosts = vec!["blog.example.com".into()];
    create(&server, &blog).await;

    let (tx, mut stream) = connect(&server, "blog-proxy", &["blog"]).await;
    let first = next_push(&mut stream, Duration::from_secs(5)).await;
    let names: Vec<&str> = first.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["blog"]);
    ack(&tx, &first).await;

    set_policy(
        &server,
        "shop",
        &policy(vec![header_rule("x", "1", "v2")], None),
    )
    .await;
    no_push(&mut stream).await;
    let revision = set_policy(
        &server,
        "blog",
        &policy(vec![header_rule("x", "1", "v2")], None),
    )
    .await;
    let push = next_push(&mut stream, Duration::from_secs(1)).await;
    assert_eq!((push.revision, push.services.len()), (revision, 1));

    // Deleting the service empties the snapshot.
    ack(&tx, &push).await;
    delete(&server, "blog").await;
    let push = next_push(&mut stream, Duration::from_secs(1)).await;
    assert!(push.services.is_empty());
}

#[tokio::test]
async fn the_first_message_must_be_a_hello() {
    let server = Server::start();
    let mut client = server.proxy_client().await;
    let ack = pb::ProxyMessage {
        kind: Some(Kind::Ack(pb::Ack::default())),
    };
    let err = client
        .stream(tokio_stream::iter(vec![ack]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .starts_with("kind: the first message must be a Hello")
    );
    let bad_id = pb::ProxyMessage {
        kind: Some(Kind::Hello(pb::Hello {
            proxy_id: "bad id!".into(),
            ..Default::default()
        })),
    };
    let err = client
        .stream(tokio_stream::iter(vec![bad_id]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("hello.proxy_id"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn instances_come_apart_from_the_config_at_most_ten_pushes_a_second() {
    let server = Server::start();
    let mut s = shop();
    s.versions[1] = Version::tagged("v2", "1.1.2");
    let revision = create(&server, &s).await;
    let (tx, mut stream) = connect(&server, "edge-9", &[]).await;
    let first = next_push(&mut stream, Duration::from_secs(5)).await;
    assert!(!first.instances_only && first.instances.is_empty());
    ack(&tx, &first).await;

    // Fifty registrations as fast as they go: the proxy ACKs at once, yet gets at most one
    // instances-only push per 100 ms, each with the newest list whole and the same revision.
    let mut registry = grayline_proto::v1::registry_client::RegistryClient::with_interceptor(
        tonic::transport::Endpoint::from_shared(server.grpc_url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
        grayline_tests::server::Bearer::new(Some(&server.registration_token), None),
    );
    let started = std::time::Instant::now();
    for i in 0..50 {
        registry
            .register(pb::RegisterRequest {
                service: "shop".into(),
                tag: "1.1.2".into(),
                address: format!("10.0.0.{}:80", i + 1),
                metadata: Default::default(),
                ttl_seconds: Some(60),
            })
            .await
            .unwrap();
    }
    let mut pushes = 0;
    let listed = loop {
        let push = next_push(&mut stream, Duration::from_secs(2)).await;
        ack(&tx, &push).await;
        pushes += 1;
        assert!(push.instances_only, "{push:?}");
        assert_eq!(push.revision, revision, "instances make no revision");
        let n = push.instances[0].instances.len();
        if n == 50 {
            break n;
        }
    };
    let took = started.elapsed();
    println!("50 registrations in {took:?} reached the proxy in {pushes} pushes");
    assert_eq!(listed, 50);
    let bound = took.as_millis() as usize / 100 + 2;
    assert!(pushes <= bound, "{pushes} pushes in {took:?}");
}

fn named(name: &str) -> Service {
    let mut s = shop();
    s.name = name.into();
    s.hosts = vec![format!("{name}.example.com")];
    s
}

fn names(services: &[pb::Service]) -> Vec<&str> {
    services.iter().map(|s| s.name.as_str()).collect()
}

#[tokio::test]
async fn an_incremental_proxy_gets_what_changed_and_on_reconnect_what_differs_from_what_it_holds() {
    let server = Server::start();
    for name in ["a", "b", "c", "d"] {
        create(&server, &named(name)).await;
    }
    let hello = |held: Vec<pb::HeldService>| pb::Hello {
        proxy_id: "edge-delta".into(),
        proxy_version: "test".into(),
        incremental: true,
        held,
        ..Default::default()
    };

    // Holding nothing, the first push is the whole catalog.
    let (tx, mut stream) = connect_with(&server, hello(vec![])).await;
    let first = next_push(&mut stream, Duration::from_secs(5)).await;
    assert!(!first.incremental && first.all_instances);
    assert_eq!(names(&first.services), ["a", "b", "c", "d"]);
    ack(&tx, &first).await;

    // A change carries the service changed, and nothing else.
    let p = policy(vec![header_rule("x", "1", "v2")], None);
    let revision = set_policy(&server, "b", &p).await;
    let push = next_push(&mut stream, Duration::from_secs(2)).await;
    assert!(push.incremental && !push.all_instances, "{push:?}");
    assert_eq!(
        (push.revision, names(&push.services)),
        (revision, vec!["b"])
    );
    assert!(push.removed.is_empty());
    assert_eq!(from_pb(push.services.first().cloned()).policy, p);
    ack(&tx, &push).await;

    // A deletion carries the name alone; a creation the new service.
    delete(&server, "c").await;
    let push = next_push(&mut stream, Duration::from_secs(2)).await;
    assert!(push.incremental && push.services.is_empty());
    assert_eq!(push.removed, ["c"]);
    ack(&tx, &push).await;
    create(&server, &named("e")).await;
    let push = next_push(&mut stream, Duration::from_secs(2)).await;
    assert_eq!((push.incremental, names(&push.services)), (true, vec!["e"]));
    ack(&tx, &push).await;

    // After a NACK the proxy serves something older than the session sent: the next push
    // is whole.
    set_policy(&server, "a", &p).await;
    let push = next_push(&mut stream, Duration::from_secs(2)).await;
    assert_eq!(names(&push.services), ["a"]);
    tx.send(pb::ProxyMessage {
        kind: Some(Kind::Nack(pb::Nack {
            nonce: push.nonce.clone(),
            revision: push.revision,
            error: "services[a]: cannot apply".into(),
        })),
    })
    .await
    .unwrap();
    no_push(&mut stream).await;
    set_policy(&server, "d", &p).await;
    let push = next_push(&mut stream, Duration::from_secs(2)).await;
    assert!(!push.incremental, "{push:?}");
    assert_eq!(names(&push.services), ["a", "b", "d", "e"]);
    ack(&tx, &push).await;
    drop((tx, stream));

    // Reconnecting holding a, d and e as they are now, b as before its change, c (deleted
    // since) and an unknown one: the first push carries b, and removes c and the unknown
    // one.
    let digest_of = |name: &str, s: &Service| pb::HeldService {
        name: name.into(),
        digest: grayline_proto::digest(s),
    };
    let with_p = |name: &str| {
        let mut s = named(name);
        s.policy = p.clone();
        s
    };
    let held = vec![
        digest_of("a", &with_p("a")),
        digest_of("b", &named("b")),
        digest_of("c", &named("c")),
        digest_of("d", &with_p("d")),
        digest_of("e", &named("e")),
        digest_of("zz", &named("zz")),
    ];
    // Sent in parts, as a proxy holding thousands sends it.
    let (first, parts) = grayline_proto::parts::held_parts(held.clone(), 40);
    assert!(parts.len() >= 2, "{} parts", parts.len());
    let mut hello_in_parts = hello(first);
    hello_in_parts.held_more = true;
    // A Hello that says more follows, and then something else: refused.
    let (_, refused) = open_with(
        &server,
        hello_in_parts.clone(),
        vec![Kind::Ack(pb::Ack::default())],
    )
    .await;
    let refused = refused.expect_err("a Hello whose held list does not follow");
    // A held service without a name: refused, naming the field.
    let mut nameless = hello(vec![pb::HeldService {
        name: String::new(),
        digest: 1,
    }]);
    nameless.proxy_id = "edge-nameless".into();
    let (_, bad) = open_with(&server, nameless, Vec::new()).await;
    let bad = bad.expect_err("a held service without a name");
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().starts_with("hello.held.name"), "{bad:?}");
    assert!(
        proxy_status(&server, "edge-nameless").await.is_err(),
        "nothing recorded"
    );
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(refused.message().contains("must be Held"), "{refused:?}");
    let (tx, stream) = open_with(
        &server,
        hello_in_parts,
        parts.into_iter().map(Kind::Held).collect(),
    )
    .await;
    let mut stream = stream.expect("open stream");
    let push = next_push(&mut stream, Duration::from_secs(5)).await;
    assert!(push.incremental && push.all_instances, "{push:?}");
    assert_eq!(names(&push.services), ["b"]);
    assert_eq!(push.removed, ["c", "zz"]);
    ack(&tx, &push).await;
    eventually(
        "the reconnected proxy's ACK shows",
        Duration::from_secs(5),
        || async {
            let s = proxy_status(&server, "edge-delta").await?;
            (s.connected && s.applied_revision == push.revision)
                .then_some(())
                .ok_or(format!("{s:?}"))
        },
    )
    .await;
}

#[tokio::test]
async fn a_large_push_comes_in_parts_only_to_a_proxy_that_takes_them() {
    let server = Server::start();
    for i in 0..120 {
        create(&server, &named(&format!("service-{i:03}"))).await;
    }
    // An older proxy (no `incremental`) takes the whole catalog in one push.
    let (_old_tx, mut old) = connect(&server, "edge-old", &[]).await;
    let whole = next_push(&mut old, Duration::from_secs(5)).await;
    assert_eq!((whole.services.len(), whole.more), (120, false));

    // A current one takes it in parts, one nonce, joined into the same services.
    let (tx, mut new) = connect_with(
        &server,
        pb::Hello {
            proxy_id: "edge-new".into(),
            proxy_version: "test".into(),
            incremental: true,
            ..Default::default()
        },
    )
    .await;
    let mut begun = None;
    let mut parts = 0;
    let joined = loop {
        let part = next_push(&mut new, Duration::from_secs(5)).await;
        parts += 1;
        if let Some(push) = grayline_proto::parts::join(&mut begun, part) {
            break push;
        }
    };
    assert!(parts >= 2, "{parts} parts");
    assert_eq!(names(&joined.services), names(&whole.services));
    ack(&tx, &joined).await;
    eventually(
        "the joined push is ACKed",
        Duration::from_secs(5),
        || async {
            let s = proxy_status(&server, "edge-new").await?;
            (s.applied_revision == joined.revision)
                .then_some(())
                .ok_or(format!("{s:?}"))
        },
    )
    .await;
}
