//! gRPC through the proxy to a real tonic upstream (the demo upstream's `grayline.v1.Demo`):
//! unary, server-streaming and bidirectional calls pass through with their trailers, a
//! header rule on the call's metadata sends it to the canary, and a failing canary's
//! `grpc-status` errors count as errors in its statistics and for its breaker.

use std::time::Duration;

use grayline_proto::v1 as pb;
use grayline_proto::v1::demo_client::DemoClient;
use grayline_routing::*;
use grayline_tests::{Proxy, Server, Upstream, eventually};
use tonic::Code;
use tonic::transport::Channel;

use crate::fixtures::*;

async fn client(proxy: &Proxy) -> DemoClient<Channel> {
    DemoClient::connect(format!("http://{}", proxy.addr))
        .await
        .expect("connect to the proxy")
}

fn hello(name: &str, canary: bool) -> tonic::Request<pb::HelloRequest> {
    let mut req = tonic::Request::new(pb::HelloRequest { name: name.into() });
    if canary {
        req.metadata_mut().insert("x-canary", "1".parse().unwrap());
    }
    req
}

#[tokio::test]
async fn grpc_calls_are_routed_by_metadata_streamed_and_judged_by_grpc_status() {
    let server = Server::start();
    let (v1, v2) = (Upstream::start("v1"), Upstream::start("v2"));
    let mut s = Service::single("shop", Version::new("v1", &[&v1.endpoint()]));
    s.versions[0].protocol = Protocol::H2c;
    let mut canary = Version::new("v2", &[&v2.endpoint()]);
    canary.protocol = Protocol::Auto;
    canary.breaker.request_volume = 10;
    canary.breaker.error_threshold_percent = 50;
    canary.breaker.sleep_window_ms = 60_000;
    s.versions.push(canary);
    s.policy.rules = vec![header_rule("x-canary", "1", "v2")];
    let revision = create(&server, &s).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;
    let mut c = client(&proxy).await;

    // Unary: the stable version, or the canary by metadata; the proxy's headers arrive.
    let reply = c
        .hello(hello("ada", false))
        .await
        .expect("unary")
        .into_inner();
    assert_eq!(
        (reply.version.as_str(), reply.message.as_str()),
        ("v1", "hello ada from v1")
    );
    assert_eq!(
        reply.metadata.get("x-grayline-version").map(String::as_str),
        Some("v1")
    );
    let answer = c
        .hello(hello("bob", true))
        .await
        .expect("unary to the canary");
    assert_eq!(
        answer
            .metadata()
            .get("x-grayline-version")
            .and_then(|v| v.to_str().ok()),
        Some("v2"),
        "the response is tagged too"
    );
    assert_eq!(answer.into_inner().version, "v2");

    // Server streaming: every answer, in order, then the OK status from the trailers.
    let mut stream = c
        .countdown(pb::CountdownRequest {
            name: "cy".into(),
            count: 5,
            interval_ms: 20,
        })
        .await
        .expect("stream")
        .into_inner();
    let mut indices = Vec::new();
    while let Some(reply) = stream.message().await.expect("stream message") {
        assert_eq!(reply.version, "v1");
        indices.push(reply.index);
    }
    assert_eq!(indices, [0, 1, 2, 3, 4]);

    // Bidirectional: an answer per message, while the client is still sending.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
    req.metadata_mut().insert("x-canary", "1".parse().unwrap());
    let mut answers = c.chat(req).await.expect("chat").into_inner();
    for name in ["one", "two", "three"] {
        tx.send(pb::HelloRequest { name: name.into() })
            .await
            .unwrap();
        let reply = answers
            .message()
            .await
            .expect("answer")
            .expect("one per message");
        assert_eq!(reply.message, format!("hello {name} from v2"));
    }
    drop(tx);
    assert!(answers.message().await.expect("a clean end").is_none());

    // Everything so far succeeded, as the server counts it.
    eventually("the calls counted", Duration::from_secs(15), || async {
        let (a, b) = (
            version_totals(&server, "v1", false).await,
            version_totals(&server, "v2", false).await,
        );
        (a.requests == 2 && b.requests == 2 && a.status_5xx + b.status_5xx == 0)
            .then_some(())
            .ok_or(format!("v1 {a:?}, v2 {b:?}"))
    })
    .await;

    // The canary fails: statuses pass through, whether in a trailers-only answer (unary)
    // or in the trailers after a message (streaming).
    v2.set_failing(true).await;
    let err = c
        .hello(hello("dan", true))
        .await
        .expect_err("the canary fails");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("v2 is failing on purpose"),
        "{err:?}"
    );
    let mut req = tonic::Request::new(pb::CountdownRequest {
        name: "eve".into(),
        count: 3,
        interval_ms: 0,
    });
    req.metadata_mut().insert("x-canary", "1".parse().unwrap());
    let mut stream = c
        .countdown(req)
        .await
        .expect("the stream starts")
        .into_inner();
    assert_eq!(
        stream.message().await.expect("first answer").unwrap().index,
        0
    );
    let err = stream.message().await.expect_err("then the status");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    // The stable version is not affected.
    assert_eq!(
        c.hello(hello("fay", false))
            .await
            .unwrap()
            .into_inner()
            .version,
        "v1"
    );

    // gRPC errors count as errors: in the statistics, and for the breaker, which opens
    // after its request volume and answers UNAVAILABLE without asking the canary.
    let mut fallbacks = 0;
    for i in 0..30 {
        let err = c.hello(hello(&format!("n{i}"), true)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        if err.message().contains("circuit breaker open") {
            fallbacks += 1;
        }
    }
    assert!(
        fallbacks >= 15,
        "{fallbacks} of 30 calls answered by the open breaker"
    );
    let failed = 2 + (30 - fallbacks);
    eventually(
        "the canary's gRPC errors counted",
        Duration::from_secs(15),
        || async {
            let b = version_totals(&server, "v2", false).await;
            // Fallbacks are the proxy's answers, apart from the version's 5xx.
            (b.grpc_errors == failed && b.status_5xx == failed && b.fallbacks == fallbacks)
                .then_some(())
                .ok_or(format!(
                    "v2 {b:?}, want {failed} gRPC errors and {fallbacks} fallbacks"
                ))
        },
    )
    .await;
    let a = version_totals(&server, "v1", false).await;
    assert_eq!((a.status_5xx, a.grpc_errors), (0, 0));
    let (_, text) = proxy.admin_get("/metrics").await;
    assert!(
        text.contains(&format!(
            "grayline_proxy_grpc_errors_total{{service=\"shop\",version=\"v2\"}} {failed}"
        )),
        "{text}"
    );
}

