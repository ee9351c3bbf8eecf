//! Configuration: file, environment, flags and defaults; every refusal names its origin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lokey::config::{Config, Error, HostEnv, Origin, Sources, example_file, socket_candidates};
use toml::Value;

fn host(root: bool, vars: &[(&str, &str)]) -> HostEnv {
    HostEnv {
        root,
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
    }
}

fn user() -> HostEnv {
    host(
        false,
        &[("HOME", "/home/ada"), ("XDG_RUNTIME_DIR", "/run/user/1000")],
    )
}

fn write(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("lokeyd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn load_file(text: &str, host: HostEnv) -> Result<Config, Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), text);
    Config::load(&Sources {
        file: Some((path, true)),
        host,
        flags: vec![],
    })
    .map(|l| l.config)
}

#[test]
fn defaults_for_an_ordinary_user_live_under_xdg_directories() {
    let c = Config::load(&Sources {
        host: user(),
        ..Default::default()
    })
    .unwrap()
    .config;
    assert_eq!(
        c.daemon.data_dir,
        PathBuf::from("/home/ada/.local/state/lokey")
    );
    assert_eq!(
        c.daemon.socket,
        PathBuf::from("/run/user/1000/lokey/lokey.sock")
    );
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:8080");
    assert!(c.store.consume);
    assert!(c.kernel.enabled);
    assert_eq!(c.kernel.bits_per_byte, 1);
}

#[test]
fn xdg_state_home_wins_over_home() {
    let h = host(false, &[("HOME", "/home/ada"), ("XDG_STATE_HOME", "/s")]);
    assert_eq!(h.default_data_dir(), PathBuf::from("/s/lokey"));
    // No runtime directory: the socket stays with the user's private state.
    assert_eq!(h.default_socket(), PathBuf::from("/s/lokey/lokey.sock"));
}

#[test]
fn defaults_as_root_or_under_systemd_are_system_paths() {
    for h in [host(true, &[]), host(false, &[("INVOCATION_ID", "abc")])] {
        assert_eq!(h.default_data_dir(), PathBuf::from("/var/lib/lokey"));
        assert_eq!(h.default_socket(), PathBuf::from("/run/lokey/lokey.sock"));
    }
    // systemd's StateDirectory=/RuntimeDirectory= are used as given.
    let h = host(
        false,
        &[
            ("INVOCATION_ID", "abc"),
            ("STATE_DIRECTORY", "/var/lib/x"),
            ("RUNTIME_DIRECTORY", "/run/x"),
        ],
    );
    assert_eq!(h.default_data_dir(), PathBuf::from("/var/lib/x"));
    assert_eq!(h.default_socket(), PathBuf::from("/run/x/lokey.sock"));
}

#[test]
fn a_systemd_user_service_keeps_the_per_user_paths() {
    // `systemctl --user` sets INVOCATION_ID as the system manager does, and MANAGERPID too.
    let h = host(
        false,
        &[
            ("INVOCATION_ID", "abc"),
            ("MANAGERPID", "1234"),
            ("HOME", "/home/ada"),
            ("XDG_RUNTIME_DIR", "/run/user/1000"),
        ],
    );
    assert!(!h.under_systemd());
    assert_eq!(
        h.default_data_dir(),
        PathBuf::from("/home/ada/.local/state/lokey")
    );
    assert_eq!(
        h.default_socket(),
        PathBuf::from("/run/user/1000/lokey/lokey.sock")
    );
}

#[test]
fn cli_tries_its_own_socket_then_the_system_one_unless_told() {
    assert_eq!(
        socket_candidates(&user()),
        vec![
            PathBuf::from("/run/user/1000/lokey/lokey.sock"),
            PathBuf::from("/run/lokey/lokey.sock")
        ]
    );
    assert_eq!(
        socket_candidates(&host(true, &[])),
        vec![PathBuf::from("/run/lokey/lokey.sock")]
    );
    let h = host(false, &[("LOKEY_SOCKET", "/tmp/s.sock")]);
    assert_eq!(socket_candidates(&h), vec![PathBuf::from("/tmp/s.sock")]);
}

#[test]
fn a_file_sets_values() {
    let c = load_file(
        "[store]\ntrng_queue_size = 5000\nconsume = true\n[api]\nlisten = \"0.0.0.0:9000\"\n",
        user(),
    )
    .unwrap();
    assert_eq!(c.store.trng_queue_size, 5000);
    assert_eq!(c.api.listen.to_string(), "0.0.0.0:9000");
}

#[test]
fn unknown_key_names_file_line_key_and_a_hint() {
    let err = load_file("[store]\n\ntrng_queue_sise = 10\n", user()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, Error::UnknownKey { origin: Origin::File { line: 3, .. }, key, .. } if key == "store.trng_queue_sise"),
        "{err:?}"
    );
    assert!(msg.contains("lokeyd.toml:3"), "{msg}");
    assert!(
        msg.contains("did you mean `store.trng_queue_size`"),
        "{msg}"
    );
}

