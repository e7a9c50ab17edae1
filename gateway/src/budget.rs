//! The server-wide budget of buffered request-body bytes.
//!
//! Every body is read whole into memory (routing by model needs it, and the
//! upstream attempts resend it), so without a bound, concurrency × `max_body`
//! is the memory a burst of large uploads can take. A request reserves its
//! bytes as they arrive: up to 64 KiB (or its whole `content-length`, when
//! smaller) before the first, then twice what it holds whenever it outgrows
//! its reservation, so a client holds about as much of the budget as it has
//! sent, not what it declared. When the budget has no room it waits at most
//! `server.body_budget_wait` (per request, in total), then is refused (503
//! `overloaded`). The reservation is held until the request is done and
//! released when it is dropped, on every path.
//!
//! Not a FIFO semaphore: any request whose bytes fit goes at once, even while
//! a larger one waits. A FIFO queue would park every small request behind a
//! large one for up to the whole wait.

use skygate_config::{ApiError, ErrorKind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The budget; cheap to share (one `Arc` inside).
pub struct BodyBudget {
    inner: Arc<Inner>,
}

struct Inner {
    /// Bytes not reserved by anyone.
    free: AtomicUsize,
    total: usize,
    wait: Duration,
    /// Woken whenever bytes are released while someone waits.
    released: Notify,
    /// Requests waiting for room: releases notify only when there are any,
    /// so the common path never touches the `Notify`.
    waiters: AtomicUsize,
}

/// Bytes of the budget held by one request; given back when dropped.
pub struct Reservation {
    inner: Arc<Inner>,
    bytes: usize,
    /// Set when this request first has to wait: the wait is per request.
    deadline: Option<Instant>,
}

impl BodyBudget {
    /// A budget of `total` bytes; a request waits at most `wait` for room.
    pub fn new(total: usize, wait: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                free: AtomicUsize::new(total),
                total,
                wait,
                released: Notify::new(),
                waiters: AtomicUsize::new(0),
            }),
        }
    }

    /// An empty reservation, grown by [`Reservation::grow_to`].
    pub fn reservation(&self) -> Reservation {
        Reservation {
            inner: self.inner.clone(),
            bytes: 0,
            deadline: None,
        }
    }

    /// Bytes not reserved right now.
    pub fn free(&self) -> usize {
        self.inner.free.load(Ordering::Acquire)
    }
}

impl Inner {
    fn try_take(&self, n: usize) -> bool {
        self.free
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |f| f.checked_sub(n))
            .is_ok()
    }
}

impl Reservation {
    /// Grows the reservation to cover `total` bytes, waiting for room within
    /// this request's wait. A body larger than the whole budget is refused at
    /// once: no amount of waiting makes room for it.
    pub async fn grow_to(&mut self, total: usize) -> Result<(), ApiError> {
        let Some(more) = total.checked_sub(self.bytes).filter(|&n| n > 0) else {
            return Ok(());
        };
        self.fits(total)?;
        // The common case: there is room.
        if self.inner.try_take(more) {
            self.bytes = total;
            return Ok(());
        }
        self.inner.waiters.fetch_add(1, Ordering::AcqRel);
        let result = self.wait_for(more, total).await;
        self.inner.waiters.fetch_sub(1, Ordering::AcqRel);
        result
    }

    async fn wait_for(&mut self, more: usize, total: usize) -> Result<(), ApiError> {
        loop {
            // Registered before trying, so a release in between is not missed.
            let released = self.inner.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.inner.try_take(more) {
                self.bytes = total;
                return Ok(());
            }
            let deadline = *self
                .deadline
                .get_or_insert_with(|| Instant::now() + self.inner.wait);
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(ApiError::new(
                    ErrorKind::Overloaded,
                    "the server is buffering too many request bodies; retry shortly",
                )
                .with_retry_after(Duration::from_secs(1)));
            }
        }
    }

    /// Gives back what is held beyond `total` bytes.
    pub fn shrink_to(&mut self, total: usize) {
        if let Some(extra) = self.bytes.checked_sub(total).filter(|&n| n > 0) {
            self.bytes = total;
            self.inner.free.fetch_add(extra, Ordering::AcqRel);
            if self.inner.waiters.load(Ordering::Acquire) > 0 {
                self.inner.released.notify_waiters();
            }
        }
    }

    /// Refuses at once a body of `total` bytes larger than the whole
    /// budget: no amount of waiting makes room for it.
    pub fn fits(&self, total: usize) -> Result<(), ApiError> {
        if total > self.inner.total {
            return Err(ApiError::new(
                ErrorKind::Overloaded,
                format!(
                    "the request body ({total} bytes) is larger than this server's body budget ({} bytes)",
                    self.inner.total
                ),
            ));
        }
        Ok(())
    }

    /// The whole budget's bytes.
    pub fn budget(&self) -> usize {
        self.inner.total
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.bytes > 0 {
            self.inner.free.fetch_add(self.bytes, Ordering::AcqRel);
            if self.inner.waiters.load(Ordering::Acquire) > 0 {
                self.inner.released.notify_waiters();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reserves_waits_and_releases() {
        let wait = Duration::from_millis(200);
        let b = BodyBudget::new(1000, wait);
        let mut big = b.reservation();
        big.grow_to(800).await.unwrap();
        assert_eq!(b.free(), 200);
        // Grows in steps (chunked bodies); asking for what is held is free.
        big.grow_to(900).await.unwrap();
        big.grow_to(900).await.unwrap();
        assert_eq!((big.bytes(), b.free()), (900, 100));

        // No room: waits, then 503 with retry-after.
        let mut other = b.reservation();
        let start = Instant::now();
        let e = other.grow_to(500).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Overloaded);
        assert!(e.retry_after.is_some());
        assert!(start.elapsed() >= wait);
        // The wait is per request, not per step: spent, so no second wait.
        let again = Instant::now();
        assert!(other.grow_to(600).await.is_err());
        assert!(again.elapsed() < wait);

        // A small one still fits while a large one waits.
        let mut small = b.reservation();
        small.grow_to(100).await.unwrap();
        // Shrinking gives back what is held beyond, and only that.
        let before = b.free();
        small.shrink_to(40);
        assert_eq!((small.bytes(), b.free()), (40, before + 60));
        small.shrink_to(90);
        assert_eq!((small.bytes(), b.free()), (40, before + 60));
        drop(small);

        // A waiter gets the room as soon as it is released.
        let b2 = BodyBudget {
            inner: b.inner.clone(),
        };
        let w = tokio::spawn(async move {
            let mut waiter = b2.reservation();
            waiter.grow_to(500).await.map(|()| waiter)
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(big);
        let held = w.await.unwrap().unwrap();
        assert_eq!((held.bytes(), b.free()), (500, 500));
        drop(held);
        drop(other);
        assert_eq!(b.free(), 1000, "every path gives the bytes back");
    }

    #[tokio::test]
    async fn larger_than_the_whole_budget_is_refused_at_once() {
        let b = BodyBudget::new(1000, Duration::from_secs(3600));
        let mut r = b.reservation();
        let e = r.grow_to(1001).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Overloaded);
        assert!(e.retry_after.is_none(), "retrying cannot help");
        assert_eq!(b.free(), 1000);
    }
}
