//! Unbiased random values from a stream of random bytes: what `lokey int`, `lokey uuid`, … and
//! the REST generators compute, implemented once for both.
//!
//! # Contract
//!
//! Every function takes a [`ByteSource`] and is exactly uniform over its stated range when the
//! source's bytes are (no modulo bias, no floating-point rounding in integer results). Limits are
//! checked before any byte is drawn, so bad input costs no entropy and gets an [`Error`] naming
//! the parameter. The algorithms:
//!
//! - bounded integers: Lemire, "Fast Random Integer Generation in an Interval" (ACM TOMACS
//!   2019): one 64×64→128-bit multiply, rejecting only the `2^64 mod n` low values;
//! - unique integers (sampling without replacement): Floyd's algorithm (Bentley, "Programming
//!   Pearls", CACM 1987) when `k` is small next to the range, else a partial Fisher–Yates;
//! - shuffles: Fisher–Yates (Durstenfeld's in-place form);
//! - fractions with `d` decimal places: a uniform integer below `10^d`, printed with leading
//!   zeros, so every one of the `10^d` values is equally likely (a float would not be);
//! - uniform floats: 53 random bits scaled by `2^-53`, `[0, 1)`;
//! - gaussians: the Box–Muller transform over two uniforms in `(0, 1]`;
//! - UUIDs: version 4 of RFC 9562 §5.4 (122 random bits).

use std::collections::HashSet;

/// Where the random bytes come from (Fortuna, the TRNG queue, a test vector).
pub trait ByteSource {
    /// Why bytes could not be had.
    type Error;
    /// Fills `out` with random bytes.
    ///
    /// # Errors
    ///
    /// The source's own error; a generator passes it on unchanged.
    fn fill(&mut self, out: &mut [u8]) -> Result<(), Self::Error>;
}

/// Why a generator refused or failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error<E> {
    /// A parameter is outside what is allowed; the message names it and the allowed values.
    #[error("{0}")]
    Invalid(String),
    /// The byte source failed.
    #[error("random source failed: {0}")]
    Source(E),
}

fn invalid<E>(message: impl Into<String>) -> Error<E> {
    Error::Invalid(message.into())
}

/// Most values one call may produce (a bound on memory and on the time one request takes).
pub const MAX_COUNT: usize = 100_000;
/// Most decimal places of [`decimal_fraction`] (10^19 still fits in a u64).
pub const MAX_DECIMAL_PLACES: u32 = 19;
/// Longest string [`string`] makes.
pub const MAX_STRING_LEN: usize = 4096;
/// Most characters one request's values hold together, where their size is a product of two
/// parameters: `n × length` of [`strings`], `n × places` of [`decimal_fractions`]. Both caps
/// alone would allow 41 million characters (hundreds of MB of JSON with multi-byte
/// characters); this keeps one answer to a few MB.
pub const MAX_TOTAL_CHARS: usize = 1_000_000;

/// Checks `count × each <= MAX_TOTAL_CHARS`, naming both parameters and the limit.
///
/// # Errors
///
/// [`Error::Invalid`] when the product is larger.
pub fn check_total<E>(
    count_name: &str,
    count: usize,
    each_name: &str,
    each: usize,
) -> Result<(), Error<E>> {
    let total = count.saturating_mul(each);
    if total > MAX_TOTAL_CHARS {
        return Err(invalid(format!(
            "parameters `{count_name}` × `{each_name}` = {count} × {each} = {total} characters, \
             more than the {MAX_TOTAL_CHARS} one request may produce; ask for fewer or shorter \
             values"
        )));
    }
    Ok(())
}

/// `n` strings of `len` characters from `charset` ([`string`]), at most [`MAX_TOTAL_CHARS`]
/// characters in all.
///
/// # Errors
///
/// [`Error::Invalid`] for a bad count or length, or too many characters in all; the source's
/// error.
pub fn strings<S: ByteSource>(
    src: &mut S,
    n: usize,
    len: usize,
    charset: &[char],
) -> Result<Vec<String>, Error<S::Error>> {
    check_count("n", n)?;
    check_total("n", n, "length", len)?;
    (0..n).map(|_| string(src, len, charset)).collect()
}

