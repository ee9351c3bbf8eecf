//! Shutdown signalling and drain tracking.
//!
//! A [`Shutdown`] is a cheap, cloneable handle every task holds: [`Shutdown::wait`] completes
//! once shutdown has begun, [`Shutdown::trigger`] begins it. Work that must finish before the
//! process exits (an HTTP request, a socket connection, a stream) holds a [`Guard`] from
//! [`Shutdown::guard`]; [`Shutdown::drained`] completes when no guard is left.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, watch};

/// A handle to the daemon's shutdown state.
#[derive(Debug, Clone)]
pub struct Shutdown {
    begun: Arc<watch::Sender<bool>>,
    inflight: Arc<Inflight>,
}

#[derive(Debug, Default)]
struct Inflight {
    count: AtomicUsize,
    idle: Notify,
}

/// Held by in-flight work; dropping it tells [`Shutdown::drained`] the work is done.
#[derive(Debug)]
pub struct Guard(Arc<Inflight>);

impl Drop for Guard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A handle in the running state.
    pub fn new() -> Shutdown {
        Shutdown {
            begun: Arc::new(watch::channel(false).0),
            inflight: Arc::default(),
        }
    }

    /// Begins shutdown (idempotent).
    pub fn trigger(&self) {
        self.begun.send_replace(true);
    }

    /// Whether shutdown has begun.
    pub fn is_triggered(&self) -> bool {
        *self.begun.borrow()
    }

    /// Completes once shutdown has begun.
    pub async fn wait(&self) {
        let mut rx = self.begun.subscribe();
        // An error means the sender is gone, which cannot happen while `self` holds it.
        let _ = rx.wait_for(|begun| *begun).await;
    }

    /// A guard for one piece of in-flight work.
    pub fn guard(&self) -> Guard {
        self.inflight.count.fetch_add(1, Ordering::AcqRel);
        Guard(self.inflight.clone())
    }

    /// How many guards are alive.
    pub fn inflight(&self) -> usize {
        self.inflight.count.load(Ordering::Acquire)
    }

    /// Completes when no guard is alive.
    pub async fn drained(&self) {
        loop {
            // Register interest before checking, so a drop in between is not missed.
            let idle = self.inflight.idle.notified();
            if self.inflight() == 0 {
                return;
            }
            idle.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wait_completes_after_trigger() {
        let shutdown = Shutdown::new();
        let other = shutdown.clone();
        let waiter = tokio::spawn(async move { other.wait().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished());
        shutdown.trigger();
        tokio::time::timeout(Duration::from_secs(2), waiter)
            .await
            .expect("wait() returned after trigger")
            .unwrap();
        assert!(shutdown.is_triggered());
    }

    #[tokio::test]
    async fn drained_waits_for_every_guard() {
        let shutdown = Shutdown::new();
        let (a, b) = (shutdown.guard(), shutdown.guard());
        let s = shutdown.clone();
        let drain = tokio::spawn(async move { s.drained().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(a);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!drain.is_finished(), "drained with one guard alive");
        drop(b);
        tokio::time::timeout(Duration::from_secs(2), drain)
            .await
            .expect("drained after the last guard")
            .unwrap();
    }
}
