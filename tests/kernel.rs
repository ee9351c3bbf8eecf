//! Suite: kernel. The kernel RNG interface for real (root-only parts skip with a reason when
//! the process lacks CAP_SYS_ADMIN) and the feeder policy against a recording fake.

use std::path::Path;
use std::time::{Duration, Instant};

use caps::{CapSet, Capability};
use lokey::kernel::{
    CreditPolicy, EntropySink, FeedStep, FeederPlan, KernelError, KernelPool, MAX_ADD_BYTES,
    SourceKind, check_credit, crng_initialized,
};
use nix::errno::Errno;

fn has_sys_admin() -> bool {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap_or(false)
}

#[test]
fn rndaddentropy_really_credits_and_rndgetentcnt_is_readable() {
    if !has_sys_admin() {
        crate::skipped!("skipped: needs CAP_SYS_ADMIN (run as root) for RNDADDENTROPY");
        return;
    }
    let pool = KernelPool::open().expect("open /dev/random");
    let before = pool.entropy_count().expect("RNDGETENTCNT");
    let data: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(151) ^ 0x5C).collect();
    pool.add_entropy(&data, 64).expect("RNDADDENTROPY as root");
    let after = pool.entropy_count().expect("RNDGETENTCNT");
    // Kernels ≥ 5.18 count at most 256 bits (stuck at 256 once ready); older ones up to 4096.
    assert!(after <= 4096, "{after}");
    if crng_initialized().expect("probe") && after <= 256 {
        assert_eq!(after, 256, "a ready ≥ 5.18 kernel reports a full pool");
    } else {
        assert!(
            after >= before.min(256),
            "credit did not lower the count: {before} -> {after}"
        );
    }
}

#[test]
fn over_crediting_is_refused_before_the_system_call() {
    // These hold with or without the capability: the kernel itself would accept them (it does
    // not compare credit with length), so a typed error proves the check ran first.
    let pool = KernelPool::open().expect("open /dev/random");
    let data = [0xA5u8; 32];
    let err = pool
        .add_entropy(&data, 8 * 32 + 1)
        .expect_err("more than 8 bits per byte");
    assert!(matches!(
        err,
        KernelError::CreditExceedsData {
            credit_bits: 257,
            len: 32
        }
    ));
    assert_eq!(err.errno(), None);

    let capped = KernelPool::open()
        .and_then(|p| p.with_max_bits_per_byte(1))
        .expect("cap 1");
    let err = capped.add_entropy(&data, 33).expect_err("above the cap");
    assert!(matches!(
        err,
        KernelError::CreditExceedsCap {
            credit_bits: 33,
            max_bits_per_byte: 1,
            ..
        }
    ));

    let big = vec![0u8; MAX_ADD_BYTES + 1];
    assert!(matches!(
        pool.add_entropy(&big, 0),
        Err(KernelError::TooLarge(4097))
    ));
    assert!(matches!(
        KernelPool::open().and_then(|p| p.with_max_bits_per_byte(9)),
        Err(KernelError::BitsPerByte(9))
    ));
}

#[test]
fn ioctl_errors_keep_their_errno() {
    // /dev/null has no ioctls: the kernel answers ENOTTY (rngd's "not a random device" case).
    let pool = KernelPool::open_path(Path::new("/dev/null")).expect("open /dev/null");
    let err = pool
        .add_entropy(&[1, 2, 3, 4], 0)
        .expect_err("not a random device");
    assert!(matches!(
        err,
        KernelError::Ioctl {
            request: "RNDADDENTROPY",
            errno: Errno::ENOTTY
        }
    ));
    assert_eq!(err.errno(), Some(Errno::ENOTTY));
    let err = pool.entropy_count().expect_err("not a random device");
    assert!(matches!(
        err,
        KernelError::Ioctl {
            request: "RNDGETENTCNT",
            errno: Errno::ENOTTY
        }
    ));
}

#[test]
fn the_crng_of_a_running_system_is_initialised() {
    // Any machine that has booted far enough to run cargo is long past CRNG initialisation.
    assert!(crng_initialized().expect("getrandom probe"));
}

