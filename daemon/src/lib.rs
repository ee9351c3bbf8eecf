//! # lokeyd — the daemon, as a library
//!
//! `main.rs` is thin: it parses flags, loads the configuration and calls [`start`]. Everything
//! else is here so tests can drive it.
//!
//! # Layout
//!
//! - [`args`]: command-line flags.
//! - [`logging`]: tracing setup (terminal or journald), live level changes.
//! - [`metrics`]: Prometheus metrics, read from the service at every scrape.
//! - [`pipeline`]: the sources, their harvest threads and sinks, built from the configuration.
//! - [`service`]: the verbs, implemented once for both transports.
//! - [`beacon`]: the chip-signed randomness beacon's thread.
//! - [`draws`]: draws registered for the beacon's next pulse.
//! - [`feeder`]: credits or mixes healthy blocks into the kernel pool (RNDADDENTROPY).
//! - [`harvest`]: one thread per entropy source: read, health-test, route to one sink.
//! - [`http`]: the REST API.
//! - [`socket`]: the Unix socket for the CLI.
//! - [`shutdown`]: shutdown signalling and drain tracking.
//! - [`handover`]: started as root, what the service user is given and must be able to use.
//! - [`upstream`]: `[upstream]`, mixing a remote lokey device's bytes into the kernel pool.
//!
//! # Life cycle
//!
//! [`prepare`] binds the REST listener and the socket and opens the store; [`start`] starts
//! serving, tells systemd `READY=1` once the REST API answers, pings the watchdog while the
//! daemon runs, and on the first SIGTERM or SIGINT stops accepting, tells systemd
//! `STOPPING=1`, lets in-flight work finish (bounded by `daemon.shutdown_timeout_secs`) and
//! returns. A second SIGTERM or SIGINT exits at once. SIGHUP re-reads the configuration and
//! applies what can change while running. A start that fails after the socket was bound
//! removes the socket file again.
//!
//! # When the disk fails
//!
//! A store that is foreign, damaged, of another format or in use refuses the start
//! (design.md §2 invariant 7). A store that can no longer be written while the daemon runs (a
//! full disk: [`lokey::store::Store::healthy`] turns false) is reported once, with its path and
//! what the file system says; the daemon keeps serving Fortuna, and nothing more is written
//! until a restart. The same holds when the Fortuna seed file cannot be replaced at start: the
//! old seed is then not used (a restart would use it again), and Fortuna waits for its first
//! reseed from hardware. A data directory that cannot be created or opened because of the
//! disk (read-only, no permission, full) leaves the daemon without a store: Fortuna only, the
//! reason in health, status and the log.

pub mod args;
pub mod beacon;
pub mod draws;
pub mod feeder;
pub mod handover;
pub mod harvest;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod service;
pub mod shutdown;
pub mod sinks;
pub mod socket;
pub mod tls;
pub mod upstream;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use lokey::config::{Config, Loaded};
use lokey::fortuna::{Fortuna, SharedFortuna};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};

use crate::service::Service;
use crate::shutdown::Shutdown;

/// The listeners the daemon serves on, bound before [`run`] so that errors come early.
#[derive(Debug)]
pub struct Listeners {
    /// REST API.
    pub http: TcpListener,
    /// Unix socket for the CLI.
    pub socket: UnixListener,
}

/// What [`prepare`] set up before the async runtime starts.
#[derive(Debug)]
pub struct Prepared {
    config: Config,
    pinned: Vec<String>,
    store: Option<lokey::store::Store>,
    store_unavailable: Option<String>,
    fortuna: SharedFortuna,
    http: std::net::TcpListener,
    socket: std::os::unix::net::UnixListener,
    socket_file: SocketFile,
    sources: pipeline::Sources,
}

/// The socket file this daemon bound, removed when dropped: by a start that fails after
/// binding (a refused store, a source that cannot be opened) and at the end of a clean exit.
/// A file that is no longer the one bound (another daemon's, bound meanwhile) stays.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    id: Option<(u64, u64)>,
}

