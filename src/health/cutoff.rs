//! Cutoff values for the SP 800-90B §4.4 continuous health tests, computed from the claimed
//! min-entropy per sample `H` and the false-alarm probability `α`.
//!
//! Nothing here is a table: every cutoff is derived at run time, so a different claimed `H` or
//! `α` in the configuration gives the right test. The unit tests check the results against
//! SP 800-90B Table 2 (W = 512) and the worked values in the project's entropy-feeder notes.
//!
//! - Repetition Count Test (§4.4.1): `C = 1 + ⌈-log2(α) / H⌉`.
//! - Adaptive Proportion Test (§4.4.2): `C = 1 + CRITBINOM(W, 2^-H, 1 - α)`, i.e. the smallest `C`
//!   with `P(X ≥ C) ≤ α` for `X ~ Binomial(W, 2^-H)`. This is the form the specification and
//!   its Table 2 use; [`apt_cutoff_exact`] gives the slightly larger form that matches what the
//!   test really counts (`B - 1 ~ Binomial(W - 1, p)`), for reference and reporting.

/// The APT window for non-binary samples (SP 800-90B §4.4.2: W = 512; 1024 is for binary).
pub const APT_WINDOW_SAMPLES: usize = 512;

/// Relative slack when rounding `-log2(α) / H` up, so that e.g. `30 / 0.3` (which is
/// `100.00000000000001` in binary floating point) is not rounded up to 101.
const CEIL_SLACK: f64 = 1e-9;

/// The Repetition Count Test cutoff (SP 800-90B §4.4.1): `1 + ⌈-log2(α) / H⌉`.
///
/// `h_bits` is the claimed min-entropy per sample and `alpha_log2` is `log2(α)` (negative,
/// e.g. `-30.0` for α = 2^-30). A run of `C` identical samples fails the test. Callers validate
/// the inputs (`0 < H ≤ 8`, `α < 1`); this function only does the arithmetic.
#[must_use]
pub fn rct_cutoff(h_bits: f64, alpha_log2: f64) -> u32 {
    let ratio = -alpha_log2 / h_bits;
    let ceil = (ratio * (1.0 - CEIL_SLACK)).ceil();
    // The float-to-int cast saturates; validated inputs keep it far below u32::MAX.
    1 + ceil as u32
}

/// The Adaptive Proportion Test cutoff as SP 800-90B §4.4.2 defines it:
/// `1 + CRITBINOM(W, 2^-H, 1 - α)`, the smallest `C` with `P(Binomial(W, 2^-H) ≥ C) ≤ α`.
///
/// Returns `None` when no count up to `W` is unlikely enough (the claimed `H` is too small for
/// this window and `α`), so the test could never fire.
#[must_use]
pub fn apt_cutoff(h_bits: f64, alpha_log2: f64, window: usize) -> Option<u32> {
    smallest_tail_count(window, h_bits, alpha_log2)
}

/// The "exact" Adaptive Proportion Test cutoff: `2 + CRITBINOM(W - 1, 2^-H, 1 - α)`.
///
/// The test counts the first sample of the window as `B = 1` and then matches among the next
/// `W - 1` samples, so `P(B ≥ C) = P(Binomial(W - 1, p) ≥ C - 1)`; this is the smallest `C` that
/// keeps that probability ≤ α. It is at most one larger than [`apt_cutoff`].
#[must_use]
pub fn apt_cutoff_exact(h_bits: f64, alpha_log2: f64, window: usize) -> Option<u32> {
    let n = window.checked_sub(1)?;
    smallest_tail_count(n, h_bits, alpha_log2).map(|c| c + 1)
}

/// `log2 P(X ≥ c)` for `X ~ Binomial(n, 2^-h_bits)`; `-inf` when `c > n`.
///
/// Used to state the real false-alarm rate of a cutoff (which is at or below the nominal α).
#[must_use]
pub fn binomial_tail_log2(n: usize, h_bits: f64, c: usize) -> f64 {
    let ln_pmf = ln_binomial_pmf(n, h_bits);
    let ln_tail = ln_pmf
        .iter()
        .skip(c)
        .fold(f64::NEG_INFINITY, |acc, &x| ln_add_exp(acc, x));
    ln_tail / std::f64::consts::LN_2
}

