//! Suite: atecc_bus. Several emulated ATECC608As on one emulated bus, driven by one bus
//! thread: executions overlap while transfers share the bus, every chip is its own source,
//! a fault stays with its chip, and device requests work while the bus is harvested. Virtual
//! time throughout, so the timing checks are exact and fast (the real-clock figures are the
//! `atecc` benchmark's).

use std::time::Duration;

use lokey::atecc::{
    BusChipSource, BusError, BusHarvest, Chip, Clock, DEFAULT_ADDRESS, EmulatedBus, EmulatorConfig,
    EmulatorControl, EmulatorDelay,
};
use lokey::source::{ErrorKind, Source, SourceKind};

type Emulated = BusChipSource<EmulatedBus, EmulatorDelay>;

/// `n` provisioned chips at 0x60, 0x61, … on one virtual-time bus with datasheet-maximum
/// timing; the bus, their fault switches and the bus clock.
fn chips_on_a_bus(n: u8) -> (EmulatedBus, Vec<EmulatorControl>, Clock) {
    let clock = Clock::virtual_time();
    let mut bus = EmulatedBus::new(clock.clone());
    let controls = (0..n)
        .map(|i| {
            bus.add(EmulatorConfig {
                address: DEFAULT_ADDRESS + i,
                ..EmulatorConfig::virtual_time()
            })
            .unwrap()
        })
        .collect();
    (bus, controls, clock)
}

/// [`chips_on_a_bus`] harvested by one bus thread: the chips' sources, fault switches and the
/// bus clock.
fn bus(n: u8) -> (Vec<Emulated>, Vec<EmulatorControl>, Clock) {
    let (bus, controls, clock) = chips_on_a_bus(n);
    let mut harvest = BusHarvest::emulated("test", bus);
    let sources = (0..n)
        .map(|i| {
            harvest.add(
                format!("chip{i}"),
                SourceKind::Emulator,
                DEFAULT_ADDRESS + i,
            )
        })
        .collect();
    harvest.spawn().unwrap();
    (sources, controls, clock)
}

/// Reads `blocks` blocks from every source at once (one thread each, as the daemon's harvest
/// threads do) and returns them per source.
fn read_all(sources: Vec<Emulated>, blocks: usize) -> Vec<(Emulated, Vec<[u8; 32]>)> {
    let threads: Vec<_> = sources
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let mut got = Vec::new();
                for _ in 0..blocks {
                    let mut b = [0u8; 32];
                    s.read(&mut b).unwrap();
                    got.push(b);
                }
                (s, got)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// Bus time per block per chip with `n` chips on the bus.
fn time_per_block(n: u8) -> Duration {
    let (sources, _, clock) = bus(n);
    let results = read_all(sources, 1);
    let start = clock.now();
    let sources = results.into_iter().map(|(s, _)| s).collect();
    read_all(sources, 40);
    (clock.now() - start) / 40
}

#[test]
fn on_one_bus_transfers_take_turns_and_executions_overlap() {
    use lokey::atecc::{Atecc608a, SharedBus};
    let (bus, _, clock) = chips_on_a_bus(2);
    let delay = bus.delay();
    let shared = SharedBus::new(bus);
    let mut chips: Vec<_> = (0..2)
        .map(|i| Atecc608a::with_address(shared.clone(), delay.clone(), DEFAULT_ADDRESS + i))
        .collect();
    for chip in &mut chips {
        chip.check_usable().unwrap();
    }
    let start = clock.now();
    for chip in &mut chips {
        chip.start_random().unwrap();
    }
    // Both execute now: 23 ms after the second was sent, both results are ready.
    assert!(chips[0].poll_random().unwrap().is_none(), "busy");
    clock.advance(Duration::from_millis(23));
    let a = chips[0].poll_random().unwrap().expect("ready");
    let b = chips[1].poll_random().unwrap().expect("ready");
    assert_ne!(a, b);
    // Two 8-byte command writes, one busy poll (the address byte), 23 ms, two 35-byte reads,
    // each byte with the address byte at 9 bit-times of 100 kHz: serialised executions would
    // take 23 ms more.
    let bus_time = |bytes: u64| Duration::from_micros(90 * (bytes + 1));
    let expected = bus_time(8) * 2 + bus_time(0) + Duration::from_millis(23) + bus_time(35) * 2;
    assert_eq!(clock.now() - start, expected);
}

#[test]
fn the_bus_thread_overlaps_the_chips_executions() {
    let one = time_per_block(1);
    // One chip: the 23 ms execution plus its transfers and polls (reference pi-crypto-speed
    // §6: a 27.1 ms cycle at 100 kHz).
    assert!(
        one > Duration::from_millis(23) && one < Duration::from_millis(32),
        "{one:?}"
    );
    for n in [2u8, 4] {
        // Serialised executions would take n times one chip's time per block each. The
        // bound is loose: on a virtual clock a source thread that the OS schedules late
        // leaves its chip idle while time jumps (the benchmark measures the rate on a real
        // clock: 0.95 x N x one chip for 4 chips).
        let each = time_per_block(n);
        assert!(
            each.as_secs_f64() < 0.75 * f64::from(n) * one.as_secs_f64(),
            "{n} chips: {each:?} per block each, one chip {one:?}"
        );
    }
}

#[test]
fn every_chip_gives_its_own_blocks() {
    let (sources, _, _) = bus(3);
    let results = read_all(sources, 20);
    let mut all: Vec<[u8; 32]> = results.iter().flat_map(|(_, b)| b.clone()).collect();
    let n = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), n, "a block was delivered twice");
}