impl SocketFile {
    fn new(path: &Path) -> SocketFile {
        SocketFile {
            path: path.to_path_buf(),
            id: file_id(path),
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Device and inode of `path` itself (not following a symbolic link).
fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Everything that may need root, done while the process is still single-threaded: create
/// the data directory, bind the REST port and the socket, open the entropy devices, and — when
/// started as root — switch to `daemon.user` keeping only CAP_SYS_ADMIN (none with crediting
/// off: `kernel.enabled = false`, or `kernel.bits_per_byte = 0` and no source with a credit of
/// its own); started as another user, drop
/// every capability not needed. The async runtime and every thread start after this.
///
/// # Errors
///
/// What could not be created, bound, opened or dropped, naming it.
pub fn prepare(loaded: Loaded, private_socket: bool) -> anyhow::Result<Prepared> {
    // Everything lokeyd creates is private unless it says otherwise (the socket is 0660).
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let mut loaded = loaded;
    let config = &loaded.config;
    let dir = &config.daemon.data_dir;
    // What lokeyd creates, recorded first: started as root, it is given to the service user.
    let mut created = handover::missing_dirs(dir);
    // A data directory that cannot be created or written (read-only, not ours, a full disk)
    // leaves the daemon serving Fortuna only; anything else stops the start.
    let mut unavailable = match create_private_dir(dir) {
        Ok(()) => None,
        Err(e) if disk_unavailable(&e) => Some(format!(
            "cannot create data directory {}: {e}{}",
            dir.display(),
            disk_condition(dir.parent().unwrap_or(dir), e.raw_os_error())
                .map_or_else(String::new, |c| format!(" ({c})"))
        )),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot create data directory {}", dir.display()));
        }
    };
    let addr = config.api.listen;
    let http = std::net::TcpListener::bind(addr).with_context(|| {
        format!("cannot listen on {addr} for the REST API (is another lokeyd running? choose another address with --listen)")
    })?;
    http.set_nonblocking(true)?;
    if let Some(parent) = config.daemon.socket.parent() {
        created.extend(handover::missing_dirs(parent));
    }
    let socket = socket::bind(&config.daemon.socket, private_socket)?;
    // From here on, an error return removes the socket file again.
    let socket_file = SocketFile::new(&config.daemon.socket);
    socket.set_nonblocking(true)?;
    let sources = pipeline::open_sources(config)?;
    privileges(config, &created, unavailable.is_none())?;
    // After the switch of user: the store starts its own threads, and its files belong to
    // the user the daemon runs as.
    let store = match unavailable {
        Some(_) => None,
        None => match lokey::store::Store::open(dir, &Default::default()) {
            Ok(store) => Some(store),
            Err(e) => {
                let disk = matches!(&e, lokey::store::StoreError::Io { source, .. }
                    if disk_unavailable(source));
                if !disk {
                    return Err(anyhow::anyhow!("{}", store_error(&e, dir)));
                }
                unavailable = Some(store_error(&e, dir));
                None
            }
        },
    };
    if let Some(why) = &unavailable {
        tracing::error!(
            "{why}; serving Fortuna only: TRNG requests fail (503), settings cannot be changed \
             and there is no Fortuna seed file (Fortuna serves after its first reseed from \
             hardware); restart lokeyd once the data directory is writable"
        );
    }
    let stored = match &store {
        Some(store) => store.settings()?,
        None => Default::default(),
    };
    let bits_in_file = loaded.config.kernel.bits_per_byte;
    for note in loaded.apply_stored(stored.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        tracing::info!("{note}");
    }
    // The capability was kept or dropped by the file's setting; a stored one cannot turn
    // crediting back on without it (every RNDADDENTROPY would fail).
    let kernel = &loaded.config.kernel;
    if kernel.enabled
        && bits_in_file == 0
        && kernel.bits_per_byte > 0
        && !lokey::privilege::holds_sys_admin()
    {
        tracing::warn!(
            "stored setting kernel.bits_per_byte = {} not applied: {}",
            kernel.bits_per_byte,
            service::CREDIT_NEEDS_RESTART
        );
        loaded.config.kernel.bits_per_byte = 0;
    }
    let fortuna = match &store {
        Some(store) => {
            store
                .trng()
                .set_capacity(loaded.config.store.trng_queue_size);
            open_fortuna(store, &loaded.config)?
        }
        None => new_fortuna(&loaded.config),
    };
    Ok(Prepared {
        config: loaded.config,
        pinned: loaded.pinned,
        store,
        store_unavailable: unavailable,
        fortuna,
        http,
        socket,
        socket_file,
        sources,
    })
}

/// Whether `e` says the disk cannot be written here (read-only, no permission, full), as
/// opposed to something wrong with what is on it.
fn disk_unavailable(e: &std::io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error().map(Errno::from_raw).is_some_and(|errno| {
        matches!(
            errno,
            Errno::EROFS | Errno::EACCES | Errno::EPERM | Errno::ENOSPC | Errno::EDQUOT
        )
    })
}

/// A store error for the log, with what the file system says when the cause is the disk.
fn store_error(e: &lokey::store::StoreError, dir: &Path) -> String {
    let mut text = e.to_string();
    if let lokey::store::StoreError::Io { source, .. } = e
        && let Some(cause) = disk_condition(dir, source.raw_os_error())
    {
        text.push_str(&format!(" ({cause})"));
    }
    text
}

/// What the file system holding `path` says about why writing fails: read-only, full, out of
/// inodes or not writable by this user, from `errno` when there is one, else from statvfs.
fn disk_condition(path: &Path, errno: Option<i32>) -> Option<String> {
    use nix::errno::Errno;
    use nix::sys::statvfs::{FsFlags, statvfs};
    let fs = statvfs(path).ok();
    let read_only = fs
        .as_ref()
        .is_some_and(|fs| fs.flags().contains(FsFlags::ST_RDONLY));
    let full = fs.as_ref().is_some_and(|fs| fs.blocks_available() == 0);
    let no_inodes = fs
        .as_ref()
        .is_some_and(|fs| fs.files() > 0 && fs.files_available() == 0);
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map_or_else(|| nix::unistd::geteuid().to_string(), |u| u.name);
    Some(match errno.map(Errno::from_raw) {
        Some(Errno::EROFS) => "the file system is mounted read-only".into(),
        Some(Errno::ENOSPC) if no_inodes && !full => "the file system has no free inodes".into(),
        Some(Errno::ENOSPC) => "the disk is full".into(),
        Some(Errno::EDQUOT) => "the disk quota is exhausted".into(),
        Some(Errno::EACCES | Errno::EPERM) => {
            format!("user {user} may not write there")
        }
        Some(_) => return None,
        None if read_only => "the file system is mounted read-only".into(),
        None if full => "the disk is full".into(),
        None if no_inodes => "the file system has no free inodes".into(),
        None => return None,
    })
}

fn new_fortuna(config: &Config) -> SharedFortuna {
    let mut fortuna = Fortuna::with_cipher(config.fortuna.cipher());
    fortuna.set_seed_file_interval(Duration::from_secs(config.fortuna.seed_interval_secs));
    SharedFortuna::new(fortuna)
}

/// For `--print-config`: applies the settings stored at run time in the data directory's
/// store, as a start would, and returns what to tell the user (on stderr). Opens the store only
/// when there is one (nothing is created) and only briefly; started as root, it first becomes
/// the data directory's owner, so that no file of the store changes owner. A store in use by a
/// running daemon is locked: the configuration is then printed without its stored settings,
/// and the returned note says so.
pub fn apply_stored_for_print(loaded: &mut Loaded) -> Vec<String> {
    let dir = loaded.config.daemon.data_dir.clone();
    // fjall's `version` file marks a store; `lokey-creating` one whose creation was
    // interrupted (opening it would create it again).
    if !dir.join("version").is_file() || dir.join("lokey-creating").exists() {
        return Vec::new();
    }
    let without = "the configuration is printed without the settings stored at run time";
    if let Err(e) = become_owner_of(&dir) {
        return vec![format!("{without}: {e}")];
    }
    let store = match lokey::store::Store::open(&dir, &Default::default()) {
        Ok(store) => store,
        Err(lokey::store::StoreError::Locked { .. }) => {
            return vec![format!(
                "the store in {} is in use by a running lokeyd: {without} (`lokey config get` \
                 asks the running daemon)",
                dir.display()
            )];
        }
        Err(e) => return vec![format!("{without}: {}", store_error(&e, &dir))],
    };
    let stored = match store.settings() {
        Ok(stored) => stored,
        Err(e) => return vec![format!("{without}: {e}")],
    };
    let mut notes = loaded.apply_stored(stored.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if !stored.is_empty() {
        let keys: Vec<&str> = stored.keys().map(String::as_str).collect();
        notes.insert(
            0,
            format!(
                "settings stored at run time in {}: {}",
                dir.display(),
                keys.join(", ")
            ),
        );
    }
    notes
}

/// Run as root, becomes the owner (user and group) of `dir` when that is another user, for
/// good: files created from here on are that user's.
fn become_owner_of(dir: &Path) -> anyhow::Result<()> {
    use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
    if !nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    if meta.uid() == 0 {
        return Ok(());
    }
    let (uid, gid) = (Uid::from_raw(meta.uid()), Gid::from_raw(meta.gid()));
    setgroups(&[gid])
        .and_then(|()| setgid(gid))
        .and_then(|()| setuid(uid))
        .with_context(|| format!("cannot become {uid}, the owner of {}", dir.display()))
}

/// Fortuna, seeded from its seed file when there is one (*Cryptography Engineering* §9.6.2:
/// read at start and replaced at once, before anything is served). When the store cannot be
/// written (a full disk), the seed file is not used: it stays on disk as it was, and a
/// generator seeded from it now could repeat its output after the next start. Fortuna then
/// serves after its first reseed from hardware, seconds later.
fn open_fortuna(store: &lokey::store::Store, config: &Config) -> anyhow::Result<SharedFortuna> {
    let fortuna = new_fortuna(config);
    match store.fortuna_seed()? {
        Some(seed) => match fortuna.update_seed_file(&seed) {
            Ok(next) => match store.set_fortuna_seed(&next) {
                Ok(()) => tracing::info!("Fortuna seeded from its seed file"),
                // The write poisoned the store: it was the disk, not the data.
                Err(e) if !store.healthy() => {
                    let cause = disk_condition(store.path(), None)
                        .map_or_else(String::new, |c| format!(": {c}"));
                    tracing::error!(
                        "cannot replace the Fortuna seed file in {}{cause} ({e}); the old one is \
                         not used (it could be used again at the next start): Fortuna serves \
                         after its first reseed from hardware",
                        store.path().display()
                    );
                    return Ok(new_fortuna(config));
                }
                Err(e) => return Err(e).context("replacing the Fortuna seed file"),
            },
            Err(e) => tracing::warn!("Fortuna seed file not used: {e}"),
        },
        None => tracing::info!(
            "no Fortuna seed file yet: Fortuna serves after its first reseed from hardware"
        ),
    }
    Ok(fortuna)
}

/// Writes a fresh seed file when one is due (every `fortuna.seed_interval_secs`) or `now`;
/// nothing when the store can no longer be written (that was reported once).
fn write_seed(fortuna: &SharedFortuna, store: &lokey::store::Store, force: bool) {
    if !store.healthy() || (!force && !fortuna.seed_due(std::time::Instant::now())) {
        return;
    }
    match fortuna.write_seed_file() {
        Ok(seed) => match store.set_fortuna_seed(&seed) {
            Ok(()) => tracing::debug!("Fortuna seed file written"),
            Err(e) => tracing::error!("cannot write the Fortuna seed file: {e}"),
        },
        // Not seeded yet: nothing worth keeping.
        Err(e) => tracing::debug!("no Fortuna seed file written: {e}"),
    }
}

/// Drops root to `daemon.user` (see [`prepare`]); as another user, checks what it holds.
/// Started as root, the directories in `created` (made by this start) are given to the user
/// first, and the start is refused while still root when the user could not use the data
/// directory (when `data_dir_usable`: it was created or found) or the socket's directory
/// ([`handover`]).
fn privileges(config: &Config, created: &[PathBuf], data_dir_usable: bool) -> anyhow::Result<()> {
    use lokey::privilege::{
        DropOutcome, DropPlan, capability_names, drop_privileges, inspect, shed_unneeded,
    };
    // Some source may be credited: its own credit_bits_per_byte or kernel.bits_per_byte.
    let crediting = config.may_credit();
    if !nix::unistd::geteuid().is_root() {
        // E.g. under systemd, whose unit grants CAP_SYS_ADMIN whatever the configuration.
        let extra = inspect(crediting).map_or(0, |found| found.extra);
        let found = shed_unneeded(crediting).context("dropping capabilities not needed")?;
        if extra != 0 {
            tracing::info!(
                "dropped capabilities not needed{}: {}",
                if crediting { "" } else { " (crediting is off)" },
                capability_names(extra).join(", ")
            );
        }
        for warning in found.warnings() {
            tracing::warn!("{warning}");
        }
        return Ok(());
    }
    let user = &config.daemon.user;
    let Ok(Some(target)) = nix::unistd::User::from_name(user) else {
        tracing::warn!(
            "running as root with every capability: user `{user}` does not exist (create it \
             with `useradd --system --no-create-home {user}`, as the Debian package does)"
        );
        return Ok(());
    };
    // The daemon's files must stay reachable after the switch. A data directory that could
    // not be created, or is on a read-only file system, cannot change owner: the daemon runs
    // without its store, and says why.
    if config.daemon.data_dir.exists() {
        match give_to(&config.daemon.data_dir, &target, true) {
            Err(e) if e.downcast_ref::<nix::errno::Errno>() == Some(&nix::errno::Errno::EROFS) => {}
            other => other?,
        }
    }
    give_to(&config.daemon.socket, &target, false)?;
    let created: Vec<PathBuf> = created
        .iter()
        .filter(|d| **d != config.daemon.data_dir)
        .cloned()
        .collect();
    handover::hand_over(
        &target,
        &created,
        &handover::Needs {
            data_dir: data_dir_usable.then_some(config.daemon.data_dir.as_path()),
            socket: &config.daemon.socket,
        },
    )?;
    let plan = DropPlan {
        user: user.clone(),
        keep_sys_admin: crediting,
        ..DropPlan::default()
    };
    match drop_privileges(&plan).context("dropping privileges")? {
        DropOutcome::Dropped(report) => tracing::info!("{report}"),
        DropOutcome::NotRoot(_) => {}
    }
    Ok(())
}

/// Makes `path` (and, for a directory, everything under it) owned by `user`; the socket
/// keeps its group (`lokey` when it exists). Symbolic links are changed, not followed.
fn give_to(path: &std::path::Path, user: &nix::unistd::User, recurse: bool) -> anyhow::Result<()> {
    use nix::unistd::{FchownatFlags, fchownat};
    fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        Some(user.uid),
        None,
        FchownatFlags::AT_SYMLINK_NOFOLLOW,
    )
    .with_context(|| format!("cannot give {} to user {}", path.display(), user.name))?;
    if recurse && std::fs::symlink_metadata(path)?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            give_to(&entry?.path(), user, true)?;
        }
    }
    Ok(())
}

