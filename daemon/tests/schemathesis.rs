//! The OpenAPI spec checked against the running daemon with schemathesis (from PyPI): every
//! operation is called with examples and generated valid and invalid inputs; every answer must
//! match the spec (status code, content type, headers, body schema), no valid request may be
//! refused and no invalid one accepted, and there is no server error. Three runs, each leaving
//! out only what the spec cannot state:
//!
//! 1. every operation, every check, except those below and `/random/bytes`;
//! 2. `/random/integers`, `/random/sample`, `/random/strings`, `/random/decimal-fractions` and
//!    `POST /draws` without `positive_data_acceptance`: they have constraints between fields
//!    (min ≤ max, k ≤ the number of items, n × length and n × places ≤ 1000000, unique
//!    integers within their range) that JSON Schema cannot express, so a schema-valid request
//!    can rightly get a 400;
//! 3. `/health` and `/admin/faults` without `not_a_server_error`: health answers the documented
//!    503 when degraded, and the fault switch exists to make it so.
//!
//! `/random/bytes` is not fuzzed: a valid request streams up to 1 TiB, which schemathesis reads
//! to the end, and its negative mode keeps the other parameters valid. So any mutation the
//! daemon accepts streams for half an hour. That happened twice, each time a real bug, now
//! fixed (a parameter given twice; an unknown one), and once more with a cause not yet found.
//! Its parameters are tested in `daemon/tests/random.rs`.
//!
//! The trng rate limit is raised: a runtime setting the spec cannot state, tested on its own.
//! Needs `schemathesis` on PATH (`pip install schemathesis`); without it the test says why and
//! passes, except under CI (`CI` set), where `.ci/run` installs it and a skip would hide that.

mod util;

use std::process::Command;

use util::Daemon;

fn schemathesis() -> bool {
    Command::new("schemathesis")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_spec_holds_for_the_running_daemon() {
    if !schemathesis() {
        let why = "needs schemathesis on PATH (pip install schemathesis)";
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this test must run: it {why}"
        );
        crate::skipped!("skipped: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    // Room for generated trng requests: the rate limit is not what is under test.
    std::fs::write(
        &conf,
        "[api]\ntrng_bytes_per_second = 1073741824\ntrng_burst_bytes = 1073741824\n",
    )
    .unwrap();
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    util::eventually(|| d.get("/api/v1/health").0 == 200, "a healthy daemon");
    let url = format!("http://{}/swagger/doc.json", d.addr());
    let runs: [&[&str]; 3] = [
        &[
            "--exclude-path-regex",
            "^/api/v1/(health|admin/faults|draws|random/(integers|sample|strings|decimal-fractions|bytes))$",
        ],
        &[
            "--include-path-regex",
            "^/api/v1/(draws|random/(integers|sample|strings|decimal-fractions))$",
            "--exclude-checks",
            "positive_data_acceptance",
        ],
        &[
            "--include-path-regex",
            "^/api/v1/(health|admin/faults)$",
            "--exclude-checks",
            "not_a_server_error",
        ],
    ];
    for (i, selection) in runs.iter().enumerate() {
        // Bounded: a request wrongly accepted in the negative run streams up to 1 TiB, which
        // schemathesis would read to the end (it once took 30 minutes).
        let out = Command::new("timeout")
            .args(["600", "schemathesis"])
            .args(["run", &url, "--checks", "all", "--max-examples", "50"])
            // One worker: two crashed inside hypothesis once here.
            .args(["--request-timeout", "60", "--workers", "1", "--no-color"])
            .args(*selection)
            .current_dir(dir.path())
            .output()
            .expect("run schemathesis");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "schemathesis run {} ({selection:?}) found problems:\n{stdout}\n{stderr}\ndaemon log:\n{}",
            i + 1,
            d.log()
        );
        // A run that tested nothing must not pass for a clean one.
        assert!(
            stdout.contains(" passed") && !stdout.contains("No operations"),
            "run {}: {stdout}",
            i + 1
        );
        eprintln!(
            "schemathesis run {}: {}",
            i + 1,
            stdout
                .lines()
                .rev()
                .find(|l| l.contains("generated"))
                .unwrap_or("")
        );
    }
}
