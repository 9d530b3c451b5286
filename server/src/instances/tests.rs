use grayline_routing::api::Action;
use grayline_routing::{Service, Version};

use super::*;
use crate::store::{Change, WriteContext};

/// A sled store holding service `shop` (v1 fixed, v2 tagged `1.1.2`), and its registry.
async fn registry(dir: &std::path::Path) -> (Arc<Store>, Arc<Instances>) {
    let store = Arc::new(crate::store::when_free(|| Store::open(dir)).unwrap());
    if store.get("shop").is_none() {
        let mut shop = Service::single("shop", Version::new("v1", &["127.0.0.1:9000"]));
        shop.versions.push(Version::tagged("v2", "1.1.2"));
        store
            .write("shop", &WriteContext::default(), |_| {
                Ok(Change {
                    action: Action::Create,
                    after: Some(shop.clone()),
                    summary: "created".into(),
                })
            })
            .await
            .unwrap();
    }
    let keep = Keep::Sled {
        tree: store.tree("instances").unwrap(),
        durable: store.durable().unwrap(),
    };
    let instances = Instances::open(store.clone(), keep).await.unwrap();
    (store, instances)
}

fn registration(tag: &str, address: &str, ttl: u32) -> Registration {
    Registration {
        service: "shop".into(),
        tag: tag.into(),
        address: address.into(),
        metadata: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        ttl_seconds: Some(ttl),
    }
}

fn published(i: &Instances) -> Vec<(String, String)> {
    i.subscribe()
        .borrow()
        .get("shop")
        .map(|l| l.instances.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn registered_renewed_expired_and_published_without_a_revision() {
    let dir = tempfile::tempdir().unwrap();
    let (store, instances) = registry(dir.path()).await;
    let revision = store.catalog().revision;
    let done = instances
        .register(registration("1.1.2", "127.0.0.1:9002", 5), "registration")
        .await
        .unwrap();
    assert_eq!(done.ttl_seconds, 5);
    assert!(done.warning.is_empty(), "{}", done.warning);
    let first = instances.subscribe().borrow().get("shop").unwrap().epoch;
    assert_eq!(
        published(&instances),
        [("1.1.2".into(), "127.0.0.1:9002".into())]
    );
    assert_eq!(
        store.catalog().revision,
        revision,
        "no revision for an instance"
    );

    // A renewal changes nothing published; a new tag does.
    instances
        .register(registration("1.1.2", "127.0.0.1:9002", 5), "registration")
        .await
        .unwrap();
    assert_eq!(
        instances.subscribe().borrow().get("shop").unwrap().epoch,
        first
    );
    let unselected = instances
        .register(registration("1.1.3", "127.0.0.1:9003", 10), "registration")
        .await
        .unwrap();
    assert!(
        unselected
            .warning
            .contains("no version of `shop` takes instances tagged `1.1.3`"),
        "{}",
        unselected.warning
    );
    assert_eq!(instances.list(Some("shop")).len(), 2);

    // Not renewed: expired at its deadline, not before.
    let now = now_unix_ms();
    instances.expire(now + 4_000).await.unwrap();
    assert_eq!(instances.list(None).len(), 2);
    instances
        .keep_alive("shop", "127.0.0.1:9003")
        .await
        .unwrap();
    let due = instances.list(None)[0].expires_unix_ms();
    assert!(instances.list(None)[1].expires_unix_ms() > due + 4_000);
    instances.expire(due).await.unwrap();
    assert_eq!(
        instances.list(None).len(),
        1,
        "9002 expired, 9003 renewed later"
    );
    assert_eq!(
        published(&instances),
        [("1.1.3".into(), "127.0.0.1:9003".into())]
    );
    let err = instances
        .keep_alive("shop", "127.0.0.1:9002")
        .await
        .unwrap_err();
    assert!(matches!(err, ApiError::NotFound(_)), "{err}");

    assert!(
        instances
            .deregister("shop", "127.0.0.1:9003")
            .await
            .unwrap()
    );
    assert!(
        !instances
            .deregister("shop", "127.0.0.1:9003")
            .await
            .unwrap()
    );
    assert!(instances.subscribe().borrow().get("shop").is_none());
}

#[tokio::test]
async fn registrations_outlive_a_restart_and_get_a_ttl_from_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (_store, instances) = registry(dir.path()).await;
        for port in [9001, 9002] {
            instances
                .register(
                    registration("1.1.2", &format!("127.0.0.1:{port}"), 30),
                    "proxy edge",
                )
                .await
                .unwrap();
        }
        instances
            .deregister("shop", "127.0.0.1:9001")
            .await
            .unwrap();
    }
    let before = now_unix_ms();
    let (_store, instances) = registry(dir.path()).await;
    let listed = instances.list(None);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].record.address, "127.0.0.1:9002");
    assert_eq!(listed[0].record.registered_by, "proxy edge");
    assert!(listed[0].expires_unix_ms() >= before + 30_000);
    assert_eq!(published(&instances).len(), 1);
}

#[tokio::test]
async fn bad_registrations_are_refused_naming_the_field_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, instances) = registry(dir.path()).await;
    let cases: Vec<(Registration, &str)> = vec![
        (
            Registration {
                service: "nope".into(),
                ..registration("1.1.2", "127.0.0.1:1", 5)
            },
            "no service `nope`",
        ),
        (registration("bad tag", "127.0.0.1:1", 5), "tag"),
        (registration("1.1.2", "no-port", 5), "address"),
        (registration("1.1.2", "0.0.0.0:80", 5), "wildcard"),
        (registration("1.1.2", "127.0.0.1:1", 0), "ttl_seconds"),
        (registration("1.1.2", "127.0.0.1:1", 3601), "ttl_seconds"),
        (
            Registration {
                metadata: BTreeMap::from([("a b".to_string(), "x".to_string())]),
                ..registration("1.1.2", "127.0.0.1:1", 5)
            },
            "metadata.a b",
        ),
    ];
    for (r, expected) in cases {
        let err = instances
            .register(r.clone(), "registration")
            .await
            .unwrap_err();
        let text = match &err {
            ApiError::Invalid(i) => format!("{}: {}", i.errors[0].field, i.errors[0].message),
            other => other.to_string(),
        };
        assert!(text.contains(expected), "{r:?}: {text}");
    }
    assert!(instances.list(None).is_empty());
    assert!(instances.subscribe().borrow().is_empty());
}

#[tokio::test]
async fn a_service_holds_at_most_its_share_of_instances() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, instances) = registry(dir.path()).await;
    for i in 0..MAX_PER_SERVICE {
        let address = format!("10.0.{}.{}:80", i / 250, i % 250 + 1);
        instances
            .register(registration("1.1.2", &address, 30), "registration")
            .await
            .unwrap();
    }
    let err = instances
        .register(registration("1.1.2", "10.9.9.9:80", 30), "registration")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("the most one service may have"),
        "{err}"
    );
    // Renewing one already registered is still fine.
    instances
        .register(registration("1.1.2", "10.0.0.1:80", 30), "registration")
        .await
        .unwrap();
    assert_eq!(instances.list(None).len(), MAX_PER_SERVICE);
}
