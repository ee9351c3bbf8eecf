//! Least privilege: dropping root to a service user that keeps at most CAP_SYS_ADMIN, and
//! checking what a process started by systemd holds.
//!
//! lokey needs exactly one privilege: CAP_SYS_ADMIN, which the kernel checks at every
//! RNDADDENTROPY call (`drivers/char/random.c`, `random_ioctl`). It needs it only when crediting
//! is on; mixing with `write(2)` needs none, and `/dev/i2c-*` access is a file permission
//! (group `i2c`), not a capability.
//!
//! # Dropping ([`drop_privileges`])
//!
//! Started as root with a configured user (default [`DEFAULT_USER`]), the sequence is the one
//! capabilities(7) prescribes for keeping a capability across a uid change:
//! 1. look up the user (and its groups) before changing anything; a missing user is a typed
//!    error ([`PrivilegeError::UserNotFound`]) unless a fallback user is configured;
//! 2. shrink the bounding set to the kept capabilities (needs CAP_SETPCAP, so while still root);
//! 3. set `SECBIT_KEEP_CAPS`, so the permitted set survives the uid change;
//! 4. `setgroups`, `setresgid`, `setresuid` to the user (all three ids of each);
//! 5. set permitted and effective to the kept capabilities only, clear inheritable and ambient,
//!    clear `SECBIT_KEEP_CAPS` again;
//! 6. set `no_new_privs`, so no later `execve` can gain privileges;
//! 7. verify from `/proc/thread-self/status` that the uids, gids, groups and every capability
//!    set are exactly as intended, and that root cannot be regained; any difference is an error
//!    ([`PrivilegeError::Verification`]) and the process must not continue.
//!
//! Capabilities and securebits belong to a thread, not a process: call this at start-up before
//! any other thread exists (before the async runtime). [`DropPlan::require_single_thread`]
//! (on by default) refuses otherwise. After an error from step 2 on, the process is in an
//! unknown state and should exit.
//!
//! # Asking what the user may do ([`first_denied_as`])
//!
//! Before dropping, a daemon started as root can ask the kernel whether its future user may
//! reach the directories it will need: a child process becomes that user (its groups, gid and
//! uid, as step 4 does) and calls `access(2)` on each path, so permission bits, ACLs and
//! security modules all have their say, and the parent's credentials never change.
//!
//! # Checking ([`inspect`])
//!
//! Under systemd the unit drops privileges (`User=`, `AmbientCapabilities=CAP_SYS_ADMIN`,
//! `CapabilityBoundingSet=CAP_SYS_ADMIN`, `NoNewPrivileges=yes`); the daemon then inspects what
//! it has, warns when it lacks CAP_SYS_ADMIN while crediting is on (which would make every
//! RNDADDENTROPY fail with EPERM), and drops what it holds but does not need with
//! [`shed_unneeded`] — CAP_SYS_ADMIN too when crediting is off, although the unit grants it.
//! Lowering one's own capability sets needs no privilege; only the bounding set stays as the
//! unit left it (changing it needs CAP_SETPCAP), which is harmless under `NoNewPrivileges=yes`.
//!
//! "Crediting" means the feeder may call RNDADDENTROPY: the kernel is fed and
//! some source's credit (its own `credit_bits_per_byte`, else `kernel.bits_per_byte`) is above
//! 0 ([`needs_sys_admin`], `Config::may_credit`). With 0 bits per byte every byte,
//! before and after CRNG initialisation, is mixed with a plain `write(2)`, which needs no
//! capability.

use std::ffi::CString;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use caps::{CapSet, Capability, CapsHashSet};
use nix::unistd::{AccessFlags, Gid, Uid, User};

/// The service user lokey switches to by default.
pub const DEFAULT_USER: &str = "lokey";

/// CAP_SYS_ADMIN as a capability-set bit mask (bit 21, `include/uapi/linux/capability.h`).
pub const CAP_SYS_ADMIN_MASK: u64 = 1 << 21;

