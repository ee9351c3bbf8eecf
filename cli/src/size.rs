//! Sizes on the command line: `32`, `1K`, `1KiB`, `1KB`, `4M`, `2G`, `4GiB`, …
//!
//! As GNU coreutils reads them: a bare suffix (`K`, `M`, `G`, `T`) and `KiB`/`MiB`/… are
//! powers of 1024; `KB`/`MB`/… are powers of 1000. Case does not matter for the letter.

/// Parses a size.
///
/// # Errors
///
/// A message saying what is wrong and what is allowed.
pub fn parse(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, suffix) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("{text:?} is not a size: give a number of bytes, optionally with K, M, G, T (1024) or KB, MB, GB, TB (1000)")
    })?;
    let suffix = suffix.trim().to_ascii_uppercase();
    let (letter, kind) = suffix.split_at(suffix.len().min(1));
    let power = match letter {
        "" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        _ => {
            return Err(format!(
                "{text:?}: unknown size suffix {suffix:?} (K, M, G, T, KB, KiB, …)"
            ));
        }
    };
    let base: u64 = match kind {
        "" | "IB" => 1024,
        "B" => 1000,
        _ => {
            return Err(format!(
                "{text:?}: unknown size suffix {suffix:?} (K, M, G, T, KB, KiB, …)"
            ));
        }
    };
    base.checked_pow(power)
        .and_then(|m| n.checked_mul(m))
        .ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn suffixes() {
        assert_eq!(parse("32"), Ok(32));
        assert_eq!(parse("1K"), Ok(1024));
        assert_eq!(parse("1k"), Ok(1024));
        assert_eq!(parse("1KiB"), Ok(1024));
        assert_eq!(parse("1KB"), Ok(1000));
        assert_eq!(parse("4M"), Ok(4 << 20));
        assert_eq!(parse("2G"), Ok(2 << 30));
        assert_eq!(parse("4GiB"), Ok(4 << 30));
        assert_eq!(parse("2GB"), Ok(2_000_000_000));
        assert_eq!(parse("1T"), Ok(1 << 40));
    }

    #[test]
    fn nonsense_is_refused_with_the_text() {
        for bad in [
            "",
            "K",
            "1X",
            "1KX",
            "-5",
            "1.5M",
            "99999999999999999999",
            "20000000T",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
        }
    }
}
