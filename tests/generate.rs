//! The generators are uniform: chi-square tests over a fixed-seed generator.
//!
//! The seed is fixed, so each test's outcome is deterministic; the thresholds are the
//! chi-square quantiles for a false-failure rate of 10^-6 per test had the seed been random
//! (df 5: 35.89, df 9: 44.81, df 15: 56.49, df 99: 180.79), so a real bias of the size these
//! tests look for fails them, and a correct generator would pass them for almost every seed.

use lokey::generate::{self, ByteSource};

/// SplitMix64 (Steele, Lea, Flood 2014): a fast, well-mixed test source, not for production.
struct SplitMix(u64);

impl ByteSource for SplitMix {
    type Error = std::convert::Infallible;
    fn fill(&mut self, out: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in out.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
        Ok(())
    }
}

fn chi_square(counts: &[u64], expected: f64) -> f64 {
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

#[test]
fn int_is_uniform_over_a_small_range() {
    let mut src = SplitMix(1);
    let mut counts = [0u64; 6];
    for _ in 0..60_000 {
        counts[(generate::int(&mut src, -3, 2).unwrap() + 3) as usize] += 1;
    }
    assert!(chi_square(&counts, 10_000.0) < 35.89, "{counts:?}");
}

#[test]
fn int_is_uniform_where_modulo_would_be_biased() {
    // n = 3·2^62: x mod n would make the lowest third of values twice as likely.
    let n = 3u64 << 62;
    let mut src = SplitMix(2);
    let mut counts = [0u64; 3];
    for _ in 0..30_000 {
        counts[(generate::below(&mut src, n).unwrap() / (1u64 << 62)) as usize] += 1;
    }
    // df 2 at 10^-6: 27.63.
    assert!(chi_square(&counts, 10_000.0) < 27.63, "{counts:?}");
}

#[test]
fn unique_ints_are_distinct_in_range_and_uniform_in_both_paths() {
    for (min, max, k) in [(0i64, 9i64, 3usize), (0, 9, 8)] {
        // (0..=9, 3): Floyd; (0..=9, 8): partial Fisher–Yates.
        let mut src = SplitMix(3);
        let mut first = [0u64; 10];
        for _ in 0..50_000 {
            let v = generate::unique_ints(&mut src, min, max, k).unwrap();
            assert_eq!(v.len(), k);
            let mut sorted = v.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), k, "duplicates in {v:?}");
            assert!(v.iter().all(|x| (min..=max).contains(x)));
            first[v[0] as usize] += 1;
        }
        // The first element is uniform over the range only if the order is random too.
        assert!(chi_square(&first, 5_000.0) < 44.81, "k={k}: {first:?}");
    }
}

#[test]
fn unique_ints_from_a_huge_range_is_cheap_and_distinct() {
    let mut src = SplitMix(4);
    let v = generate::unique_ints(&mut src, i64::MIN, i64::MAX, 100_000).unwrap();
    let mut sorted = v.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), 100_000);
}

#[test]
fn shuffle_makes_every_permutation_of_three_equally_likely() {
    let mut src = SplitMix(5);
    let mut counts = [0u64; 6];
    for _ in 0..60_000 {
        let mut v = [0u8, 1, 2];
        generate::shuffle(&mut src, &mut v).unwrap();
        let index = match v {
            [0, 1, 2] => 0,
            [0, 2, 1] => 1,
            [1, 0, 2] => 2,
            [1, 2, 0] => 3,
            [2, 0, 1] => 4,
            _ => 5,
        };
        counts[index] += 1;
    }
    assert!(chi_square(&counts, 10_000.0) < 35.89, "{counts:?}");
}

#[test]
fn sample_returns_k_distinct_items() {
    let mut src = SplitMix(6);
    let items: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
    let picked = generate::sample(&mut src, &items, 5).unwrap();
    assert_eq!(picked.len(), 5);
    assert!(picked.iter().all(|p| items.contains(p)));
    let mut d = picked.clone();
    d.sort();
    d.dedup();
    assert_eq!(d.len(), 5);
    assert!(generate::sample(&mut src, &items, 21).is_err());
}

#[test]
fn decimal_fractions_have_exact_places_and_uniform_last_digits() {
    let mut src = SplitMix(7);
    let mut last = [0u64; 10];
    for _ in 0..50_000 {
        let s = generate::decimal_fraction(&mut src, 6).unwrap();
        assert_eq!(s.len(), 8, "{s}");
        assert!(s.starts_with("0."));
        last[(s.as_bytes()[7] - b'0') as usize] += 1;
    }
    assert!(chi_square(&last, 5_000.0) < 44.81, "{last:?}");
}

#[test]
fn floats_are_in_the_unit_interval_and_uniform() {
    let mut src = SplitMix(8);
    let mut bins = [0u64; 16];
    for _ in 0..80_000 {
        let f = generate::float(&mut src).unwrap();
        assert!((0.0..1.0).contains(&f));
        bins[(f * 16.0) as usize] += 1;
    }
    assert!(chi_square(&bins, 5_000.0) < 56.49, "{bins:?}");
}

#[test]
fn gaussians_have_the_asked_mean_and_deviation() {
    let mut src = SplitMix(9);
    let v = generate::gaussians(&mut src, 100_000, 10.0, 2.0).unwrap();
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    // Standard errors: mean 2/√n ≈ 0.0063, sd ≈ 2/√(2n) ≈ 0.0045; 5 standard errors
    // (false-failure rate under 10^-6 each).
    assert!((mean - 10.0).abs() < 0.032, "mean {mean}");
    assert!((var.sqrt() - 2.0).abs() < 0.023, "sd {}", var.sqrt());
    // Symmetry: as many below the mean as above.
    let below = v.iter().filter(|&&x| x < 10.0).count() as f64;
    assert!((below / n - 0.5).abs() < 0.008, "below {below}");
}

#[test]
fn strings_use_every_character_of_the_set_uniformly() {
    let mut src = SplitMix(10);
    let hex = generate::charset("hex").unwrap();
    let s = generate::string(&mut src, 4096, &hex).unwrap();
    assert_eq!(s.chars().count(), 4096);
    let mut counts = [0u64; 16];
    for _ in 0..20 {
        for c in generate::string(&mut src, 4000, &hex).unwrap().chars() {
            counts[c.to_digit(16).unwrap() as usize] += 1;
        }
    }
    assert!(chi_square(&counts, 5_000.0) < 56.49, "{counts:?}");
}

#[test]
fn uuids_are_well_formed_and_distinct() {
    let mut src = SplitMix(11);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        let u = generate::uuid_v4(&mut src).unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!("89ab".contains(&u[19..20]), "{u}");
        assert!(seen.insert(u));
    }
}