/// Serves until `shutdown` is triggered, then drains in-flight work (bounded by the configured
/// timeout) and returns.
///
/// # Errors
///
/// Failures of the listeners.
pub async fn run(service: Service, listeners: Listeners, shutdown: Shutdown) -> anyhow::Result<()> {
    let rest_addr = listeners.http.local_addr()?;
    let http = tokio::spawn(http::serve(
        listeners.http,
        service.clone(),
        shutdown.clone(),
    ));
    let socket = tokio::spawn(socket::serve(
        listeners.socket,
        service.clone(),
        shutdown.clone(),
    ));
    // Ready means answering: the REST API is asked once, as a client would, before systemd
    // hears READY=1 (the listener was bound long before its server ran).
    let pin = service.tls().map(|tls| tls.pin());
    match tokio::time::timeout(PROBE_TIMEOUT, probe(rest_addr, pin)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("the REST API on {rest_addr} does not answer itself: {e}"),
        Err(_) => tracing::warn!(
            "the REST API on {rest_addr} did not answer within {}s",
            PROBE_TIMEOUT.as_secs()
        ),
    }
    tracing::info!(
        "serving REST on {}://{rest_addr} and the CLI on {}",
        if pin.is_some() { "https" } else { "http" },
        service.config().daemon.socket.display()
    );
    let status = if service.store_problem().is_some() {
        "serving Fortuna only: the store cannot be written"
    } else {
        "serving"
    };
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
    let watchdog = tokio::spawn(watchdog(shutdown.clone()));

    shutdown.wait().await;
    notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down: finishing in-flight requests");
    watchdog.abort();
    let limit = Duration::from_secs(service.config().daemon.shutdown_timeout_secs);
    let drain = async {
        let served = http.await;
        let _ = socket.await;
        shutdown.drained().await;
        served
    };
    match tokio::time::timeout(limit, drain).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(e).context("REST API failed"),
        Ok(Err(e)) => return Err(e).context("REST API task failed"),
        Err(_) => tracing::warn!(
            "{} connections or requests still open after {}s; exiting anyway",
            shutdown.inflight(),
            limit.as_secs()
        ),
    }
    Ok(())
}