#[tokio::test]
async fn a_grpc_call_to_a_version_without_http2_gets_a_clear_status() {
    let server = Server::start();
    let (v1, proxy) = shop_of_one_version_on_a_proxy(&server).await;
    let err = client(&proxy)
        .await
        .hello(hello("ada", false))
        .await
        .expect_err("protocol http1");
    assert_eq!(err.code(), Code::Unavailable);
    assert!(
        err.message().contains("set its protocol to h2c or auto"),
        "{err:?}"
    );
    assert_eq!(v1.served().await, 0);
}

#[tokio::test]
async fn an_endpoint_whose_calls_fail_by_grpc_status_is_ejected() {
    let server = Server::start();
    let (good, bad) = (Upstream::start("v1"), Upstream::start("v1"));
    bad.set_failing(true).await;
    let mut v1 = Version::new("v1", &[&good.endpoint(), &bad.endpoint()]);
    v1.protocol = Protocol::H2c;
    v1.breaker.enabled = false;
    v1.outlier_detection.consecutive_failures = 3;
    let revision = create(&server, &Service::single("shop", v1)).await;
    let proxy = Proxy::start(&server, "edge", &[]);
    proxy.wait_revision(revision).await;
    let mut c = client(&proxy).await;

    // Round robin: every other call reaches the failing endpoint until it is out. Its
    // answers are HTTP 200s; only their grpc-status says they failed.
    let mut failed = 0;
    for i in 0..20 {
        if c.hello(hello(&format!("n{i}"), false)).await.is_err() {
            failed += 1;
        }
    }
    assert_eq!(failed, 3, "three failures in a row eject it");
    let config = proxy.config().await;
    let ejected: Vec<&str> = config["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["ejected"].as_bool() == Some(true))
        .filter_map(|e| e["endpoint"].as_str())
        .collect();
    assert_eq!(ejected, [bad.endpoint().as_str()], "{config}");
    for i in 0..10 {
        let reply = c
            .hello(hello(&format!("m{i}"), false))
            .await
            .expect("the good one");
        assert_eq!(reply.into_inner().version, "v1");
    }
}
