//! Suite: atecc. The ATECC608A driver against scripted bus transactions (embedded-hal-mock)
//! and against the emulator; CRC known answers; one test per emulator fault showing the typed
//! error and that no data comes with it.

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
use std::time::Duration;

use lokey::atecc::{
    Atecc608a, AteccError, ChipSource, ChipStatus, Emulator, EmulatorConfig, EmulatorEntropy,
    KeygenConfirmation, LockConfirmation, Timing, UNLOCKED_PATTERN, crc16,
};
use lokey::source::{ErrorKind as SourceErrorKind, Source, SourceKind};
use sha2::Digest as _;

const NACK: ErrorKind = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);

/// The CRC bytes (LE) the reference lists for complete packets, checked over count..data.
#[test]
fn crc_known_answers_from_the_reference() {
    let packets: &[&[u8]] = &[
        &[0x03, 0x07, 0x30, 0x00, 0x00, 0x00, 0x03, 0x5D], // Info
        &[0x03, 0x07, 0x1B, 0x00, 0x00, 0x00, 0x24, 0xCD], // Random
        &[0x03, 0x07, 0x02, 0x00, 0x15, 0x00, 0x17, 0x5D], // Read word 0x15
        &[0x03, 0x07, 0x02, 0x00, 0x00, 0x00, 0x1E, 0x2D], // Read word 0
        &[0x03, 0x07, 0x02, 0x00, 0x02, 0x00, 0x18, 0xAD], // Read word 2
        &[0x03, 0x07, 0x02, 0x00, 0x03, 0x00, 0x11, 0x2D], // Read word 3
        &[0x03, 0x07, 0x02, 0x00, 0x04, 0x00, 0x1D, 0x6D], // Read word 4
        &[0x03, 0x07, 0x02, 0x80, 0x00, 0x00, 0x09, 0xAD], // Read block 0
        &[0x03, 0x07, 0x02, 0x80, 0x08, 0x00, 0x0A, 0x4D], // Read block 1
        &[0x03, 0x07, 0x02, 0x80, 0x10, 0x00, 0x0A, 0x1D], // Read block 2
        &[0x03, 0x07, 0x02, 0x80, 0x18, 0x00, 0x09, 0xFD], // Read block 3
        &[0x03, 0x07, 0x17, 0x80, 0x00, 0x00, 0x39, 0x8D], // Lock config, no CRC
        &[0x03, 0x07, 0x17, 0x81, 0x00, 0x00, 0x3A, 0x07], // Lock data, no CRC
        &[0x03, 0x07, 0x17, 0x00, 0xD2, 0x2A, 0xD0, 0xB6], // Lock config with summary CRC
        &[0x03, 0x07, 0x47, 0x00, 0x00, 0x00, 0x2E, 0x85], // SHA start
    ];
    for p in packets {
        let crc = crc16(&p[1..6]).to_le_bytes();
        assert_eq!(crc, p[6..8], "packet {p:02X?}");
    }
    // Response groups: count..payload, then the CRC.
    let groups: &[&[u8]] = &[
        &[0x04, 0x00, 0x03, 0x40],
        &[0x04, 0x03, 0x83, 0x42],
        &[0x04, 0x07, 0x40, 0xC2],
        &[0x04, 0x0F, 0x23, 0x42],
        &[0x04, 0x11, 0x33, 0x43],
        &[0x04, 0xEE, 0x31, 0x41],
        &[0x04, 0xFF, 0x01, 0x42],
        &[0x07, 0x00, 0x00, 0x60, 0x02, 0x80, 0x38],
        &[0x07, 0x00, 0x00, 0x60, 0x03, 0x83, 0xBB],
    ];
    for g in groups {
        let n = g.len();
        assert_eq!(
            crc16(&g[..n - 2]).to_le_bytes(),
            g[n - 2..],
            "group {g:02X?}"
        );
    }
    let mut unlocked = vec![0x23];
    unlocked.extend_from_slice(&UNLOCKED_PATTERN);
    assert_eq!(crc16(&unlocked).to_le_bytes(), [0x41, 0x1A]);
    assert_eq!(crc16(b"123456789"), 0xBCDD);
}

/// A response group for `payload`.
fn group(payload: &[u8]) -> Vec<u8> {
    let mut g = vec![(payload.len() + 3) as u8];
    g.extend_from_slice(payload);
    let crc = crc16(&g);
    g.extend_from_slice(&crc.to_le_bytes());
    g
}

fn wake() -> Vec<T> {
    vec![
        T::write(0x00, vec![0x00]).with_error(NACK),
        T::read(0x60, vec![0x04, 0x11, 0x33, 0x43]),
    ]
}

fn cmd(op: u8, p1: u8, p2: u16) -> T {
    let mut p = vec![0x07, op, p1];
    p.extend_from_slice(&p2.to_le_bytes());
    let crc = crc16(&p);
    p.extend_from_slice(&crc.to_le_bytes());
    p.insert(0, 0x03);
    T::write(0x60, p)
}

/// The three config-word reads of the serial number `01 23 AA BB 11 22 33 44 EE`.
fn serial_reads() -> Vec<T> {
    vec![
        cmd(0x02, 0x00, 0),
        T::read(0x60, group(&[0x01, 0x23, 0xAA, 0xBB])),
        cmd(0x02, 0x00, 2),
        T::read(0x60, group(&[0x11, 0x22, 0x33, 0x44])),
        cmd(0x02, 0x00, 3),
        T::read(0x60, group(&[0xEE, 0x01, 0x01, 0x00])),
    ]
}

