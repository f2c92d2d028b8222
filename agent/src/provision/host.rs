//! The host side effects of provisioning that are not plain files under the root: reloading
//! systemd-networkd, writing to the system console, printing, sleeping (mounting the `SCSEDGE` medium
//! is [`crate::system::mount`], shared with update sticks).
//!
//! Each is a trait with the real implementation and an in-memory fake, so every path through
//! provisioning — including the wait loop — is unit-tested unprivileged on a temporary root.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// Asks systemd-networkd to pick up the files just written.
pub trait Networkd {
    /// `networkctl reload`; an error is reported as a warning, never fatal (networkd may not run yet,
    /// and it reads the files when it starts).
    fn reload(&self) -> Result<(), String>;
}

/// The machine's console: where an operator standing at the box (or on the BMC's serial-over-LAN)
/// looks when the node does not come up.
pub trait Console {
    /// Shows `text`; best effort, errors are swallowed.
    fn show(&self, text: &str);
}

/// The command's own output streams.
pub trait Terminal {
    /// A line (or block) on stdout.
    fn out(&self, text: &str);
    /// A line (or block) on stderr.
    fn err(&self, text: &str);
}

/// Waiting between polls of the sources.
pub trait Pause {
    /// Sleeps `duration`.
    fn pause(&self, duration: Duration);
}

/// `networkctl reload`.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemNetworkd;

impl Networkd for SystemNetworkd {
    fn reload(&self) -> Result<(), String> {
        crate::system::tool::run("networkctl", &["reload".as_ref()]).map(drop)
    }
}

/// For a `--root` that is not the running system: its networkd is not ours to reload.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoNetworkd;

impl Networkd for NoNetworkd {
    fn reload(&self) -> Result<(), String> {
        Ok(())
    }
}

/// `<root>/dev/console`, opened per message without becoming our controlling terminal.
#[derive(Debug, Clone)]
pub struct DevConsole {
    path: PathBuf,
}

impl DevConsole {
    /// The console under `root` (a test root has none, so nothing is written there).
    pub fn under(root: &Path) -> Self {
        Self {
            path: root.join("dev/console"),
        }
    }
}

impl Console for DevConsole {
    fn show(&self, text: &str) {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let Ok(mut console) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(&self.path)
        else {
            return;
        };
        let mut text = text.replace('\n', "\r\n");
        text.push_str("\r\n");
        let _ = console.write_all(text.as_bytes());
    }
}

/// stdout and stderr of the process.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdTerminal;

#[allow(clippy::print_stdout, clippy::print_stderr)] // a CLI's output is its interface
impl Terminal for StdTerminal {
    fn out(&self, text: &str) {
        println!("{text}");
    }

    fn err(&self, text: &str) {
        eprintln!("{text}");
    }
}

/// `std::thread::sleep`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sleep;

impl Pause for Sleep {
    fn pause(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// Records console text, output, networkd reloads and pauses; for unit tests. A pause can run a
/// hook, so a test can change the fake host between two polls.
#[derive(Default)]
pub struct RecordingHost {
    events: Mutex<Vec<String>>,
    on_pause: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    /// What `reload` answers.
    pub reload_result: Option<String>,
}

impl std::fmt::Debug for RecordingHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingHost")
            .field("events", &self.events())
            .finish_non_exhaustive()
    }
}

impl RecordingHost {
    /// Every event so far: `console: …`, `out: …`, `err: …`, `reload`, `pause <secs>`.
    pub fn events(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Runs `hook` at the next pause not yet claimed by an earlier hook.
    pub fn on_pause(&self, hook: impl FnOnce() + Send + 'static) {
        self.on_pause
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Box::new(hook));
    }

    fn record(&self, event: String) {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(event);
    }
}

impl Console for RecordingHost {
    fn show(&self, text: &str) {
        self.record(format!("console: {text}"));
    }
}

impl Terminal for RecordingHost {
    fn out(&self, text: &str) {
        self.record(format!("out: {text}"));
    }

    fn err(&self, text: &str) {
        self.record(format!("err: {text}"));
    }
}

impl Networkd for RecordingHost {
    fn reload(&self) -> Result<(), String> {
        self.record("reload".into());
        self.reload_result.clone().map_or(Ok(()), Err)
    }
}

impl Pause for RecordingHost {
    fn pause(&self, duration: Duration) {
        self.record(format!("pause {}", duration.as_secs()));
        let hook = {
            let mut hooks = self
                .on_pause
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (!hooks.is_empty()).then(|| hooks.remove(0))
        };
        if let Some(hook) = hook {
            hook();
        }
    }
}