/// How long the REST API may take to answer the daemon's own first request.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// One `GET /api/v1/health` to the REST API on `addr` (its loopback address when it listens
/// on every address); any HTTP answer will do (a degraded daemon answers 503). With TLS, over
/// TLS with the served key pinned (one full handshake: the chip's key works).
async fn probe(addr: std::net::SocketAddr, pin: Option<lokey::remote::Pin>) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    if let Some(pin) = pin {
        let url = format!("https://{addr}");
        let asked = tokio::task::spawn_blocking(move || {
            lokey::remote::Remote::new(&url, lokey::remote::Trust::Pin(pin), PROBE_TIMEOUT)?
                .get("/api/v1/health")
        })
        .await
        .map_err(std::io::Error::other)?;
        return asked.map(|_| ()).map_err(std::io::Error::other);
    }
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut head = [0u8; 5];
    stream.read_exact(&mut head).await?;
    if &head == b"HTTP/" {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the answer is not HTTP",
        ))
    }
}

/// Pings systemd's watchdog at half its interval while the daemon runs. The ping comes from the
/// runtime itself, so a wedged runtime stops it and systemd restarts the daemon.
async fn watchdog(shutdown: Shutdown) {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval(interval / 2);
    while !shutdown.is_triggered() {
        tick.tick().await;
        notify(&[sd_notify::NotifyState::Watchdog]);
    }
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    // Without NOTIFY_SOCKET this does nothing; a failure to reach systemd is worth a warning.
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

/// Handles signals: the first SIGTERM/SIGINT begins shutdown, a second exits at once; SIGHUP
/// calls `reload`.
///
/// # Errors
///
/// When the signal handlers cannot be installed.
pub fn handle_signals(
    shutdown: Shutdown,
    reload: impl Fn() + Send + 'static,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    reload();
                    continue;
                }
            };
            if shutdown.is_triggered() {
                tracing::warn!("second {name}: exiting now");
                std::process::exit(1);
            }
            tracing::info!("{name} received");
            shutdown.trigger();
        }
    }))
}