fn driver(script: &[T]) -> Atecc608a<Mock, NoopDelay> {
    Atecc608a::new(Mock::new(script), NoopDelay::new())
}

fn done(chip: Atecc608a<Mock, NoopDelay>) {
    let (mut i2c, _) = chip.release();
    i2c.done();
}

#[test]
fn wake_sends_the_pulse_and_checks_the_reply() {
    let mut chip = driver(&wake());
    chip.wake().unwrap();
    done(chip);

    // A wrong reply three times: a typed error with the bytes, after idling between tries.
    let mut script = Vec::new();
    for _ in 0..3 {
        script.push(T::write(0x00, vec![0x00]).with_error(NACK));
        script.push(T::read(0x60, vec![0x04, 0x00, 0x03, 0x40]));
        script.push(T::write(0x60, vec![0x02]));
    }
    let mut chip = driver(&script);
    assert_eq!(
        chip.wake(),
        Err(AteccError::Wake(vec![0x04, 0x00, 0x03, 0x40]))
    );
    done(chip);

    // No answer at all.
    let mut script = Vec::new();
    for _ in 0..3 {
        script.push(T::write(0x00, vec![0x00]).with_error(NACK));
        script.push(T::read(0x60, vec![0; 4]).with_error(NACK));
    }
    let mut chip = driver(&script);
    assert!(matches!(
        chip.wake(),
        Err(AteccError::NoResponse { address: 0x60, .. })
    ));
    done(chip);

    // A failed self test.
    let mut chip = driver(&[
        T::write(0x00, vec![0x00]).with_error(NACK),
        T::read(0x60, vec![0x04, 0x07, 0x40, 0xC2]),
    ]);
    assert_eq!(chip.wake(), Err(AteccError::Status { status: 0x07 }));
    done(chip);
}

#[test]
fn info_reads_the_revision_polling_while_the_chip_is_busy() {
    let mut script = wake();
    script.push(cmd(0x30, 0, 0));
    script.push(T::read(0x60, vec![0; 7]).with_error(NACK));
    script.push(T::read(
        0x60,
        vec![0x07, 0x00, 0x00, 0x60, 0x02, 0x80, 0x38],
    ));
    script.push(T::write(0x60, vec![0x02]));
    let mut chip = driver(&script);
    assert_eq!(chip.info().unwrap(), [0x00, 0x00, 0x60, 0x02]);
    chip.idle().unwrap();
    done(chip);
}

#[test]
fn random_returns_32_bytes_and_refuses_the_unlocked_pattern_and_repeats() {
    let block: Vec<u8> = (0..32).collect();
    let mut script = wake();
    script.push(cmd(0x1B, 0, 0));
    script.push(T::read(0x60, group(&block)));
    script.push(cmd(0x1B, 0, 0));
    script.push(T::read(0x60, group(&block)));
    script.push(cmd(0x1B, 0, 0));
    script.push(T::read(0x60, group(&UNLOCKED_PATTERN)));
    script.push(T::write(0x60, vec![0x01]));
    let mut chip = driver(&script);
    assert_eq!(chip.random().unwrap().to_vec(), block);
    assert_eq!(chip.random(), Err(AteccError::Repeated));
    assert_eq!(chip.random(), Err(AteccError::Unlocked));
    chip.sleep().unwrap();
    done(chip);
}

#[test]
fn a_status_group_crc_error_or_wrong_length_is_a_typed_error() {
    let mut script = wake();
    script.push(cmd(0x1B, 0, 0));
    let mut status = group(&[0xEE]);
    status.resize(35, 0xFF);
    script.push(T::read(0x60, status.clone()));
    // 0xEE: idle, wake, resend once; a second 0xEE is the error.
    script.push(T::write(0x60, vec![0x02]));
    script.extend(wake());
    script.push(cmd(0x1B, 0, 0));
    script.push(T::read(0x60, status));
    script.push(cmd(0x1B, 0, 0));
    let mut bad = group(&[7; 32]);
    bad[5] ^= 1;
    script.push(T::read(0x60, bad));
    script.push(cmd(0x30, 0, 0));
    let mut short = group(&[1, 2]);
    short.resize(7, 0xFF);
    script.push(T::read(0x60, short));
    let mut chip = driver(&script);
    assert_eq!(chip.random(), Err(AteccError::Status { status: 0xEE }));
    assert!(matches!(chip.random(), Err(AteccError::Crc)));
    assert!(matches!(
        chip.info(),
        Err(AteccError::Length {
            expected: 7,
            got: 5
        })
    ));
    done(chip);
}

#[test]
fn status_ee_idles_wakes_and_resends_the_command_once() {
    let block: Vec<u8> = (100..132).collect();
    let mut script = wake();
    script.push(cmd(0x1B, 0, 0));
    let mut status = group(&[0xEE]);
    status.resize(35, 0xFF);
    script.push(T::read(0x60, status));
    script.push(T::write(0x60, vec![0x02]));
    script.extend(wake());
    script.push(cmd(0x1B, 0, 0));
    script.push(T::read(0x60, group(&block)));
    let mut chip = driver(&script);
    assert_eq!(chip.random().unwrap().to_vec(), block);
    done(chip);
}

