//! The host's service plumbing: systemd notification and watchdog, logging, and the clock.
//!
//! Each side effect sits behind a trait with a real implementation and a recording fake, so the daemon's
//! start-up and liveness logic can be unit-tested without systemd.

pub mod clock;
pub mod logging;
pub mod notify;
