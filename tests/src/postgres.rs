//! A real PostgreSQL server started by the harness: a fresh cluster (`initdb`) in a scratch directory,
//! listening only on a unix socket there, with a fresh database per test so tests never see each
//! other's rows.
//!
//! The cluster's default collation is ICU `en-US` with punctuation ignored (`ka-shifted`), as glibc's
//! `en_US.UTF-8` — the default of many real hosts — sorts: code that relies on the default order of
//! text (instead of asking for byte order) shows up here, not in production.
//!
//! One server is shared by the tests of a process that overlap in time and stopped when the last of
//! them drops its database (nextest runs one test per process, so there it is one server per test).
//! It is held through a `Weak` rather than a `OnceLock` because a static is never dropped: a server
//! owned by one would outlive the test process.

use crate::scratch_dir;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// The socket's port number: only part of the socket's file name (`.s.PGSQL.<port>`), since the
/// server listens on no TCP address, so it cannot collide with anything outside the scratch directory.
const PORT: u16 = 5432;

/// A running server; stopped (`pg_ctl -m fast stop`) and its directory removed on drop.
pub struct PostgresServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// initdb refuses to run as root; as root, the cluster belongs to the `postgres` user.
    as_postgres: bool,
}

/// A database of its own for one test, on a shared server.
pub struct TestDatabase {
    /// `postgres://postgres@/<db>?host=<socket dir>&port=<port>`: what `Store::open` takes.
    pub url: String,
    /// The database name.
    pub name: String,
    /// The socket directory (the URL's `host`).
    pub socket_dir: PathBuf,
    /// The socket's port number.
    pub port: u16,
    _server: Arc<PostgresServer>,
}

fn run(mut command: Command) -> Output {
    let rendered = format!("{command:?}");
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{rendered}: {e}"));
    assert!(
        out.status.success(),
        "{rendered} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: where `initdb` on PATH really lives
/// (Debian puts only symlinks, if anything, on PATH), else the newest `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("initdb"))
        .find(|initdb| initdb.is_file())
        .and_then(|initdb| std::fs::canonicalize(initdb).ok())
        .and_then(|initdb| initdb.parent().map(Path::to_path_buf))
        .filter(|dir| dir.join("pg_ctl").is_file());
    if let Some(dir) = on_path {
        return dir;
    }
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version);
    newest.map(|(_, bin)| bin).expect(
        "no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql (scripts/install-deps.sh)",
    )
}

fn running_as_root() -> bool {
    // /proc/self belongs to the effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl PostgresServer {
    /// The server the overlapping tests of this process share, started when none runs.
    pub fn shared() -> Arc<Self> {
        static SHARED: Mutex<Weak<PostgresServer>> = Mutex::new(Weak::new());
        let mut slot = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(server) = slot.upgrade() {
            return server;
        }
        let server = Arc::new(Self::start());
        *slot = Arc::downgrade(&server);
        server
    }

    /// Creates a cluster in a fresh scratch directory and starts it; returns once it accepts
    /// connections (`pg_ctl -w`).
    pub fn start() -> Self {
        let dir = scratch_dir("postgres");
        let socket_dir = dir.path().to_string_lossy().into_owned();
        assert!(
            socket_dir
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c)),
            "{socket_dir}: the socket directory goes into a URL unescaped"
        );
        let as_postgres = running_as_root();
        let server = Self {
            bin: bin_dir(),
            dir,
            as_postgres,
        };
        if as_postgres {
            run(Self::plain("chown", &["postgres:postgres", &socket_dir]));
        }
        let data = server.data_dir().to_string_lossy().into_owned();
        run(server.as_owner(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--locale-provider=icu",
                "--icu-locale=en-US-u-ka-shifted",
                // Only skips syncing initdb's own files: the server below runs with fsync on.
                "--no-sync",
            ],
        ));
        let log = server.dir.path().join("server.log");
        run(server.as_owner(
            "pg_ctl",
            &[
                "-D",
                &data,
                "-l",
                &log.to_string_lossy(),
                "-w",
                "-t",
                "60",
                "-o",
                &format!("-k {socket_dir} -c listen_addresses='' -p {PORT} -c fsync=on"),
                "start",
            ],
        ));
        server
    }

    /// A new, empty database named after `label` (and a counter, so one label can ask twice).
    pub fn create_database(self: &Arc<Self>, label: &str) -> TestDatabase {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        let name: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(50)
            .collect();
        let name = format!("{name}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let socket_dir = self.dir.path().to_path_buf();
        run(Self::plain(
            &self.bin.join("createdb").to_string_lossy(),
            &[
                "-h",
                &socket_dir.to_string_lossy(),
                "-p",
                &PORT.to_string(),
                "-U",
                "postgres",
                &name,
            ],
        ));
        TestDatabase {
            url: format!(
                "postgres://postgres@/{name}?host={}&port={PORT}",
                socket_dir.display()
            ),
            name,
            socket_dir,
            port: PORT,
            _server: Arc::clone(self),
        }
    }

    /// The server's log, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A server binary run as the cluster's owner.
    fn as_owner(&self, program: &str, args: &[&str]) -> Command {
        let program = self.bin.join(program);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command
                .args(["-u", "postgres", "--"])
                .arg(program)
                .args(args);
            command
        } else {
            let mut command = Command::new(program);
            command.args(args);
            command
        }
    }

    fn plain(program: &str, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let data = self.data_dir().to_string_lossy().into_owned();
        let stopped = self
            .as_owner("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"])
            .output();
        if !stopped.is_ok_and(|out| out.status.success()) {
            eprintln!("postgres: pg_ctl stop failed; server log:\n{}", self.log());
        }
    }
}