/// `n` decimal fractions of `places` digits ([`decimal_fraction`]), at most
/// [`MAX_TOTAL_CHARS`] digits in all.
///
/// # Errors
///
/// [`Error::Invalid`] for a bad count or number of places, or too many digits in all; the
/// source's error.
pub fn decimal_fractions<S: ByteSource>(
    src: &mut S,
    n: usize,
    places: u32,
) -> Result<Vec<String>, Error<S::Error>> {
    check_count("n", n)?;
    check_total("n", n, "places", places as usize)?;
    (0..n).map(|_| decimal_fraction(src, places)).collect()
}

fn check_count<E>(name: &str, n: usize) -> Result<(), Error<E>> {
    if n == 0 || n > MAX_COUNT {
        return Err(invalid(format!(
            "{name} must be from 1 to {MAX_COUNT}, not {n}"
        )));
    }
    Ok(())
}

fn next_u64<S: ByteSource>(src: &mut S) -> Result<u64, Error<S::Error>> {
    let mut b = [0u8; 8];
    src.fill(&mut b).map_err(Error::Source)?;
    Ok(u64::from_le_bytes(b))
}

/// A uniform integer in `0..n`; `n == 0` means the whole `u64` range.
///
/// # Errors
///
/// The source's error.
pub fn below<S: ByteSource>(src: &mut S, n: u64) -> Result<u64, Error<S::Error>> {
    if n == 0 {
        return next_u64(src);
    }
    // Lemire: the high word of x·n is uniform on 0..n once the low word is at least
    // 2^64 mod n (computed only when the cheap test l < n says a rejection is possible).
    let mut m = u128::from(next_u64(src)?) * u128::from(n);
    let mut low = m as u64;
    if low < n {
        let threshold = n.wrapping_neg() % n;
        while low < threshold {
            m = u128::from(next_u64(src)?) * u128::from(n);
            low = m as u64;
        }
    }
    Ok((m >> 64) as u64)
}

/// A uniform integer in `min..=max`.
///
/// # Errors
///
/// [`Error::Invalid`] when `min > max`; the source's error.
pub fn int<S: ByteSource>(src: &mut S, min: i64, max: i64) -> Result<i64, Error<S::Error>> {
    if min > max {
        return Err(invalid(format!(
            "min ({min}) must not be greater than max ({max})"
        )));
    }
    // The span as an unsigned count; the full i64 range wraps to 0, which `below` reads as
    // "all 2^64 values".
    let span = (max as u64).wrapping_sub(min as u64).wrapping_add(1);
    Ok(min.wrapping_add(below(src, span)? as i64))
}

/// `n` uniform integers in `min..=max`.
///
/// # Errors
///
/// [`Error::Invalid`] for a bad count or range; the source's error.
pub fn ints<S: ByteSource>(
    src: &mut S,
    min: i64,
    max: i64,
    n: usize,
) -> Result<Vec<i64>, Error<S::Error>> {
    check_count("n", n)?;
    if min > max {
        return Err(invalid(format!(
            "min ({min}) must not be greater than max ({max})"
        )));
    }
    (0..n).map(|_| int(src, min, max)).collect()
}