/// Errors from dropping or inspecting privileges.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The configured user (and any fallback) does not exist.
    #[error(
        "user `{0}` does not exist; create it (useradd --system --no-create-home {0}) or configure another user"
    )]
    UserNotFound(String),
    /// The configured user is root itself.
    #[error("the configured user `{0}` has uid 0; configure an unprivileged user")]
    TargetIsRoot(String),
    /// Looking up a user or its groups failed.
    #[error("cannot look up user `{user}`: {errno}")]
    Lookup {
        /// The user name.
        user: String,
        /// The error.
        errno: nix::errno::Errno,
    },
    /// Other threads exist, which would keep their own, undropped credentials.
    #[error(
        "privileges must be dropped before any other thread starts (capabilities are per thread), but this process has {0} threads"
    )]
    MultiThreaded(usize),
    /// A step of the drop failed; the process is partly dropped and must exit.
    #[error("dropping privileges failed at {step}: {reason}; the process must exit")]
    Step {
        /// Which step.
        step: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// A `/proc/.../status` file could not be read.
    #[error("cannot read {path}: {source}")]
    Status {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// A `/proc/.../status` file lacks a field or has a malformed one.
    #[error("unexpected /proc status format: field {0} missing or malformed")]
    StatusFormat(&'static str),
    /// After the drop, the credentials are not exactly as intended.
    #[error(
        "after dropping privileges {what} is {found}, expected {expected}; refusing to continue"
    )]
    Verification {
        /// What differs.
        what: &'static str,
        /// The intended value.
        expected: String,
        /// The actual value.
        found: String,
    },
}

/// A thread's credentials as the kernel reports them in `/proc/<pid>/task/<tid>/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Real, effective, saved and filesystem uid.
    pub uids: [u32; 4],
    /// Real, effective, saved and filesystem gid.
    pub gids: [u32; 4],
    /// Supplementary groups, sorted.
    pub groups: Vec<u32>,
    /// Inheritable capabilities (bit mask).
    pub cap_inh: u64,
    /// Permitted capabilities.
    pub cap_prm: u64,
    /// Effective capabilities.
    pub cap_eff: u64,
    /// Bounding set.
    pub cap_bnd: u64,
    /// Ambient capabilities.
    pub cap_amb: u64,
    /// Whether `no_new_privs` is set.
    pub no_new_privs: bool,
    /// Threads in the process.
    pub threads: usize,
}

impl Credentials {
    /// The calling thread's credentials (`/proc/thread-self/status`).
    ///
    /// # Errors
    ///
    /// [`PrivilegeError::Status`] or [`PrivilegeError::StatusFormat`].
    pub fn of_current_thread() -> Result<Self, PrivilegeError> {
        Self::read(Path::new("/proc/thread-self/status"))
    }

    /// The process's (its main thread's) credentials (`/proc/self/status`).
    ///
    /// # Errors
    ///
    /// [`PrivilegeError::Status`] or [`PrivilegeError::StatusFormat`].
    pub fn of_process() -> Result<Self, PrivilegeError> {
        Self::read(Path::new("/proc/self/status"))
    }

    fn read(path: &Path) -> Result<Self, PrivilegeError> {
        let text = std::fs::read_to_string(path).map_err(|source| PrivilegeError::Status {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses the text of a `/proc/<pid>/status` file.
    ///
    /// # Errors
    ///
    /// [`PrivilegeError::StatusFormat`] naming the first missing or malformed field.
    pub fn parse(text: &str) -> Result<Self, PrivilegeError> {
        let field = |name: &'static str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
                .ok_or(PrivilegeError::StatusFormat(name))
        };
        let ids = |name: &'static str| -> Result<[u32; 4], PrivilegeError> {
            let v: Vec<u32> = field(name)?
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .map_err(|_| PrivilegeError::StatusFormat(name))?;
            v.try_into().map_err(|_| PrivilegeError::StatusFormat(name))
        };
        let mask = |name: &'static str| {
            u64::from_str_radix(field(name)?, 16).map_err(|_| PrivilegeError::StatusFormat(name))
        };
        let mut groups: Vec<u32> = field("Groups")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|_| PrivilegeError::StatusFormat("Groups"))?;
        groups.sort_unstable();
        Ok(Self {
            uids: ids("Uid")?,
            gids: ids("Gid")?,
            groups,
            cap_inh: mask("CapInh")?,
            cap_prm: mask("CapPrm")?,
            cap_eff: mask("CapEff")?,
            cap_bnd: mask("CapBnd")?,
            cap_amb: mask("CapAmb")?,
            no_new_privs: field("NoNewPrivs")? == "1",
            threads: field("Threads")?
                .parse()
                .map_err(|_| PrivilegeError::StatusFormat("Threads"))?,
        })
    }
}

