//! The ordered command history: what `GET /v1/commands/` lists and what the busy rule
//! looks at. Bounded (INVARIANTS 5): past the capacity the oldest finished entries go;
//! the last entry and RUNNING ones are never dropped, and nothing is reordered.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::watch;

use crate::commands::result::{CommandResult, Mode};
use crate::errors::CommandError;

/// Entries kept by default; far more than one ramdisk session produces.
pub const DEFAULT_CAPACITY: usize = 1000;

/// The history plus a change signal for `wait=true` readers.
#[derive(Debug)]
pub struct History {
    // std Mutex: every critical section is a few list operations, nothing awaits under it.
    entries: Mutex<VecDeque<CommandResult>>,
    capacity: usize,
    // Bumped whenever an entry finishes, so waiters re-check.
    finished: watch::Sender<u64>,
}

impl Default for History {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl History {
    /// An empty history keeping about `capacity` entries (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            finished: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<CommandResult>> {
        self.entries.lock().expect("history lock poisoned")
    }

    /// Bare name of the last command when it is still RUNNING (the busy rule).
    pub fn running_last(&self) -> Option<String> {
        self.lock()
            .back()
            .filter(|r| r.is_running())
            .map(|r| r.command_name.clone())
    }

    /// Appends an entry, then trims the oldest finished ones beyond the capacity.
    pub fn push(&self, result: CommandResult) {
        let finished = !result.is_running();
        let mut entries = self.lock();
        entries.push_back(result);
        while entries.len() > self.capacity {
            let last = entries.len() - 1;
            match entries.iter().position(|r| !r.is_running()) {
                Some(i) if i < last => {
                    entries.remove(i);
                }
                _ => break,
            }
        }
        drop(entries);
        if finished {
            self.finished.send_modify(|n| *n += 1);
        }
    }

    /// Records the outcome of the RUNNING entry `id`.
    pub fn finish(&self, id: &str, mode: Mode, outcome: Result<Value, CommandError>) {
        if let Some(entry) = self.lock().iter_mut().find(|r| r.id == id) {
            entry.finish(mode, outcome);
        }
        self.finished.send_modify(|n| *n += 1);
    }

    /// One entry by id.
    pub fn get(&self, id: &str) -> Option<CommandResult> {
        self.lock().iter().find(|r| r.id == id).cloned()
    }

    /// Every entry, oldest first, as wire objects.
    pub fn list(&self) -> Vec<Value> {
        self.lock().iter().map(CommandResult::to_json).collect()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no command was run yet.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Waits until entry `id` is no longer RUNNING and returns it; None if unknown.
    pub async fn wait(&self, id: &str) -> Option<CommandResult> {
        let mut changes = self.finished.subscribe();
        loop {
            // Subscribed before looking, so a finish between the look and the await
            // still wakes us.
            changes.borrow_and_update();
            let entry = self.get(id)?;
            if !entry.is_running() {
                return Some(entry);
            }
            if changes.changed().await.is_err() {
                return self.get(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::Arc;

    fn done(id: &str) -> CommandResult {
        let mut r = CommandResult::running(id.to_owned(), "sync");
        r.finish(Mode::Sync, Ok(Value::Null));
        r
    }

    fn ids(h: &History) -> Vec<String> {
        h.list()
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn trims_oldest_finished_and_keeps_order() {
        let h = History::new(3);
        for id in ["a", "b", "c", "d", "e"] {
            h.push(done(id));
        }
        assert_eq!(ids(&h), ["c", "d", "e"]);
    }

    #[test]
    fn never_drops_running_or_last() {
        let h = History::new(2);
        h.push(CommandResult::running("run".into(), "power_off"));
        h.push(done("b"));
        h.push(done("c"));
        // "run" is RUNNING (kept), "b" is the oldest finished one.
        assert_eq!(ids(&h), ["run", "c"]);
        let h = History::new(1);
        h.push(CommandResult::running("r1".into(), "x"));
        h.push(CommandResult::running("r2".into(), "y"));
        assert_eq!(ids(&h), ["r1", "r2"]);
    }

    #[test]
    fn busy_only_when_last_is_running() {
        let h = History::default();
        assert_eq!(h.running_last(), None);
        h.push(CommandResult::running("r".into(), "execute_clean_step"));
        assert_eq!(h.running_last().as_deref(), Some("execute_clean_step"));
        h.finish("r", Mode::Async, Ok(json!(null)));
        assert_eq!(h.running_last(), None);
    }

    #[tokio::test]
    async fn wait_returns_once_finished() {
        let h = Arc::new(History::default());
        h.push(CommandResult::running("r".into(), "x"));
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.wait("r").await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        h.finish("r", Mode::Async, Ok(json!({"k": 1})));
        let r = waiter.await.unwrap().unwrap();
        assert_eq!(r.command_result, json!({"k": 1}));
        assert!(h.wait("unknown").await.is_none());
    }
}