/// `k` distinct integers from `min..=max`, in random order.
///
/// # Errors
///
/// [`Error::Invalid`] when `k` exceeds the size of the range or [`MAX_COUNT`]; the source's
/// error.
pub fn unique_ints<S: ByteSource>(
    src: &mut S,
    min: i64,
    max: i64,
    k: usize,
) -> Result<Vec<i64>, Error<S::Error>> {
    check_count("n", k)?;
    if min > max {
        return Err(invalid(format!(
            "min ({min}) must not be greater than max ({max})"
        )));
    }
    let span = (max as u64).wrapping_sub(min as u64).wrapping_add(1);
    if span != 0 && (k as u64) > span {
        return Err(invalid(format!(
            "cannot draw {k} unique integers from a range of {span}"
        )));
    }
    let offsets: Vec<u64> = if span != 0 && span <= 2 * k as u64 {
        // Dense: shuffle the first k positions of the whole (small) range.
        let mut all: Vec<u64> = (0..span).collect();
        for i in 0..k {
            let j = i as u64 + below(src, span - i as u64)?;
            all.swap(i, j as usize);
        }
        all.truncate(k);
        all
    } else {
        // Sparse: Floyd's algorithm takes exactly k draws and k set entries, whatever the
        // span; for each j in span-k..span pick t in 0..=j, take t unless taken, else j.
        let mut chosen = HashSet::with_capacity(k);
        let mut order = Vec::with_capacity(k);
        let first = span.wrapping_sub(k as u64);
        for i in 0..k as u64 {
            let j = first.wrapping_add(i);
            let t = below(src, j.wrapping_add(1))?;
            let pick = if chosen.insert(t) { t } else { j };
            if pick == j {
                chosen.insert(j);
            }
            order.push(pick);
        }
        // Floyd's output set is uniform but its order is not; shuffle it.
        shuffle(src, &mut order)?;
        order
    };
    Ok(offsets
        .into_iter()
        .map(|o| min.wrapping_add(o as i64))
        .collect())
}

/// Shuffles `items` uniformly in place (every permutation equally likely).
///
/// # Errors
///
/// The source's error (`items` is then partly shuffled).
pub fn shuffle<S: ByteSource, T>(src: &mut S, items: &mut [T]) -> Result<(), Error<S::Error>> {
    for i in (1..items.len()).rev() {
        let j = below(src, i as u64 + 1)? as usize;
        items.swap(i, j);
    }
    Ok(())
}

/// `k` items chosen uniformly without replacement from `items`, in random order.
///
/// # Errors
///
/// [`Error::Invalid`] when `k` is larger than `items`; the source's error.
pub fn sample<S: ByteSource, T: Clone>(
    src: &mut S,
    items: &[T],
    k: usize,
) -> Result<Vec<T>, Error<S::Error>> {
    if k > items.len() {
        return Err(invalid(format!(
            "cannot sample {k} items from {}",
            items.len()
        )));
    }
    if k == 0 {
        return Ok(Vec::new());
    }
    let picks = unique_ints(src, 0, items.len() as i64 - 1, k)?;
    Ok(picks
        .into_iter()
        .map(|i| items[i as usize].clone())
        .collect())
}

/// A uniform decimal fraction in `[0, 1)` with exactly `places` digits, e.g. `"0.0420"`.
///
/// # Errors
///
/// [`Error::Invalid`] unless `1 <= places <= 19`; the source's error.
pub fn decimal_fraction<S: ByteSource>(
    src: &mut S,
    places: u32,
) -> Result<String, Error<S::Error>> {
    if places == 0 || places > MAX_DECIMAL_PLACES {
        return Err(invalid(format!(
            "decimal places must be from 1 to {MAX_DECIMAL_PLACES}, not {places}"
        )));
    }
    let n = below(src, 10u64.pow(places))?;
    Ok(format!("0.{n:0width$}", width = places as usize))
}

/// A uniform float in `[0, 1)` with 53 random bits (every representable multiple of 2^-53).
///
/// # Errors
///
/// The source's error.
pub fn float<S: ByteSource>(src: &mut S) -> Result<f64, Error<S::Error>> {
    Ok((next_u64(src)? >> 11) as f64 * (1.0 / (1u64 << 53) as f64))
}

/// `n` normally distributed values with the given mean and standard deviation.
///
/// # Errors
///
/// [`Error::Invalid`] for a bad count, a negative or non-finite deviation, or a non-finite mean;
/// the source's error.
pub fn gaussians<S: ByteSource>(
    src: &mut S,
    n: usize,
    mean: f64,
    stddev: f64,
) -> Result<Vec<f64>, Error<S::Error>> {
    check_count("n", n)?;
    if !mean.is_finite() {
        return Err(invalid("mean must be a finite number"));
    }
    if !stddev.is_finite() || stddev < 0.0 {
        return Err(invalid("standard deviation must be a finite number ≥ 0"));
    }
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // Box–Muller needs u1 in (0, 1] so that ln(u1) is finite: use 1 - [0, 1).
        let u1 = 1.0 - float(src)?;
        let u2 = float(src)?;
        let r = (-2.0 * u1.ln()).sqrt();
        let theta = std::f64::consts::TAU * u2;
        out.push(mean + stddev * r * theta.cos());
        out.push(mean + stddev * r * theta.sin());
    }
    out.truncate(n);
    Ok(out)
}

