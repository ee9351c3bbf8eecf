//! The status page at `/`: its files as served, and the page itself in headless Chromium
//! against a real daemon with the emulator (tests/browser/status-page.mjs does the browsing).
//!
//! The browser test needs Debian's `chromium` (or `CHROMIUM`), `node`, and
//! `npm ci` run in tests/browser. Without them it says why and passes, except under CI
//! (`CI` set), where a skipped browser test would hide a missing install step: there it fails.
//! `.ci/run` installs all three.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use util::Daemon;

const INDEX: &str = include_str!("../src/http/page/index.html");
const SCRIPT: &str = include_str!("../src/http/page/status.js");

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

/// A config file with only the (emulated) chip as a source, so that a fault in it is the
/// daemon's whole health.
fn chip_only(dir: &Path) -> PathBuf {
    let path = dir.join("lokeyd.toml");
    std::fs::write(&path, "[hwrng]\nmode = \"off\"\n").unwrap();
    path
}

#[test]
fn the_page_and_its_files_are_served_self_contained() {
    let d = Daemon::start(&[]);
    let head = d.raw("GET", "/", &[], "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        lower.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    for (path, kind) in [
        ("/status.css", "text/css"),
        ("/status.js", "text/javascript"),
    ] {
        let answer = d.raw("GET", path, &[], "");
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        assert!(
            answer.to_ascii_lowercase().contains(kind),
            "{path}: {answer}"
        );
    }
    // Nothing from another origin: no CDN, no fonts, no analytics.
    for text in [INDEX, SCRIPT, include_str!("../src/http/page/status.css")] {
        for needle in ["http://", "https://", "//cdn", "@import"] {
            let allowed = needle == "http://" && text.contains("http://www.w3.org/2000/svg");
            let count = text.matches(needle).count();
            let expected = usize::from(allowed);
            assert!(count <= expected, "the page refers to {needle:?}");
        }
    }
}

#[test]
fn every_element_the_script_fills_is_on_the_page() {
    let mut missing = Vec::new();
    for piece in SCRIPT.split("$(\"").skip(1) {
        let id = piece.split('"').next().unwrap();
        if !INDEX.contains(&format!("id=\"{id}\"")) {
            missing.push(id.to_owned());
        }
    }
    for piece in SCRIPT.split("q(\"").skip(1) {
        let class = piece.split('"').next().unwrap();
        if !INDEX.contains(class) {
            missing.push(format!(".{class}"));
        }
    }
    assert!(
        missing.is_empty(),
        "status.js fills {missing:?}, which index.html lacks"
    );
    assert!(
        SCRIPT.matches("$(\"").count() > 30,
        "the scan found the script's ids"
    );
}

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    path.is_file().then_some(path)
}

fn node_ready() -> bool {
    browser_dir().join("node_modules/playwright-core").is_dir()
        && Command::new("node")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

#[test]
fn the_page_in_headless_chromium_shows_the_status_and_turns_degraded_on_a_fault() {
    let (Some(chromium), true) = (chromium(), node_ready()) else {
        let why = "needs /usr/bin/chromium (Debian's chromium), node, and `npm ci` in \
                   tests/browser";
        assert!(
            std::env::var_os("CI").is_none(),
            "under CI this test must run: it {why}"
        );
        crate::skipped!("skipped: the browser test {why}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let conf = chip_only(dir.path());
    let mut d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    let mut cmd = Command::new("node");
    cmd.arg("status-page.mjs")
        .current_dir(browser_dir())
        .env("LOKEY_URL", format!("http://{}", d.addr()))
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(shot) = std::env::var_os("SCREENSHOT") {
        cmd.env("SCREENSHOT", shot);
    }
    let mut node = cmd.spawn().expect("start node");
    let mut to_node = node.stdin.take().unwrap();
    let mut said = String::new();
    for line in BufReader::new(node.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if line == "STOP-DAEMON" {
            assert_eq!(d.stop(), Some(0), "lokeyd stopped cleanly");
            writeln!(to_node, "STOPPED").unwrap();
        }
    }
    drop(to_node);
    let out = node.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("all checks passed"),
        "the browser test failed\nstdout:\n{said}\nstderr:\n{stderr}\ndaemon log:\n{}",
        d.log()
    );
}