/// The smallest `c` in `0..=n` with `P(Binomial(n, 2^-h) ≥ c) ≤ 2^alpha_log2`, if any.
fn smallest_tail_count(n: usize, h_bits: f64, alpha_log2: f64) -> Option<u32> {
    let ln_alpha = alpha_log2 * std::f64::consts::LN_2;
    let ln_pmf = ln_binomial_pmf(n, h_bits);
    // Walk down from the top, accumulating the upper tail in log space; the tail grows as `c`
    // falls, so the answer is one above the first `c` whose tail exceeds α. (A tail over
    // `c = n + 1` is empty, probability 0, so it always qualifies.)
    let mut ln_tail = f64::NEG_INFINITY;
    for c in (0..=n).rev() {
        ln_tail = ln_add_exp(ln_tail, ln_pmf[c]);
        if ln_tail > ln_alpha {
            let cutoff = c + 1;
            // A cutoff above n can never be reached by a count of at most n.
            return if cutoff <= n {
                u32::try_from(cutoff).ok()
            } else {
                None
            };
        }
    }
    // Even P(X ≥ 0) = 1 is ≤ α: only possible for α ≥ 1, which callers reject.
    Some(0)
}

/// Natural logs of the Binomial(n, 2^-h) probability mass function for k = 0..=n.
///
/// Computed in log space by the ratio recurrence `pmf(k+1) = pmf(k)·(n-k)/(k+1)·p/(1-p)`, so it
/// neither underflows (`(1-p)^512` is below f64's range for small `H`) nor needs a gamma
/// function. With n ≤ a few thousand the accumulated rounding error is ~1e-13 relative, far
/// below what would move a cutoff.
fn ln_binomial_pmf(n: usize, h_bits: f64) -> Vec<f64> {
    let p = (-h_bits).exp2();
    let ln_p = p.ln();
    let ln_q = (-p).ln_1p();
    let mut out = Vec::with_capacity(n + 1);
    let mut ln_pmf = n as f64 * ln_q;
    out.push(ln_pmf);
    for k in 0..n {
        ln_pmf += ((n - k) as f64).ln() - ((k + 1) as f64).ln() + ln_p - ln_q;
        out.push(ln_pmf);
    }
    out
}