#[test]
fn a_data_reply_to_a_status_only_command_names_the_4_byte_status_group() {
    let mut script = wake();
    script.push(cmd(0x17, 0x80, 0));
    // A 7-byte data group where the 4-byte status group (count, status, CRC) belongs.
    script.push(T::read(0x60, group(&[1, 2, 3, 4])[..4].to_vec()));
    let mut chip = driver(&script);
    assert_eq!(
        chip.command(0x17, 0x80, 0, &[], 0),
        Err(AteccError::Length {
            expected: 4,
            got: 7
        })
    );
    done(chip);
}

#[test]
fn a_nack_is_no_response_and_any_other_bus_error_is_a_bus_error() {
    // The wake reply read fails with a bus error, not a NACK: a bus error, not "no response".
    let mut script = Vec::new();
    for _ in 0..3 {
        script.push(T::write(0x00, vec![0x00]).with_error(NACK));
        script.push(T::read(0x60, vec![0; 4]).with_error(ErrorKind::Other));
    }
    let mut chip = driver(&script);
    let e = chip.wake().unwrap_err();
    assert!(matches!(e, AteccError::Bus(_)), "{e:?}");
    assert!(!e.to_string().contains("no response"), "{e}");
    done(chip);

    // While polling: NACKs are the chip being busy; a lost arbitration ends the command at
    // once as a bus error.
    let mut script = wake();
    script.push(cmd(0x1B, 0, 0));
    script.push(T::read(0x60, vec![0; 35]).with_error(NACK));
    script.push(T::read(0x60, vec![0; 35]).with_error(ErrorKind::ArbitrationLoss));
    let mut chip = driver(&script);
    assert!(matches!(chip.random(), Err(AteccError::Bus(_))));
    done(chip);

    // Sending: a bus error is reported as such (no wake-and-resend as for a NACK).
    let mut script = wake();
    script.push(cmd(0x1B, 0, 0).with_error(ErrorKind::Bus));
    let mut chip = driver(&script);
    assert!(matches!(chip.random(), Err(AteccError::Bus(_))));
    done(chip);

    // Idling: NACK and bus error apart.
    let mut script = wake();
    script.push(T::write(0x60, vec![0x02]).with_error(NACK));
    script.extend(wake());
    script.push(T::write(0x60, vec![0x01]).with_error(ErrorKind::Other));
    let mut chip = driver(&script);
    chip.wake().unwrap();
    assert!(matches!(
        chip.idle(),
        Err(AteccError::NoResponse { address: 0x60, .. })
    ));
    chip.wake().unwrap();
    assert!(matches!(chip.sleep(), Err(AteccError::Bus(_))));
    done(chip);
}

/// A tracing subscriber that writes every event's fields into a string.
mod capture {
    use std::fmt::Write as _;
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::level_filters::LevelFilter;
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    #[derive(Clone, Default)]
    pub struct Log(pub Arc<Mutex<String>>);

