//! The work queue: deduplicated, one worker per item at a time, items re-queued while being worked on are
//! worked on again afterwards, failed items wait out their backoff unless desired state changes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::Notify;

/// An item: (index of its kind in the controller, key).
pub(super) type Item = (usize, String);

/// Why an item is being queued; decides whether it may cut a backoff short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cause {
    /// Desired state changed: always queued at once.
    Desired,
    /// A resync, an observation or a retry timer: skipped while the item waits out a backoff.
    Routine,
    /// The backoff timer of a failed item fired.
    Retry,
}

/// Counts down as the items of one batch (e.g. the first full pass) have each been worked on once.
#[derive(Debug)]
pub(crate) struct PassTracker {
    remaining: AtomicUsize,
    done: Notify,
}

impl PassTracker {
    pub(super) fn new(items: usize) -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(items),
            done: Notify::new(),
        })
    }

    fn complete_one(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_waiters();
        }
    }

    /// Sets the count before any item of the batch is queued.
    pub(super) fn set_remaining(&self, items: usize) {
        self.remaining.store(items, Ordering::Release);
        if items == 0 {
            self.done.notify_waiters();
        }
    }

    pub(super) fn is_done(&self) -> bool {
        self.remaining.load(Ordering::Acquire) == 0
    }

    pub(super) async fn wait(&self) {
        loop {
            let notified = self.done.notified();
            if self.is_done() {
                return;
            }
            notified.await;
        }
    }
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Item>,
    queued: HashSet<Item>,
    processing: HashSet<Item>,
    /// Queued again while being processed: goes back on the queue when processing ends.
    dirty: HashSet<Item>,
    /// Items waiting out a backoff after failures.
    backing_off: HashSet<Item>,
    failures: HashMap<Item, u32>,
    /// Batches waiting for an item's next completed run.
    trackers: HashMap<Item, Vec<Arc<PassTracker>>>,
    /// Trackers of the run in progress.
    in_flight: HashMap<Item, Vec<Arc<PassTracker>>>,
    /// Last desired-state version seen per item.
    versions: HashMap<Item, i64>,
}

/// How a run of an item ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RunEnd {
    /// Converged.
    Done,
    /// Wants another run later; not a failure.
    Later,
    /// Failed; the caller schedules a retry after the returned number of consecutive failures.
    Failed,
}

#[derive(Debug, Default)]
pub(super) struct WorkQueue {
    state: Mutex<State>,
    available: Notify,
}