/// What [`drop_privileges`] should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropPlan {
    /// The user to become. Default [`DEFAULT_USER`].
    pub user: String,
    /// A user to become if `user` does not exist (reported in [`DropReport::fell_back_from`]).
    /// Default none: a missing user is an error.
    pub fallback_user: Option<String>,
    /// Keep CAP_SYS_ADMIN (crediting is on). Without it no capability is kept.
    pub keep_sys_admin: bool,
    /// Refuse when other threads exist (see the module docs). Default true; only a test that
    /// runs inside a test harness's worker thread turns it off.
    pub require_single_thread: bool,
}

impl Default for DropPlan {
    fn default() -> Self {
        Self {
            user: DEFAULT_USER.to_owned(),
            fallback_user: None,
            keep_sys_admin: true,
            require_single_thread: true,
        }
    }
}

/// What [`drop_privileges`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropOutcome {
    /// Root was dropped and the result verified.
    Dropped(DropReport),
    /// Not started as root (e.g. under systemd with `User=`): nothing changed; here is what the
    /// process holds.
    NotRoot(Inspection),
}

/// The verified result of a drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropReport {
    /// The user now in effect.
    pub user: String,
    /// The configured user that did not exist, when the fallback was used.
    pub fell_back_from: Option<String>,
    /// The capabilities kept (bit mask): [`CAP_SYS_ADMIN_MASK`] or 0.
    pub kept: u64,
    /// The verified credentials.
    pub credentials: Credentials,
}

impl fmt::Display for DropReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let caps = capability_names(self.kept);
        write!(
            f,
            "running as {} (uid {}, gid {}) with capabilities [{}]",
            self.user,
            self.credentials.uids[1],
            self.credentials.gids[1],
            caps.join(", ")
        )?;
        if let Some(wanted) = &self.fell_back_from {
            write!(f, "; user `{wanted}` does not exist, fell back")?;
        }
        Ok(())
    }
}

/// Drops root privileges as the module docs describe. Call before starting any thread.
///
/// # Errors
///
/// Before any change: [`PrivilegeError::UserNotFound`], [`PrivilegeError::TargetIsRoot`],
/// [`PrivilegeError::Lookup`], [`PrivilegeError::MultiThreaded`]. During or after the change
/// (the process must then exit): [`PrivilegeError::Step`], [`PrivilegeError::Verification`].
pub fn drop_privileges(plan: &DropPlan) -> Result<DropOutcome, PrivilegeError> {
    if !Uid::effective().is_root() {
        return inspect(plan.keep_sys_admin).map(DropOutcome::NotRoot);
    }
    // Everything that can fail without side effects comes first.
    let (user, fell_back_from) = resolve_user(plan)?;
    if user.uid.is_root() {
        return Err(PrivilegeError::TargetIsRoot(user.name));
    }
    let name = CString::new(user.name.clone())
        .map_err(|_| PrivilegeError::UserNotFound(user.name.clone()))?;
    let mut groups =
        nix::unistd::getgrouplist(&name, user.gid).map_err(|errno| PrivilegeError::Lookup {
            user: user.name.clone(),
            errno,
        })?;
    groups.sort_unstable_by_key(|g| g.as_raw());
    groups.dedup();
    if plan.require_single_thread {
        let threads = Credentials::of_process()?.threads;
        if threads > 1 {
            return Err(PrivilegeError::MultiThreaded(threads));
        }
    }
    let kept = if plan.keep_sys_admin {
        CAP_SYS_ADMIN_MASK
    } else {
        0
    };
    let kept_set: CapsHashSet = caps::all()
        .into_iter()
        .filter(|c| c.bitmask() & kept != 0)
        .collect();

    let step = |step: &'static str| {
        move |e: &dyn fmt::Display| PrivilegeError::Step {
            step,
            reason: e.to_string(),
        }
    };
    // 2. Bounding set first, while CAP_SETPCAP is still held.
    for cap in
        caps::read(None, CapSet::Bounding).map_err(|e| step("reading the bounding set")(&e))?
    {
        if !kept_set.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap)
                .map_err(|e| step("shrinking the bounding set")(&e))?;
        }
    }
    // 3. Keep the permitted set across the uid change (capabilities(7), SECBIT_KEEP_CAPS).
    caps::securebits::set_keepcaps(true).map_err(|e| step("setting keep-caps")(&e))?;
    // 4. Groups first: after setresuid there is no CAP_SETGID left to change them.
    nix::unistd::setgroups(&groups).map_err(|e| step("setgroups")(&e))?;
    nix::unistd::setresgid(user.gid, user.gid, user.gid).map_err(|e| step("setresgid")(&e))?;
    nix::unistd::setresuid(user.uid, user.uid, user.uid).map_err(|e| step("setresuid")(&e))?;
    // 5. Permitted first (it bounds effective), then effective; nothing to inherit.
    caps::set(None, CapSet::Permitted, &kept_set).map_err(|e| step("setting permitted")(&e))?;
    caps::set(None, CapSet::Effective, &kept_set).map_err(|e| step("setting effective")(&e))?;
    caps::clear(None, CapSet::Inheritable).map_err(|e| step("clearing inheritable")(&e))?;
    caps::clear(None, CapSet::Ambient).map_err(|e| step("clearing ambient")(&e))?;
    caps::securebits::set_keepcaps(false).map_err(|e| step("clearing keep-caps")(&e))?;
    // 6.
    nix::sys::prctl::set_no_new_privs().map_err(|e| step("setting no_new_privs")(&e))?;

    // 7. Verify what the kernel now says, not what we asked for.
    let expected_groups: Vec<u32> = groups.iter().map(|g| g.as_raw()).collect();
    let credentials = verify(user.uid, user.gid, &expected_groups, kept)?;
    Ok(DropOutcome::Dropped(DropReport {
        user: user.name,
        fell_back_from,
        kept,
        credentials,
    }))
}

