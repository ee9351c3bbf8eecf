//! The Unix socket the `lokey` CLI talks to ([`lokey::proto`]).
//!
//! [`bind`] creates the socket 0660 (group `lokey` when that group exists), refusing to take
//! over a socket another daemon is still answering on and replacing a stale one. [`serve`]
//! accepts connections until shutdown; each connection is handled in its own task that holds
//! a shutdown guard, so shutdown waits for the request in progress and then closes it.
//!
//! A malformed, oversized or truncated frame gets an `Error` frame and the connection is
//! closed; nothing a client sends can affect another connection. Two limits keep clients from
//! holding the daemon's resources: a frame must arrive whole within [`FRAME_TIMEOUT`] of its
//! first byte (a connection may stay idle *between* frames as long as it likes), and at most
//! [`MAX_CONNECTIONS`] connections are served at once (one more is answered `Busy` and closed).
//! A client that stops reading (a stream, or the answers to its requests) is disconnected once
//! a write to it has made no progress for `daemon.write_timeout_secs`.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lokey::proto::{self, ErrorCode, Frame, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::service::{Caller, PulseQuery, Service, ServiceError};
use crate::shutdown::Shutdown;

mod stream;

/// Why the socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another daemon answers on this socket.
    #[error("another lokeyd is already listening on {0}")]
    InUse(String),
    /// Creating the directory or the socket failed.
    #[error("cannot create socket {path}: {source}")]
    Io {
        /// The socket path.
        path: String,
        /// The error.
        source: io::Error,
    },
}

/// Creates the listening socket at `path` (see the module docs). `private` makes the parent
/// directory 0700 instead of 0755 (for a per-user daemon).
///
/// # Errors
///
/// [`BindError`] naming the path.
pub fn bind(path: &Path, private: bool) -> Result<std::os::unix::net::UnixListener, BindError> {
    let io_err = |source| BindError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(io_err)?;
        let mode = if private { 0o700 } else { 0o755 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io_err)?;
    }
    if path.exists() {
        // A live daemon answers; a stale socket (left by a crash) refuses the connection.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(BindError::InUse(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
    if let Ok(Some(group)) = nix::unistd::Group::from_name("lokey")
        && let Err(e) = nix::unistd::chown(path, None, Some(group.gid))
    {
        tracing::warn!("cannot give socket {} to group lokey: {e}", path.display());
    }
    Ok(listener)
}

/// How long a frame may take to arrive once its first byte has. A client that sends part of a
/// frame and stalls (or trickles it) gets a `TimedOut` error and is disconnected.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Most socket connections served at once; one more is answered with a `Busy` error and
/// closed. The CLI uses one connection per command, so this is far above normal use, and it
/// bounds the memory clients can make the daemon hold (a stream holds 256 KiB: one chunk, or a
/// ring of two 128 KiB slots in shared memory).
pub const MAX_CONNECTIONS: usize = 64;

