//! `grayline instances`, `register` and `deregister`: the instance registry from the
//! command line.

use std::time::Duration;

use grayline_proto::v1 as pb;
use grayline_routing::api::InstanceView;
use serde::Serialize;

use crate::args::{Output, RegisterArgs};
use crate::connect::Connection;
use crate::exit::{Failure, Result};
use crate::output::{self, Table};
use crate::wire;

pub async fn list(c: &mut Connection, service: Option<&str>, format: Output) -> Result<()> {
    let listed = c
        .registry
        .list_instances(pb::ListInstancesRequest {
            service: service.unwrap_or_default().to_string(),
        })
        .await?
        .into_inner();
    let instances: Vec<InstanceView> = listed
        .instances
        .into_iter()
        .map(InstanceView::from)
        .collect();
    output::print(format, &instances, || {
        let mut t = Table::new(&[
            "SERVICE",
            "TAG",
            "ADDRESS",
            "VERSIONS",
            "EJECTED BY",
            "REGISTERED BY",
            "TTL",
            "LAST RENEWED (UTC)",
            "METADATA",
        ]);
        for i in &instances {
            t.row(vec![
                i.service.clone(),
                i.tag.clone(),
                i.address.clone(),
                if i.versions.is_empty() {
                    "none (no traffic)".into()
                } else {
                    i.versions.join(",")
                },
                i.ejected_by.join(","),
                i.registered_by.clone(),
                format!("{} s", i.ttl_seconds),
                wire::time(i.last_renewed_unix_ms),
                i.metadata
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ]);
        }
        t.render()
    })
}

#[derive(Debug, Serialize)]
struct Registered {
    service: String,
    address: String,
    ttl_seconds: u32,
    warning: String,
}

pub async fn register(c: &mut Connection, r: &RegisterArgs, format: Output) -> Result<()> {
    let mut metadata = std::collections::HashMap::new();
    for m in &r.metadata {
        let Some((k, v)) = m.split_once('=') else {
            return Err(Failure::invalid(format!(
                "--meta `{m}`: give it as key=value"
            )));
        };
        metadata.insert(k.to_string(), v.to_string());
    }
    let request = pb::RegisterRequest {
        service: r.service.clone(),
        tag: r.tag.clone(),
        address: r.address.clone(),
        metadata,
        ttl_seconds: Some(r.ttl),
    };
    let done = c.registry.register(request.clone()).await?.into_inner();
    let shown = Registered {
        service: r.service.clone(),
        address: r.address.clone(),
        ttl_seconds: done.ttl_seconds,
        warning: done.warning.clone(),
    };
    output::print(format, &shown, || {
        let mut text = format!(
            "registered {} of {} (TTL {} s)",
            r.address, r.service, done.ttl_seconds
        );
        if !done.warning.is_empty() {
            text.push_str(&format!("\nwarning: {}", done.warning));
        }
        if !r.once {
            text.push_str("\nrenewing until interrupted (Ctrl-C deregisters it)");
        }
        text
    })?;
    if r.once {
        return Ok(());
    }
    let every = Duration::from_secs(u64::from(done.ttl_seconds.max(1))) / 3;
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(300)));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // A renewal is the registration again: it comes back after an expiry too.
                if let Err(status) = c.registry.register(request.clone()).await {
                    eprintln!("renewal failed: {}; trying again", status.message());
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let key = pb::InstanceKey {
        service: r.service.clone(),
        address: r.address.clone(),
    };
    c.registry.deregister(key).await?;
    eprintln!("deregistered {} of {}", r.address, r.service);
    Ok(())
}

pub async fn deregister(
    c: &mut Connection,
    service: &str,
    address: &str,
    format: Output,
) -> Result<()> {
    let removed = c
        .registry
        .deregister(pb::InstanceKey {
            service: service.to_string(),
            address: address.to_string(),
        })
        .await?
        .into_inner()
        .removed;
    #[derive(Serialize)]
    struct Removed {
        removed: bool,
    }
    output::print(format, &Removed { removed }, || {
        if removed {
            format!("deregistered {address} of {service}")
        } else {
            format!("{address} of {service} was not registered")
        }
    })
}
