//! Buckets this gateway found a moment ago. A PUT looks its bucket up
//! before it reads the body, to answer `NoSuchBucket` at once; its commit
//! looks again in its own transaction, which alone decides. So that first
//! look may be a moment old: a bucket seen within [`FRESH_FOR`] is taken to
//! exist, and a burst of small PUTs skips one index query each. A bucket
//! deleted meanwhile by another gateway still refuses the PUT, at its
//! commit, after the body was read and its replicas were written (and are
//! then removed).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a bucket found in the index is taken to exist.
pub const FRESH_FOR: Duration = Duration::from_secs(2);

/// Buckets remembered at most: past it, the oldest sightings go first.
const CAPACITY: usize = 4096;

/// The buckets found recently, with when.
#[derive(Debug, Default)]
pub struct KnownBuckets(Mutex<HashMap<String, Instant>>);

impl KnownBuckets {
    fn seen(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether `bucket` was found within [`FRESH_FOR`].
    pub fn contains(&self, bucket: &str) -> bool {
        self.seen()
            .get(bucket)
            .is_some_and(|at| at.elapsed() < FRESH_FOR)
    }

    /// Notes that `bucket` was just found in the index.
    pub fn found(&self, bucket: &str) {
        let mut seen = self.seen();
        if seen.len() >= CAPACITY && !seen.contains_key(bucket) {
            seen.retain(|_, at| at.elapsed() < FRESH_FOR);
            if seen.len() >= CAPACITY {
                seen.clear();
            }
        }
        seen.insert(bucket.to_owned(), Instant::now());
    }

    /// Forgets `bucket` (deleted, or found missing).
    pub fn forget(&self, bucket: &str) {
        self.seen().remove(bucket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_known_once_found_and_until_forgotten() {
        let known = KnownBuckets::default();
        assert!(!known.contains("b"));
        known.found("b");
        assert!(known.contains("b"));
        assert!(!known.contains("c"));
        known.forget("b");
        assert!(!known.contains("b"));
    }

    #[test]
    fn a_sighting_goes_stale() {
        let known = KnownBuckets::default();
        known.seen().insert(
            "old".into(),
            Instant::now() - FRESH_FOR - Duration::from_millis(1),
        );
        assert!(!known.contains("old"));
    }

    #[test]
    fn it_holds_at_most_its_capacity() {
        let known = KnownBuckets::default();
        for i in 0..CAPACITY * 2 + 7 {
            known.found(&format!("b{i}"));
        }
        assert!(known.seen().len() <= CAPACITY);
        assert!(known.contains(&format!("b{}", CAPACITY * 2 + 6)));
    }
}
