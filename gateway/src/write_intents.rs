//! Write intents: the data this gateway is writing to nodes right now (an
//! upload, a part, a fragment returning from overflow), whose replicas the
//! index does not name yet. The orphan sweep ([`crate::orphans`]) leaves
//! them alone, and while it looks at some data (to remove its replicas) no
//! write of that data starts here. Writes that take long are also recorded
//! in the index with a heartbeat, for the sweeps of other gateways.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

#[derive(Debug, Default)]
struct State {
    /// Data ids being written, with how many writers each.
    writing: HashMap<String, usize>,
    /// Data ids the sweep is deciding about.
    swept: HashSet<String>,
}

/// The data ids this gateway writes, and those its sweep holds.
#[derive(Debug, Default)]
pub struct WriteIntents(Mutex<State>);

impl WriteIntents {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Declares a write of `data_id` until the returned intent is dropped;
    /// `None` while the sweep holds that data id (try again later).
    pub fn begin(self: &Arc<Self>, data_id: &str) -> Option<WriteIntent> {
        let mut state = self.state();
        if state.swept.contains(data_id) {
            return None;
        }
        *state.writing.entry(data_id.to_owned()).or_default() += 1;
        Some(WriteIntent {
            intents: Arc::clone(self),
            data_id: data_id.to_owned(),
        })
    }

    /// Every data id being written now.
    pub fn in_flight(&self) -> Vec<String> {
        self.state().writing.keys().cloned().collect()
    }

    /// Holds the data ids among `data_ids` that nothing here is writing, so
    /// that no write of them starts until the hold is dropped; returns the
    /// hold, which lists them.
    pub fn hold_idle<'a>(
        self: &Arc<Self>,
        data_ids: impl IntoIterator<Item = &'a str>,
    ) -> SweepHold {
        let mut state = self.state();
        let mut held = HashSet::new();
        for id in data_ids {
            if !state.writing.contains_key(id) && state.swept.insert(id.to_owned()) {
                held.insert(id.to_owned());
            }
        }
        SweepHold {
            intents: Arc::clone(self),
            held,
        }
    }
}

/// A write in progress; ends on drop.
#[derive(Debug)]
pub struct WriteIntent {
    intents: Arc<WriteIntents>,
    data_id: String,
}

impl WriteIntent {
    /// The data being written.
    pub fn data_id(&self) -> &str {
        &self.data_id
    }
}

impl Drop for WriteIntent {
    fn drop(&mut self) {
        let mut state = self.intents.state();
        if let Some(count) = state.writing.get_mut(&self.data_id) {
            *count -= 1;
            if *count == 0 {
                state.writing.remove(&self.data_id);
            }
        }
    }
}

/// Data ids the sweep holds: no write of them starts here until dropped.
#[derive(Debug)]
pub struct SweepHold {
    intents: Arc<WriteIntents>,
    held: HashSet<String>,
}

impl SweepHold {
    /// Whether `data_id` is held (nothing here was writing it).
    pub fn holds(&self, data_id: &str) -> bool {
        self.held.contains(data_id)
    }
}

impl Drop for SweepHold {
    fn drop(&mut self) {
        let mut state = self.intents.state();
        for id in &self.held {
            state.swept.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_sweeps_of_the_same_data_exclude_each_other() {
        let intents = Arc::new(WriteIntents::default());
        let write = intents.begin("a").unwrap();
        let again = intents.begin("a").unwrap();
        assert_eq!(intents.in_flight(), ["a"]);
        let hold = intents.hold_idle(["a", "b"]);
        assert!(!hold.holds("a") && hold.holds("b"));
        assert!(intents.begin("b").is_none(), "b is being swept");
        // A second sweep does not hold what the first holds.
        assert!(!intents.hold_idle(["b"]).holds("b"));
        drop(hold);
        assert_eq!(intents.begin("b").unwrap().data_id(), "b");
        drop(write);
        assert_eq!(intents.in_flight(), ["a"]);
        drop(again);
        assert!(intents.in_flight().is_empty());
        assert!(intents.hold_idle(["a"]).holds("a"));
    }
}