#[test]
fn unknown_section_is_refused() {
    let err = load_file("[stroe]\nx = 1\n", user()).unwrap_err();
    assert!(
        matches!(&err, Error::UnknownKey { key, .. } if key == "stroe"),
        "{err:?}"
    );
}

#[test]
fn out_of_range_value_names_line_key_and_range() {
    let err = load_file("# c\n[store]\ntrng_queue_size = 5\n", user()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("lokeyd.toml:3"), "{msg}");
    assert!(msg.contains("store.trng_queue_size"), "{msg}");
    assert!(msg.contains("from 10 to 1000000"), "{msg}");
}

#[test]
fn wrong_type_is_refused_with_what_is_expected() {
    let err = load_file("[kernel]\nenabled = \"yes\"\n", user()).unwrap_err();
    assert!(
        err.to_string()
            .contains("key `kernel.enabled`: \"yes\" is not allowed: expected true or false"),
        "{err}"
    );
    let err = load_file("[chip]\nmode = \"magic\"\n", user()).unwrap_err();
    assert!(
        err.to_string().contains("one of auto, hardware, emulator"),
        "{err}"
    );
    let err = load_file("[api]\nlisten = \"localhost\"\n", user()).unwrap_err();
    assert!(err.to_string().contains("ADDRESS:PORT"), "{err}");
}

#[test]
fn syntax_error_names_line_and_column() {
    let err = load_file("[store]\ntrng_queue_size = = 3\n", user()).unwrap_err();
    assert!(matches!(err, Error::Syntax { line: 2, .. }), "{err:?}");
}

#[test]
fn missing_explicit_file_is_an_error_but_missing_default_file_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let explicit = Config::load(&Sources {
        file: Some((missing.clone(), true)),
        host: user(),
        flags: vec![],
    });
    assert!(matches!(explicit, Err(Error::Read { .. })));
    let implicit = Config::load(&Sources {
        file: Some((missing, false)),
        host: user(),
        flags: vec![],
    });
    assert!(implicit.is_ok());
}

#[test]
fn precedence_is_flags_then_environment_then_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "[store]\ntrng_queue_size = 100\nfortuna_queue_size = 100\n[chip]\ni2c_bus = 3\n",
    );
    let mut h = user();
    h.vars.insert("TRNG_QUEUE_SIZE".into(), "200".into());
    h.vars.insert("FORTUNA_QUEUE_SIZE".into(), "300".into());
    // LOKEY_* names win over the Go names.
    h.vars
        .insert("LOKEY_STORE_FORTUNA_QUEUE_SIZE".into(), "400".into());
    let loaded = Config::load(&Sources {
        file: Some((path, true)),
        host: h,
        flags: vec![(
            "--trng".into(),
            "store.trng_queue_size".into(),
            Value::Integer(500),
        )],
    })
    .unwrap();
    let c = loaded.config;
    assert_eq!(c.store.trng_queue_size, 500, "flag beats environment");
    assert_eq!(c.store.fortuna_queue_size, 400, "LOKEY_ beats Go name");
    assert_eq!(c.chip.i2c_bus, 3, "file beats default");
}

