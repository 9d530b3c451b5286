//! A config push cut into parts and put together again (see `ConfigPush.more`).

use prost::Message as _;

use crate::v1::ConfigPush;

/// About how many bytes of services, instance lists and removals a part carries.
pub const PART_BYTES: usize = 16 * 1024;

/// Cuts `push` into parts of about `limit` bytes each (one part when it is smaller; a
/// single larger item makes a part of its own). Every part repeats the push's revision,
/// nonce and flags; all but the last say `more`.
pub fn split(push: ConfigPush, limit: usize) -> Vec<ConfigPush> {
    if push.encoded_len() <= limit {
        return vec![push];
    }
    let empty = ConfigPush {
        services: Vec::new(),
        instances: Vec::new(),
        removed: Vec::new(),
        more: true,
        ..push.clone()
    };
    let mut parts = vec![empty.clone()];
    let mut size = 0;
    // Starts a new part unless `bytes` more fit in the last one.
    let mut room = |parts: &mut Vec<ConfigPush>, bytes: usize| {
        if size > 0 && size + bytes > limit {
            parts.push(empty.clone());
            size = 0;
        }
        size += bytes;
    };
    for s in push.services {
        room(&mut parts, s.encoded_len());
        parts.last_mut().expect("a part").services.push(s);
    }
    for i in push.instances {
        room(&mut parts, i.encoded_len());
        parts.last_mut().expect("a part").instances.push(i);
    }
    for r in push.removed {
        room(&mut parts, r.len() + 2);
        parts.last_mut().expect("a part").removed.push(r);
    }
    if let Some(last) = parts.last_mut() {
        last.more = false;
    }
    parts
}

/// Cuts what a proxy holds into a Hello's share and the `Held` parts that follow it, each
/// of about `limit` bytes.
pub fn held_parts(
    mut held: Vec<crate::v1::HeldService>,
    limit: usize,
) -> (Vec<crate::v1::HeldService>, Vec<crate::v1::Held>) {
    let mut parts: Vec<Vec<crate::v1::HeldService>> = vec![Vec::new()];
    let mut size = 0;
    for h in held.drain(..) {
        let bytes = h.encoded_len() + 2;
        if size > 0 && size + bytes > limit {
            parts.push(Vec::new());
            size = 0;
        }
        size += bytes;
        parts.last_mut().expect("a part").push(h);
    }
    let mut parts = parts.into_iter();
    let first = parts.next().unwrap_or_default();
    let rest: Vec<Vec<crate::v1::HeldService>> = parts.collect();
    let n = rest.len();
    let rest = rest
        .into_iter()
        .enumerate()
        .map(|(i, services)| crate::v1::Held {
            services,
            more: i + 1 < n,
        })
        .collect();
    (first, rest)
}

/// Adds `part` to the push being put together (`None` to start one). `Some` when it is
/// whole; a part of another push than the one begun (another nonce) starts afresh, as the
/// server never interleaves two pushes.
pub fn join(begun: &mut Option<ConfigPush>, part: ConfigPush) -> Option<ConfigPush> {
    let whole = match begun.take() {
        Some(mut push) if push.nonce == part.nonce => {
            push.services.extend(part.services);
            push.instances.extend(part.instances);
            push.removed.extend(part.removed);
            push.more = part.more;
            push
        }
        _ => part,
    };
    if whole.more {
        *begun = Some(whole);
        return None;
    }
    Some(whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Instance, Service, ServiceInstances};

    fn push(services: usize) -> ConfigPush {
        ConfigPush {
            revision: 9,
            nonce: "n".into(),
            services: (0..services)
                .map(|i| Service {
                    name: format!("service-{i:04}"),
                    hosts: vec![format!("service-{i:04}.example.com"); 4],
                    ..Default::default()
                })
                .collect(),
            instances: (0..50)
                .map(|i| ServiceInstances {
                    service: format!("service-{i:04}"),
                    instances: vec![Instance {
                        tag: "t".into(),
                        address: "10.0.0.1:80".into(),
                    }],
                })
                .collect(),
            removed: (0..30).map(|i| format!("gone-{i}")).collect(),
            incremental: true,
            ..Default::default()
        }
    }

    #[test]
    fn a_small_push_is_one_part() {
        let p = push(3);
        assert_eq!(split(p.clone(), PART_BYTES), [p]);
    }

    #[test]
    fn parts_are_about_the_limit_and_join_into_the_push() {
        let whole = push(2000);
        let parts = split(whole.clone(), PART_BYTES);
        assert!(parts.len() > 10, "{} parts", parts.len());
        for (i, part) in parts.iter().enumerate() {
            assert!(
                part.encoded_len() <= PART_BYTES + 512,
                "part {i}: {}",
                part.encoded_len()
            );
            assert_eq!(part.more, i + 1 < parts.len());
            assert_eq!(
                (part.revision, &part.nonce, part.incremental),
                (9, &whole.nonce, true)
            );
        }
        let mut begun = None;
        let mut joined = None;
        for part in parts {
            assert!(joined.is_none(), "whole before the last part");
            joined = join(&mut begun, part);
        }
        assert_eq!(joined, Some(whole));
        assert!(begun.is_none());
    }

    #[test]
    fn what_a_proxy_holds_is_cut_into_parts_and_all_of_it_arrives() {
        let held: Vec<crate::v1::HeldService> = (0..3000)
            .map(|i| crate::v1::HeldService {
                name: format!("service-{i:05}"),
                digest: i,
            })
            .collect();
        let (first, rest) = held_parts(held.clone(), PART_BYTES);
        assert!(rest.len() >= 3, "{} parts", rest.len());
        assert!(first.iter().map(|h| h.encoded_len() + 2).sum::<usize>() <= PART_BYTES);
        assert!(rest.iter().all(|p| p.encoded_len() <= PART_BYTES + 64));
        assert_eq!(rest.iter().filter(|p| !p.more).count(), 1);
        assert!(!rest.last().unwrap().more);
        let mut all = first;
        all.extend(rest.into_iter().flat_map(|p| p.services));
        assert_eq!(all, held);
        let (first, rest) = held_parts(held[..10].to_vec(), PART_BYTES);
        assert_eq!((first.len(), rest.len()), (10, 0));
    }

    #[test]
    fn a_part_of_another_push_starts_afresh() {
        let mut parts = split(push(2000), PART_BYTES);
        let mut begun = None;
        assert!(join(&mut begun, parts.remove(0)).is_none());
        let other = ConfigPush {
            nonce: "m".into(),
            ..push(1)
        };
        assert_eq!(join(&mut begun, other.clone()), Some(other));
    }
}
