//! Traffic mirroring: which share of a route's requests is copied to which version, checked
//! and compiled once, and sampled per request with bits of the random number the split does
//! not use. The bounds every mirror target's copies are held to ([`MirrorLimits`]) are
//! checked here too.

use std::collections::HashMap;

use crate::invalid::FieldError;
use crate::limits::{MAX_MIRROR_BODY_BYTES, MAX_MIRROR_IN_FLIGHT, TOTAL_WEIGHT};
use crate::model::{Mirror, MirrorLimits, Service};

/// A checked mirror: the version index and the share in basis points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompiledMirror {
    pub version: usize,
    pub weight: u32,
}

impl CompiledMirror {
    /// Checks `mirror` (at `path`, e.g. `policy.rules[0].mirror`).
    pub(crate) fn compile(
        mirror: &Mirror,
        index: &HashMap<&str, usize>,
        path: &str,
        errors: &mut Vec<FieldError>,
    ) -> Option<CompiledMirror> {
        let version = index.get(mirror.version.as_str()).copied();
        if version.is_none() {
            let mut known: Vec<(&str, usize)> = index.iter().map(|(k, v)| (*k, *v)).collect();
            known.sort_by_key(|(_, i)| *i);
            let known: Vec<&str> = known.into_iter().map(|(k, _)| k).collect();
            errors.push(FieldError::new(
                format!("{path}.version"),
                if mirror.version.is_empty() {
                    "a mirror must name the version its copies go to".to_string()
                } else {
                    format!(
                        "unknown version `{}`; the service has {}",
                        mirror.version,
                        known.join(", ")
                    )
                },
            ));
        }
        if mirror.weight > TOTAL_WEIGHT {
            errors.push(FieldError::new(
                format!("{path}.weight"),
                format!(
                    "{} is out of range; a mirror copies 0 to 10000 basis points (100 %) of the \
                     route's requests",
                    mirror.weight
                ),
            ));
            return None;
        }
        Some(CompiledMirror {
            version: version?,
            weight: mirror.weight,
        })
    }

    /// Whether a request decided with `random` and sent to `served` is copied: never to the
    /// version that serves it anyway. The sample uses the random number's high bits; the
    /// split's bucket uses its remainder modulo 10000, so the two are independent.
    pub fn sample(&self, served: usize, random: u64) -> Option<usize> {
        let roll = ((random >> 32) % u64::from(TOTAL_WEIGHT)) as u32;
        (self.version != served && roll < self.weight).then_some(self.version)
    }
}

/// Checks every version's `mirror_limits`.
pub(crate) fn check_limits(service: &Service, errors: &mut Vec<FieldError>) {
    let defaults = MirrorLimits::default();
    for (i, v) in service.versions.iter().enumerate() {
        let l = &v.mirror_limits;
        if *l == defaults {
            continue;
        }
        let path = format!("versions[{i}].mirror_limits");
        if l.max_in_flight == 0 || l.max_in_flight > MAX_MIRROR_IN_FLIGHT {
            errors.push(FieldError::new(
                format!("{path}.max_in_flight"),
                format!(
                    "{} is out of range; allowed 1 to {MAX_MIRROR_IN_FLIGHT}",
                    l.max_in_flight
                ),
            ));
        }
        if l.max_body_bytes > MAX_MIRROR_BODY_BYTES {
            errors.push(FieldError::new(
                format!("{path}.max_body_bytes"),
                format!(
                    "{} is out of range; allowed 0 to {MAX_MIRROR_BODY_BYTES} (16 MiB)",
                    l.max_body_bytes
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_its_share_and_never_the_served_version() {
        let m = CompiledMirror {
            version: 1,
            weight: 2500,
        };
        let copied = (0..40_000u64)
            .filter(|i| m.sample(0, i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).is_some())
            .count();
        // 25 % of 40000: mean 10000, sd 87; accept ±5 sd.
        assert!((9565..=10435).contains(&copied), "{copied}");
        assert!((0..1000u64).all(|i| m.sample(1, i << 32).is_none()));
        let all = CompiledMirror {
            version: 1,
            weight: 10_000,
        };
        assert!((0..1000u64).all(|i| all.sample(0, i.wrapping_mul(0x9E37_79B9)).is_some()));
        let none = CompiledMirror {
            version: 1,
            weight: 0,
        };
        assert!((0..1000u64).all(|i| none.sample(0, i << 32).is_none()));
    }
}