#[test]
fn mixing_needs_no_capability() {
    let pool = KernelPool::open().expect("open /dev/random");
    pool.mix(&[0x42; 64]).expect("write(2) to /dev/random");
}

#[test]
fn the_eperm_message_names_the_missing_capability() {
    let msg = KernelError::PermissionDenied.to_string();
    assert!(
        msg.contains("CAP_SYS_ADMIN") && msg.contains("EPERM"),
        "{msg}"
    );
    assert_eq!(KernelError::PermissionDenied.errno(), Some(Errno::EPERM));
}

/// A sink that records calls, refuses over-crediting like the real one, becomes "initialised"
/// after 256 credited bits and can be told to fail.
#[derive(Default)]
struct Recorder {
    credits: Vec<(usize, u32)>,
    mixes: Vec<usize>,
    credited: u32,
    fail_with_eperm: bool,
}

impl EntropySink for Recorder {
    fn add_entropy(&mut self, data: &[u8], credit_bits: u32) -> Result<(), KernelError> {
        check_credit(data.len(), credit_bits, 8)?;
        if self.fail_with_eperm {
            return Err(KernelError::PermissionDenied);
        }
        self.credits.push((data.len(), credit_bits));
        self.credited = (self.credited + credit_bits).min(256);
        Ok(())
    }

    fn mix(&mut self, data: &[u8]) -> Result<(), KernelError> {
        self.mixes.push(data.len());
        Ok(())
    }

    fn entropy_count(&self) -> Result<u32, KernelError> {
        Ok(self.credited)
    }

    fn crng_initialized(&self) -> Result<bool, KernelError> {
        Ok(self.credited >= 256)
    }
}

/// Runs the feeder loop as the daemon would, for `until` of virtual time.
fn drive(plan: &mut FeederPlan, sink: &mut Recorder, start: Instant, until: Duration) {
    let mut now = start;
    let mut steps = 0;
    while now < start + until {
        steps += 1;
        assert!(steps < 10_000, "the feeder loop does not settle");
        let ready = sink.crng_initialized().expect("fake");
        match plan.next_step(now, ready) {
            FeedStep::Wait { until } => {
                assert!(until > now, "a wait must move time forward");
                now = until;
            }
            step @ (FeedStep::Credit { bytes } | FeedStep::Mix { bytes }) => {
                let data = vec![0x3Cu8; bytes];
                plan.perform(sink, step, &data, now).expect("fake sink");
            }
        }
    }
}

#[test]
fn before_crng_init_the_feeder_credits_promptly_then_mixes_every_minute() {
    let mut plan = FeederPlan::new(CreditPolicy::default(), SourceKind::Hardware);
    let mut sink = Recorder::default();
    let t0 = Instant::now();
    drive(&mut plan, &mut sink, t0, Duration::from_secs(300));
    // 256 bits at 1 bit/byte: four 64-byte credits, all at t0; then one 64-byte mix at t0
    // and one per 60 s (t0, 60, 120, 180, 240), each through RNDADDENTROPY with its credit
    // so that a lost capability shows at once.
    assert_eq!(sink.credits, [(64, 64); 9]);
    assert!(
        sink.mixes.is_empty(),
        "hardware bytes were mixed without RNDADDENTROPY"
    );
    let c = plan.counters();
    assert_eq!(
        (c.credit_calls, c.credited_bits, c.mix_calls, c.mixed_bytes),
        (9, 576, 5, 320)
    );
    // The last mix was at 240 s; status shows it as "last fed".
    assert_eq!(c.last_success, Some(t0 + Duration::from_secs(240)));
    assert!(!plan.is_failing());
}

#[test]
fn emulator_and_kernel_bytes_are_never_credited() {
    for kind in [SourceKind::Emulator, SourceKind::Kernel] {
        let mut plan = FeederPlan::new(CreditPolicy::default(), kind);
        let t0 = Instant::now();
        // Even before the CRNG is ready the plan only mixes.
        assert_eq!(plan.next_step(t0, false), FeedStep::Mix { bytes: 64 });
        // And a credit step forced by a caller credits nothing.
        let mut sink = Recorder::default();
        plan.perform(&mut sink, FeedStep::Credit { bytes: 64 }, &[7; 64], t0)
            .expect("fake");
        assert_eq!(sink.credits, [(64, 0)], "{kind:?}");
        assert_eq!(plan.counters().credited_bits, 0);
    }
}