/// The index of the first of `checks` that `user` would be denied (`EACCES` or `EPERM` from
/// `access(2)`), `None` when every one is allowed. Each check is a path and the access wanted
/// (e.g. `X_OK` to pass through a directory, `W_OK | X_OK` to create and remove files in it).
/// Other errors (a read-only file system, a missing path) are not a matter of permission and
/// count as allowed: whoever uses the path then reports them. Run as root; see the module docs.
///
/// # Errors
///
/// [`PrivilegeError::Lookup`] when the user's groups cannot be read; [`PrivilegeError::Step`]
/// when the child process cannot be started, cannot become the user or has too many checks.
// fork(2) and _exit(2) have no safe wrapper.
#[allow(unsafe_code)]
pub fn first_denied_as(
    user: &User,
    checks: &[(&Path, AccessFlags)],
) -> Result<Option<usize>, PrivilegeError> {
    let step = |step: &'static str, reason: String| PrivilegeError::Step { step, reason };
    // The child's exit code says which check failed (1 + index); 255 says it could not
    // become the user.
    const CANNOT_SWITCH: i32 = 255;
    if checks.len() >= CANNOT_SWITCH as usize {
        return Err(step("checking access", format!("{} paths", checks.len())));
    }
    let name = CString::new(user.name.clone())
        .map_err(|_| PrivilegeError::UserNotFound(user.name.clone()))?;
    let groups =
        nix::unistd::getgrouplist(&name, user.gid).map_err(|errno| PrivilegeError::Lookup {
            user: user.name.clone(),
            errno,
        })?;
    // Everything the child needs is prepared here: after fork(2) in a process that may have
    // other threads, the child may only make async-signal-safe calls (no allocation).
    let paths: Vec<CString> = checks
        .iter()
        .map(|(path, _)| CString::new(path.as_os_str().as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|e| step("checking access", e.to_string()))?;
    // SAFETY: the child only makes system calls (setgroups, setresgid, setresuid, access,
    // _exit) on memory prepared before the fork, all async-signal-safe (signal-safety(7)), so
    // it is sound even when the parent has other threads.
    let fork = unsafe { nix::unistd::fork() };
    match fork.map_err(|e| step("fork", e.to_string()))? {
        nix::unistd::ForkResult::Child => {
            let code = (|| {
                let switched = nix::unistd::setgroups(&groups)
                    .and_then(|()| nix::unistd::setresgid(user.gid, user.gid, user.gid))
                    .and_then(|()| nix::unistd::setresuid(user.uid, user.uid, user.uid));
                if switched.is_err() {
                    return CANNOT_SWITCH;
                }
                for (i, (path, (_, flags))) in paths.iter().zip(checks).enumerate() {
                    if let Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) =
                        nix::unistd::access(path.as_c_str(), *flags)
                    {
                        return i as i32 + 1;
                    }
                }
                0
            })();
            // SAFETY: _exit(2) ends the child at once, without running the parent's exit
            // handlers or flushing its buffers twice.
            unsafe { nix::libc::_exit(code) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            use nix::sys::wait::{WaitStatus, waitpid};
            let status = loop {
                match waitpid(child, None) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => break other.map_err(|e| step("waitpid", e.to_string()))?,
                }
            };
            match status {
                WaitStatus::Exited(_, 0) => Ok(None),
                WaitStatus::Exited(_, CANNOT_SWITCH) => Err(step(
                    "checking access",
                    format!("a child process could not become user {}", user.name),
                )),
                WaitStatus::Exited(_, code) => Ok(Some(code as usize - 1)),
                other => Err(step("checking access", format!("child ended: {other:?}"))),
            }
        }
    }
}