/// Accepts connections until shutdown begins.
pub async fn serve(listener: UnixListener, service: Service, shutdown: Shutdown) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Refusals are logged once per episode (until a connection is accepted again), so a client
    // hammering a full daemon cannot flood the log.
    let mut refusing = false;
    loop {
        let accepted = tokio::select! {
            () = shutdown.wait() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    if !refusing {
                        tracing::warn!(
                            "socket: {MAX_CONNECTIONS} connections open; refusing new ones"
                        );
                        refusing = true;
                    }
                    turn_away(stream);
                    continue;
                };
                refusing = false;
                let guard = shutdown.guard();
                let (service, shutdown) = (service.clone(), shutdown.clone());
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, service, shutdown).await {
                        tracing::debug!("socket connection ended: {e}");
                    }
                    drop(guard);
                    drop(slot);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!("socket accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Answers a connection over the limit with a `Busy` error, without waiting: a fresh
/// socket's send buffer is empty, so the small frame fits; if it does not, the client just sees
/// the connection closed. The write goes straight to the kernel: tokio's `try_write` would
/// refuse until the reactor has seen the new socket writable.
fn turn_away(stream: UnixStream) {
    let mut out = Vec::new();
    Frame::Error {
        code: ErrorCode::Busy,
        message: format!(
            "lokeyd is serving its limit of {MAX_CONNECTIONS} socket connections; try again"
        ),
    }
    .encode(&mut out);
    if let Ok(stream) = stream.into_std() {
        let _ = std::io::Write::write(&mut &stream, &out);
    }
}

/// One connection: requests one after another until the client closes or shutdown begins.
async fn handle(mut stream: UnixStream, service: Service, shutdown: Shutdown) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    loop {
        // When the first byte of the frame being read arrived: the frame must be whole by
        // FRAME_TIMEOUT after it. Between frames (nothing buffered) there is no deadline.
        let mut frame_start: Option<Instant> = None;
        let request = loop {
            match Frame::decode(&buf, proto::MAX_REQUEST_LEN) {
                Ok(Some((frame, used))) => {
                    buf.drain(..used);
                    break frame;
                }
                Ok(None) => {}
                Err(e) => return refuse(&mut stream, e.code(), &e.to_string()).await,
            }
            if !buf.is_empty() && frame_start.is_none() {
                frame_start = Some(Instant::now());
            }
            let deadline = async {
                match frame_start {
                    Some(start) => tokio::time::sleep_until(start + FRAME_TIMEOUT).await,
                    None => std::future::pending().await,
                }
            };
            let mut chunk = [0u8; 4096];
            let n = tokio::select! {
                () = shutdown.wait() => return Ok(()),
                () = deadline => {
                    let msg = format!(
                        "incomplete frame: {} bytes arrived, the rest not within {} s",
                        buf.len(),
                        FRAME_TIMEOUT.as_secs()
                    );
                    return refuse(&mut stream, ErrorCode::TimedOut, &msg).await;
                }
                n = stream.read(&mut chunk) => n?,
            };
            if n == 0 {
                if buf.is_empty() {
                    return Ok(());
                }
                // Half-closed: the client may still read the answer.
                let msg = format!(
                    "truncated frame: the connection ended after {} bytes of it",
                    buf.len()
                );
                return refuse(&mut stream, ErrorCode::Malformed, &msg).await;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let Frame::Request(request) = request else {
            let msg = "expected a request frame";
            return refuse(&mut stream, ErrorCode::Malformed, msg).await;
        };
        let caller = match stream.peer_cred() {
            Ok(cred) => Caller::Local {
                uid: cred.uid(),
                pid: cred.pid(),
            },
            // Without credentials the caller is treated as nobody in particular.
            Err(_) => Caller::Anonymous,
        };
        if let Request::Bytes {
            source,
            count,
            shared,
        } = request
        {
            let ask = stream::Ask {
                source,
                count,
                shared,
            };
            stream::serve(&mut stream, &mut buf, &service, ask, &shutdown).await?;
            continue;
        }
        // Device requests talk to the chip (tens of milliseconds): off the async threads.
        let answer = match request {
            Request::DeviceInfo
            | Request::DeviceLock { .. }
            | Request::DeviceSetAddress { .. }
            | Request::Identity
            | Request::DeviceKeygen { .. }
            | Request::DeviceCsr { .. }
            | Request::DrawRegister { .. }
            | Request::Draw { .. } => {
                let service = service.clone();
                tokio::task::spawn_blocking(move || dispatch(&service, caller, request))
                    .await
                    .map_err(io::Error::other)?
            }
            request => dispatch(&service, caller, request),
        };
        let mut out = Vec::new();
        answer.encode(&mut out);
        // A client that sends requests and reads no answers is given up like a stalled stream.
        write_within(&mut stream, &out, &service).await?;
    }
}

async fn send(stream: &mut UnixStream, frame: &Frame, service: &Service) -> io::Result<()> {
    let mut out = Vec::new();
    frame.encode(&mut out);
    write_within(stream, &out, service).await
}

/// Writes `buf` whole, as long as the client keeps reading: when one write makes no progress
/// for `daemon.write_timeout_secs`, the client is given up (logged once; the connection then
/// closes), so a client that asks for a stream and stops reading holds neither its connection
/// slot nor the daemon's shutdown.
async fn write_within(stream: &mut UnixStream, buf: &[u8], service: &Service) -> io::Result<()> {
    let limit = Duration::from_secs(service.config().daemon.write_timeout_secs);
    let mut written = 0;
    while written < buf.len() {
        match tokio::time::timeout(limit, stream.write(&buf[written..])).await {
            Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(Ok(n)) => written += n,
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                let who = who(stream);
                tracing::warn!(
                    "{who} stopped reading: nothing written for {} s \
                     (daemon.write_timeout_secs); closing its connection",
                    limit.as_secs()
                );
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client stopped reading",
                ));
            }
        }
    }
    Ok(())
}

/// The client at the other end, for the log: its pid and uid.
fn who(stream: &UnixStream) -> String {
    stream.peer_cred().map_or_else(
        |_| "a socket client".to_string(),
        |c| match c.pid() {
            Some(pid) => format!("socket client pid {pid} (uid {})", c.uid()),
            None => format!("socket client uid {}", c.uid()),
        },
    )
}

