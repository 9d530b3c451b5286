//! Property tests of the split semantics every proxy relies on.

use grayline_routing::request::RequestFacts;
use grayline_routing::*;
use proptest::prelude::*;

fn service_with(n: usize, weights: &[u32], sticky: Option<StickyKey>) -> Service {
    let versions: Vec<Version> = (0..n)
        .map(|i| Version::new(&format!("v{i}"), &[&format!("127.0.0.1:{}", 9000 + i)]))
        .collect();
    let mut s = Service::single("svc", versions[0].clone());
    s.versions = versions;
    s.policy.default_route = Some(Route::Split(Split {
        weights: weights
            .iter()
            .enumerate()
            .map(|(i, &w)| Weight {
                version: format!("v{i}"),
                weight: w,
            })
            .collect(),
        sticky,
    }));
    s
}

/// `n` weights summing to 10000.
fn weights(n: usize) -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..=10_000, n - 1).prop_map(move |mut cuts| {
        cuts.push(0);
        cuts.push(10_000);
        cuts.sort();
        cuts.windows(2).map(|w| w[1] - w[0]).collect()
    })
}

fn user(id: u64) -> RequestFacts {
    RequestFacts::default().with_cookie("uid", &format!("user-{id}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Over every bucket, each version gets exactly its weight; over random draws, the
    /// observed shares converge to the weights.
    #[test]
    fn weighted_split_converges(w in (2usize..6).prop_flat_map(weights), seed in any::<u64>()) {
        let n = w.len();
        let c = CompiledService::compile(&service_with(n, &w, None)).unwrap();
        let mut exact = vec![0u32; n];
        for bucket in 0..10_000u64 {
            exact[c.decide(&RequestFacts::default(), bucket).version] += 1;
        }
        prop_assert_eq!(&exact, &w);

        let draws = 40_000u64;
        let mut rng = fastrand_like(seed);
        let mut seen = vec![0u64; n];
        for _ in 0..draws {
            seen[c.decide(&RequestFacts::default(), rng()).version] += 1;
        }
        for (i, &weight) in w.iter().enumerate() {
            let p = f64::from(weight) / 10_000.0;
            let expected = p * draws as f64;
            let sd = (draws as f64 * p * (1.0 - p)).sqrt();
            // Six standard deviations (plus one request for the p = 0 and p = 1 edges).
            prop_assert!((seen[i] as f64 - expected).abs() <= 6.0 * sd + 1.0,
                "version {i}: weight {weight}, saw {} of {draws}", seen[i]);
        }
    }

    /// Raising a version's weight at the expense of any other version never moves one of its
    /// users off it; when the donor is its neighbour in the version order, the only users who
    /// move at all are those who move onto it.
    #[test]
    fn raising_a_weight_keeps_its_users(w in weights(4), k in 0usize..4, j in 0usize..4, frac in 0.0f64..=1.0) {
        prop_assume!(k != j && w[j] > 0);
        let d = ((f64::from(w[j]) * frac) as u32).max(1);
        let mut raised = w.clone();
        raised[j] -= d;
        raised[k] += d;
        let key = Some(StickyKey::Cookie("uid".into()));
        let before = CompiledService::compile(&service_with(4, &w, key.clone())).unwrap();
        let after = CompiledService::compile(&service_with(4, &raised, key)).unwrap();
        let neighbours = k.abs_diff(j) == 1;
        for id in 0..2_000 {
            let req = user(id);
            let (a, b) = (before.decide(&req, 0).version, after.decide(&req, 0).version);
            if a == k {
                prop_assert_eq!(b, k, "user {} left the raised version", id);
            }
            if neighbours && a != b {
                prop_assert_eq!(b, k, "user {} moved from v{} to v{}, not onto v{}", id, a, b, k);
            }
        }
    }

    /// Two engines compiled separately (two proxies, or a proxy and the console) give every
    /// user the same version, whatever their random numbers.
    #[test]
    fn every_engine_agrees(w in weights(3), id in any::<u64>(), r1 in any::<u64>(), r2 in any::<u64>()) {
        let key = Some(StickyKey::Header("x-user".into()));
        let one = CompiledService::compile(&service_with(3, &w, key.clone())).unwrap();
        let two = CompiledService::compile(&service_with(3, &w, key)).unwrap();
        let req = RequestFacts::default().with_header("X-User", &id.to_string());
        prop_assert_eq!(one.decide(&req, r1).version, two.decide(&req, r2).version);
    }
}

/// A small deterministic generator (SplitMix64) so the property test needs no extra crate.
fn fastrand_like(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}
