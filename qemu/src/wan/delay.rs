//! The delay engine: one process per delayed site, inside the site's namespace, holding each packet
//! the site sends over its WAN link for the configured time before letting it go.
//!
//! Packets leave in the order they arrived (a WAN delays, it does not reorder), so a shorter delay
//! set while packets are held lets the new ones wait behind the old. The operator's `scs-edge-lab
//! wan` writes the delay into a control file; the engine reads it every [`CONTROL_POLL`], confirms
//! the value it applies in the acknowledgement file beside it (so the command returns only once the
//! new delay holds), and when the control file is gone it lets everything it holds go and exits.
//! If the engine dies the kernel lets packets pass (`--queue-bypass`, fail-open): a broken engine
//! never becomes a cut.

use super::queue::{Queue, QueueError};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The queue the lab's NFQUEUE rule sends packets to (one engine per namespace).
pub const QUEUE_NUMBER: u16 = 0;
/// Packets held at once before the kernel lets further ones through undelayed: a second of a busy
/// link at 300 ms without loss.
const QUEUE_MAX_LEN: u32 = 65_536;
/// How soon a changed or removed control file takes effect.
pub const CONTROL_POLL: Duration = Duration::from_millis(50);

/// The engine failed.
#[derive(Debug, thiserror::Error)]
pub enum DelayError {
    /// The queue could not be bound or served.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The control or acknowledgement file could not be read or written.
    #[error("delay control {path}: {source}")]
    Control {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
}

/// Packets in arrival order, each with the moment it may leave.
#[derive(Debug, Default)]
pub struct DelayLine {
    held: VecDeque<(u32, Instant)>,
}

impl DelayLine {
    /// Holds packet `id`, which arrived at `arrived`, for `delay`.
    pub fn hold(&mut self, id: u32, arrived: Instant, delay: Duration) {
        self.held.push_back((id, arrived + delay));
    }

    /// The packets whose time has come at `now`, in arrival order; a packet whose time has come
    /// still waits for every packet before it.
    pub fn due(&mut self, now: Instant) -> Vec<u32> {
        let mut due = Vec::new();
        while let Some(&(id, at)) = self.held.front() {
            if at > now {
                break;
            }
            due.push(id);
            self.held.pop_front();
        }
        due
    }

    /// When the first held packet may leave.
    pub fn next(&self) -> Option<Instant> {
        self.held.front().map(|&(_, at)| at)
    }

    /// Every held packet, in arrival order, emptying the line.
    pub fn drain(&mut self) -> Vec<u32> {
        self.held.drain(..).map(|(id, _)| id).collect()
    }
}

/// The acknowledgement file of a control file.
pub fn ack_path(control: &Path) -> PathBuf {
    let mut name = control.as_os_str().to_owned();
    name.push(".applied");
    PathBuf::from(name)
}

/// Reads a control file: `Some(delay)`, or `None` when it is gone (the engine's signal to stop).
pub fn read_control(control: &Path) -> Result<Option<Duration>, DelayError> {
    match std::fs::read_to_string(control) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map(|ms| Some(Duration::from_millis(ms)))
            .map_err(|e| DelayError::Control {
                path: control.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DelayError::Control {
            path: control.to_owned(),
            source,
        }),
    }
}

fn acknowledge(control: &Path, delay: Duration) -> Result<(), DelayError> {
    let ack = ack_path(control);
    std::fs::write(&ack, delay.as_millis().to_string())
        .map_err(|source| DelayError::Control { path: ack, source })
}

/// Runs the engine in the calling process's network namespace until the control file is removed.
pub fn run(control: &Path) -> Result<(), DelayError> {
    let Some(mut delay) = read_control(control)? else {
        return Ok(());
    };
    let queue = std::sync::Arc::new(Queue::bind(QUEUE_NUMBER, QUEUE_MAX_LEN)?);
    acknowledge(control, delay)?;
    // One thread blocks on the socket and stamps arrivals; this one gives verdicts on time.
    // Verdicts and receipts share the socket, which the kernel allows from two threads.
    let (arrivals, arrived) = mpsc::channel::<(u32, Instant)>();
    let receiver = std::sync::Arc::clone(&queue);
    std::thread::Builder::new()
        .name("wan-receive".into())
        .spawn(move || {
            let mut buffer = Vec::with_capacity(1 << 16);
            loop {
                match receiver.receive(&mut buffer) {
                    Ok(ids) => {
                        let now = Instant::now();
                        for id in ids {
                            if arrivals.send((id, now)).is_err() {
                                return;
                            }
                        }
                    }
                    // The kernel dropped notifications (the socket buffer overran): those
                    // packets stay queued until the engine unbinds. Keep serving the rest.
                    Err(e) if e.is_overrun() => {}
                    // Anything else ends the engine; the kernel then lets packets pass.
                    Err(_) => return,
                }
            }
        })
        .map_err(|source| DelayError::Control {
            path: control.to_owned(),
            source,
        })?;
    let mut line = DelayLine::default();
    let mut checked = Instant::now();
    loop {
        let now = Instant::now();
        let wait = line
            .next()
            .map_or(CONTROL_POLL, |at| at.saturating_duration_since(now))
            .min(CONTROL_POLL.saturating_sub(now - checked));
        match arrived.recv_timeout(wait) {
            Ok((id, at)) => line.hold(id, at, delay),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        for id in line.due(Instant::now()) {
            queue.accept(id)?;
        }
        if checked.elapsed() >= CONTROL_POLL {
            checked = Instant::now();
            match read_control(control)? {
                Some(new) => {
                    if new != delay {
                        delay = new;
                        acknowledge(control, delay)?;
                    }
                }
                None => break,
            }
        }
    }
    for id in line.drain() {
        queue.accept(id)?;
    }
    let _ = std::fs::remove_file(ack_path(control));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A line holding packet 1 for 300 ms from `start`, and packet 2 arriving `later` for `delay`.
    fn two_held(start: Instant, later: u64, delay: u64) -> DelayLine {
        let mut line = DelayLine::default();
        line.hold(1, start, ms(300));
        line.hold(2, start + ms(later), ms(delay));
        line
    }

    #[test]
    fn packets_leave_after_their_delay_in_arrival_order() {
        let start = Instant::now();
        let mut line = two_held(start, 10, 300);
        assert_eq!(line.next(), Some(start + ms(300)));
        assert!(line.due(start + ms(299)).is_empty());
        assert_eq!(line.due(start + ms(300)), [1]);
        assert_eq!(line.due(start + ms(400)), [2]);
        assert_eq!(line.next(), None);
    }

    #[test]
    fn a_shorter_delay_never_overtakes_packets_already_held() {
        let start = Instant::now();
        let mut line = two_held(start, 1, 0);
        assert!(line.due(start + ms(100)).is_empty(), "2 waits behind 1");
        assert_eq!(line.due(start + ms(300)), [1, 2]);
        line.hold(3, start, ms(900));
        assert_eq!(line.drain(), [3]);
    }

    #[test]
    fn the_control_file_carries_the_delay_and_its_absence_means_stop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let control = dir.path().join("lab-1.delay");
        assert_eq!(read_control(&control).expect("absent"), None);
        std::fs::write(&control, "300\n").expect("write");
        assert_eq!(
            read_control(&control).expect("read"),
            Some(Duration::from_millis(300))
        );
        std::fs::write(&control, "soon").expect("write");
        assert!(read_control(&control).is_err());
        assert_eq!(ack_path(&control), dir.path().join("lab-1.delay.applied"));
    }
}