impl WorkQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item`. Returns false when it was skipped (a routine cause during backoff).
    pub(super) fn add(&self, item: Item, cause: Cause, tracker: Option<Arc<PassTracker>>) -> bool {
        let mut state = self.lock();
        match cause {
            Cause::Routine if state.backing_off.contains(&item) => {
                drop(state);
                if let Some(tracker) = tracker {
                    // It will not run now; the pass must not wait for it.
                    tracker.complete_one();
                }
                return false;
            }
            Cause::Desired | Cause::Retry => {
                state.backing_off.remove(&item);
            }
            Cause::Routine => {}
        }
        if let Some(tracker) = tracker {
            state
                .trackers
                .entry(item.clone())
                .or_default()
                .push(tracker);
        }
        if state.processing.contains(&item) {
            state.dirty.insert(item);
        } else if state.queued.insert(item.clone()) {
            state.ready.push_back(item);
            drop(state);
            self.available.notify_one();
        }
        true
    }

    /// Records a desired-state version; true if it differs from the last one seen (so the item should
    /// be queued).
    pub(super) fn note_version(&self, item: &Item, version: i64) -> bool {
        let mut state = self.lock();
        state.versions.insert(item.clone(), version) != Some(version)
    }

    /// Forgets versions of items no longer known to their kind.
    pub(super) fn retain_versions(&self, kind: usize, keys: &HashSet<String>) {
        self.lock()
            .versions
            .retain(|(k, key), _| *k != kind || keys.contains(key));
    }

    /// Waits for the next item and marks it as processing.
    pub(super) async fn next(&self) -> Item {
        loop {
            let notified = self.available.notified();
            {
                let mut state = self.lock();
                if let Some(item) = state.ready.pop_front() {
                    state.queued.remove(&item);
                    state.processing.insert(item.clone());
                    if let Some(trackers) = state.trackers.remove(&item) {
                        state.in_flight.insert(item.clone(), trackers);
                    }
                    let more = !state.ready.is_empty();
                    drop(state);
                    if more {
                        self.available.notify_one();
                    }
                    return item;
                }
            }
            notified.await;
        }
    }

    /// Ends a run. Returns the number of consecutive failures (0 unless `Failed`).
    pub(super) fn finish(&self, item: &Item, end: RunEnd) -> u32 {
        let mut state = self.lock();
        state.processing.remove(item);
        let trackers = state.in_flight.remove(item).unwrap_or_default();
        let failures = match end {
            RunEnd::Done | RunEnd::Later => {
                state.failures.remove(item);
                0
            }
            RunEnd::Failed => {
                let count = state.failures.entry(item.clone()).or_insert(0);
                *count += 1;
                let count = *count;
                state.backing_off.insert(item.clone());
                count
            }
        };
        let requeue = state.dirty.remove(item);
        if requeue && state.queued.insert(item.clone()) {
            state.ready.push_back(item.clone());
        }
        drop(state);
        for tracker in trackers {
            tracker.complete_one();
        }
        if requeue {
            self.available.notify_one();
        }
        failures
    }

    /// Items waiting or running.
    pub(super) fn depth(&self) -> usize {
        let state = self.lock();
        state.queued.len() + state.processing.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn item(key: &str) -> Item {
        (0, key.to_owned())
    }

    #[tokio::test]
    async fn duplicate_adds_are_collapsed() {
        let queue = WorkQueue::default();
        queue.add(item("a"), Cause::Routine, None);
        queue.add(item("a"), Cause::Desired, None);
        queue.add(item("b"), Cause::Routine, None);
        assert_eq!(queue.depth(), 2);
        assert_eq!(queue.next().await, item("a"));
        assert_eq!(queue.next().await, item("b"));
    }

    #[tokio::test]
    async fn item_added_while_processing_runs_again_afterwards_not_concurrently() {
        let queue = WorkQueue::default();
        queue.add(item("a"), Cause::Desired, None);
        let running = queue.next().await;
        queue.add(item("a"), Cause::Desired, None);
        // Not handed out a second time while the first run is going.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), queue.next())
                .await
                .is_err()
        );
        queue.finish(&running, RunEnd::Done);
        assert_eq!(queue.next().await, item("a"));
    }

    #[tokio::test]
    async fn routine_adds_do_not_cut_a_backoff_short_but_desired_changes_do() {
        let queue = WorkQueue::default();
        queue.add(item("a"), Cause::Desired, None);
        let running = queue.next().await;
        assert_eq!(queue.finish(&running, RunEnd::Failed), 1);
        assert!(
            !queue.add(item("a"), Cause::Routine, None),
            "resync must wait for the backoff"
        );
        assert_eq!(queue.depth(), 0);
        assert!(queue.add(item("a"), Cause::Desired, None));
        let again = queue.next().await;
        assert_eq!(
            queue.finish(&again, RunEnd::Failed),
            2,
            "failures accumulate"
        );
        queue.add(item("a"), Cause::Retry, None);
        let third = queue.next().await;
        assert_eq!(queue.finish(&third, RunEnd::Done), 0);
        assert!(
            queue.add(item("a"), Cause::Routine, None),
            "success ends the backoff"
        );
    }

    #[tokio::test]
    async fn pass_tracker_completes_when_every_item_ran_once() {
        let queue = WorkQueue::default();
        let tracker = PassTracker::new(2);
        queue.add(item("a"), Cause::Routine, Some(tracker.clone()));
        queue.add(item("b"), Cause::Routine, Some(tracker.clone()));
        let a = queue.next().await;
        queue.finish(&a, RunEnd::Failed);
        assert!(!tracker.is_done());
        let b = queue.next().await;
        queue.finish(&b, RunEnd::Done);
        tokio::time::timeout(Duration::from_secs(1), tracker.wait())
            .await
            .expect("pass done");
    }

    #[test]
    fn versions_trigger_only_on_change() {
        let queue = WorkQueue::default();
        assert!(queue.note_version(&item("a"), 1));
        assert!(!queue.note_version(&item("a"), 1));
        assert!(queue.note_version(&item("a"), 2));
    }
}