#[test]
fn zero_bits_per_byte_means_mix_only() {
    let policy = CreditPolicy::new(0, 64, 64, Duration::from_secs(60)).expect("valid");
    let plan = FeederPlan::new(policy, SourceKind::Hardware);
    assert_eq!(
        plan.next_step(Instant::now(), false),
        FeedStep::Mix { bytes: 64 }
    );
}

#[test]
fn the_credit_follows_the_configured_bits_per_byte() {
    let policy = CreditPolicy::new(8, 32, 64, Duration::from_secs(60)).expect("valid");
    let mut plan = FeederPlan::new(policy, SourceKind::Hardware);
    let mut sink = Recorder::default();
    let t0 = Instant::now();
    assert_eq!(plan.next_step(t0, false), FeedStep::Credit { bytes: 32 });
    plan.perform(&mut sink, FeedStep::Credit { bytes: 32 }, &[9; 32], t0)
        .expect("fake");
    assert_eq!(sink.credits, [(32, 256)]);
    assert!(matches!(
        CreditPolicy::new(9, 32, 64, Duration::from_secs(60)),
        Err(KernelError::BitsPerByte(9))
    ));
    assert!(matches!(
        CreditPolicy::new(1, 0, 64, Duration::from_secs(60)),
        Err(KernelError::Policy(_))
    ));
    assert!(matches!(
        CreditPolicy::new(1, 64, 64, Duration::ZERO),
        Err(KernelError::Policy(_))
    ));
}

#[test]
fn sink_errors_are_surfaced_and_counted() {
    let mut plan = FeederPlan::new(CreditPolicy::default(), SourceKind::Hardware);
    let mut sink = Recorder {
        fail_with_eperm: true,
        ..Recorder::default()
    };
    let t0 = Instant::now();
    let err = plan
        .perform(&mut sink, FeedStep::Credit { bytes: 64 }, &[1; 64], t0)
        .expect_err("EPERM");
    assert!(matches!(err, KernelError::PermissionDenied));
    assert!(plan.is_failing());
    assert_eq!(plan.counters().errors, 1);
    assert!(
        plan.counters()
            .last_error
            .as_deref()
            .is_some_and(|m| m.contains("CAP_SYS_ADMIN"))
    );
    assert_eq!(plan.counters().credited_bits, 0);
    assert_eq!(plan.counters().last_success, None, "a failure is no feed");
    // Recovery clears the failing state.
    sink.fail_with_eperm = false;
    plan.perform(&mut sink, FeedStep::Credit { bytes: 64 }, &[1; 64], t0)
        .expect("fake");
    assert!(!plan.is_failing());
}

/// A sink whose every call fails: the write with EIO, RNDADDENTROPY with EPERM; `fixed`
/// makes both succeed.
#[derive(Default)]
struct Broken {
    fixed: bool,
}

impl EntropySink for Broken {
    fn add_entropy(&mut self, _: &[u8], _: u32) -> Result<(), KernelError> {
        if self.fixed {
            return Ok(());
        }
        Err(KernelError::PermissionDenied)
    }
    fn mix(&mut self, _: &[u8]) -> Result<(), KernelError> {
        if self.fixed {
            return Ok(());
        }
        Err(KernelError::Write(std::io::Error::from_raw_os_error(
            libc::EIO,
        )))
    }
    fn entropy_count(&self) -> Result<u32, KernelError> {
        Ok(256)
    }
    fn crng_initialized(&self) -> Result<bool, KernelError> {
        Ok(true)
    }
}