#[test]
fn go_variables_are_understood() {
    let mut h = user();
    for (k, v) in [
        ("PORT", "9090"),
        ("DB_PATH", "/data"),
        ("I2C_BUS_NUMBER", "0"),
        ("LOG_LEVEL", "DEBUG"),
        ("CONTROLLER_ADDR", "http://controller:8081"),
    ] {
        h.vars.insert(k.into(), v.into());
    }
    let loaded = Config::load(&Sources {
        host: h,
        ..Default::default()
    })
    .unwrap();
    let c = &loaded.config;
    assert_eq!(c.api.listen.to_string(), "127.0.0.1:9090");
    assert_eq!(c.daemon.data_dir, PathBuf::from("/data"));
    assert_eq!(c.chip.i2c_bus, 0);
    assert_eq!(c.daemon.log_level, "debug");
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("CONTROLLER_ADDR is ignored")),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn port_keeps_the_configured_address() {
    let mut h = user();
    h.vars.insert("PORT".into(), "7000".into());
    let c = load_file("[api]\nlisten = \"0.0.0.0:1\"\n", h).unwrap();
    assert_eq!(c.api.listen.to_string(), "0.0.0.0:7000");
}

#[test]
fn bad_environment_values_name_the_variable() {
    for (var, value, expect) in [
        (
            "TRNG_QUEUE_SIZE",
            "5",
            "environment variable TRNG_QUEUE_SIZE",
        ),
        (
            "TRNG_QUEUE_SIZE",
            "lots",
            "environment variable TRNG_QUEUE_SIZE",
        ),
        ("PORT", "99999", "environment variable PORT"),
        ("LOKEY_KERNEL_ENABLED", "maybe", "true or false"),
        ("LOKEY_KERNEL_BITS_PER_BYTE", "9", "from 0 to 8"),
    ] {
        let mut h = user();
        h.vars.insert(var.into(), value.into());
        let err = Config::load(&Sources {
            host: h,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains(expect), "{var}={value}: {err}");
    }
}

#[test]
fn unknown_lokey_variable_is_refused_with_a_hint() {
    let mut h = user();
    h.vars.insert("LOKEY_LISTN".into(), "1.2.3.4:5".into());
    let err = Config::load(&Sources {
        host: h,
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("did you mean `LOKEY_LISTEN`"),
        "{err}"
    );
}

#[test]
fn hex_addresses_are_accepted_from_the_environment() {
    let mut h = user();
    h.vars.insert("LOKEY_CHIP_ADDRESS".into(), "0x35".into());
    let c = Config::load(&Sources {
        host: h,
        ..Default::default()
    })
    .unwrap()
    .config;
    assert_eq!(c.chip.address, 0x35);
}

#[test]
fn printed_configuration_loads_back_to_the_same_configuration() {
    let c = load_file(
        "[store]\ntrng_queue_size = 1234\n[chip]\nemulate_faults = [\"stuck-output\"]\n",
        user(),
    )
    .unwrap();
    let again = load_file(&c.to_toml(), user()).unwrap();
    assert_eq!(c, again);
}

#[test]
fn printed_configuration_hides_the_admin_token() {
    let c = load_file("[api]\nadmin_token = \"s3cret\"\n", user()).unwrap();
    assert_eq!(c.api.admin_token, "s3cret");
    let text = c.to_toml();
    assert!(!text.contains("s3cret"));
    assert!(text.contains("admin_token is set"));
}

#[test]
fn example_file_documents_every_key_and_uncommented_gives_the_defaults() {
    let h = user();
    let text = example_file(&h);
    for f in lokey::config::FIELDS {
        let key = f.path.split_once('.').unwrap().1;
        assert!(text.contains(&format!("#{key} = ")), "{} missing", f.path);
    }
    // Commented out, it is an empty (valid) configuration.
    assert_eq!(load_file(&text, h.clone()).unwrap(), Config::defaults(&h));
    // Uncommented, it states exactly the defaults.
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix('#') {
            Some(rest) if rest.contains(" = ") && !rest.starts_with(' ') => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    // (A key unset by default shows the value it then follows: set, it is that value.)
    let mut stated = Config::defaults(&h);
    stated.chip.credit_bits_per_byte = Some(stated.kernel.bits_per_byte);
    stated.hwrng.credit_bits_per_byte = Some(stated.kernel.bits_per_byte);
    assert_eq!(load_file(&uncommented, h.clone()).unwrap(), stated);
    assert_eq!((stated.chip_credit(), stated.hwrng_credit()), {
        let d = Config::defaults(&h);
        (d.chip_credit(), d.hwrng_credit())
    });
}

#[test]
fn loading_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut h = user();
    h.vars
        .insert("LOKEY_DATA_DIR".into(), data.display().to_string());
    let c = Config::load(&Sources {
        host: h,
        ..Default::default()
    })
    .unwrap()
    .config;
    assert_eq!(c.daemon.data_dir, data);
    assert!(!data.exists());
}

#[test]
fn set_checks_like_the_file_and_get_reads_back() {
    let mut c = Config::defaults(&user());
    let origin = Origin::Flag("test".into());
    c.set(
        "store.trng_queue_size",
        &serde_json::json!(2000),
        origin.clone(),
    )
    .unwrap();
    assert_eq!(
        c.get("store.trng_queue_size"),
        Some(serde_json::json!(2000))
    );
    let before = c.clone();
    for (key, value) in [
        ("store.trng_queue_size", serde_json::json!(5)),
        ("store.trng_queue_size", serde_json::json!("many")),
        ("store.consume", serde_json::json!(null)),
        ("store.nope", serde_json::json!(1)),
    ] {
        assert!(c.set(key, &value, origin.clone()).is_err(), "{key}={value}");
    }
    assert_eq!(c, before, "a refused value changed the configuration");
    assert_eq!(c.get("nope.nope"), None);
}

#[test]
fn environment_and_flags_pin_their_keys() {
    let mut h = user();
    h.vars.insert("TRNG_QUEUE_SIZE".into(), "50".into());
    let loaded = Config::load(&Sources {
        host: h,
        flags: vec![("--x".into(), "kernel.enabled".into(), Value::Boolean(false))],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        loaded.pinned,
        vec![
            "kernel.enabled".to_string(),
            "store.trng_queue_size".to_string()
        ]
    );
    for key in lokey::config::LIVE_KEYS {
        assert!(lokey::config::field(key).is_some(), "{key} is not a key");
    }
}

#[test]
fn what_is_built_at_start_is_not_a_live_key() {
    // The sources and the feeders exist from start to exit; changing these needs a restart.
    for key in [
        "kernel.enabled",
        "hwrng.mode",
        "hwrng.path",
        "hwrng.min_entropy",
        "chip.mode",
        "chip.min_entropy",
        "daemon.user",
        "api.listen",
    ] {
        assert!(lokey::config::field(key).is_some(), "{key} is not a key");
        assert!(!lokey::config::LIVE_KEYS.contains(&key), "{key} is live");
    }
}

#[test]
fn stored_settings_override_the_file_but_not_the_environment_or_flags() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "[store]\ntrng_queue_size = 500\nfortuna_queue_size = 600\nconsume = true\n",
    );
    let mut loaded = Config::load(&Sources {
        file: Some((path, true)),
        host: host(false, &[("HOME", "/h"), ("TRNG_QUEUE_SIZE", "700")]),
        flags: vec![],
    })
    .unwrap();
    let notes = loaded.apply_stored([
        ("store.trng_queue_size", "900"),
        ("store.fortuna_queue_size", "800"),
        ("store.consume", "false"),
        ("api.listen", "\"0.0.0.0:80\""),
        ("kernel.bits_per_byte", "99"),
    ]);
    let c = &loaded.config;
    assert_eq!(c.store.trng_queue_size, 700, "the environment wins");
    assert_eq!(c.store.fortuna_queue_size, 800, "stored beats the file");
    assert!(!c.store.consume);
    assert_eq!(
        c.api.listen.to_string(),
        "127.0.0.1:8080",
        "not a run-time key"
    );
    assert_eq!(c.kernel.bits_per_byte, 1, "out of range: skipped");
    assert_eq!(notes.len(), 3, "{notes:?}");
    assert!(
        notes[0].contains("TRNG") || notes[0].contains("environment"),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n.contains("api.listen")));
    assert!(notes.iter().any(|n| n.contains("kernel.bits_per_byte")));
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::util::cases(256)))]

        /// Any bytes as a configuration file: an answer, never a panic.
        #[test]
        fn arbitrary_files_never_panic(text in "\\PC{0,200}") {
            let _ = load_file(&text, user());
        }

        /// Known keys with values of any type: accepted only when valid, refused with the key
        /// named otherwise.
        #[test]
        fn known_keys_with_arbitrary_values(
            field in 0..lokey::config::FIELDS.len(),
            value in prop_oneof![
                any::<i64>().prop_map(|i| i.to_string()),
                "[a-z0-9:./ ]{0,20}".prop_map(|s| format!("{s:?}")),
                any::<bool>().prop_map(|b| b.to_string()),
                Just("[1, \"x\"]".to_string()),
                Just("1.5".to_string()),
            ],
        ) {
            let f = &lokey::config::FIELDS[field];
            let (section, key) = f.path.split_once('.').unwrap();
            let text = format!("[{section}]\n{key} = {value}\n");
            if let Err(e) = load_file(&text, user()) {
                let msg = e.to_string();
                prop_assert!(msg.contains(f.path) || msg.contains(key), "{msg}");
            }
        }
    }
}

