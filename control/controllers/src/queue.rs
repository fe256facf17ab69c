//! The work queue every controller runs on (client-go's workqueue / kube-runtime's scheduler +
//! runner): keys are de-duplicated while queued, a key being synced is never handed to a second
//! worker (a change that arrives meanwhile re-queues it once when the sync ends), and a failed
//! sync is retried with per-key exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

const BACKOFF_BASE: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

#[derive(Default)]
struct State {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    active: HashSet<String>,
    dirty: HashSet<String>,
    failures: HashMap<String, u32>,
}

/// A de-duplicating queue of object keys.
#[derive(Default)]
pub struct Queue {
    state: Mutex<State>,
    notify: Notify,
}

/// The delay before the `n`th retry (1-based): 50 ms doubling up to 60 s.
pub fn backoff(n: u32) -> Duration {
    let d = BACKOFF_BASE.saturating_mul(1u32 << n.saturating_sub(1).min(20));
    d.min(BACKOFF_MAX)
}

impl Queue {
    pub fn new() -> Arc<Queue> {
        Arc::new(Queue::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `key` unless it is already queued; if it is being synced, queues it once more
    /// when that sync ends.
    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut s = self.lock();
        if s.active.contains(&key) {
            s.dirty.insert(key);
            return;
        }
        if s.queued.insert(key.clone()) {
            s.ready.push_back(key);
            drop(s);
            self.notify.notify_one();
        }
    }

    /// Queues `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        let q = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            q.add(key);
        });
    }

    /// Number of keys waiting (not counting the ones being synced).
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the next key, waiting for one; the caller must call [`Queue::done`] with it.
    pub async fn next(&self) -> String {
        loop {
            {
                let mut s = self.lock();
                if let Some(k) = s.ready.pop_front() {
                    s.queued.remove(&k);
                    s.active.insert(k.clone());
                    let more = !s.ready.is_empty();
                    drop(s);
                    if more {
                        self.notify.notify_one();
                    }
                    return k;
                }
            }
            self.notify.notified().await;
        }
    }

    /// Ends the sync of `key`: `Ok(Some(d))` re-queues it after `d`, `Err` after its backoff.
    pub fn done(self: &Arc<Self>, key: &str, outcome: Result<Option<Duration>, ()>) {
        let retry = {
            let mut s = self.lock();
            s.active.remove(key);
            let retry = match outcome {
                Ok(after) => {
                    s.failures.remove(key);
                    after
                }
                Err(()) => {
                    let n = s.failures.entry(key.to_string()).or_insert(0);
                    *n += 1;
                    Some(backoff(*n))
                }
            };
            if s.dirty.remove(key) && s.queued.insert(key.to_string()) {
                s.ready.push_back(key.to_string());
                drop(s);
                self.notify.notify_one();
            }
            retry
        };
        if let Some(d) = retry {
            self.add_after(key.to_string(), d);
        }
    }
}

/// Runs `workers` loops taking keys from `queue` and calling `sync`, forever.
pub async fn run_workers<F, Fut>(name: &'static str, queue: Arc<Queue>, workers: usize, sync: F)
where
    F: Fn(String) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = crate::Result<Option<Duration>>> + Send + 'static,
{
    let mut tasks = Vec::new();
    for _ in 0..workers.max(1) {
        let q = Arc::clone(&queue);
        let sync = sync.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let key = q.next().await;
                tracing::trace!(controller = name, key = %key, "sync");
                let outcome = match sync(key.clone()).await {
                    Ok(after) => Ok(after),
                    Err(e) => {
                        tracing::info!(controller = name, key = %key, error = %e, "sync failed; retrying with backoff");
                        Err(())
                    }
                };
                q.done(&key, outcome);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let cases = [
            (1, 50),
            (2, 100),
            (3, 200),
            (10, 25_600),
            (11, 51_200),
            (12, 60_000),
            (40, 60_000),
        ];
        for (n, ms) in cases {
            assert_eq!(backoff(n), Duration::from_millis(ms), "retry {n}");
        }
    }

    #[tokio::test]
    async fn deduplicates_and_holds_active_keys() {
        let q = Queue::new();
        q.add("a");
        q.add("a");
        q.add("b");
        assert_eq!(q.len(), 2);
        let k = q.next().await;
        assert_eq!(k, "a");
        // A change while "a" syncs does not hand it to another worker ...
        q.add("a");
        assert_eq!(q.next().await, "b");
        assert!(q.is_empty());
        // ... but queues it once when the sync ends.
        q.done("a", Ok(None));
        assert_eq!(q.next().await, "a");
        q.done("a", Ok(None));
        q.done("b", Ok(None));
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn failures_retry_after_backoff() {
        let q = Queue::new();
        q.add("x");
        let k = q.next().await;
        q.done(&k, Err(()));
        let got = tokio::time::timeout(Duration::from_secs(2), q.next()).await;
        assert_eq!(got.ok().as_deref(), Some("x"));
    }
}