    struct Fields<'a>(&'a mut String);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let _ = write!(self.0, "{}={value:?} ", field.name());
        }
    }

    impl Subscriber for Log {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn max_level_hint(&self) -> Option<LevelFilter> {
            Some(LevelFilter::TRACE)
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut log = self.0.lock().unwrap();
            event.record(&mut Fields(&mut log));
            log.push('\n');
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    /// Runs `f` with trace logging into the returned string.
    pub fn logged(f: impl FnOnce()) -> String {
        let log = Log::default();
        tracing::subscriber::with_default(log.clone(), f);
        log.0.lock().unwrap().clone()
    }
}

/// Whether any two consecutive bytes of `secret` appear in `log`, in hex (either case, with
/// or without a space) or as decimal Debug output.
fn leaks(log: &str, secret: &[u8]) -> Option<String> {
    let lower = log.to_lowercase();
    secret.windows(2).find_map(|w| {
        [
            format!("{:02x} {:02x}", w[0], w[1]),
            format!("{:02x}{:02x}", w[0], w[1]),
            format!("{}, {}", w[0], w[1]),
        ]
        .into_iter()
        .find(|needle| lower.contains(needle))
    })
}

#[test]
fn random_data_never_reaches_the_trace_log() {
    let block: Vec<u8> = (0xA0..=0xBF).collect();
    let mut script = wake();
    script.push(cmd(0x30, 0, 0));
    script.push(T::read(
        0x60,
        vec![0x07, 0x00, 0x00, 0x60, 0x02, 0x80, 0x38],
    ));
    script.push(cmd(0x1B, 0, 0));
    script.push(T::read(0x60, vec![0; 35]).with_error(NACK));
    script.push(T::read(0x60, group(&block)));
    let mut chip = driver(&script);
    let mut got = None;
    let log = capture::logged(|| {
        chip.info().unwrap();
        got = Some(chip.random().unwrap());
    });
    done(chip);
    assert_eq!(got.unwrap().to_vec(), block);
    assert_eq!(leaks(&log, &block), None, "{log}");
    // Other tracing stays: the command bytes, the Info reply, the Random reply's size.
    assert!(log.contains("03 07 1B 00 00 00 24 CD"), "{log}");
    assert!(log.contains("07 00 00 60 02 80 38"), "{log}");
    assert!(log.contains("35 bytes, count byte 0x23"), "{log}");

    // A chip still holding a result answers the wake with it: neither the log nor the error
    // shows more than its count byte.
    let mut script = Vec::new();
    for _ in 0..3 {
        script.push(T::write(0x00, vec![0x00]).with_error(NACK));
        script.push(T::read(0x60, group(&block)[..4].to_vec()));
        script.push(T::write(0x60, vec![0x02]));
    }
    let mut chip = driver(&script);
    let mut result = None;
    let log = capture::logged(|| result = Some(chip.wake()));
    done(chip);
    let e = result.unwrap().unwrap_err();
    assert_eq!(e, AteccError::Wake(vec![0x23]));
    assert_eq!(leaks(&format!("{log}{e}"), &block), None, "{log}{e}");
}

#[test]
fn random_data_from_the_emulator_never_reaches_the_trace_log() {
    let (mut chip, _) = emulated(EmulatorConfig::virtual_time());
    let mut blocks = Vec::new();
    let log = capture::logged(|| {
        for _ in 0..20 {
            blocks.push(chip.random().unwrap());
        }
    });
    assert!(log.contains("03 07 1B 00 00 00 24 CD"), "{log}");
    for block in &blocks {
        // Three bytes in a row: a chance match with the other logged bytes is negligible.
        let hex: Vec<String> = block
            .windows(3)
            .map(|w| format!("{:02X} {:02X} {:02X}", w[0], w[1], w[2]))
            .collect();
        for h in hex {
            assert!(!log.contains(&h), "{h} in {log}");
        }
    }
}

#[test]
fn config_zone_serial_and_lock_state_are_read_with_the_reference_packets() {
    let config: Vec<u8> = (0..128).map(|i| i as u8).collect();
    let mut script = wake();
    for block in 0..4u16 {
        script.push(cmd(0x02, 0x80, block << 3));
        script.push(T::read(
            0x60,
            group(&config[usize::from(block) * 32..][..32]),
        ));
    }
    script.extend(serial_reads());
    script.push(cmd(0x02, 0x00, 0x15));
    script.push(T::read(0x60, group(&[0x00, 0x00, 0x55, 0x00])));
    let mut chip = driver(&script);
    assert_eq!(chip.read_config_zone().unwrap().to_vec(), config);
    assert_eq!(
        chip.serial_number().unwrap(),
        [0x01, 0x23, 0xAA, 0xBB, 0x11, 0x22, 0x33, 0x44, 0xEE]
    );
    let lock = chip.lock_state().unwrap();
    assert!(lock.config_locked && !lock.data_locked);
    done(chip);
}

#[test]
fn locking_uses_mode_0_with_the_crc_of_the_config_read_back() {
    let mut config = [0u8; 128];
    config[..4].copy_from_slice(&[0x01, 0x23, 0x45, 0x67]);
    config[8..13].copy_from_slice(&[0x89, 0xAB, 0xCD, 0xEF, 0xEE]);
    config[86] = 0x55;
    config[87] = 0x55;
    let serial = [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF, 0xEE];
    let mut script = wake();
    for block in 0..4u16 {
        script.push(cmd(0x02, 0x80, block << 3));
        script.push(T::read(
            0x60,
            group(&config[usize::from(block) * 32..][..32]),
        ));
    }
    script.push(cmd(0x17, 0x00, crc16(&config)));
    script.push(T::read(0x60, vec![0x04, 0x00, 0x03, 0x40]));
    let mut chip = driver(&script);
    chip.lock_config(&LockConfirmation::for_serial_irreversibly(serial))
        .unwrap();
    done(chip);

    // Another chip's confirmation: nothing is sent after reading the config.
    let mut script = wake();
    for block in 0..4u16 {
        script.push(cmd(0x02, 0x80, block << 3));
        script.push(T::read(
            0x60,
            group(&config[usize::from(block) * 32..][..32]),
        ));
    }
    let mut chip = driver(&script);
    let mut other = serial;
    other[5] ^= 1;
    assert!(matches!(
        chip.lock_config(&LockConfirmation::for_serial_irreversibly(other)),
        Err(AteccError::WrongChip { .. })
    ));
    done(chip);
}

// --- Against the emulator -------------------------------------------------------------

fn emulated(
    config: EmulatorConfig,
) -> (
    Atecc608a<Emulator, lokey::atecc::EmulatorDelay>,
    lokey::atecc::EmulatorControl,
) {
    let emulator = Emulator::new(config);
    let (control, delay) = (emulator.control(), emulator.delay());
    (Atecc608a::new(emulator, delay), control)
}

#[test]
fn thousands_of_random_blocks_on_a_virtual_clock_without_an_error() {
    let config = EmulatorConfig::virtual_time();
    let clock = config.clock.clone();
    let (mut chip, _) = emulated(config);
    chip.check_usable().unwrap();
    let start = clock.now();
    let mut seen = std::collections::HashSet::new();
    let n = 5000;
    for _ in 0..n {
        let block = chip.random().expect("random");
        assert!(seen.insert(block), "a block repeated");
    }
    // Datasheet-maximum timing at 100 kHz: about 23 ms execution plus ~4 ms on the bus.
    let per_block = (clock.now() - start) / n;
    assert!(
        per_block >= Duration::from_millis(23) && per_block <= Duration::from_millis(30),
        "{per_block:?} per block"
    );
}

/// Virtual time per Random command with the chip executing in `timing`.
fn time_per_random(timing: Timing) -> Duration {
    let config = EmulatorConfig {
        timing,
        ..EmulatorConfig::virtual_time()
    };
    let clock = config.clock.clone();
    let (mut chip, _) = emulated(config);
    chip.random().unwrap();
    let start = clock.now();
    let n = 500;
    for _ in 0..n {
        chip.random().unwrap();
    }
    (clock.now() - start) / n
}

#[test]
fn the_driver_polls_so_its_time_per_block_follows_the_chip_not_the_datasheet_maximum() {
    // On the bus per block: the 9-byte command and the 35-byte read at 100 kHz, about
    // 4.1 ms, plus at most one poll interval (0.5 ms) and its NACKed address byte, plus the
    // idle and wake every second. A driver sleeping the 23 ms maximum needs 27 ms or more.
    let bus = Duration::from_micros(4140);
    let slack = Duration::from_micros(1000);
    for exec in [Duration::from_millis(11), Duration::from_millis(8)] {
        let per_block = time_per_random(Timing::Fixed(exec));
        assert!(
            per_block >= exec + bus && per_block <= exec + bus + slack,
            "chip executes in {exec:?}: {per_block:?} per block"
        );
    }
    // The emulator's typical timing (half the maximum, 11.5 ms): well under 23 ms.
    let typical = time_per_random(Timing::Typical);
    assert!(typical < Duration::from_millis(18), "{typical:?} per block");
}

#[test]
fn a_watchdog_shorter_than_the_drivers_budget_loses_no_command() {
    // The chip answers 0xEE near the end of each 300 ms window; the driver idles, wakes and
    // resends, so every call succeeds.
    let (mut chip, _) = emulated(EmulatorConfig {
        watchdog: Duration::from_millis(300),
        ..EmulatorConfig::virtual_time()
    });
    for i in 0..200 {
        if let Err(e) = chip.random() {
            panic!("call {i}: {e}");
        }
    }
}

#[test]
fn a_failing_entropy_source_fails_random_and_never_gives_zeros() {
    // Zeros written and then an error: the block must not be used.
    let (mut chip, _) = emulated(EmulatorConfig {
        entropy: EmulatorEntropy::from_fn(|buf| {
            buf.fill(0);
            Err(std::io::Error::other("no randomness here"))
        }),
        ..EmulatorConfig::virtual_time()
    });
    chip.check_usable().unwrap();
    for _ in 0..3 {
        assert_eq!(chip.random(), Err(AteccError::Status { status: 0x08 }));
    }

    // It recovers when the source does, and what it gives is the source's bytes.
    let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = failing.clone();
    let mut next = 0u8;
    let (mut chip, _) = emulated(EmulatorConfig {
        entropy: EmulatorEntropy::from_fn(move |buf| {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::other("unavailable"));
            }
            for b in buf.iter_mut() {
                next = next.wrapping_add(1);
                *b = next;
            }
            Ok(())
        }),
        ..EmulatorConfig::virtual_time()
    });
    assert_eq!(chip.random(), Err(AteccError::Status { status: 0x08 }));
    failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let block = chip.random().unwrap();
    assert_eq!(block.to_vec(), (1..=32).collect::<Vec<u8>>());
}