#[test]
fn min_entropy_is_a_real_number_above_0_and_at_most_8() {
    let c = load_file(
        "[chip]\nmin_entropy = 7.5\n[hwrng]\nmin_entropy = 0.9\n",
        user(),
    )
    .unwrap();
    assert_eq!((c.chip.min_entropy, c.hwrng.min_entropy), (7.5, 0.9));
    // A whole number is that number; the environment takes fractions too.
    let c = load_file("[chip]\nmin_entropy = 8\n", user()).unwrap();
    assert_eq!(c.chip.min_entropy, 8.0);
    let env = host(
        false,
        &[("HOME", "/h"), ("LOKEY_HWRNG_MIN_ENTROPY", "6.25")],
    );
    let c = load_file("", env).unwrap();
    assert_eq!(c.hwrng.min_entropy, 6.25);
    for bad in [
        "0", "0.0", "-1.5", "8.5", "8.000001", "nan", "inf", "\"7.5\"",
    ] {
        let text = format!("[daemon]\nlog_level = \"info\"\n[hwrng]\nmin_entropy = {bad}\n");
        let err = load_file(&text, user()).expect_err(bad);
        let message = err.to_string();
        assert!(
            matches!(&err, Error::Invalid { origin: Origin::File { line: 4, .. }, key, .. }
                if key == "hwrng.min_entropy"),
            "{bad}: {message}"
        );
        assert!(
            message.contains("lokeyd.toml:4")
                && message.contains("a number greater than 0 and at most 8"),
            "{bad}: {message}"
        );
    }
    let env = host(false, &[("HOME", "/h"), ("LOKEY_CHIP_MIN_ENTROPY", "0")]);
    let err = load_file("", env).unwrap_err().to_string();
    assert!(
        err.contains("LOKEY_CHIP_MIN_ENTROPY") && err.contains("greater than 0"),
        "{err}"
    );
}