/// Runs the daemon set up by [`prepare`] until a signal stops it.
///
/// # Errors
///
/// Start-up failures (pipeline, listeners), each naming what failed.
pub async fn start(
    prepared: Prepared,
    reload: impl Fn() -> Option<Loaded> + Send + 'static,
    log: logging::LogHandle,
) -> anyhow::Result<()> {
    let Prepared {
        config,
        pinned,
        store,
        store_unavailable,
        fortuna,
        http,
        socket,
        socket_file,
        sources,
    } = prepared;
    let listeners = Listeners {
        http: TcpListener::from_std(http)?,
        socket: UnixListener::from_std(socket)?,
    };
    let chip = sources.chip.clone();
    let local = beacon::LocalRandom::default();
    let pipeline =
        pipeline::Pipeline::start(&config, sources, store.as_ref(), &fortuna, Some(&local))?;
    let (beacon, draw_book, beacon_problem) =
        start_beacon(&config, chip.as_ref(), store.as_ref(), local, &pipeline)?;
    let pipeline = std::sync::Arc::new(std::sync::Mutex::new(pipeline));
    let tls = tls::Tls::start(&config, chip.as_ref()).context("api.tls")?;
    let upstream = upstream::Upstream::from_config(&config)?;
    plain_http_warning(&config);
    log.set_level(&config.daemon.log_level);
    let service = Service::new(
        config,
        service::Parts {
            store: store.clone(),
            store_unavailable,
            pipeline: Some(pipeline.clone()),
            faults: chip
                .as_ref()
                .and_then(|c| c.faults.clone())
                .map(|f| std::sync::Arc::new(f) as std::sync::Arc<dyn service::FaultSwitch>),
            chip,
            pinned,
            log: Some(log),
            fortuna: Some(fortuna.clone()),
            beacon: beacon.clone(),
            draws: draw_book,
            beacon_problem,
            tls: tls.clone(),
            upstream: upstream.clone(),
        },
    );
    let shutdown = Shutdown::new();
    let reloading = service.clone();
    handle_signals(shutdown.clone(), move || {
        if let Some(new) = reload() {
            for key in reloading.reload(new) {
                tracing::warn!("{key} changed: restart lokeyd to apply it");
            }
        }
        if let Some(tls) = &tls {
            // A failure is logged and keeps the certificate served so far.
            let _ = tls.reload(&reloading.config());
        }
    })?;
    let flusher = store
        .clone()
        .map(|store| tokio::spawn(flush_periodically(store, fortuna.clone())));
    let result = run(service, listeners, shutdown).await;
    if let Some(flusher) = flusher {
        flusher.abort();
    }
    // The beacon records its clean stop (its chain then continues at the next start) while
    // the chip still harvests; a pulse being signed finishes first.
    if let Some(beacon) = beacon {
        tokio::task::spawn_blocking(move || beacon.stop()).await?;
    }
    if let Some(upstream) = upstream {
        tokio::task::spawn_blocking(move || upstream.stop()).await?;
    }
    // Stop harvesting (each thread finishes its current read) before the process exits. A read
    // that never returns (a wedged /dev/hwrng driver) must not hold the exit: the stop runs on
    // a plain thread, which the process's exit ends, and is waited for a bounded time.
    let (stopped, stopped_rx) = tokio::sync::oneshot::channel();
    let stopping = pipeline.clone();
    std::thread::spawn(move || {
        stopping.lock().unwrap_or_else(|e| e.into_inner()).stop();
        let _ = stopped.send(());
    });
    if tokio::time::timeout(HARVEST_STOP_TIMEOUT, stopped_rx)
        .await
        .is_err()
    {
        tracing::warn!(
            "a source's read did not stop within {}s; exiting without it",
            HARVEST_STOP_TIMEOUT.as_secs()
        );
    }
    // The seed file, counters and usage statistics go to disk; queue data always is already.
    // A store that can no longer be written was reported when it failed.
    let flushed = tokio::task::spawn_blocking(move || match store {
        Some(store) if store.healthy() => {
            write_seed(&fortuna, &store, true);
            store.flush()
        }
        _ => Ok(()),
    })
    .await?;
    if let Err(e) = flushed {
        tracing::error!("cannot flush the store: {e}");
    }
    // A clean exit leaves no socket behind (a crash's stale socket is replaced at start).
    drop(socket_file);
    result
}