#[test]
fn the_default_emulator_entropy_is_the_operating_systems_rng() {
    let entropy = EmulatorConfig::default().entropy;
    let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
    entropy.fill(&mut a).unwrap();
    entropy.fill(&mut b).unwrap();
    assert_ne!(a, b);
    assert_ne!(a, [0; 32]);
}

#[test]
fn an_unlocked_emulated_chip_is_refused_then_locked_with_confirmation() {
    let (mut chip, _) = emulated(EmulatorConfig {
        locked: false,
        ..EmulatorConfig::virtual_time()
    });
    assert_eq!(chip.check_usable(), Err(AteccError::Unlocked));
    assert_eq!(chip.random(), Err(AteccError::Unlocked));
    let serial = chip.serial_number().unwrap();
    assert_eq!(serial[..2], [0x01, 0x23]);
    assert_eq!(serial[8], 0xEE);
    chip.lock_config(&LockConfirmation::for_serial_irreversibly(serial))
        .unwrap();
    chip.check_usable().unwrap();
    assert_ne!(chip.random().unwrap(), UNLOCKED_PATTERN);
    assert_eq!(
        chip.lock_config(&LockConfirmation::for_serial_irreversibly(serial)),
        Err(AteccError::AlreadyLocked)
    );
    let info = chip.device_info().unwrap();
    assert_eq!(info.revision, "00 00 60 02");
    assert!(info.config_locked && !info.data_locked);
}