#[test]
fn each_source_has_its_own_credit_from_0_to_8_or_follows_kernel_bits_per_byte() {
    let c = load_file("[kernel]\nbits_per_byte = 2\n", user()).unwrap();
    assert_eq!(
        (c.chip.credit_bits_per_byte, c.hwrng.credit_bits_per_byte),
        (None, None)
    );
    assert_eq!(
        (c.chip_credit(), c.hwrng_credit()),
        (2, 2),
        "unset: follows"
    );
    let c = load_file(
        "[chip]\ncredit_bits_per_byte = 0\n[hwrng]\ncredit_bits_per_byte = 8\n",
        user(),
    )
    .unwrap();
    assert_eq!((c.chip_credit(), c.hwrng_credit()), (0, 8));
    assert!(c.may_credit());
    // Nothing may be credited: no capability needed.
    let c = load_file(
        "[kernel]\nbits_per_byte = 0\n[hwrng]\nmode = \"off\"\ncredit_bits_per_byte = 4\n",
        user(),
    )
    .unwrap();
    assert!(!c.may_credit());
    let c = load_file(
        "[kernel]\nbits_per_byte = 0\n[chip]\ncredit_bits_per_byte = 1\n",
        user(),
    )
    .unwrap();
    assert!(c.may_credit(), "the chip's own credit needs the capability");
    for (section, bad) in [("chip", "9"), ("hwrng", "-1"), ("chip", "1.5")] {
        let text = format!("[{section}]\n\ncredit_bits_per_byte = {bad}\n");
        let err = load_file(&text, user()).unwrap_err().to_string();
        assert!(
            err.contains("lokeyd.toml:3")
                && err.contains(&format!("{section}.credit_bits_per_byte"))
                && err.contains("an integer from 0 to 8"),
            "{err}"
        );
    }
    // --print-config leaves an unset credit out rather than inventing a value.
    let c = load_file("[hwrng]\ncredit_bits_per_byte = 3\n", user()).unwrap();
    let text = c.to_toml();
    assert!(text.contains("credit_bits_per_byte = 3"), "{text}");
    let chip = text
        .split("[chip]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .unwrap_or_else(|| panic!("no [chip] section: {text}"));
    assert!(!chip.contains("credit_bits_per_byte"), "{text}");
}

const TWO_CHIPS_AND_A_DEVICE: &str = r#"
[kernel]
bits_per_byte = 2

[[source]]
name = "chip-a"
kind = "atecc608a"

[[source]]
name = "chip-b"
kind = "atecc608a"
address = 0x61
credit_bits_per_byte = 3

[[source]]
name = "usb"
kind = "device"
path = "/dev/ttyACM0"
min_entropy = 6.5
"#;

#[test]
fn sources_as_a_list_with_each_kinds_settings() {
    let c = load_file(TWO_CHIPS_AND_A_DEVICE, user()).unwrap();
    let names: Vec<&str> = c.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["chip-a", "chip-b", "usb"]);
    assert_eq!((c.sources[0].bus(), c.sources[0].address()), (1, 0x60));
    assert_eq!(c.sources[1].address(), 0x61);
    assert_eq!(c.sources[1].credit_bits_per_byte, Some(3));
    assert_eq!(c.sources[2].min_entropy, 6.5);
    assert_eq!(c.sources[0].min_entropy, 8.0);
    // The sections keep their defaults; --print-config shows the list.
    assert_eq!(c.chip, Config::defaults(&user()).chip);
    assert!(c.to_toml().contains("[[source]]"), "{}", c.to_toml());
}

