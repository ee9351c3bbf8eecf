//! The kernel feeder: a [`Sink`] that credits or mixes healthy blocks into the kernel's
//! entropy pool on the schedule of [`FeederPlan`] (design.md §2 invariant 4).
//!
//! Each harvest thread has its own feeder, so each knows its source's kind: emulator output and
//! bytes the kernel already credits itself (a `/dev/hwrng` with `rng_quality` > 0, fed to the
//! pool by the kernel's own hwrng thread) are mixed but never credited. Before the kernel's CRNG
//! is initialised the feeder wants data at once and credits it in chunks; afterwards it wants a
//! small amount per interval, through RNDADDENTROPY for hardware sources so that a lost
//! capability shows at once. Blocks are gathered until a chunk is complete, so a call to
//! RNDADDENTROPY carries the policy's chunk size. Every kernel error is kept for status and
//! health (EPERM names the missing CAP_SYS_ADMIN) and logged once per change; after an error
//! the feeder backs off ([`FeederPlan`]: 1 s doubling to 60 s, ended by a success) and wants
//! nothing meanwhile, so the harvester gives the blocks to Fortuna and the TRNG queue rather
//! than to a failing call. The policy is shared ([`SharedPolicy`]): a configuration change at
//! run time reaches every feeder at its next block.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use lokey::kernel::{self, CreditPolicy, EntropySink, FeedStep, FeederCounters, FeederPlan};
use lokey::source::SourceKind;

use crate::harvest::{Origin, Sink};

/// What status shows about the feeders (shared by all of them).
#[derive(Debug, Clone, Default)]
pub struct FeederStatus {
    /// Each source's feeder counters (they carry the last error, if the last call failed).
    pub by_source: BTreeMap<String, FeederCounters>,
    /// Whether the kernel's CRNG was initialised at the last check.
    pub crng_ready: bool,
}

impl FeederStatus {
    /// The counters summed over all sources.
    pub fn total(&self) -> FeederCounters {
        let mut t = FeederCounters::default();
        for c in self.by_source.values() {
            t.credit_calls += c.credit_calls;
            t.credited_bytes += c.credited_bytes;
            t.credited_bits += c.credited_bits;
            t.mix_calls += c.mix_calls;
            t.mixed_bytes += c.mixed_bytes;
            t.errors += c.errors;
            t.last_success = t.last_success.max(c.last_success);
            if t.last_error.is_none() {
                t.last_error.clone_from(&c.last_error);
            }
        }
        t
    }

    /// Whether any feeder's last call failed.
    pub fn failing(&self) -> bool {
        self.by_source.values().any(|c| c.last_error.is_some())
    }
}

/// The feeders' credit policy, shared with the pipeline so that it can change while running.
#[derive(Debug, Clone)]
pub struct SharedPolicy(Arc<Mutex<CreditPolicy>>);

impl SharedPolicy {
    /// A shared `policy`.
    pub fn new(policy: CreditPolicy) -> SharedPolicy {
        SharedPolicy(Arc::new(Mutex::new(policy)))
    }

    /// The policy in force.
    pub fn get(&self) -> CreditPolicy {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the policy; every feeder takes it before its next step.
    pub fn set(&self, policy: CreditPolicy) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = policy;
    }
}

/// The credit class of a source kind: whether the kernel may be credited for it.
pub fn credit_kind(kind: SourceKind, hwrng_quality: u32) -> kernel::SourceKind {
    match kind {
        SourceKind::Atecc608a => kernel::SourceKind::Hardware,
        SourceKind::Emulator => kernel::SourceKind::Emulator,
        // The kernel feeds a hwrng with a quality above zero to the pool itself, crediting
        // it; crediting the same device again would count its entropy twice.
        SourceKind::Hwrng if hwrng_quality > 0 => kernel::SourceKind::Kernel,
        SourceKind::Hwrng => kernel::SourceKind::Hardware,
        // A device node other than /dev/hwrng: the kernel does not read it.
        SourceKind::Device => kernel::SourceKind::Hardware,
    }
}

/// Feeds one source's healthy blocks to the kernel.
pub struct Feeder<E: EntropySink + Send> {
    pool: E,
    plan: FeederPlan,
    policy: SharedPolicy,
    /// The source's own credit (`<section>.credit_bits_per_byte`), over the shared policy's.
    own_bits: Option<u8>,
    pending: Vec<u8>,
    step: Option<FeedStep>,
    crng_ready: bool,
    source: String,
    status: Arc<Mutex<FeederStatus>>,
}