/// A string of `len` characters drawn uniformly from `charset`.
///
/// # Errors
///
/// [`Error::Invalid`] for an empty charset or a length outside `1..=4096`; the source's error.
pub fn string<S: ByteSource>(
    src: &mut S,
    len: usize,
    charset: &[char],
) -> Result<String, Error<S::Error>> {
    if charset.is_empty() {
        return Err(invalid("the character set is empty"));
    }
    if len == 0 || len > MAX_STRING_LEN {
        return Err(invalid(format!(
            "length must be from 1 to {MAX_STRING_LEN}, not {len}"
        )));
    }
    (0..len)
        .map(|_| Ok(charset[below(src, charset.len() as u64)? as usize]))
        .collect()
}

/// The entropy of a string of `len` characters drawn uniformly from `charset_len` characters.
pub fn entropy_bits(len: usize, charset_len: usize) -> f64 {
    len as f64 * (charset_len as f64).log2()
}

/// The named character sets `charset()` knows.
pub const CHARSETS: &[&str] = &[
    "alnum",
    "alpha",
    "lower",
    "upper",
    "digits",
    "hex",
    "base64url",
    "printable",
];

/// The characters of a named set ([`CHARSETS`]), or `None` for an unknown name.
pub fn charset(name: &str) -> Option<Vec<char>> {
    let range = |a: char, b: char| (a..=b).collect::<Vec<char>>();
    Some(match name {
        "alnum" => [range('A', 'Z'), range('a', 'z'), range('0', '9')].concat(),
        "alpha" => [range('A', 'Z'), range('a', 'z')].concat(),
        "lower" => range('a', 'z'),
        "upper" => range('A', 'Z'),
        "digits" => range('0', '9'),
        "hex" => [range('0', '9'), range('a', 'f')].concat(),
        "base64url" => [
            range('A', 'Z'),
            range('a', 'z'),
            range('0', '9'),
            vec!['-', '_'],
        ]
        .concat(),
        // Every printable ASCII character except space.
        "printable" => range('!', '~'),
        _ => return None,
    })
}

/// Turns a user-given set of characters into a charset: duplicates removed (they would bias
/// the draw), order kept.
pub fn dedup_charset(chars: &str) -> Vec<char> {
    let mut seen = HashSet::new();
    chars.chars().filter(|c| seen.insert(*c)).collect()
}

