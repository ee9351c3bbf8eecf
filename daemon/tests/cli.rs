//! The real `lokey` binary against a real `lokeyd` (emulated chip, temporary socket and data
//! directory): every command, its errors, exit codes, and the closed-pipe case.

mod util;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{Daemon, lokey, lokey_cmd};

fn seeded() -> Daemon {
    let d = Daemon::start(&[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.status()["fortuna_generator"]["seeded"] != true {
        assert!(
            Instant::now() < deadline,
            "Fortuna not seeded: {}",
            d.status()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    d
}

fn ok(d: &Daemon, args: &[&str]) -> String {
    let out = lokey(d, args);
    assert!(
        out.status.success(),
        "lokey {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn with_stdin(d: &Daemon, args: &[&str], input: &str) -> String {
    let mut child = lokey_cmd()
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "lokey {args:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bytes_sizes_encodings_and_files() {
    let d = seeded();
    let out = lokey(&d, &["bytes", "1K"]);
    assert!(out.status.success());
    assert_eq!(out.stdout.len(), 1024);
    assert_eq!(lokey(&d, &["bytes", "2KB"]).stdout.len(), 2000);
    let hex = ok(&d, &["bytes", "16", "--hex"]);
    assert_eq!(hex.trim_end().len(), 32);
    assert!(hex.trim_end().chars().all(|c| c.is_ascii_hexdigit()));
    let b64 = ok(&d, &["bytes", "10", "--base64"]);
    assert_eq!(b64.trim_end().len(), 16);
    assert!(b64.trim_end().ends_with("=="));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("key.bin");
    ok(&d, &["bytes", "1M", "-o", file.to_str().unwrap()]);
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.len(), 1 << 20);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // Bad sizes are refused by the parser with exit code 2.
    let out = lokey(&d, &["bytes", "12X"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("12X"));
}

#[test]
fn an_endless_stream_into_a_closed_pipe_ends_quietly_with_0() {
    let d = seeded();
    let mut child = lokey_cmd()
        .arg("--socket")
        .arg(d.socket())
        .arg("bytes")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = vec![0u8; 100_000];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut first)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The same through a shell pipeline, as users write it.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --socket {} bytes | head -c 10 | wc -c",
            lokey_cmd().get_program().to_str().unwrap(),
            d.socket().display()
        ))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10");
}

/// `lokey ARGS` with stdout to /dev/null and stderr on a new pseudo-terminal; the thread
/// collects what the terminal shows (until the child, its only user, exits or is killed).
fn on_terminal(
    d: &Daemon,
    args: &[&str],
) -> (
    std::process::Child,
    std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    std::thread::JoinHandle<()>,
) {
    use std::os::unix::fs::OpenOptionsExt;
    // Both sides close-on-exec from the start, so that no child another test spawns
    // meanwhile keeps the terminal open.
    let mut master = nix::pty::posix_openpt(
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_NOCTTY | nix::fcntl::OFlag::O_CLOEXEC,
    )
    .unwrap();
    nix::pty::grantpt(&master).unwrap();
    nix::pty::unlockpt(&master).unwrap();
    let terminal = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(nix::pty::ptsname_r(&master).unwrap())
        .unwrap();
    // The command, and with it this process's copy of the terminal's side, is dropped at the
    // end of this statement: reading the other side ends when the child's copy closes.
    let child = lokey_cmd()
        .arg("--socket")
        .arg(d.socket())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(terminal))
        .spawn()
        .unwrap();
    let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = shown.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        // EIO once no process has the terminal open any more.
        while let Ok(n @ 1..) = master.read(&mut buf) {
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (child, shown, reader)
}

fn text(shown: &std::sync::Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&shown.lock().unwrap()).into_owned()
}

#[test]
fn bytes_shows_a_progress_bar_on_a_terminal_for_long_jobs_only() {
    let d = seeded();
    // A long job (64 MiB, the least that gets a bar) with stderr on a terminal, and the same
    // job at the same time with stderr on a pipe.
    let (mut tty, shown, reader) = on_terminal(&d, &["bytes", "64M"]);
    let piped = lokey_cmd()
        .arg("--socket")
        .arg(d.socket())
        .args(["bytes", "64M"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(tty.wait().unwrap().success(), "{}", text(&shown));
    reader.join().unwrap();
    assert!(piped.status.success());
    assert!(
        piped.stderr.is_empty(),
        "stderr not a terminal, yet: {}",
        String::from_utf8_lossy(&piped.stderr)
    );
    let bar = text(&shown);
    // Each update rewrites the line (a carriage return); the last says 100% of 64 MiB.
    let last = bar.trim_end().rsplit('\r').next().unwrap();
    assert!(
        bar.starts_with('\r') && last.contains("100.0%") && last.contains("64.0 MiB"),
        "{bar:?}"
    );
    assert!(last.trim_end().ends_with("MB/s"), "{bar:?}");

    // A short job on a terminal: no bar.
    let (mut tty, shown, reader) = on_terminal(&d, &["bytes", "1M"]);
    assert!(tty.wait().unwrap().success());
    reader.join().unwrap();
    assert_eq!(text(&shown), "", "a bar for a short job");

    // An endless stream: a bar without a percentage, first after half a second.
    let (mut tty, shown, reader) = on_terminal(&d, &["bytes"]);
    util::within(
        Duration::from_secs(20),
        || text(&shown).contains("MB/s"),
        "a progress bar for an endless stream",
    );
    tty.kill().unwrap();
    tty.wait().unwrap();
    reader.join().unwrap();
    let bar = text(&shown);
    assert!(bar.starts_with('\r') && bar.contains(" MiB "), "{bar:?}");
    assert!(!bar.contains('%'), "{bar:?}");
}

#[test]
fn trng_bytes_are_consumed_and_too_many_is_an_error_with_exit_2() {
    let d = seeded();
    let deadline = Instant::now() + Duration::from_secs(60);
    while d.status()["trng"]["queue_current"].as_u64().unwrap() < 4 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let a = lokey(&d, &["bytes", "64", "--source", "trng"]);
    assert!(a.status.success());
    assert_eq!(a.stdout.len(), 64);
    let out = lokey(&d, &["bytes", "1T", "--source", "trng"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not enough TRNG data"));
    let out = lokey(&d, &["bytes", "--source", "trng"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("endless"));
}

#[test]
fn the_generators_print_what_they_promise() {
    let d = seeded();
    let dice: Vec<i64> = ok(&d, &["int", "-n", "600", "--min", "1", "--max", "6"])
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(dice.len(), 600);
    // Every face in 600 fair rolls: a face missing has probability 6·(5/6)^600 ≈ 1e-47.
    assert_eq!(dice.iter().collect::<HashSet<_>>().len(), 6);
    let mut perm: Vec<i64> = ok(
        &d,
        &["int", "-n", "10", "--min", "-5", "--max", "4", "--unique"],
    )
    .lines()
    .map(|l| l.parse().unwrap())
    .collect();
    perm.sort_unstable();
    assert_eq!(perm, (-5..=4).collect::<Vec<_>>());
    let out = lokey(
        &d,
        &["int", "-n", "11", "--min", "1", "--max", "10", "--unique"],
    );
    assert_eq!(out.status.code(), Some(2));

    for line in ok(&d, &["float", "-n", "5", "--places", "3"]).lines() {
        assert!(line.len() == 5 && line.starts_with("0."), "{line}");
    }
    for line in ok(&d, &["float", "-n", "5"]).lines() {
        let v: f64 = line.parse().unwrap();
        assert!((0.0..1.0).contains(&v));
    }
    let g: Vec<f64> = ok(
        &d,
        &["gauss", "-n", "4000", "--mean", "-3", "--stddev", "0.5"],
    )
    .lines()
    .map(|l| l.parse().unwrap())
    .collect();
    let mean = g.iter().sum::<f64>() / g.len() as f64;
    // Standard error 0.5/√4000 ≈ 0.0079; ±0.05 is over 6σ (false failure below 1e-9).
    assert!((mean + 3.0).abs() < 0.05, "{mean}");
    let uuids: Vec<String> = ok(&d, &["uuid", "-n", "20"])
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(uuids.iter().collect::<HashSet<_>>().len(), 20);
    assert!(
        uuids
            .iter()
            .all(|u| u.len() == 36 && u.as_bytes()[14] == b'4')
    );

    let out = lokey(
        &d,
        &["password", "-l", "12", "--charset", "digits", "-n", "3"],
    );
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.lines()
            .all(|p| p.len() == 12 && p.chars().all(|c| c.is_ascii_digit()))
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("39.9 bits"));
    let custom = ok(&d, &["password", "-l", "30", "--chars", "xyzx"]);
    assert!(custom.trim().chars().all(|c| "xyz".contains(c)));
    let out = lokey(&d, &["password", "--charset", "klingon"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn shuffle_and_sample_lines_from_stdin_and_files() {
    let d = seeded();
    let input: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    let shuffled = with_stdin(&d, &["shuffle"], &input);
    let mut got: Vec<&str> = shuffled.lines().collect();
    got.sort_unstable();
    let mut want: Vec<&str> = input.lines().collect();
    want.sort_unstable();
    assert_eq!(got, want);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("names");
    std::fs::write(&file, "ada\nalan\ngrace\nedsger\n").unwrap();
    let picked = ok(&d, &["sample", "-n", "2", file.to_str().unwrap()]);
    let picked: HashSet<&str> = picked.lines().collect();
    assert_eq!(picked.len(), 2);
    assert!(
        picked
            .iter()
            .all(|p| ["ada", "alan", "grace", "edsger"].contains(p))
    );
    let out = lokey(&d, &["sample", "-n", "9", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn shuffle_and_sample_take_a_million_lines() {
    let d = seeded();
    let input: String = (0..1_000_000).map(|i| format!("{i}\n")).collect();
    let started = Instant::now();
    let shuffled = with_stdin(&d, &["shuffle"], &input);
    let took = started.elapsed();
    let mut got: Vec<u32> = shuffled.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(got.len(), 1_000_000);
    // In order, or nearly, only with negligible probability: count the fixed points (a uniform
    // permutation has about one).
    let fixed = got
        .iter()
        .enumerate()
        .filter(|(i, v)| *i == **v as usize)
        .count();
    assert!(fixed < 20, "{fixed} lines kept their place");
    got.sort_unstable();
    assert!(got.iter().enumerate().all(|(i, v)| i == *v as usize));
    eprintln!("lokey shuffle of 1,000,000 lines took {took:?}");

    // More lines sampled than the generators' own limit of 100000, from a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lines");
    std::fs::write(&file, &input).unwrap();
    let picked = ok(&d, &["sample", "-n", "250000", file.to_str().unwrap()]);
    let picked: HashSet<&str> = picked.lines().collect();
    assert_eq!(picked.len(), 250_000);
    assert!(picked.iter().all(|l| l.parse::<u32>().unwrap() < 1_000_000));

    // Lines are bytes: other encodings pass unchanged, a last line gets its newline.
    std::fs::write(&file, b"caf\xe9\r\nna\xefve\nlast").unwrap();
    let out = lokey(&d, &["shuffle", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<&[u8]> = out.stdout.split(|&b| b == b'\n').collect();
    assert_eq!(
        lines.pop(),
        Some(&b""[..]),
        "the output ends with a newline"
    );
    lines.sort_unstable();
    assert_eq!(lines, [&b"caf\xe9\r"[..], b"last", b"na\xefve"]);
}

#[test]
fn generators_print_any_count() {
    let d = seeded();
    let out = ok(&d, &["int", "-n", "1000000", "--min", "1", "--max", "6"]);
    let mut faces = [0u32; 6];
    for line in out.lines() {
        faces[line.parse::<usize>().unwrap() - 1] += 1;
    }
    assert_eq!(faces.iter().sum::<u32>(), 1_000_000);
    // Each face 166667 ± 373 (1σ); ±3000 is over 8σ.
    assert!(
        faces.iter().all(|&f| f.abs_diff(166_667) < 3000),
        "{faces:?}"
    );
    assert_eq!(ok(&d, &["gauss", "-n", "250001"]).lines().count(), 250_001);
    assert_eq!(ok(&d, &["uuid", "-n", "100001"]).lines().count(), 100_001);
    let out = lokey(&d, &["int", "-n", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 1"));
    // Without replacement the count stays bounded, and says so.
    let out = lokey(&d, &["int", "-n", "100001", "--max", "1000000", "--unique"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("100000"));
}

#[test]
fn status_health_config_and_device_commands() {
    let d = seeded();
    let status = ok(&d, &["status"]);
    assert!(status.contains("source chip"), "{status}");
    assert!(status.contains("emulator"), "{status}");
    assert!(status.contains("not credited ("), "{status}");
    assert!(status.contains("fortuna      seeded"), "{status}");
    let json: serde_json::Value = serde_json::from_str(&ok(&d, &["status", "--json"])).unwrap();
    assert!(json["sources"].is_array());
    // Healthy once the chip has passed its start-up test too.
    let deadline = Instant::now() + Duration::from_secs(60);
    // One call per round: asking twice could see degraded, then healthy.
    loop {
        let code = lokey(&d, &["health"]).status.code();
        if code == Some(0) {
            break;
        }
        assert_eq!(code, Some(1), "degraded is exit 1");
        assert!(Instant::now() < deadline, "{}", ok(&d, &["status"]));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(ok(&d, &["health"]).contains("controller   ok"));

    let all = ok(&d, &["config", "get"]);
    assert!(all.contains("store.consume = true"), "{all}");
    assert_eq!(
        ok(&d, &["config", "set", "store.trng_queue_size", "5000"]).trim(),
        "store.trng_queue_size = 5000"
    );
    assert_eq!(
        ok(&d, &["config", "get", "store.trng_queue_size"]).trim(),
        "store.trng_queue_size = 5000"
    );
    let out = lokey(&d, &["config", "set", "store.trng_queue_size", "5"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("from 10 to 1000000"));
    let out = lokey(&d, &["config", "set", "api.listen", "\"0.0.0.0:1\""]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("restart"));

    let info = ok(&d, &["device", "info"]);
    assert!(info.contains("emulator"), "{info}");
    assert!(info.contains("00 00 60 02"), "{info}");
    assert!(info.contains("config locked   yes"), "{info}");
    let out = lokey(&d, &["device", "lock", "--serial", "01 23"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already locked"));
}

#[test]
fn device_lock_needs_the_serial_number_back() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("lokeyd.toml");
    std::fs::write(&conf, "[chip]\nemulate_faults = [\"unlocked\"]\n").unwrap();
    let d = Daemon::start(&["--config", conf.to_str().unwrap()]);
    let info: serde_json::Value =
        serde_json::from_str(&ok(&d, &["device", "info", "--json"])).unwrap();
    assert_eq!(info["config_locked"], false);
    let serial = info["serial"].as_str().unwrap().to_string();
    // An unprovisioned chip: degraded, exit 1, and the report says which part fails.
    let out = lokey(&d, &["health"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("controller   FAILING"));
    // Not a terminal and no --serial: refused.
    let out = lokey(&d, &["device", "lock"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--serial"));
    // Another serial: refused, nothing locked.
    let out = lokey(
        &d,
        &["device", "lock", "--serial", "01 23 00 00 00 00 00 00 EE"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&ok(&d, &["device", "info", "--json"])).unwrap()
            ["config_locked"],
        false
    );
    let done = ok(&d, &["device", "lock", "--serial", &serial]);
    assert!(done.contains("Locked"), "{done}");
    assert!(ok(&d, &["device", "info"]).contains("config locked   yes"));
}

#[test]
fn selftest_passes_on_good_data_and_completions_print() {
    let d = seeded();
    let report = ok(&d, &["selftest", "1M"]);
    assert!(report.contains("FIPS 140-2: "), "{report}");
    assert!(!report.contains("FAIL"), "{report}");
    let out = lokey(&d, &["selftest", "100"]);
    assert_eq!(out.status.code(), Some(2));
    let bash = ok(&d, &["completions", "bash"]);
    assert!(bash.contains("selftest"), "{bash}");
}
