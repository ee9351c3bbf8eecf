//! What several suites share.

/// Property-test cases: `PROPTEST_CASES` when set (a longer run: `scripts/fuzz`), else the
/// suite's own `default`, chosen so that `cargo test` stays quick.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