/// Says loudly that the REST API is plain HTTP on an address other machines reach: its
/// random bytes can be read and replaced by anyone on the path.
fn plain_http_warning(config: &Config) {
    let addr = config.api.listen;
    if config.api.tls == "off" && !addr.ip().is_loopback() {
        tracing::warn!(
            "the REST API on {addr} is PLAIN HTTP on a non-loopback address: anyone on the \
             network path can read the random bytes it serves and replace them, and clients \
             cannot tell this lokeyd from an impostor; set api.tls = \"chip\" or \"files\""
        );
    }
}

/// Starts the beacon when it is enabled and has what it needs; otherwise says why not.
fn start_beacon(
    config: &Config,
    chip: Option<&pipeline::ChipHandle>,
    store: Option<&lokey::store::Store>,
    local: beacon::LocalRandom,
    pipeline: &pipeline::Pipeline,
) -> anyhow::Result<BeaconParts> {
    if !config.beacon.enabled {
        return Ok((None, None, None));
    }
    let (Some(chip), Some(store)) = (chip, store) else {
        let why = if chip.is_none() {
            "the beacon needs the ATECC608A (or its emulator) and this lokeyd has none"
        } else {
            "the beacon needs the store, which is unavailable"
        };
        if chip.is_none() && config.upstream.enabled() {
            tracing::info!("{why}: no pulses (an upstream feeder)");
        } else {
            tracing::warn!("{why}: no pulses");
        }
        return Ok((None, None, Some(why.to_string())));
    };
    let period_ms = match beacon_period_override() {
        Some(ms) => ms,
        None => config.beacon.period_secs * 1000,
    };
    let now = beacon::system_now();
    let draws = std::sync::Arc::new(draws::DrawBook::new(store.clone(), now.clone()));
    let beacon = beacon::Beacon::start(beacon::Parts {
        chip: chip.chip.clone(),
        emulated: chip.faults.is_some(),
        store: store.clone(),
        local,
        wakeup: pipeline.wakeup().clone(),
        period_ms,
        slot: u8::try_from(config.beacon.slot).context("beacon.slot")?,
        retain_ms: config.beacon.retain_days * 86_400_000,
        now,
        draws: draws.clone(),
    })
    .context("starting the beacon thread")?;
    Ok((Some(beacon), Some(draws), None))
}

