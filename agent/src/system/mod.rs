//! The host's service plumbing: systemd notification and watchdog, logging, the clock, running host
//! tools, mounting removable media and replacing files durably.
//!
//! Each side effect sits behind a trait with a real implementation and a recording fake, so the daemon's
//! start-up and liveness logic can be unit-tested without systemd.

pub mod clock;
pub mod file;
pub mod logging;
pub mod mount;
pub mod notify;
pub mod tool;