/// Answers one request.
fn dispatch(service: &Service, caller: Caller, request: Request) -> Frame {
    let json = |v: Result<serde_json::Value, serde_json::Error>| match v {
        Ok(value) => Frame::Response(value),
        Err(e) => Frame::Error {
            code: ErrorCode::Internal,
            message: format!("cannot encode the answer: {e}"),
        },
    };
    let answer = |v: Result<serde_json::Value, ServiceError>| match v {
        Ok(value) => Frame::Response(value),
        Err(e) => error_frame(&e),
    };
    match request {
        Request::Status => json(serde_json::to_value(service.status())),
        Request::Health => json(serde_json::to_value(service.health())),
        Request::Fault { name, active } => match service.set_fault(caller, &name, active) {
            Ok(active) => Frame::Response(serde_json::json!({ "active": active })),
            Err(e) => error_frame(&e),
        },
        Request::ConfigGet { key } => match service.config_get(key.as_deref()) {
            Ok(value) => Frame::Response(value),
            Err(e) => error_frame(&e),
        },
        Request::ConfigSet { key, value } => {
            match service.config_set(caller, &[(key.as_str(), value)]) {
                Ok(value) => Frame::Response(value),
                Err(e) => error_frame(&e),
            }
        }
        Request::Bytes { .. } => unreachable!("streams are answered by stream::serve"),
        Request::DeviceInfo => match service.device_info() {
            Ok(value) => Frame::Response(value),
            Err(e) => error_frame(&e),
        },
        Request::DeviceLock { confirm } => match service.device_lock(caller, &confirm) {
            Ok(()) => Frame::Response(serde_json::json!({ "locked": true })),
            Err(e) => error_frame(&e),
        },
        Request::Identity => answer(service.identity().map(|r| {
            let mut value = serde_json::json!(r);
            if let Some(tls) = service.tls() {
                // The key remote clients pin, which is not the beacon's.
                value["tls"] = serde_json::json!(tls.report());
            }
            value
        })),
        Request::DrawRegister { body } => {
            answer(service.register_draw(&body).map(|t| serde_json::json!(t)))
        }
        Request::Draw { id } => answer(service.draw(&id)),
        Request::DeviceKeygen { confirm, tls } => answer(
            if tls {
                service.tls_keygen(caller, &confirm)
            } else {
                service.keygen(caller, &confirm)
            }
            .map(|r| serde_json::json!(r)),
        ),
        Request::DeviceCsr { names, common_name } => answer(
            service
                .tls_csr(names, common_name)
                .map(|r| serde_json::json!(r)),
        ),
        Request::BeaconPulse { chain, pulse } => {
            let query = match (chain, pulse) {
                (Some(chain), Some(pulse)) => Ok(PulseQuery::Index { chain, pulse }),
                (None, Some(pulse)) => {
                    service
                        .pulse(PulseQuery::Last)
                        .map(|last| PulseQuery::Index {
                            chain: last.chain_index,
                            pulse,
                        })
                }
                (_, None) => Ok(PulseQuery::Last),
            };
            answer(
                query
                    .and_then(|q| service.pulse(q))
                    .map(|p| serde_json::json!({ "pulse": p.to_json() })),
            )
        }
        Request::BeaconRun { chain, from, count } => {
            let run = service.chain(chain).and_then(|info| {
                let count = usize::try_from(count.clamp(1, 1000)).unwrap_or(1000);
                let pulses: Vec<serde_json::Value> = service
                    .pulses(chain, from, count)?
                    .iter()
                    .map(|p| serde_json::json!({ "pulse": p.to_json() }))
                    .collect();
                Ok(serde_json::json!({
                    "publicKey": info.public_key,
                    "keyId": info.key_id,
                    "pulses": pulses,
                }))
            });
            answer(run)
        }
        Request::DeviceSetAddress { address, confirm } => {
            match service.device_set_address(caller, address, &confirm) {
                Ok(()) => {
                    Frame::Response(serde_json::json!({ "address": format!("{address:#04x}") }))
                }
                Err(e) => error_frame(&e),
            }
        }
    }
}

fn error_frame(e: &ServiceError) -> Frame {
    Frame::Error {
        code: e.code(),
        message: e.to_string(),
    }
}

/// Sends an error frame and closes the connection.
async fn refuse(stream: &mut UnixStream, code: ErrorCode, message: &str) -> io::Result<()> {
    let mut out = Vec::new();
    Frame::Error {
        code,
        message: message.to_string(),
    }
    .encode(&mut out);
    stream.write_all(&out).await?;
    stream.shutdown().await
}