/// The beacon, its draw book, or why it does not run.
type BeaconParts = (
    Option<std::sync::Arc<beacon::Beacon>>,
    Option<std::sync::Arc<draws::DrawBook>>,
    Option<String>,
);

/// `--beacon-period-ms`, passed down by `main` (for tests and demonstrations only).
static BEACON_PERIOD_MS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

/// Sets the beacon period in milliseconds, overriding `beacon.period_secs` (tests and
/// demonstrations: `--beacon-period-ms`).
pub fn set_beacon_period_override(ms: u64) {
    let _ = BEACON_PERIOD_MS.set(ms);
}

fn beacon_period_override() -> Option<u64> {
    BEACON_PERIOD_MS.get().copied()
}

/// How long the harvesting threads may take to finish their current read at shutdown (a chip
/// read takes well under 100 ms).
const HARVEST_STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// How often counters and usage statistics are written.
const FLUSH_INTERVAL: Duration = Duration::from_secs(10);

/// How often the seed file is checked: it is written when `fortuna.seed_interval_secs` (which
/// can change at run time, down to 1 s) has passed since the last one.
const SEED_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Writes the seed file when due (checked every [`SEED_CHECK_INTERVAL`]) and the store's
/// counters and usage statistics every [`FLUSH_INTERVAL`].
async fn flush_periodically(store: lokey::store::Store, fortuna: SharedFortuna) {
    let mut tick = tokio::time::interval(SEED_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last_flush = tokio::time::Instant::now();
    let mut reported = false;
    loop {
        tick.tick().await;
        if !store.healthy() {
            // Poisoned by a failed write: nothing more can be written until a restart.
            if !reported {
                report_store_failure(&store);
                reported = true;
            }
            continue;
        }
        let flush = last_flush.elapsed() >= FLUSH_INTERVAL;
        let seed = fortuna.seed_due(std::time::Instant::now());
        if !flush && !seed {
            continue;
        }
        let (store, fortuna) = (store.clone(), fortuna.clone());
        let flushed = tokio::task::spawn_blocking(move || {
            if seed {
                write_seed(&fortuna, &store, false);
            }
            if flush { store.flush() } else { Ok(()) }
        });
        if flush {
            last_flush = tokio::time::Instant::now();
        }
        match flushed.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("cannot flush the store: {e}"),
            Err(e) => tracing::error!("store flush task failed: {e}"),
        }
    }
}

/// Says once, in the log and to systemd, that the store can no longer be written and what
/// still works.
fn report_store_failure(store: &lokey::store::Store) {
    let cause = disk_condition(store.path(), None).map_or_else(String::new, |c| format!(": {c}"));
    tracing::error!(
        "the store in {} can no longer be written{cause}; serving Fortuna only: TRNG requests \
         fail, settings cannot be changed and no Fortuna seed file is written until lokeyd is \
         restarted with the disk writable again (nothing acknowledged is lost)",
        store.path().display()
    );
    notify(&[sd_notify::NotifyState::Status(
        "serving Fortuna only: the store cannot be written",
    )]);
}

/// Creates the data directory 0700 if it does not exist.
fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}
