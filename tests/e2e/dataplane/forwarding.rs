//! What a proxied request looks like to the upstream: hop-by-hop headers (and those the
//! client's `Connection` names) end at the proxy, the forwarding headers are added or
//! extended, and everything else goes through as sent.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use grayline_tests::{Proxy, Server};

use crate::fixtures::*;

/// Sends `head` (a whole HTTP/1.1 request head, `Connection: close` included) and reads the
/// answer to its end.
async fn raw(proxy: &Proxy, head: &str) -> String {
    let addr = proxy
        .url("")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    conn.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn the_upstream_sees_the_request_without_its_hop_by_hop_headers_and_with_forwarding_headers()
{
    let server = Server::start();
    let (v1, proxy) = shop_of_one_version_on_a_proxy(&server).await;

    let answer = raw(
        &proxy,
        "GET /first HTTP/1.1\r\nHost: shop.example\r\nConnection: close, x-secret\r\n\
         X-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nUpgrade: h2c\r\n\
         Proxy-Authorization: Basic Zm9vOmJhcg==\r\nX-Forwarded-For: 10.0.0.9\r\n\
         X-Kept: yes\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // `Connection: host` would take the Host header away with it; the upstream still gets
    // one. And without a prior `X-Forwarded-For` the proxy starts the list.
    let answer = raw(
        &proxy,
        "GET /second HTTP/1.1\r\nHost: shop.example\r\nConnection: close, host\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let seen = v1.requests().await;
    let first = seen.iter().find(|r| r["path"] == "/first").expect("first");
    let h = &first["headers"];
    for gone in [
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(
            h.get(gone).is_none(),
            "{gone} reached the upstream: {first}"
        );
    }
    assert_eq!(h["x-kept"], "yes", "{first}");
    assert_eq!(h["host"], "shop.example", "{first}");
    assert_eq!(h["x-forwarded-for"], "10.0.0.9, 127.0.0.1", "{first}");
    assert_eq!(h["x-forwarded-host"], "shop.example", "{first}");
    assert_eq!(h["x-forwarded-proto"], "http", "{first}");
    assert_eq!(h["x-grayline-version"], "v1", "{first}");

    let second = seen
        .iter()
        .find(|r| r["path"] == "/second")
        .expect("second");
    let h = &second["headers"];
    assert_eq!(h["host"], "shop.example", "{second}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{second}");
    assert!(h.get("connection").is_none(), "{second}");
}