impl<E: EntropySink + Send> Feeder<E> {
    /// A feeder for blocks of `kind` from `source` into `pool`.
    pub fn new(
        pool: E,
        policy: SharedPolicy,
        kind: kernel::SourceKind,
        source: impl Into<String>,
        status: Arc<Mutex<FeederStatus>>,
    ) -> Feeder<E> {
        Feeder {
            pool,
            plan: FeederPlan::new(policy.get(), kind),
            policy,
            own_bits: None,
            pending: Vec::new(),
            step: None,
            crng_ready: false,
            source: source.into(),
            status,
        }
    }

    /// Credits this source at `bits` per byte whatever the shared policy's `bits_per_byte`
    /// (its chunk, mix size and interval still apply). Above 8 is capped at 8 (the
    /// configuration refuses it before).
    #[must_use]
    pub fn with_own_credit(mut self, bits: Option<u8>) -> Self {
        self.own_bits = bits.map(|b| b.min(kernel::MAX_BITS_PER_BYTE));
        let policy = self.effective_policy();
        self.plan.set_policy(policy);
        self
    }

    /// The shared policy with this source's own credit, if it has one.
    fn effective_policy(&self) -> CreditPolicy {
        let policy = self.policy.get();
        match self.own_bits {
            Some(bits) => policy.with_bits_per_byte(bits).unwrap_or(policy),
            None => policy,
        }
    }

    fn crng_ready(&mut self) -> bool {
        // Once initialised, the CRNG stays so: stop asking.
        if !self.crng_ready {
            match self.pool.crng_initialized() {
                Ok(ready) => self.crng_ready = ready,
                Err(e) => tracing::warn!("cannot tell whether the kernel CRNG is ready: {e}"),
            }
        }
        self.crng_ready
    }

    fn current_step(&mut self) -> FeedStep {
        if let Some(step) = self.step {
            return step;
        }
        let policy = self.effective_policy();
        if policy != *self.plan.policy() {
            tracing::debug!(source = %self.source, "kernel feeder policy now {policy:?}");
            self.plan.set_policy(policy);
        }
        let ready = self.crng_ready();
        self.plan.next_step(Instant::now(), ready)
    }
}