/// Runs `random()` on an emulated chip with `fault` on: the first error must match `expect`
/// and no data may come while the fault is on (except where the fault lets some through).
fn with_fault(fault: &str, expect: impl Fn(&AteccError) -> bool) {
    let (mut chip, control) = emulated(EmulatorConfig::virtual_time());
    chip.check_usable().unwrap();
    chip.random().unwrap();
    control.set(fault, true).unwrap();
    let first_error = (0..20).find_map(|_| chip.random().err());
    let e = first_error.unwrap_or_else(|| panic!("{fault}: no error in 20 calls"));
    assert!(expect(&e), "{fault}: unexpected {e:?}");
    control.set(fault, false).unwrap();
    // Recovery once the fault is off.
    let recovered = (0..5).any(|_| chip.random().is_ok());
    assert!(recovered, "{fault}: no recovery");
}

#[test]
fn fault_unlocked() {
    with_fault("unlocked", |e| *e == AteccError::Unlocked);
}

#[test]
fn fault_stuck_output() {
    with_fault("stuck-output", |e| *e == AteccError::Repeated);
}

#[test]
fn fault_constant_byte() {
    // The driver refuses a repeat; the health tests catch the constant block itself.
    let (mut chip, control) = emulated(EmulatorConfig::virtual_time());
    control.set("constant-byte", true).unwrap();
    let block = chip.random().unwrap();
    assert!(block.iter().all(|b| *b == block[0]));
    assert_eq!(chip.random(), Err(AteccError::Repeated));
}

#[test]
fn fault_crc_corruption() {
    with_fault("crc-corruption", |e| matches!(e, AteccError::Crc));
}

#[test]
fn fault_nack_burst() {
    with_fault("nack-burst", |e| matches!(e, AteccError::NoResponse { .. }));
}

#[test]
fn fault_bus_gone() {
    // Every transfer fails with a bus error, not a NACK: a bus error, not "no response".
    with_fault("bus-gone", |e| {
        matches!(e, AteccError::Bus(_)) && !e.to_string().contains("no response")
    });
}

#[test]
fn fault_slow_execution() {
    with_fault("slow-execution", |e| {
        matches!(e, AteccError::NoResponse { .. })
    });
}

#[test]
fn fault_watchdog_sleep() {
    with_fault("watchdog-sleep", |e| {
        matches!(e, AteccError::NoResponse { .. })
    });
}

#[test]
fn fault_wrong_revision() {
    let (mut chip, control) = emulated(EmulatorConfig::virtual_time());
    control.set("wrong-revision", true).unwrap();
    assert_eq!(
        chip.check_usable(),
        Err(AteccError::NotAtecc608([0x00, 0x00, 0x50, 0x00]))
    );
}

#[test]
fn the_chip_source_checks_the_chip_and_classifies_errors() {
    let emulator = Emulator::new(EmulatorConfig {
        timing: Timing::Instant,
        ..EmulatorConfig::virtual_time()
    });
    let (control, delay) = (emulator.control(), emulator.delay());
    let mut source = ChipSource::new(
        "chip",
        SourceKind::Emulator,
        Atecc608a::new(emulator, delay),
    );
    let mut buf = [0u8; 100];
    source.read(&mut buf).unwrap();
    assert!(buf.iter().any(|b| *b != 0));
    control.set("unlocked", true).unwrap();
    let e = source.read(&mut buf).unwrap_err();
    assert_eq!(e.kind, SourceErrorKind::Fatal);
    assert!(e.message.contains("lokey device lock"), "{e}");
    control.set("unlocked", false).unwrap();
    control.set("bus-gone", true).unwrap();
    assert_eq!(
        source.read(&mut buf).unwrap_err().kind,
        SourceErrorKind::Gone
    );
    control.set("bus-gone", false).unwrap();
    control.set("wrong-revision", true).unwrap();
    assert_eq!(
        source.read(&mut buf).unwrap_err().kind,
        SourceErrorKind::Fatal
    );
    control.set("wrong-revision", false).unwrap();
    source.read(&mut buf).unwrap();
    source.rest(true);
    source.read(&mut buf).unwrap();
}

mod hostile {
    use super::*;
    use embedded_hal::i2c::I2c;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(crate::util::cases(512)))]

        /// Whatever the chip answers, the driver returns an error or 32 bytes from a group whose
        /// count and CRC are right, and never panics.
        #[test]
        fn arbitrary_responses_are_checked(reply in proptest::collection::vec(any::<u8>(), 0..40)) {
            let mut chip = Atecc608a::new(crate::util::Replay::new(&reply), NoopDelay::new());
            if let Ok(block) = chip.random() {
                prop_assert_eq!(reply[0], 0x23);
                prop_assert_eq!(&reply[1..33], &block[..]);
                prop_assert_eq!(crc16(&reply[..33]).to_le_bytes(), [reply[33], reply[34]]);
            }
            let _ = chip.info();
            let _ = chip.lock_state();
        }

        /// Whatever is written to the emulator, in any order, it never panics.
        #[test]
        fn arbitrary_traffic_never_panics_the_emulator(
            ops in proptest::collection::vec(
                (any::<bool>(), prop_oneof![Just(0x00u8), Just(0x60u8), any::<u8>()],
                 proptest::collection::vec(any::<u8>(), 0..48)),
                0..40,
            ),
        ) {
            let mut e = Emulator::new(EmulatorConfig { timing: Timing::Instant, ..EmulatorConfig::virtual_time() });
            let delay = e.delay();
            for (read, address, bytes) in ops {
                let mut d = delay.clone();
                embedded_hal::delay::DelayNs::delay_us(&mut d, 2000);
                if read {
                    let mut buf = vec![0u8; bytes.len()];
                    let _ = e.read(address, &mut buf);
                } else {
                    let _ = e.write(address, &bytes);
                }
            }
        }
    }
}

