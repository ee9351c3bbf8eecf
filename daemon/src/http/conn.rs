//! The REST API's connections: at most `api.max_connections` at once (one more is answered 503
//! and closed), headers due within `api.idle_timeout_secs` (the wait for the next request on a
//! kept-alive connection included), and writes that make no progress for
//! `daemon.write_timeout_secs` end the connection, so a client that stops reading a stream
//! cannot hold it (or the daemon's shutdown) for ever.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::Sleep;

use crate::service::Service;
use crate::shutdown::Shutdown;

/// Serves `app` on `listener` until shutdown begins, then lets the open connections finish
/// their requests (idle ones close at once) and returns when the last has closed.
///
/// # Errors
///
/// None so far: a failed accept (no file descriptors left) is logged and retried.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    service: &Service,
    shutdown: Shutdown,
) -> io::Result<()> {
    // The number of slots is fixed at start (a change needs a restart); the timeouts are read
    // for every connection, so SIGHUP changes them for new connections.
    let limit = usize::try_from(service.config().api.max_connections).unwrap_or(256);
    let slots = Arc::new(Semaphore::new(limit));
    // Refusals are logged once per episode (until a connection is accepted again).
    let mut refusing = false;
    loop {
        let accepted = tokio::select! {
            () = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!("REST accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            if !refusing {
                tracing::warn!(
                    "REST: {limit} connections open (api.max_connections); refusing new ones"
                );
                refusing = true;
            }
            turn_away(stream, limit);
            continue;
        };
        refusing = false;
        // Without it, an answer written in two parts (headers, then a streamed body) waits
        // for the client's delayed ACK: Nagle's algorithm holds the second part, about 40 ms
        // per request (RFC 896, RFC 1122 §4.2.3.2).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("REST: TCP_NODELAY on {peer}: {e}");
        }
        let config = service.config();
        let idle = Duration::from_secs(config.api.idle_timeout_secs);
        let write = Duration::from_secs(config.daemon.write_timeout_secs);
        let app = app.clone();
        let shutdown = shutdown.clone();
        // Counted as in flight, so that a drain cut short at shutdown says how many were open.
        let guard = shutdown.guard();
        let handlers = shutdown.clone();
        let tls = service.tls();
        tokio::spawn(async move {
            let io = WriteDeadline::new(stream, write, peer);
            match tls {
                None => serve_http(TokioIo::new(io), app, peer, idle, handlers, shutdown).await,
                Some(tls) => {
                    // The handshake must finish within the idle limit, like a request's headers
                    // (a full one may wait for the chip: crate::tls::MAX_WAITING).
                    match tokio::time::timeout(idle, tls.acceptor().accept(io)).await {
                        Ok(Ok(stream)) => {
                            tls.record(stream.get_ref().1.handshake_kind());
                            serve_http(TokioIo::new(stream), app, peer, idle, handlers, shutdown)
                                .await;
                        }
                        Ok(Err(e)) => {
                            tls.record(None);
                            tracing::debug!("TLS handshake with {peer} failed: {e}");
                        }
                        Err(_) => {
                            tls.record(None);
                            tracing::debug!("TLS handshake with {peer} timed out");
                        }
                    }
                }
            }
            drop(slot);
            drop(guard);
        });
    }
    // New clients are refused at once rather than left in the backlog.
    drop(listener);
    // Every slot back: every connection has closed.
    let _ = slots
        .acquire_many(u32::try_from(limit).unwrap_or(u32::MAX))
        .await;
    Ok(())
}

/// HTTP/1.1 on one connection (plain or TLS) until it closes or shutdown ends it.
async fn serve_http<I>(
    io: I,
    app: Router,
    peer: SocketAddr,
    idle: Duration,
    handlers: Shutdown,
    shutdown: Shutdown,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request| {
        request.extensions_mut().insert(ConnectInfo(peer));
        // Long answers (streams) end when shutdown begins instead of holding it up.
        request.extensions_mut().insert(handlers.clone());
        tower::ServiceExt::oneshot(app.clone(), request)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(idle)
        .keep_alive(true);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("REST connection from {peer} ended: {e}");
            }
        }
        () = shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            if let Err(e) = conn.await {
                tracing::debug!("REST connection from {peer} ended: {e}");
            }
        }
    }
}

/// Answers a connection over the limit with a 503, without waiting (a fresh socket's send
/// buffer has room), and closes it. The write goes straight to the kernel: tokio's `try_write`
/// would refuse until the reactor has seen the new socket writable.
fn turn_away(stream: TcpStream, limit: usize) {
    let body = format!(
        "{{\"error\":\"lokeyd is serving its limit of {limit} connections \
         (api.max_connections); try again\"}}"
    );
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if let Ok(stream) = stream.into_std() {
        let _ = std::io::Write::write(&mut &stream, answer.as_bytes());
    }
}

/// A connection whose writes fail with `TimedOut` once one has made no progress for `limit`.
struct WriteDeadline {
    inner: TcpStream,
    limit: Duration,
    peer: SocketAddr,
    /// Set while a write is pending: when it fires, the connection is given up.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    fn new(inner: TcpStream, limit: Duration, peer: SocketAddr) -> WriteDeadline {
        WriteDeadline {
            inner,
            limit,
            peer,
            stalled: None,
        }
    }

    /// Called when a write is pending: an error once it has been pending for `limit`.
    fn check(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let limit = self.limit;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(sleep.as_mut().poll(cx));
        tracing::warn!(
            "REST client {} stopped reading: nothing written for {} s \
             (daemon.write_timeout_secs); closing its connection",
            self.peer,
            limit.as_secs()
        );
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client stopped reading",
        )))
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.check(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.check(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