/// `ln(e^a + e^b)` without overflow or underflow.
fn ln_add_exp(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    hi + (lo - hi).exp().ln_1p()
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: usize = APT_WINDOW_SAMPLES;

    /// SP 800-90B §4.4.1 worked example and the entropy-feeder notes' table (section (c)).
    #[test]
    fn rct_cutoffs_match_the_formula_tables() {
        let cases = [
            (8.0, -20.0, 4),
            (7.5, -20.0, 4),
            (4.0, -20.0, 6),
            (2.0, -20.0, 11),
            (1.0, -20.0, 21),
            (0.5, -20.0, 41),
            (8.0, -30.0, 5),
            (8.0, -40.0, 6),
            (1.0, -30.0, 31),
            (1.0, -40.0, 41),
            (0.5, -40.0, 81),
            // 30 / 0.3 is 100.00000000000001 in f64; the true quotient is exactly 100.
            (0.3, -30.0, 101),
        ];
        for (h, a, want) in cases {
            assert_eq!(rct_cutoff(h, a), want, "RCT cutoff for H={h}, log2(α)={a}");
        }
    }

    /// SP 800-90B Table 2 (W = 512, α = 2^-20): H = 0.5, 1, 2, 4, 8 → 410, 311, 177, 62, 13.
    #[test]
    fn apt_cutoffs_match_sp800_90b_table_2() {
        let table = [(0.5, 410), (1.0, 311), (2.0, 177), (4.0, 62), (8.0, 13)];
        for (h, want) in table {
            assert_eq!(apt_cutoff(h, -20.0, W), Some(want), "APT cutoff for H={h}");
        }
    }

    /// The entropy-feeder notes' table (computed there with mpmath), both APT forms.
    #[test]
    fn apt_cutoffs_match_the_reference_table() {
        let cases = [
            (8.0, -20.0, 13, 14),
            (7.5, -20.0, 15, 16),
            (4.0, -20.0, 62, 63),
            (2.0, -20.0, 177, 178),
            (1.0, -20.0, 311, 311),
            (0.5, -20.0, 410, 411),
            (8.0, -30.0, 16, 17),
            (8.0, -40.0, 19, 20),
            (1.0, -30.0, 325, 325),
            (1.0, -40.0, 336, 337),
            (0.5, -40.0, 432, 432),
        ];
        for (h, a, spec, exact) in cases {
            assert_eq!(
                apt_cutoff(h, a, W),
                Some(spec),
                "spec APT, H={h} log2(α)={a}"
            );
            assert_eq!(
                apt_cutoff_exact(h, a, W),
                Some(exact),
                "exact APT, H={h} log2(α)={a}"
            );
        }
    }

    /// Fractional claims (SP 800-90B's H is a real number; its Table 2 lists only whole and
    /// half values). The expected values were computed independently of this module, with
    /// exact binomial coefficients and 80-digit decimal arithmetic (RCT: `1 + ⌈-log2(α)/H⌉`;
    /// APT: the smallest `C` with `Σ_{k≥C} C(W,k) p^k (1-p)^(W-k) ≤ α`, `p = 2^-H`; exact form
    /// over `W - 1` plus one).
    #[test]
    fn fractional_claims_match_an_independent_exact_computation() {
        let cases = [
            // (H, log2 α, RCT, APT, APT exact)
            (0.9, -20.0, 24, 329, 329),
            (0.9, -30.0, 35, 342, 343),
            (0.9, -40.0, 46, 354, 354),
            (1.5, -30.0, 21, 248, 249),
            (2.5, -20.0, 9, 135, 136),
            (2.5, -40.0, 17, 157, 158),
            (6.3, -30.0, 6, 28, 29),
            (6.3, -40.0, 8, 32, 33),
            (7.5, -30.0, 5, 19, 20),
            (7.5, -40.0, 7, 22, 23),
        ];
        for (h, a, rct, apt, exact) in cases {
            assert_eq!(rct_cutoff(h, a), rct, "RCT, H={h} log2(α)={a}");
            assert_eq!(apt_cutoff(h, a, W), Some(apt), "APT, H={h} log2(α)={a}");
            assert_eq!(
                apt_cutoff_exact(h, a, W),
                Some(exact),
                "exact APT, H={h} log2(α)={a}"
            );
        }
        // And by direct summation in linear space (no logarithms), for H where the pmf stays
        // within f64's range.
        for (h, a, _, apt, _) in cases {
            let p = (-h).exp2();
            let mut pmf = vec![(1.0 - p).powi(W as i32)];
            for k in 0..W {
                let next = pmf[k] * (W - k) as f64 / (k + 1) as f64 * p / (1.0 - p);
                pmf.push(next);
            }
            let tail = |c: usize| pmf[c..].iter().sum::<f64>();
            let alpha = a.exp2();
            let c = apt as usize;
            assert!(tail(c) <= alpha && tail(c - 1) > alpha, "H={h} α=2^{a}");
        }
    }

    /// The defining property, checked directly: the tail at C is ≤ α and at C-1 it is > α.
    #[test]
    fn apt_cutoff_is_the_smallest_count_with_tail_below_alpha() {
        for h in [0.25, 0.5, 1.0, 3.0, 6.0, 8.0] {
            for a in [-20.0, -30.0, -40.0] {
                let c = apt_cutoff(h, a, W).expect("cutoff exists") as usize;
                assert!(binomial_tail_log2(W, h, c) <= a, "H={h} α=2^{a} C={c}");
                assert!(
                    binomial_tail_log2(W, h, c - 1) > a,
                    "H={h} α=2^{a} C-1={}",
                    c - 1
                );
            }
        }
    }

    #[test]
    fn tail_of_a_fair_coin_is_exact() {
        // P(Bin(4, 1/2) ≥ 3) = 5/16; P(≥ 0) = 1; P(≥ 5) = 0.
        assert!((binomial_tail_log2(4, 1.0, 3) - (5.0f64 / 16.0).log2()).abs() < 1e-12);
        assert!(binomial_tail_log2(4, 1.0, 0).abs() < 1e-12);
        assert_eq!(binomial_tail_log2(4, 1.0, 5), f64::NEG_INFINITY);
    }

    #[test]
    fn tiny_entropy_claims_have_no_reachable_apt_cutoff() {
        // With H = 0.001 nearly every sample matches, so even a full window is not rare.
        assert_eq!(apt_cutoff(0.001, -40.0, W), None);
    }
}