// --- Keys, signatures and counters ------------------------------------------------------

/// The complete packets `reference/verifiable-randomness.md` §4 lists, byte for byte.
#[test]
fn key_and_counter_packets_are_the_references_bytes() {
    let digest: [u8; 32] = sha2::Sha256::digest(b"abc").into();
    let mut nonce = vec![0x03, 0x27, 0x16, 0x43, 0x00, 0x00];
    nonce.extend_from_slice(&digest);
    nonce.extend_from_slice(&[0x14, 0x69]);
    let xy: Vec<u8> = (0..64).collect();
    let rs: Vec<u8> = (64..128).collect();
    let mut script = wake();
    // genkey: the serial number first (config words 0, 2, 3), then GenKey mode 0x04.
    script.extend(serial_reads());
    script.push(T::write(
        0x60,
        vec![0x03, 0x07, 0x40, 0x04, 0x00, 0x00, 0x83, 0x87],
    ));
    script.push(T::read(0x60, group(&xy)));
    script.push(T::write(
        0x60,
        vec![0x03, 0x07, 0x40, 0x00, 0x00, 0x00, 0x00, 0x05],
    ));
    script.push(T::read(0x60, group(&xy)));
    script.push(T::write(0x60, nonce));
    script.push(T::read(0x60, vec![0x04, 0x00, 0x03, 0x40]));
    script.push(T::write(
        0x60,
        vec![0x03, 0x07, 0x41, 0xA0, 0x00, 0x00, 0x7B, 0x85],
    ));
    script.push(T::read(0x60, group(&rs)));
    for (packet, value) in [
        ([0x03, 0x07, 0x24, 0x00, 0x00, 0x00, 0x0C, 0xFD], 7u32),
        ([0x03, 0x07, 0x24, 0x01, 0x00, 0x00, 0x0F, 0x77], 8),
        ([0x03, 0x07, 0x24, 0x00, 0x01, 0x00, 0x05, 0x7D], 70_000),
        ([0x03, 0x07, 0x24, 0x01, 0x01, 0x00, 0x06, 0xF7], 70_001),
    ] {
        script.push(T::write(0x60, packet.to_vec()));
        script.push(T::read(0x60, group(&value.to_le_bytes())));
    }
    let mut chip = driver(&script);
    let serial = [0x01, 0x23, 0xAA, 0xBB, 0x11, 0x22, 0x33, 0x44, 0xEE];
    let confirm = KeygenConfirmation::for_serial_destroying_old_key(serial, 0);
    assert_eq!(chip.genkey(&confirm).unwrap().to_vec(), xy);
    assert_eq!(chip.public_key(0).unwrap().to_vec(), xy);
    assert_eq!(chip.sign_digest(0, &digest).unwrap().to_vec(), rs);
    assert_eq!(chip.counter_read(0).unwrap(), 7, "little-endian");
    assert_eq!(chip.counter_increment(0).unwrap(), 8);
    assert_eq!(chip.counter_read(1).unwrap(), 70_000);
    assert_eq!(chip.counter_increment(1).unwrap(), 70_001);
    done(chip);
}

#[test]
fn bad_slots_and_counters_are_refused_before_anything_is_sent() {
    let mut chip = driver(&[]);
    assert_eq!(chip.public_key(16), Err(AteccError::NotKeySlot(16)));
    assert_eq!(
        chip.sign_digest(200, &[0; 32]),
        Err(AteccError::NotKeySlot(200))
    );
    assert_eq!(chip.counter_read(2), Err(AteccError::NoSuchCounter(2)));
    assert_eq!(chip.counter_increment(9), Err(AteccError::NoSuchCounter(9)));
    done(chip);
}

fn serial_of(chip: &mut Atecc608a<Emulator, lokey::atecc::EmulatorDelay>) -> [u8; 9] {
    chip.serial_number().unwrap()
}

fn verifying_key(xy: &[u8; 64]) -> p256::ecdsa::VerifyingKey {
    let mut sec1 = vec![0x04];
    sec1.extend_from_slice(xy);
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).unwrap()
}

#[test]
fn the_emulator_makes_real_p256_keys_and_signatures() {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    let (mut chip, _) = emulated(EmulatorConfig::virtual_time());
    let serial = serial_of(&mut chip);
    // No key in a fresh chip's slot yet: the public key cannot be computed.
    assert_eq!(chip.public_key(0), Err(AteccError::Status { status: 0x0F }));
    let confirm = KeygenConfirmation::for_serial_destroying_old_key(serial, 0);
    let xy = chip.genkey(&confirm).unwrap();
    assert_eq!(chip.public_key(0).unwrap(), xy);
    let key = verifying_key(&xy);
    for message in [&b"pulse 1"[..], b"pulse 2", b""] {
        let digest: [u8; 32] = sha2::Sha256::digest(message).into();
        let rs = chip.sign_digest(0, &digest).unwrap();
        let signature = p256::ecdsa::Signature::from_slice(&rs).unwrap();
        key.verify_prehash(&digest, &signature).unwrap();
        let mut other = digest;
        other[0] ^= 1;
        assert!(
            key.verify_prehash(&other, &signature).is_err(),
            "a signature of something else"
        );
    }
    // A new key replaces the old one.
    let again = chip.genkey(&confirm).unwrap();
    assert_ne!(again, xy);
    // Another chip's confirmation destroys nothing.
    let mut wrong = serial;
    wrong[4] ^= 1;
    assert!(matches!(
        chip.genkey(&KeygenConfirmation::for_serial_destroying_old_key(wrong, 0)),
        Err(AteccError::WrongChip { .. })
    ));
    assert_eq!(chip.public_key(0).unwrap(), again);
}

