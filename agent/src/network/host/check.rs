//! "Can this node still reach its management peer?" — asked after every guarded uplink change.
//!
//! The real check opens a TCP connection: it needs no raw sockets or capabilities (unlike ICMP
//! echo), it proves the whole path (routes, ARP/NDP, the bridge, the far end's return route), and it
//! is what the management plane itself needs to work. A refused connection does not count: a reset
//! could come from a middlebox or the wrong host, and reverting a good change costs only a retry.

use std::fmt;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Why the check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{target} not reachable: {detail}")]
pub struct CheckError {
    /// What was checked (`192.0.2.1:443`, or the fake's name).
    pub target: String,
    /// The last failure seen.
    pub detail: String,
}

/// A reachability test run after a change. It runs on the calling thread, and so in that thread's
/// network namespace — which must be the one the change was made in.
pub trait ConnectivityCheck: Send + Sync {
    /// Ok if the target was reached before the deadline.
    fn check(&self) -> Result<(), CheckError>;
}

/// Reachable when a TCP connection to any of the targets completes before the deadline.
///
/// Attempts repeat until the deadline: right after a change the path may need a moment (ARP, a
/// bridge port coming up, the first SYN lost while the link's queue is activated); the kernel
/// retransmits SYNs within one attempt, and failures that come back at once (no route yet) are
/// retried after `retry_interval`.
#[derive(Debug, Clone)]
pub struct TcpConnectCheck {
    targets: Vec<SocketAddr>,
    deadline: Duration,
    attempt_timeout: Duration,
    retry_interval: Duration,
}

impl TcpConnectCheck {
    /// Checks `targets` (any one suffices) for at most `deadline` in all.
    pub fn new(targets: Vec<SocketAddr>, deadline: Duration) -> Self {
        Self {
            targets,
            deadline,
            attempt_timeout: Duration::from_secs(3),
            retry_interval: Duration::from_millis(200),
        }
    }

    /// Caps a single connection attempt (default 3 s: long enough for one SYN retransmission).
    #[must_use]
    pub fn with_attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = timeout;
        self
    }

    /// Pause after an attempt that failed at once (default 200 ms).
    #[must_use]
    pub fn with_retry_interval(mut self, interval: Duration) -> Self {
        self.retry_interval = interval;
        self
    }

    fn describe_targets(&self) -> String {
        self.targets
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl ConnectivityCheck for TcpConnectCheck {
    fn check(&self) -> Result<(), CheckError> {
        let started = Instant::now();
        let mut last = String::from("no target configured");
        loop {
            for target in &self.targets {
                let remaining = self.deadline.saturating_sub(started.elapsed());
                if remaining.is_zero() {
                    return Err(CheckError {
                        target: self.describe_targets(),
                        detail: format!("{last} (gave up after {:?})", self.deadline),
                    });
                }
                let attempt_started = Instant::now();
                match TcpStream::connect_timeout(target, remaining.min(self.attempt_timeout)) {
                    Ok(_) => {
                        tracing::debug!(%target, elapsed = ?started.elapsed(), "management peer reachable");
                        return Ok(());
                    }
                    Err(err) => {
                        last = format!("{target}: {err}");
                        if attempt_started.elapsed() < self.retry_interval {
                            let remaining = self.deadline.saturating_sub(started.elapsed());
                            std::thread::sleep(self.retry_interval.min(remaining));
                        }
                    }
                }
            }
            if self.targets.is_empty() {
                return Err(CheckError {
                    target: String::new(),
                    detail: last,
                });
            }
        }
    }
}

type Probe = dyn Fn() -> Result<(), String> + Send + Sync;

/// A check for unit tests: answers from a closure (typically one that looks at a
/// [`super::FakeHost`]), and counts how often it was asked.
pub struct FakeCheck {
    name: String,
    probe: Box<Probe>,
    calls: AtomicUsize,
}

impl fmt::Debug for FakeCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeCheck")
            .field("name", &self.name)
            .field("calls", &self.calls)
            .finish_non_exhaustive()
    }
}

impl FakeCheck {
    /// A check that asks `probe`; `Err(reason)` is a failure.
    pub fn new(name: &str, probe: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self {
            name: name.to_owned(),
            probe: Box::new(probe),
            calls: AtomicUsize::new(0),
        }
    }

    /// Always passes.
    pub fn passing() -> Self {
        Self::new("always-reachable", || Ok(()))
    }

    /// Always fails with `reason`.
    pub fn failing(reason: &str) -> Self {
        let reason = reason.to_owned();
        Self::new("never-reachable", move || Err(reason.clone()))
    }

    /// Times asked.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl ConnectivityCheck for FakeCheck {
    fn check(&self) -> Result<(), CheckError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (self.probe)().map_err(|detail| CheckError {
            target: self.name.clone(),
            detail,
        })
    }
}