/// A version-4 UUID, e.g. `"3f2c…-…"` (RFC 9562 §5.4: 122 random bits, version and variant
/// bits fixed).
///
/// # Errors
///
/// The source's error.
pub fn uuid_v4<S: ByteSource>(src: &mut S) -> Result<String, Error<S::Error>> {
    let mut b = [0u8; 16];
    src.fill(&mut b).map_err(Error::Source)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays fixed bytes.
    struct Fixed(Vec<u8>, usize);
    impl ByteSource for Fixed {
        type Error = &'static str;
        fn fill(&mut self, out: &mut [u8]) -> Result<(), Self::Error> {
            let end = self.1 + out.len();
            let bytes = self.0.get(self.1..end).ok_or("exhausted")?;
            out.copy_from_slice(bytes);
            self.1 = end;
            Ok(())
        }
    }

    #[test]
    fn below_takes_the_high_word_of_the_product() {
        // x = 2^63 → x·10 = 5·2^64: high word 5, low word 0 (≥ 2^64 mod 10 = 6? no: 0 < 6,
        // so it is rejected and the next draw, x = 2^64-1, gives high word 9).
        let mut src = Fixed(
            [(1u64 << 63).to_le_bytes(), u64::MAX.to_le_bytes()].concat(),
            0,
        );
        assert_eq!(below(&mut src, 10), Ok(9));
        assert_eq!(src.1, 16, "exactly one rejection");
    }

    #[test]
    fn strings_and_fractions_are_capped_in_total_before_drawing() {
        let mut src = Fixed(Vec::new(), 0);
        let chars: Vec<char> = "ab".chars().collect();
        let Err(Error::Invalid(msg)) = strings(&mut src, 1001, 1000, &chars) else {
            panic!("over the total");
        };
        assert!(
            msg.contains("`n` × `length` = 1001 × 1000 = 1001000"),
            "{msg}"
        );
        assert!(msg.contains("1000000"), "{msg}");
        let Err(Error::Invalid(msg)) = decimal_fractions(&mut src, 100_000, 19) else {
            panic!("over the total");
        };
        assert!(msg.contains("`places`"), "{msg}");
        assert_eq!(src.1, 0, "nothing drawn");
        // At the limit: drawn (and this source runs dry).
        assert_eq!(
            strings(&mut src, 1000, 1000, &chars),
            Err(Error::Source("exhausted"))
        );
    }

    #[test]
    fn full_range_int_uses_all_bits() {
        let mut src = Fixed(u64::MAX.to_le_bytes().to_vec(), 0);
        assert_eq!(int(&mut src, i64::MIN, i64::MAX), Ok(i64::MAX));
    }

    #[test]
    fn source_errors_pass_through() {
        let mut src = Fixed(vec![1, 2, 3], 0);
        assert_eq!(below(&mut src, 7), Err(Error::Source("exhausted")));
    }

    #[test]
    fn invalid_input_draws_nothing() {
        let mut src = Fixed(vec![], 0);
        assert!(matches!(int(&mut src, 5, 4), Err(Error::Invalid(_))));
        assert!(matches!(
            unique_ints(&mut src, 1, 3, 4),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            decimal_fraction(&mut src, 20),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(string(&mut src, 5, &[]), Err(Error::Invalid(_))));
        assert!(matches!(
            gaussians(&mut src, 1, 0.0, -1.0),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            ints(&mut src, 0, 1, MAX_COUNT + 1),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn uuid_has_version_and_variant_bits() {
        let mut src = Fixed(vec![0xff; 16], 0);
        assert_eq!(
            uuid_v4(&mut src).unwrap(),
            "ffffffff-ffff-4fff-bfff-ffffffffffff"
        );
        let mut src = Fixed(vec![0; 16], 0);
        assert_eq!(
            uuid_v4(&mut src).unwrap(),
            "00000000-0000-4000-8000-000000000000"
        );
    }

    #[test]
    fn decimal_fraction_keeps_leading_zeros() {
        // below(10^4) of x = 0: high word 0, low word 0 < 2^64 mod 10^4 → rejected; then
        // x = 2^64-1 → 9999.
        let mut src = Fixed([[0u8; 8], [0xff; 8]].concat(), 0);
        assert_eq!(decimal_fraction(&mut src, 4).unwrap(), "0.9999");
        let mut src = Fixed((1u64 << 58).to_le_bytes().to_vec(), 0);
        // 2^58 · 10^4 / 2^64 = 10^4 / 64 = 156.25 → 156 → "0.0156".
        assert_eq!(decimal_fraction(&mut src, 4).unwrap(), "0.0156");
    }

    #[test]
    fn charsets_have_the_expected_sizes_and_no_duplicates() {
        for (name, size) in [
            ("alnum", 62),
            ("alpha", 52),
            ("lower", 26),
            ("upper", 26),
            ("digits", 10),
            ("hex", 16),
            ("base64url", 64),
            ("printable", 94),
        ] {
            let set = charset(name).unwrap();
            assert_eq!(set.len(), size, "{name}");
            assert_eq!(dedup_charset(&set.iter().collect::<String>()).len(), size);
        }
        assert!(charset("emoji").is_none());
        assert_eq!(dedup_charset("aabca"), vec!['a', 'b', 'c']);
        assert!((entropy_bits(16, 64) - 96.0).abs() < 1e-9);
    }
}