/// The error loading `text` (a list that must be refused).
fn refused(text: &str) -> String {
    load_file(text, user()).unwrap_err().to_string()
}

#[test]
fn a_list_and_the_chip_or_hwrng_section_together_are_refused() {
    for section in ["[chip]\naddress = 0x61", "[hwrng]\nmode = \"off\""] {
        let e = refused(&format!("{section}\n{TWO_CHIPS_AND_A_DEVICE}"));
        assert!(e.contains("two forms of one setting"), "{e}");
        assert!(e.contains(".toml:1:"), "names the section's line: {e}");
    }
    // The environment or a flag setting a section with a list: refused too, naming it.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), TWO_CHIPS_AND_A_DEVICE);
    let e = Config::load(&Sources {
        file: Some((path.clone(), true)),
        host: host(false, &[("LOKEY_HWRNG_MODE", "off")]),
        flags: vec![],
    })
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("LOKEY_HWRNG_MODE") && e.contains("[[source]]"),
        "{e}"
    );
    // `--emulate` (chip.mode = "emulator") emulates every listed chip instead.
    let c = Config::load(&Sources {
        file: Some((path, true)),
        host: user(),
        flags: vec![(
            "--emulate".into(),
            "chip.mode".into(),
            toml::Value::String("emulator".into()),
        )],
    })
    .unwrap()
    .config;
    let kinds: Vec<&str> = c.sources.iter().map(|s| s.kind.as_str()).collect();
    assert_eq!(kinds, ["emulator", "emulator", "device"]);
}

