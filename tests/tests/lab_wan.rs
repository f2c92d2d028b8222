//! The many-site lab's WAN links against the real kernel, without QEMU: `scs-edge-lab up --sites 2
//! --no-nodes` builds the region and two sites' namespaces, and `scs-edge-lab wan` impairs one
//! site's link while the test talks to the region's `/healthz` from inside each namespace, as a
//! site's node would — a delay slows every round trip by at least itself, loss loses about its
//! share, a cut is a silent timeout and `restore` brings the link back, and the other site notices
//! none of it. SIGTERM to the runner tears everything down. Needs root, `curl` and `ping`.
//!
//! The lab's binaries are taken from beside this test's (`target/<profile>/`), as `make build`
//! leaves them: `cargo build -p scs-edge-lab -p scs-edge-region` first when running this alone.

use scs_edge_tests::{RunLock, free_port, scratch_dir, wait};
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SITES: [&str; 2] = ["lab-1", "lab-2"];

fn lab_binary() -> PathBuf {
    if let Ok(path) = std::env::var("SCS_EDGE_LAB_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable");
    let mut dir = exe.parent().expect("its directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join("scs-edge-lab");
    assert!(
        binary.exists() && dir.join("scs-edge-region").exists(),
        "{} or scs-edge-region missing: build them first (`cargo build -p scs-edge-lab -p scs-edge-region`)",
        binary.display()
    );
    binary
}

/// A running `scs-edge-lab up`; dropping it stops it and runs `down`, also when the test panics.
struct Lab {
    child: Option<Child>,
    output: Arc<Mutex<String>>,
    work_dir: PathBuf,
    port: u16,
}

impl Lab {
    fn up(work_dir: &Path) -> Self {
        let port = free_port();
        let mut child = Command::new(lab_binary())
            .args(["up", "--sites", "2", "--no-nodes", "--region-port"])
            .arg(port.to_string())
            .arg("--work-dir")
            .arg(work_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start scs-edge-lab up");
        let output = Arc::new(Mutex::new(String::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let sink = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let mut all = sink.lock().expect("output");
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        let mut lab = Self {
            child: Some(child),
            output,
            work_dir: work_dir.to_owned(),
            port,
        };
        wait::until("the lab's `ready:` line", Duration::from_mins(1), || {
            let text = lab.output();
            if text.contains("\nready: ") || text.starts_with("ready: ") {
                return Some(());
            }
            let exited = lab.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "scs-edge-lab up exited ({exited:?}):\n{text}"
            );
            None
        });
        lab
    }

    fn output(&self) -> String {
        self.output.lock().expect("output").clone()
    }

    /// `scs-edge-lab wan <site> <words>`; its one line of output.
    fn wan(&self, site: &str, words: &[&str]) -> String {
        let output = Command::new(lab_binary())
            .arg("wan")
            .arg(site)
            .args(words)
            .arg("--work-dir")
            .arg(&self.work_dir)
            .output()
            .expect("run scs-edge-lab wan");
        assert!(
            output.status.success(),
            "wan {site} {}: {}",
            words.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// `curl` of the region's `/healthz` from inside a site's namespace.
    fn healthz(&self, site: &str, connect_timeout_secs: u32) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &format!("scs-lab-{site}"), "curl", "-sS"])
            .arg("--cacert")
            .arg(self.work_dir.join("region/state/ca.crt"))
            .args(["--connect-timeout", &connect_timeout_secs.to_string()])
            .args(["--max-time", "20", "-o", "/dev/null"])
            .args(["-w", "%{http_code} %{time_connect} %{time_total}"])
            .arg(format!("https://10.77.0.1:{}/healthz", self.port))
            .output()
            .expect("run curl")
    }

    /// A successful `/healthz` from a site: TCP connect time and whole request time, in seconds.
    fn answers(&self, site: &str) -> (f64, f64) {
        let output = self.healthz(site, 5);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            output.status.success() && text.starts_with("200 "),
            "{site}: /healthz did not answer: {text} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let times: Vec<f64> = text
            .split(' ')
            .skip(1)
            .map(|t| t.parse().expect("curl time"))
            .collect();
        (times[0], times[1])
    }

    /// Pings the region `count` times from a site, 2 ms apart; how many answered.
    fn pings_answered(site: &str, count: u32) -> u32 {
        let output = Command::new("ip")
            .args([
                "netns",
                "exec",
                &format!("scs-lab-{site}"),
                "ping",
                "-q",
                "-n",
            ])
            .args([
                "-c",
                &count.to_string(),
                "-i",
                "0.002",
                "-W",
                "1",
                "10.77.0.1",
            ])
            .output()
            .expect("run ping");
        let text = String::from_utf8_lossy(&output.stdout);
        text.split(", ")
            .find_map(|part| part.strip_suffix(" received"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no ping summary from {site}: {text}"))
    }

    /// SIGTERM, as a Ctrl-C would; the runner tears the lab down before it exits.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().expect("wait for scs-edge-lab up")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        let _ = Command::new(lab_binary())
            .arg("down")
            .arg("--work-dir")
            .arg(&self.work_dir)
            .status();
    }
}

/// Processes whose command line names `marker`.
fn processes_naming(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .map(|cmdline| String::from_utf8_lossy(&cmdline).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(marker) && !cmdline.contains("lab_wan"))
        .collect()
}

#[test]
fn a_sites_wan_is_delayed_lossy_cut_and_restored_while_the_other_site_is_untouched() {
    let _one_lab = RunLock::acquire("lab-wan");
    let dir = scratch_dir("lab-wan");
    let mut lab = Lab::up(dir.path());
    let control = dir.path().join("wan/lab-1.delay");

    for site in SITES {
        lab.answers(site);
        assert_eq!(lab.wan(site, &["show"]), format!("{site}: clear"));
    }

    // Every packet the site sends waits 300 ms: the TCP handshake at least once, the TLS handshake
    // and the request at least once more.
    assert_eq!(lab.wan("lab-1", &["delay", "300ms"]), "lab-1: delay 300 ms");
    let (connect, total) = lab.answers("lab-1");
    assert!(connect >= 0.3, "connect {connect} s under a 300 ms delay");
    assert!(total >= 0.6, "request {total} s under a 300 ms delay");
    lab.answers("lab-2");
    assert_eq!(
        processes_naming(&control.display().to_string()).len(),
        1,
        "one delay engine"
    );
    assert_eq!(lab.wan("lab-1", &["delay", "0"]), "lab-1: clear");
    assert!(
        processes_naming(&control.display().to_string()).is_empty(),
        "the engine stops with its delay"
    );

    // 10% each way: about 19% of round trips lost. The bounds are six standard deviations out.
    assert_eq!(lab.wan("lab-1", &["loss", "10%"]), "lab-1: loss 10%");
    let answered = Lab::pings_answered("lab-1", 300);
    assert!(
        (180..=285).contains(&answered),
        "{answered} of 300 pings answered at 10% loss each way"
    );
    assert_eq!(
        Lab::pings_answered("lab-2", 300),
        300,
        "lab-2 loses nothing"
    );

    // A cut is silence: the connection attempt times out (curl's 28), it is not refused.
    assert_eq!(lab.wan("lab-1", &["cut"]), "lab-1: cut");
    let cut = lab.healthz("lab-1", 2);
    assert_eq!(
        cut.status.code(),
        Some(28),
        "a cut link times out: {}",
        String::from_utf8_lossy(&cut.stderr)
    );
    lab.answers("lab-2");
    assert_eq!(lab.wan("lab-1", &["show"]), "lab-1: cut");

    assert_eq!(lab.wan("lab-1", &["restore"]), "lab-1: clear");
    lab.answers("lab-1");
    assert_eq!(Lab::pings_answered("lab-1", 20), 20);

    // A delay left in place when the lab stops goes with it.
    lab.wan("lab-1", &["delay", "300ms"]);
    let status = lab.stop();
    assert!(
        !status.success(),
        "the runner reports how it ended: {status}"
    );
    let namespaces = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let namespaces = String::from_utf8_lossy(&namespaces.stdout);
    for site in SITES {
        assert!(
            !namespaces.contains(&format!("scs-lab-{site}")),
            "{namespaces}\n{}",
            lab.output()
        );
        assert!(
            !Path::new("/sys/class/net")
                .join(format!("lw-{site}"))
                .exists()
        );
    }
    let lo = Command::new("ip")
        .args(["-o", "-4", "addr", "show", "dev", "lo"])
        .output()
        .expect("ip addr");
    assert!(!String::from_utf8_lossy(&lo.stdout).contains("10.77.0.1/32"));
    assert!(
        processes_naming(&dir.path().display().to_string()).is_empty(),
        "no region or engine left: {:?}\n{}",
        processes_naming(&dir.path().display().to_string()),
        lab.output()
    );
    let again = Command::new(lab_binary())
        .args(["down", "--work-dir"])
        .arg(dir.path())
        .output()
        .expect("down");
    assert!(again.status.success(), "down twice: {again:?}");
}
