//! `--test-bandwidth`: a node on loopback that moves bytes no faster than
//! an operator's uplink would, for tests and benchmarks of what spreading
//! fragments over many nodes is worth. Every request and answer body of the
//! node shares one budget per direction; each data frame waits for its
//! turn, so concurrent transfers split the rate between them.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use s3s::Body;
use tokio::time::{Instant, Sleep};

/// How far behind the rate a direction may fall and catch up on.
const SLACK: Duration = Duration::from_millis(20);

/// One direction's rate: bytes per second, shared by every body it paces.
#[derive(Debug)]
pub struct Bandwidth {
    bytes_per_second: u64,
    /// When the bytes already let through will have gone at this rate.
    next_free: Mutex<Instant>,
}

impl Bandwidth {
    /// A budget of `bytes_per_second` (at least 1).
    pub fn new(bytes_per_second: u64) -> Arc<Self> {
        Arc::new(Self {
            bytes_per_second: bytes_per_second.max(1),
            next_free: Mutex::new(Instant::now()),
        })
    }

    /// Books `len` bytes; returns when they have gone at this rate.
    fn book(&self, len: usize) -> Instant {
        let secs = len as f64 / self.bytes_per_second as f64;
        let mut next = self
            .next_free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Time lost oversleeping (timers tick by the millisecond) is given
        // back, up to SLACK: the rate holds over time, however small the frames.
        let start = (*next).max(Instant::now() - SLACK);
        *next = start + Duration::from_secs_f64(secs);
        *next
    }

    /// `body`, its data frames let through at this rate.
    pub fn pace(self: &Arc<Self>, body: Body) -> Body {
        Body::http_body(Paced {
            inner: body,
            rate: Arc::clone(self),
            held: None,
        })
    }
}

/// A body whose frames wait for their turn in a [`Bandwidth`].
struct Paced {
    inner: Body,
    rate: Arc<Bandwidth>,
    /// A frame read and waiting for its time.
    held: Option<(Frame<Bytes>, Pin<Box<Sleep>>)>,
}

impl http_body::Body for Paced {
    type Data = Bytes;
    type Error = <Body as http_body::Body>::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        if let Some((_, sleep)) = &mut self.held {
            ready!(sleep.as_mut().poll(cx));
            let (frame, _) = self.held.take().expect("held above");
            return Poll::Ready(Some(Ok(frame)));
        }
        let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            other => return Poll::Ready(other),
        };
        let Some(len) = frame.data_ref().map(Bytes::len) else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let due = self.rate.book(len);
        if due <= Instant::now() {
            return Poll::Ready(Some(Ok(frame)));
        }
        let mut sleep = Box::pin(tokio::time::sleep_until(due));
        if sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Ok(frame)));
        }
        self.held = Some((frame, sleep));
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        if let Some(len) = self.held.as_ref().and_then(|(f, _)| f.data_ref()) {
            let len = len.len() as u64;
            hint.set_lower(hint.lower() + len);
            if let Some(upper) = hint.upper() {
                hint.set_upper(upper + len);
            }
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn bodies_share_the_rate() {
        let rate = Bandwidth::new(1_000_000);
        let started = Instant::now();
        let one = rate.pace(Body::from(vec![0u8; 500_000]));
        let two = rate.pace(Body::from(vec![1u8; 1_500_000]));
        let (a, b) = tokio::join!(one.collect(), two.collect());
        assert_eq!(a.unwrap().to_bytes().len(), 500_000);
        assert_eq!(b.unwrap().to_bytes().len(), 1_500_000);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1990) && took < Duration::from_millis(2100),
            "{took:?}"
        );
    }
}