fn resolve_user(plan: &DropPlan) -> Result<(User, Option<String>), PrivilegeError> {
    let lookup = |name: &str| {
        User::from_name(name).map_err(|errno| PrivilegeError::Lookup {
            user: name.to_owned(),
            errno,
        })
    };
    if let Some(user) = lookup(&plan.user)? {
        return Ok((user, None));
    }
    if let Some(fallback) = &plan.fallback_user
        && let Some(user) = lookup(fallback)?
    {
        return Ok((user, Some(plan.user.clone())));
    }
    Err(PrivilegeError::UserNotFound(plan.user.clone()))
}

fn verify(uid: Uid, gid: Gid, groups: &[u32], kept: u64) -> Result<Credentials, PrivilegeError> {
    let c = Credentials::of_current_thread()?;
    let mismatch = |what, expected: String, found: String| PrivilegeError::Verification {
        what,
        expected,
        found,
    };
    if c.uids != [uid.as_raw(); 4] {
        return Err(mismatch(
            "uid",
            format!("{:?}", [uid.as_raw(); 4]),
            format!("{:?}", c.uids),
        ));
    }
    if c.gids != [gid.as_raw(); 4] {
        return Err(mismatch(
            "gid",
            format!("{:?}", [gid.as_raw(); 4]),
            format!("{:?}", c.gids),
        ));
    }
    if c.groups != groups {
        return Err(mismatch(
            "groups",
            format!("{groups:?}"),
            format!("{:?}", c.groups),
        ));
    }
    let sets = [
        ("CapEff", c.cap_eff, kept),
        ("CapPrm", c.cap_prm, kept),
        ("CapBnd", c.cap_bnd, kept),
        ("CapInh", c.cap_inh, 0),
        ("CapAmb", c.cap_amb, 0),
    ];
    for (what, found, expected) in sets {
        if found != expected {
            return Err(mismatch(
                what,
                format!("{expected:016x}"),
                format!("{found:016x}"),
            ));
        }
    }
    if !c.no_new_privs {
        return Err(mismatch("NoNewPrivs", "1".into(), "0".into()));
    }
    // The drop must be irreversible: regaining root has to fail.
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err(mismatch("setuid(0)", "EPERM".into(), "success".into()));
    }
    Ok(c)
}

/// What a process holds compared with what it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The calling thread's credentials.
    pub credentials: Credentials,
    /// The capabilities needed: [`CAP_SYS_ADMIN_MASK`] when crediting, else 0.
    pub needed: u64,
    /// Held (permitted, effective or ambient) but not needed.
    pub extra: u64,
    /// Needed but not effective.
    pub missing: u64,
}

impl Inspection {
    /// Human-readable warnings, empty when the process holds exactly what it needs.
    #[must_use]
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.credentials.uids[1] == 0 {
            out.push("running as root; configure a service user (User= in the unit)".to_owned());
        }
        if self.extra != 0 {
            out.push(format!(
                "holds capabilities it does not need: {}; restrict CapabilityBoundingSet=",
                capability_names(self.extra).join(", ")
            ));
        }
        if self.missing != 0 {
            out.push(
                "lacks CAP_SYS_ADMIN, so crediting will fail with EPERM; grant it (AmbientCapabilities=CAP_SYS_ADMIN) or turn crediting off"
                    .to_owned(),
            );
        }
        if !self.credentials.no_new_privs {
            out.push("no_new_privs is not set; set NoNewPrivileges=yes".to_owned());
        }
        out
    }
}