#[test]
fn the_emulator_refuses_keys_when_unlocked_and_on_slots_that_are_not_key_slots() {
    let (mut chip, _) = emulated(EmulatorConfig {
        locked: false,
        ..EmulatorConfig::virtual_time()
    });
    let serial = serial_of(&mut chip);
    let confirm = KeygenConfirmation::for_serial_destroying_old_key(serial, 1);
    assert_eq!(
        chip.genkey(&confirm),
        Err(AteccError::Status { status: 0x0F })
    );
    assert_eq!(
        chip.sign_digest(1, &[7; 32]),
        Err(AteccError::Status { status: 0x0F })
    );
    chip.lock_config(&LockConfirmation::for_serial_irreversibly(serial))
        .unwrap();
    chip.genkey(&confirm).unwrap();
    chip.sign_digest(1, &[7; 32]).unwrap();
    // Slots 3–15 are secrets and data in the factory configuration, not private keys.
    for slot in [3, 8, 15] {
        let confirm = KeygenConfirmation::for_serial_destroying_old_key(serial, slot);
        assert_eq!(
            chip.genkey(&confirm),
            Err(AteccError::Status { status: 0x0F }),
            "slot {slot}"
        );
        assert_eq!(
            chip.sign_digest(slot, &[7; 32]),
            Err(AteccError::Status { status: 0x0F }),
            "slot {slot}"
        );
    }
}

#[test]
fn counters_are_monotonic_and_refuse_to_pass_their_maximum() {
    let (mut chip, control) = emulated(EmulatorConfig::virtual_time());
    assert_eq!(chip.counter_read(0).unwrap(), 0);
    assert_eq!(chip.counter_increment(0).unwrap(), 1);
    assert_eq!(chip.counter_increment(0).unwrap(), 2);
    assert_eq!(chip.counter_read(1).unwrap(), 0, "counters are independent");
    control.set("counter-at-max", true).unwrap();
    assert_eq!(chip.counter_read(0).unwrap(), lokey::atecc::COUNTER_MAX);
    assert_eq!(
        chip.counter_increment(0),
        Err(AteccError::CounterExhausted {
            id: 0,
            max: 2_097_151
        })
    );
}

#[test]
fn the_signing_faults_fail_or_slow_signatures_and_leave_random_alone() {
    let config = EmulatorConfig::virtual_time();
    let clock = config.clock.clone();
    let (mut chip, control) = emulated(config);
    let serial = serial_of(&mut chip);
    chip.genkey(&KeygenConfirmation::for_serial_destroying_old_key(
        serial, 0,
    ))
    .unwrap();
    let time_to_sign = |chip: &mut Atecc608a<Emulator, _>| {
        let start = clock.now();
        let result = chip.sign_digest(0, &[1; 32]);
        (result, clock.now() - start)
    };
    let (ok, normal) = time_to_sign(&mut chip);
    ok.unwrap();
    control.set("slow-signing", true).unwrap();
    let (ok, slow) = time_to_sign(&mut chip);
    ok.unwrap();
    assert!(
        slow >= normal + Duration::from_millis(30),
        "{slow:?} vs {normal:?}"
    );
    control.set("slow-signing", false).unwrap();
    control.set("sign-fails", true).unwrap();
    assert_eq!(
        chip.sign_digest(0, &[1; 32]).unwrap_err().chip_status(),
        Some(ChipStatus::Execution)
    );
    chip.random().unwrap();
    control.set("sign-fails", false).unwrap();
    chip.sign_digest(0, &[1; 32]).unwrap();
}

#[test]
fn an_emulated_chip_keeps_its_serial_keys_and_counters_in_its_state_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = EmulatorConfig {
        state_file: Some(dir.path().join("emulated-chip.json")),
        ..EmulatorConfig::virtual_time()
    };
    let (mut chip, _) = emulated(config.clone());
    let serial = serial_of(&mut chip);
    let xy = chip
        .genkey(&KeygenConfirmation::for_serial_destroying_old_key(
            serial, 2,
        ))
        .unwrap();
    chip.counter_increment(1).unwrap();
    chip.counter_increment(1).unwrap();
    drop(chip);
    let (mut again, _) = emulated(config.clone());
    assert_eq!(serial_of(&mut again), serial);
    assert_eq!(again.public_key(2).unwrap(), xy);
    assert_eq!(again.counter_read(1).unwrap(), 2);
    assert_eq!(again.counter_read(0).unwrap(), 0);
    // A state file that is not one is refused by name, not silently replaced.
    std::fs::write(dir.path().join("emulated-chip.json"), "{").unwrap();
    let e = Emulator::open(config).unwrap_err();
    assert!(e.to_string().contains("emulated-chip.json"), "{e}");
}