#[test]
fn a_bad_source_table_is_refused_with_its_line_and_what_to_do() {
    let cases: &[(&str, &str)] = &[
        // A key another kind takes.
        (
            "[[source]]\nname = \"a\"\nkind = \"hwrng\"\naddress = 0x61\n",
            "only to atecc608a, emulator",
        ),
        // Names are unique.
        (
            "[[source]]\nname = \"a\"\nkind = \"hwrng\"\n[[source]]\nname = \"a\"\nkind = \"emulator\"\n",
            "unique",
        ),
        // Two chips at one address on one bus.
        (
            "[[source]]\nname = \"a\"\nkind = \"emulator\"\n[[source]]\nname = \"b\"\nkind = \"emulator\"\n",
            "its own address",
        ),
        (
            "[[source]]\nname = \"a\"\nkind = \"device\"\n",
            "needs a `path`",
        ),
        ("[[source]]\nkind = \"hwrng\"\n", "needs a `name`"),
        ("[[source]]\nname = \"A b\"\nkind = \"hwrng\"\n", "a-z, 0-9"),
        (
            "[[source]]\nname = \"a\"\nkind = \"chip\"\n",
            "key `source.kind`",
        ),
        (
            "[[source]]\nname = \"a\"\nkind = \"emulator\"\nadress = 0x61\n",
            "did you mean `source.address`",
        ),
        (
            "[[source]]\nname = \"a\"\nkind = \"emulator\"\nmin_entropy = 9\n",
            "source.min_entropy",
        ),
    ];
    for (text, expected) in cases {
        let e = refused(text);
        assert!(e.contains(expected), "{text}: {e}");
    }
    // The message names the table's line.
    let e = refused(cases[1].0);
    assert!(e.contains(".toml:4:"), "{e}");
}

#[test]
fn the_same_address_on_different_buses_or_kinds_is_fine() {
    let c = load_file(
        "[[source]]\nname = \"a\"\nkind = \"emulator\"\n\
         [[source]]\nname = \"b\"\nkind = \"emulator\"\nbus = 2\n\
         [[source]]\nname = \"c\"\nkind = \"atecc608a\"\n",
        user(),
    )
    .unwrap();
    assert_eq!(c.sources.len(), 3);
}

#[test]
fn with_a_list_crediting_follows_the_listed_sources() {
    let may = |text: &str| load_file(text, user()).unwrap().may_credit();
    // Emulators only: never credited, so no capability is needed.
    assert!(!may(
        "[[source]]\nname = \"a\"\nkind = \"emulator\"\ncredit_bits_per_byte = 4\n"
    ));
    // The shared rate 0, one device with its own credit: needed.
    assert!(may(
        "[kernel]\nbits_per_byte = 0\n[[source]]\nname = \"a\"\nkind = \"device\"\npath = \"/dev/x\"\ncredit_bits_per_byte = 2\n"
    ));
    assert!(!may(
        "[kernel]\nbits_per_byte = 0\n[[source]]\nname = \"a\"\nkind = \"atecc608a\"\n"
    ));
    assert!(may("[[source]]\nname = \"a\"\nkind = \"atecc608a\"\n"));
}

#[test]
fn an_upstream_feeder_keeps_the_capability_only_when_it_credits() {
    let pin = format!("sha256:{}", "ab".repeat(32));
    let base = format!(
        "[kernel]\nbits_per_byte = 0\n[chip]\nmode = \"off\"\n[hwrng]\nmode = \"off\"\n\
         [upstream]\nurl = \"https://device:8443\"\npin = \"{pin}\"\n"
    );
    let c = load_file(&base, user()).unwrap();
    assert!(c.upstream.enabled());
    assert_eq!(c.upstream.credit_bits_per_byte, 0, "mix only by default");
    assert!(!c.may_credit());
    let c = load_file(&format!("{base}credit_bits_per_byte = 2\n"), user()).unwrap();
    assert!(
        c.may_credit(),
        "crediting upstream bytes needs CAP_SYS_ADMIN"
    );
    // The environment names the variable that is missing its pin.
    let err = Config::load(&Sources {
        file: None,
        host: host(
            false,
            &[
                ("HOME", "/home/ada"),
                ("LOKEY_UPSTREAM_URL", "https://device:8443"),
                ("LOKEY_UPSTREAM_CREDIT_BITS_PER_BYTE", "8"),
            ],
        ),
        flags: vec![],
    })
    .unwrap_err()
    .to_string();
    for part in [
        "LOKEY_UPSTREAM_URL",
        "upstream.pin",
        "upstream.credit_bits_per_byte = 8",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
}