/// Whether the daemon needs CAP_SYS_ADMIN: only when it feeds the kernel and credits more
/// than 0 bits per byte (see the module docs).
#[must_use]
pub fn needs_sys_admin(kernel_enabled: bool, bits_per_byte: u64) -> bool {
    kernel_enabled && bits_per_byte > 0
}

/// Whether the calling thread holds CAP_SYS_ADMIN in its effective set.
#[must_use]
pub fn holds_sys_admin() -> bool {
    caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap_or(false)
}

/// For a process not started as root (systemd's `User=`): drops every capability it holds but
/// does not need (CAP_SYS_ADMIN too unless `crediting`) from its effective, permitted,
/// inheritable and ambient sets, then checks the result. Call before any other thread exists
/// (capabilities are per thread). Returns the inspection after the drop; it has no extra
/// capabilities left.
///
/// # Errors
///
/// [`PrivilegeError::MultiThreaded`] before any change; [`PrivilegeError::Step`] when a set
/// cannot be lowered; [`PrivilegeError::Verification`] when a capability is still held
/// afterwards; the errors of [`inspect`].
pub fn shed_unneeded(crediting: bool) -> Result<Inspection, PrivilegeError> {
    let before = inspect(crediting)?;
    if before.extra == 0 && before.credentials.cap_inh & !before.needed == 0 {
        return Ok(before);
    }
    let threads = Credentials::of_process()?.threads;
    if threads > 1 {
        return Err(PrivilegeError::MultiThreaded(threads));
    }
    let step = |step: &'static str| {
        move |e: caps::errors::CapsError| PrivilegeError::Step {
            step,
            reason: e.to_string(),
        }
    };
    let keep = |set: CapSet| -> Result<CapsHashSet, PrivilegeError> {
        Ok(caps::read(None, set)
            .map_err(step("reading the capability sets"))?
            .into_iter()
            .filter(|c| c.bitmask() & before.needed != 0)
            .collect())
    };
    // Ambient first (it must stay within permitted and inheritable), effective before
    // permitted (effective must stay within permitted).
    caps::clear(None, CapSet::Ambient).map_err(step("clearing ambient"))?;
    let inheritable = keep(CapSet::Inheritable)?;
    caps::set(None, CapSet::Inheritable, &inheritable).map_err(step("lowering inheritable"))?;
    let effective = keep(CapSet::Effective)?;
    caps::set(None, CapSet::Effective, &effective).map_err(step("lowering effective"))?;
    let permitted = keep(CapSet::Permitted)?;
    caps::set(None, CapSet::Permitted, &permitted).map_err(step("lowering permitted"))?;
    let after = inspect(crediting)?;
    if after.extra != 0 {
        return Err(PrivilegeError::Verification {
            what: "the capabilities held",
            expected: capability_names(after.needed).join(", "),
            found: {
                let c = &after.credentials;
                capability_names(c.cap_eff | c.cap_prm | c.cap_amb).join(", ")
            },
        });
    }
    Ok(after)
}

/// Reports the calling thread's privileges against what lokey needs (CAP_SYS_ADMIN only when
/// `crediting`). For the systemd case, where the unit has already dropped privileges.
///
/// # Errors
///
/// [`PrivilegeError::Status`] or [`PrivilegeError::StatusFormat`].
pub fn inspect(crediting: bool) -> Result<Inspection, PrivilegeError> {
    let credentials = Credentials::of_current_thread()?;
    let needed = if crediting { CAP_SYS_ADMIN_MASK } else { 0 };
    let held = credentials.cap_eff | credentials.cap_prm | credentials.cap_amb;
    Ok(Inspection {
        extra: held & !needed,
        missing: needed & !credentials.cap_eff,
        needed,
        credentials,
    })
}

/// Names of the capabilities in a mask, e.g. `["CAP_SYS_ADMIN"]`; bits the `caps` crate does
/// not know are named `CAP_<bit>`.
#[must_use]
pub fn capability_names(mask: u64) -> Vec<String> {
    (0..64u8)
        .filter(|bit| mask & (1u64 << bit) != 0)
        .map(|bit| {
            caps::all()
                .into_iter()
                .find(|c: &Capability| c.index() == bit)
                .map_or_else(|| format!("CAP_{bit}"), |c| c.to_string())
        })
        .collect()
}