#[test]
fn a_failed_call_backs_off_from_1_s_doubling_to_60_s_and_a_success_ends_it() {
    // Emulator bytes are written without credit: the write's error.
    let mut plan = FeederPlan::new(CreditPolicy::default(), SourceKind::Emulator);
    let t0 = Instant::now();
    let step = plan.next_step(t0, true);
    assert_eq!(step, FeedStep::Mix { bytes: 64 });
    let err = plan
        .perform(&mut Broken::default(), step, &[0; 64], t0)
        .expect_err("EIO");
    assert_eq!(err.errno(), Some(Errno::EIO));
    // Not at once (the harvester would give every block to a failing call), but after 1 s.
    let secs = Duration::from_secs;
    assert_eq!(
        plan.next_step(t0, true),
        FeedStep::Wait {
            until: t0 + secs(1)
        }
    );
    assert_eq!(plan.retry_at(), Some(t0 + secs(1)));
    assert!(
        plan.is_failing(),
        "the error stays visible while backing off"
    );
    assert_eq!(
        plan.next_step(t0 + secs(1), true),
        FeedStep::Mix { bytes: 64 }
    );

    // Hardware bytes go through RNDADDENTROPY even after initialisation, so a lost
    // capability surfaces as EPERM; before initialisation the credit backs off the same way.
    for ready in [true, false] {
        let mut plan = FeederPlan::new(CreditPolicy::default(), SourceKind::Hardware);
        let mut sink = Broken::default();
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            let step = plan.next_step(now, ready);
            assert!(!matches!(step, FeedStep::Wait { .. }), "{step:?}");
            let err = plan
                .perform(&mut sink, step, &[0; 64], now)
                .expect_err("EPERM");
            assert!(matches!(err, KernelError::PermissionDenied));
            assert!(plan.is_failing());
            let FeedStep::Wait { until } = plan.next_step(now, ready) else {
                panic!("a failure must be followed by a wait");
            };
            // Half-way through the wait it still waits.
            assert!(matches!(
                plan.next_step(now + (until - now) / 2, ready),
                FeedStep::Wait { .. }
            ));
            waits.push((until - now).as_secs());
            now = until;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60], "ready {ready}");
        assert_eq!(plan.counters().errors, 9);

        // A success ends the backoff: the next failure waits 1 s again.
        sink.fixed = true;
        let step = plan.next_step(now, ready);
        plan.perform(&mut sink, step, &[0; 64], now).expect("fixed");
        assert!(!plan.is_failing());
        assert_eq!(plan.retry_at(), None);
        sink.fixed = false;
        let now = now + secs(3600);
        let step = plan.next_step(now, ready);
        assert!(!matches!(step, FeedStep::Wait { .. }), "{step:?}");
        plan.perform(&mut sink, step, &[0; 64], now)
            .expect_err("EPERM");
        assert_eq!(plan.retry_at(), Some(now + secs(1)));
    }
}

#[test]
fn a_new_policy_applies_to_the_next_step() {
    let mut plan = FeederPlan::new(CreditPolicy::default(), SourceKind::Hardware);
    let mut sink = Recorder::default();
    let t0 = Instant::now();
    let step = plan.next_step(t0, true);
    plan.perform(&mut sink, step, &[1; 64], t0).expect("fake");
    let secs = Duration::from_secs;
    assert_eq!(
        plan.next_step(t0, true),
        FeedStep::Wait {
            until: t0 + secs(60)
        }
    );
    plan.set_policy(CreditPolicy::new(2, 64, 128, secs(5)).expect("valid"));
    assert_eq!(
        plan.next_step(t0, true),
        FeedStep::Wait {
            until: t0 + secs(5)
        }
    );
    let step = plan.next_step(t0 + secs(5), true);
    assert_eq!(step, FeedStep::Mix { bytes: 128 });
    plan.perform(&mut sink, step, &[1; 128], t0 + secs(5))
        .expect("fake");
    assert_eq!(sink.credits.last(), Some(&(128, 256)));
    // Mix only: no RNDADDENTROPY, so no capability is needed.
    plan.set_policy(CreditPolicy::new(0, 64, 64, secs(5)).expect("valid"));
    let step = plan.next_step(t0 + secs(10), false);
    assert_eq!(step, FeedStep::Mix { bytes: 64 });
    let credits = sink.credits.len();
    plan.perform(&mut sink, step, &[1; 64], t0 + secs(10))
        .expect("fake");
    assert_eq!(sink.credits.len(), credits);
    assert_eq!(sink.mixes, [64]);
}