impl<E: EntropySink + Send> Sink for Feeder<E> {
    fn name(&self) -> &'static str {
        "kernel"
    }

    fn wants(&mut self) -> bool {
        // A chunk being gathered wants its rest; otherwise the plan decides (it waits out the
        // mixing interval, and the backoff after a failure).
        !matches!(self.current_step(), FeedStep::Wait { .. })
    }

    fn next_want(&self) -> Option<Instant> {
        match self.step {
            Some(_) => None,
            None => match self.plan.next_step(Instant::now(), self.crng_ready) {
                FeedStep::Wait { until } => Some(until),
                FeedStep::Credit { .. } | FeedStep::Mix { .. } => None,
            },
        }
    }

    fn accept(&mut self, _origin: Origin<'_>, block: &[u8]) {
        let step = self.current_step();
        let wanted = match step {
            FeedStep::Credit { bytes } | FeedStep::Mix { bytes } => bytes,
            FeedStep::Wait { .. } => return,
        };
        // Keep the step until its chunk is complete, so a chunk is credited as one call.
        self.step = Some(step);
        let take = (wanted - self.pending.len()).min(block.len());
        self.pending.extend_from_slice(&block[..take]);
        if self.pending.len() < wanted {
            return;
        }
        let before = self.plan.counters().last_error.clone();
        // The error is kept in the plan's counters (status, health) and logged on change.
        let _ = self
            .plan
            .perform(&mut self.pool, step, &self.pending, Instant::now());
        self.pending.clear();
        self.step = None;
        let after = &self.plan.counters().last_error;
        if *after != before {
            match after {
                Some(e) => tracing::error!(source = %self.source, "kernel feeder: {e}"),
                None => tracing::info!(source = %self.source, "kernel feeder working again"),
            }
        }
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.crng_ready = self.crng_ready;
        status
            .by_source
            .insert(self.source.clone(), self.plan.counters().clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lokey::kernel::KernelError;

    /// Records calls; fails with the given error while `fail` is set.
    #[derive(Clone, Default)]
    struct Fake {
        calls: Arc<Mutex<Vec<(usize, u32, bool)>>>,
        ready: bool,
        fail: Arc<Mutex<bool>>,
    }

    impl EntropySink for Fake {
        fn add_entropy(&mut self, data: &[u8], bits: u32) -> Result<(), KernelError> {
            if *self.fail.lock().unwrap() {
                return Err(KernelError::PermissionDenied);
            }
            self.calls.lock().unwrap().push((data.len(), bits, true));
            Ok(())
        }
        fn mix(&mut self, data: &[u8]) -> Result<(), KernelError> {
            self.calls.lock().unwrap().push((data.len(), 0, false));
            Ok(())
        }
        fn entropy_count(&self) -> Result<u32, KernelError> {
            Ok(256)
        }
        fn crng_initialized(&self) -> Result<bool, KernelError> {
            Ok(self.ready)
        }
    }

    fn origin() -> Origin<'static> {
        Origin {
            source: "chip",
            kind: SourceKind::Atecc608a,
            source_id: 0,
        }
    }

    fn feeder(fake: &Fake, kind: kernel::SourceKind) -> (Feeder<Fake>, Arc<Mutex<FeederStatus>>) {
        let status = Arc::new(Mutex::new(FeederStatus::default()));
        let f = Feeder::new(
            fake.clone(),
            SharedPolicy::new(CreditPolicy::default()),
            kind,
            "chip",
            status.clone(),
        );
        (f, status)
    }

    #[test]
    fn before_crng_init_hardware_blocks_are_credited_in_64_byte_chunks() {
        let fake = Fake::default();
        let (mut f, status) = feeder(&fake, kernel::SourceKind::Hardware);
        assert!(f.wants());
        f.accept(origin(), &[1; 32]);
        assert!(
            fake.calls.lock().unwrap().is_empty(),
            "half a chunk was sent"
        );
        f.accept(origin(), &[2; 32]);
        assert_eq!(*fake.calls.lock().unwrap(), vec![(64, 64, true)]);
        assert!(f.wants(), "keeps crediting until the CRNG is ready");
        let total = status.lock().unwrap().total();
        assert_eq!((total.credit_calls, total.credited_bits), (1, 64));
    }

    #[test]
    fn emulator_and_kernel_derived_blocks_are_never_credited() {
        for kind in [kernel::SourceKind::Emulator, kernel::SourceKind::Kernel] {
            let fake = Fake::default();
            let (mut f, _) = feeder(&fake, kind);
            for _ in 0..4 {
                if f.wants() {
                    f.accept(origin(), &[3; 32]);
                }
            }
            let calls = fake.calls.lock().unwrap().clone();
            assert!(
                calls
                    .iter()
                    .all(|&(_, bits, credited)| bits == 0 && !credited),
                "{calls:?}"
            );
            // One mix of 64 bytes, then nothing until the interval has passed.
            assert_eq!(calls, vec![(64, 0, false)]);
            assert!(!f.wants());
        }
    }

    #[test]
    fn after_crng_init_a_small_mix_per_interval() {
        let fake = Fake {
            ready: true,
            ..Fake::default()
        };
        let (mut f, status) = feeder(&fake, kernel::SourceKind::Hardware);
        assert!(f.wants());
        f.accept(origin(), &[4; 32]);
        f.accept(origin(), &[5; 32]);
        // Through RNDADDENTROPY with the policy's credit (so EPERM would show).
        assert_eq!(*fake.calls.lock().unwrap(), vec![(64, 64, true)]);
        assert!(!f.wants(), "wants more before the interval");
        assert!(status.lock().unwrap().crng_ready);
    }

    #[test]
    fn eperm_is_reported_as_failing_and_cleared_by_a_success() {
        let fake = Fake::default();
        *fake.fail.lock().unwrap() = true;
        let (mut f, status) = feeder(&fake, kernel::SourceKind::Hardware);
        f.accept(origin(), &[1; 64]);
        {
            let s = status.lock().unwrap();
            assert!(s.failing());
            let e = s.total().last_error.unwrap();
            assert!(e.contains("CAP_SYS_ADMIN"), "{e}");
        }
        // Backing off: wants nothing until the retry time, and says when that is.
        assert!(!f.wants());
        let retry = f.next_want().expect("a retry time");
        assert!(retry <= Instant::now() + kernel::FEED_RETRY_INITIAL);
        *fake.fail.lock().unwrap() = false;
        std::thread::sleep(retry.saturating_duration_since(Instant::now()));
        assert!(f.wants(), "retried after the backoff");
        f.accept(origin(), &[1; 64]);
        assert!(!status.lock().unwrap().failing());
    }

    /// Takes every block it is offered.
    struct Taker(usize);

    impl Sink for Taker {
        fn name(&self) -> &'static str {
            "taker"
        }
        fn wants(&mut self) -> bool {
            true
        }
        fn accept(&mut self, _: Origin<'_>, _: &[u8]) {
            self.0 += 1;
        }
    }

    #[test]
    fn a_failing_feeder_leaves_the_blocks_to_the_other_sinks() {
        // As the harvester routes: each block to the first sink that wants it, the feeder first.
        let fake = Fake::default();
        *fake.fail.lock().unwrap() = true;
        let (mut f, status) = feeder(&fake, kernel::SourceKind::Hardware);
        let mut other = Taker(0);
        for _ in 0..1000 {
            if f.wants() {
                f.accept(origin(), &[6; 32]);
            } else if other.wants() {
                other.accept(origin(), &[6; 32]);
            }
        }
        // One failed 64-byte chunk, then the backoff: everything else went on.
        assert_eq!(status.lock().unwrap().total().errors, 1);
        assert_eq!(other.0, 998);
        assert!(status.lock().unwrap().failing(), "the error stays visible");
    }

    #[test]
    fn a_policy_change_reaches_the_feeder_at_its_next_step() {
        let fake = Fake {
            ready: true,
            ..Fake::default()
        };
        let status = Arc::new(Mutex::new(FeederStatus::default()));
        let policy = SharedPolicy::new(CreditPolicy::default());
        let mut f = Feeder::new(
            fake.clone(),
            policy.clone(),
            kernel::SourceKind::Hardware,
            "chip",
            status,
        );
        f.accept(origin(), &[4; 64]);
        assert!(!f.wants(), "next mix in 60 s");
        policy.set(CreditPolicy::new(0, 64, 32, std::time::Duration::from_millis(1)).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(f.wants(), "the new interval has passed");
        f.accept(origin(), &[5; 32]);
        // Mixed with write(2), 32 bytes: the new size, and no credit at 0 bits per byte.
        assert_eq!(fake.calls.lock().unwrap()[1], (32, 0, false));
    }

    #[test]
    fn a_source_with_its_own_credit_keeps_it_whatever_the_shared_policy_says() {
        let fake = Fake::default();
        let status = Arc::new(Mutex::new(FeederStatus::default()));
        let policy = SharedPolicy::new(CreditPolicy::default());
        let mut own = Feeder::new(
            fake.clone(),
            policy.clone(),
            kernel::SourceKind::Hardware,
            "hwrng",
            status.clone(),
        )
        .with_own_credit(Some(3));
        own.accept(origin(), &[1; 64]);
        policy.set(CreditPolicy::new(0, 64, 64, std::time::Duration::from_secs(60)).unwrap());
        own.accept(origin(), &[2; 64]);
        // 3 bits per byte both times: the shared policy went to 0, the source's own did not.
        assert_eq!(
            *fake.calls.lock().unwrap(),
            vec![(64, 192, true), (64, 192, true)]
        );
        // Its own credit of 0 never credits, even while the shared policy credits.
        let fake = Fake::default();
        let mut never = Feeder::new(
            fake.clone(),
            SharedPolicy::new(CreditPolicy::default()),
            kernel::SourceKind::Hardware,
            "chip",
            status,
        )
        .with_own_credit(Some(0));
        for _ in 0..4 {
            if never.wants() {
                never.accept(origin(), &[3; 32]);
            }
        }
        assert_eq!(*fake.calls.lock().unwrap(), vec![(64, 0, false)]);
        // And the emulator is never credited, whatever its own credit says.
        let fake = Fake::default();
        let mut emulated = Feeder::new(
            fake.clone(),
            SharedPolicy::new(CreditPolicy::default()),
            kernel::SourceKind::Emulator,
            "chip",
            Arc::default(),
        )
        .with_own_credit(Some(8));
        emulated.accept(origin(), &[4; 64]);
        assert_eq!(*fake.calls.lock().unwrap(), vec![(64, 0, false)]);
    }

    #[test]
    fn credit_kind_never_credits_twice_or_fakes() {
        assert_eq!(
            credit_kind(SourceKind::Atecc608a, 0),
            kernel::SourceKind::Hardware
        );
        assert_eq!(
            credit_kind(SourceKind::Emulator, 0),
            kernel::SourceKind::Emulator
        );
        assert_eq!(
            credit_kind(SourceKind::Hwrng, 1024),
            kernel::SourceKind::Kernel
        );
        assert_eq!(
            credit_kind(SourceKind::Hwrng, 0),
            kernel::SourceKind::Hardware
        );
    }
}