#[test]
fn a_fault_stays_with_its_chip_and_the_others_keep_delivering() {
    let (mut sources, controls, _) = bus(3);
    controls[1].set("unlocked", true).unwrap();
    let mut b = [0u8; 32];
    // A block started before the fault may still come (one ahead at most).
    let e = (0..3)
        .find_map(|_| sources[1].read(&mut b).err())
        .expect("the fault is reported");
    assert_eq!(e.kind, ErrorKind::Fatal, "{e:?}");
    assert!(e.message.contains("not locked"), "{e:?}");
    for s in [0, 2] {
        for _ in 0..5 {
            sources[s].read(&mut b).unwrap();
        }
    }
    // Fixed: asked again, the chip is checked again and delivers.
    controls[1].set("unlocked", false).unwrap();
    sources[1].read(&mut b).unwrap();
}

#[test]
fn device_requests_run_between_the_bus_threads_steps() {
    let (mut sources, _, _) = bus(2);
    let mut b = [0u8; 32];
    for _ in 0..3 {
        sources[0].read(&mut b).unwrap();
        sources[1].read(&mut b).unwrap();
        // A Random is on its way for each chip now: the request waits for it, keeps its
        // result for the bus thread, and the chip answers for itself.
        let info = sources[1].device_info().unwrap();
        assert_eq!(info.address, DEFAULT_ADDRESS + 1);
        assert_eq!(info.revision, "00 00 60 02");
    }
    sources[1].read(&mut b).unwrap();
    sources[0].read(&mut b).unwrap();
}

#[test]
fn two_chips_at_one_address_are_refused() {
    let mut bus = EmulatedBus::new(Clock::virtual_time());
    bus.add(EmulatorConfig::virtual_time()).unwrap();
    assert_eq!(
        bus.add(EmulatorConfig::virtual_time()).unwrap_err(),
        BusError::AddressTaken(DEFAULT_ADDRESS)
    );
}

#[test]
fn the_wake_pulse_wakes_every_chip_on_the_bus() {
    use embedded_hal::i2c::I2c;
    let mut bus = EmulatedBus::new(Clock::virtual_time());
    for i in 0..2 {
        bus.add(EmulatorConfig {
            address: DEFAULT_ADDRESS + i,
            ..EmulatorConfig::virtual_time()
        })
        .unwrap();
    }
    let mut reply = [0u8; 4];
    assert!(bus.read(0x61, &mut reply).is_err(), "asleep");
    assert!(bus.write(0x00, &[0]).is_err(), "the pulse is NACKed");
    bus.clock().advance(Duration::from_millis(2));
    for address in [0x60, 0x61] {
        bus.read(address, &mut reply).unwrap();
        assert_eq!(reply, [0x04, 0x11, 0x33, 0x43], "{address:#04x}");
    }
    assert!(bus.read(0x62, &mut reply).is_err(), "no chip at 0x62");
}

#[test]
fn set_address_writes_config_byte_16_before_the_lock_only_and_applies_after_sleep() {
    use lokey::atecc::{Atecc608a, AteccError, LockConfirmation, SharedBus};
    let clock = Clock::virtual_time();
    let mut bus = EmulatedBus::new(clock.clone());
    bus.add(EmulatorConfig {
        locked: false,
        ..EmulatorConfig::virtual_time()
    })
    .unwrap();
    let delay = bus.delay();
    let shared = SharedBus::new(bus);
    let mut chip = Atecc608a::new(shared.clone(), delay.clone());
    let serial = chip.serial_number().unwrap();
    let mut other = serial;
    other[4] ^= 1;
    assert!(matches!(
        chip.set_address(0x35, &LockConfirmation::for_serial_irreversibly(other)),
        Err(AteccError::WrongChip { .. })
    ));
    let confirm = LockConfirmation::for_serial_irreversibly(serial);
    chip.set_address(0x35, &confirm).unwrap();
    // Byte 16 holds the 8-bit form; the chip answers at 0x60 until it sleeps.
    assert_eq!(chip.read_config_zone().unwrap()[16], 0x6A);
    chip.sleep().unwrap();
    assert!(matches!(
        chip.info(),
        Err(AteccError::NoResponse { address: 0x60, .. })
    ));
    let mut moved = Atecc608a::with_address(shared, delay, 0x35);
    assert_eq!(
        moved.device_info().unwrap().serial,
        chip_serial_hex(&serial)
    );
    // Locked, the address can no longer change (after locking only UpdateExtra, byte 85).
    moved.lock_config(&confirm).unwrap();
    assert_eq!(
        moved.set_address(0x36, &confirm),
        Err(AteccError::AddressLocked)
    );
    assert_eq!(moved.read_config_zone().unwrap()[16], 0x6A);
}

fn chip_serial_hex(serial: &[u8; 9]) -> String {
    serial
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn a_chip_woken_by_another_chips_pulse_is_woken_afresh_before_its_next_command() {
    use lokey::atecc::{Atecc608a, SharedBus};
    let (bus, _, clock) = chips_on_a_bus(2);
    let delay = bus.delay();
    let shared = SharedBus::new(bus);
    let mut a = Atecc608a::with_address(shared.clone(), delay.clone(), 0x60).on_shared_bus();
    let mut b = Atecc608a::with_address(shared, delay, 0x61).on_shared_bus();
    b.info().unwrap();
    b.idle().unwrap();
    // A's wake pulse wakes B too; B's driver does not see it.
    a.info().unwrap();
    clock.advance(Duration::from_millis(900));
    // B's driver thinks B is idle and wakes it; without the fresh wake, B's watchdog would
    // end 1.3 s after A's pulse, in the middle of these commands.
    for _ in 0..20 {
        b.random().unwrap();
    }
}
