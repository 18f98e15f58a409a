//! Read leases: the data this gateway is reading right now. A GET, a copy
//! or a zip holds a lease on the data it streams for as long as it streams,
//! and the garbage collector leaves the replicas of leased data alone, so a
//! read that started always finishes on the bytes it started on, however
//! slow its client. (Reads through other gateways are covered by the grace
//! period, `gc_delay`, between a commit and the removal of what it
//! released.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The data ids being read, with how many reads hold each.
#[derive(Debug, Default)]
pub struct ReadLeases(Mutex<HashMap<String, usize>>);

impl ReadLeases {
    fn held(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leases `data_ids` until the returned lease is dropped.
    pub fn hold(self: &Arc<Self>, data_ids: impl IntoIterator<Item = String>) -> ReadLease {
        let mut data_ids: Vec<String> = data_ids.into_iter().collect();
        data_ids.sort_unstable();
        data_ids.dedup();
        let mut held = self.held();
        for id in &data_ids {
            *held.entry(id.clone()).or_default() += 1;
        }
        ReadLease {
            leases: Arc::clone(self),
            data_ids,
        }
    }

    /// Whether a read holds a lease on `data_id`.
    pub fn is_read(&self, data_id: &str) -> bool {
        self.held().contains_key(data_id)
    }
}

/// A read's hold on the data it streams; released on drop.
#[derive(Debug)]
pub struct ReadLease {
    leases: Arc<ReadLeases>,
    data_ids: Vec<String>,
}

impl Drop for ReadLease {
    fn drop(&mut self) {
        let mut held = self.leases.held();
        for id in &self.data_ids {
            if let Some(count) = held.get_mut(id) {
                *count -= 1;
                if *count == 0 {
                    held.remove(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_holds_until_its_last_holder_drops_it() {
        let leases = Arc::new(ReadLeases::default());
        let first = leases.hold(["a".to_owned(), "b".to_owned(), "a".to_owned()]);
        let second = leases.hold(["a".to_owned()]);
        assert!(leases.is_read("a") && leases.is_read("b") && !leases.is_read("c"));
        drop(first);
        assert!(leases.is_read("a") && !leases.is_read("b"));
        drop(second);
        assert!(!leases.is_read("a"));
    }
}
