//! The QEMU lab: the SCS Edge node image booted as a whole machine.
//!
//! A lab node is what an edge server is, in a QEMU process: UEFI firmware (OVMF), the image as its
//! disk (a qcow2 overlay, so the image file itself is never written and the disk is larger than the
//! image, as a real disk is), a serial console on a Unix socket, a management NIC with a port forward
//! to the agent's API, a provider NIC, and an xHCI controller into which a "USB stick" can be plugged
//! through QMP. KVM is used only when the agent's own probe shows it runs guest code; otherwise TCG.
//!
//! `scs-edge-lab` (`make lab`), the image tests (tests/tests/image.rs) and the image benchmark all
//! drive it. [`region`] runs the local region the lab site joins (and the region tests run against);
//! [`wan`] puts each site of a many-site lab behind its own impairable link.

pub mod region;
pub mod wan;

pub use region::{RegionOptions, RegionProcess};

use scs_edge_agent::compute::kvm_probe::{AcceleratorProbe, DevKvmProbe, KvmVerdict};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Firmware the lab boots with (Debian's `ovmf`).
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// Where QEMU's fw_cfg carries a site configuration (read by `scs-edge-agent provision`).
pub const FW_CFG_SITE: &str = "opt/org.scs-edge/site.toml";

/// PCI slot of the management NIC; `hardware-profiles/qemu-q35.toml` names the same address.
pub const MANAGEMENT_NIC_ADDR: u8 = 0x02;
/// PCI slot of the provider uplink NIC (the profile's `physnet1`).
pub const PROVIDER_NIC_ADDR: u8 = 0x03;

/// A lab failure, with what was being done.
#[derive(Debug)]
pub struct LabError(pub String);

impl std::fmt::Display for LabError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LabError {}

fn fail(context: &str, err: impl std::fmt::Display) -> LabError {
    LabError(format!("{context}: {err}"))
}

/// How the site configuration reaches the node on first boot.
#[derive(Debug, Clone)]
pub enum SiteDelivery {
    /// None: the node must wait and say so.
    Nothing,
    /// A `site.toml` over QEMU fw_cfg.
    FwCfg(String),
}

/// What to boot and how.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// The raw disk image `make image` wrote.
    pub image: PathBuf,
    /// Overlay disk, firmware variables, sockets and the console log go here.
    pub work_dir: PathBuf,
    /// Size of the node's disk; the data partition grows into it on first boot.
    pub disk_gib: u32,
    /// Guest RAM: the agent, libvirt and OVN plus room for a tiny guest.
    pub memory_mib: u32,
    /// vCPUs (TCG runs one host thread per vCPU).
    pub cpus: u32,
    /// Host port forwarded to the agent's HTTPS port 443.
    pub api_port: u16,
    /// Address the port forward listens on: the host's loopback for a lone site, the site's end of
    /// its WAN link for a site in a namespace (so its API is behind the impaired link too).
    pub api_address: String,
    /// The network namespace QEMU runs in: its user networking then goes out over that
    /// namespace's link. `None`: the host's own.
    pub netns: Option<String>,
    /// How the site configuration reaches the node.
    pub site: SiteDelivery,
    /// Log root in on the serial console without a password (a systemd credential passed over
    /// SMBIOS; the image itself has no password and no autologin).
    pub console_autologin: bool,
}

impl LabOptions {
    /// The defaults of `make lab` and the tests: 20 GiB disk, 3 GiB RAM, 2 vCPUs.
    pub fn new(image: PathBuf, work_dir: PathBuf, api_port: u16, site: SiteDelivery) -> Self {
        Self {
            image,
            work_dir,
            disk_gib: 20,
            memory_mib: 3072,
            cpus: 2,
            api_port,
            api_address: "127.0.0.1".into(),
            netns: None,
            site,
            console_autologin: true,
        }
    }
}

/// Picks the accelerator: KVM only when the agent's probe ran guest code through it.
pub fn accelerator() -> (&'static str, String) {
    match DevKvmProbe::default().probe() {
        KvmVerdict::Usable => ("kvm", "probe ran guest code under KVM".into()),
        KvmVerdict::Unusable(reason) => ("tcg", reason),
    }
}

/// A booted (or booting) lab node; dropping it kills QEMU.
pub struct LabNode {
    child: Child,
    /// The serial console.
    pub console: Console,
    qmp: PathBuf,
    /// Host port of the agent's API.
    pub api_port: u16,
    api_address: String,
    /// When QEMU was started.
    pub started: Instant,
    /// `kvm` or `tcg`, and why.
    pub accel: (&'static str, String),
    work_dir: PathBuf,
}

impl LabNode {
    /// Starts QEMU on a new disk (an overlay of the image) and connects to its serial console.
    pub fn boot(options: &LabOptions) -> Result<Self, LabError> {
        let work = &options.work_dir;
        std::fs::create_dir_all(work).map_err(|e| fail("creating the lab directory", e))?;
        let disk = work.join("disk.qcow2");
        let vars = work.join("ovmf-vars.fd");
        stop_qemu(work);
        // A new node: its console log starts empty (power cycles append to it).
        for stale in [&disk, &work.join("console.log")] {
            let _ = std::fs::remove_file(stale);
        }
        std::fs::copy(OVMF_VARS, &vars).map_err(|e| fail("copying the OVMF variable store", e))?;
        let image = std::fs::canonicalize(&options.image)
            .map_err(|e| fail(&format!("image {}", options.image.display()), e))?;
        run(Command::new("qemu-img").args([
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            &image.to_string_lossy(),
            &disk.to_string_lossy(),
            &format!("{}G", options.disk_gib),
        ]))?;

        Self::start(options)
    }

    /// Pulls the power and switches the node on again: QEMU is killed — nothing in the guest gets
    /// to flush or finish — and started anew on the same disk and firmware variables.
    pub fn power_cycle(&mut self, options: &LabOptions) -> Result<(), LabError> {
        self.kill();
        *self = Self::start(options)?;
        Ok(())
    }

    /// Starts QEMU on the disk and firmware variables already in the work directory.
    fn start(options: &LabOptions) -> Result<Self, LabError> {
        let work = &options.work_dir;
        let disk = work.join("disk.qcow2");
        let vars = work.join("ovmf-vars.fd");
        let console_sock = work.join("console.sock");
        let qmp = work.join("qmp.sock");
        for stale in [&console_sock, &qmp] {
            let _ = std::fs::remove_file(stale);
        }
        let accel = accelerator();
        let mut args: Vec<String> = vec![
            "-name".into(),
            "scs-edge-lab".into(),
            "-pidfile".into(),
            work.join("qemu.pid").display().to_string(),
            "-machine".into(),
            "q35,smm=off".into(),
            "-m".into(),
            options.memory_mib.to_string(),
            "-smp".into(),
            options.cpus.to_string(),
            "-nodefaults".into(),
            "-display".into(),
            "none".into(),
            "-no-user-config".into(),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}"),
            "-drive".into(),
            format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            "-drive".into(),
            format!(
                "if=none,id=disk0,format=qcow2,file={},discard=unmap",
                disk.display()
            ),
            "-device".into(),
            "virtio-blk-pci,drive=disk0,bootindex=1".into(),
            "-netdev".into(),
            format!(
                "user,id=mgmt,hostfwd=tcp:{}:{}-:443",
                options.api_address, options.api_port
            ),
            "-device".into(),
            format!("virtio-net-pci,netdev=mgmt,addr={MANAGEMENT_NIC_ADDR:#04x}"),
            "-netdev".into(),
            "user,id=provider,net=192.0.2.0/24,restrict=on".into(),
            "-device".into(),
            format!("virtio-net-pci,netdev=provider,addr={PROVIDER_NIC_ADDR:#04x}"),
            "-device".into(),
            "virtio-rng-pci".into(),
            "-device".into(),
            "qemu-xhci,id=xhci".into(),
            "-chardev".into(),
            format!(
                "socket,id=ser0,path={},server=on,wait=off,logfile={},logappend=on",
                console_sock.display(),
                work.join("console.log").display()
            ),
            "-serial".into(),
            "chardev:ser0".into(),
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp.display()),
        ];
        match accel.0 {
            "kvm" => args.extend(["-accel".into(), "kvm".into(), "-cpu".into(), "host".into()]),
            _ => args.extend(["-accel".into(), "tcg".into(), "-cpu".into(), "max".into()]),
        }
        if let SiteDelivery::FwCfg(site_toml) = &options.site {
            let file = work.join("site.toml");
            std::fs::write(&file, site_toml).map_err(|e| fail("writing site.toml", e))?;
            args.extend([
                "-fw_cfg".into(),
                format!("name={FW_CFG_SITE},file={}", file.display()),
            ]);
        }
        if options.console_autologin {
            for credential in [
                "tty.serial.ttyS0.agetty.autologin=root",
                "tty.serial.ttyS0.login.noauth=yes",
            ] {
                args.extend([
                    "-smbios".into(),
                    format!("type=11,value=io.systemd.credential:{credential}"),
                ]);
            }
        }
        let qemu_log = std::fs::File::create(work.join("qemu.log"))
            .map_err(|e| fail("creating qemu.log", e))?;
        let started = Instant::now();
        let mut command = match &options.netns {
            Some(netns) => {
                // `ip netns exec` execs QEMU in place: the child's pid is QEMU's.
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, "qemu-system-x86_64"]);
                command
            }
            None => Command::new("qemu-system-x86_64"),
        };
        let child = command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(qemu_log)
            .spawn()
            .map_err(|e| fail("starting qemu-system-x86_64", e))?;
        let mut node = Self {
            child,
            console: Console::placeholder(),
            qmp,
            api_port: options.api_port,
            api_address: options.api_address.clone(),
            started,
            accel,
            work_dir: work.clone(),
        };
        let stream = node.connect(&console_sock)?;
        node.console = Console::attach(stream)?;
        Ok(node)
    }

    fn connect(&mut self, socket: &Path) -> Result<UnixStream, LabError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(stream) = UnixStream::connect(socket) {
                return Ok(stream);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LabError(format!(
                    "qemu exited ({status}) before its console came up: {}",
                    std::fs::read_to_string(self.work_dir.join("qemu.log")).unwrap_or_default()
                )));
            }
            if Instant::now() > deadline {
                return Err(LabError(format!(
                    "no console socket at {}",
                    socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether QEMU still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Plugs a USB stick (a raw disk image) into the node's xHCI controller, as an operator would.
    pub fn plug_usb_stick(&self, id: &str, image: &Path) -> Result<(), LabError> {
        let mut qmp = Qmp::connect(&self.qmp)?;
        qmp.execute(&serde_json::json!({
            "execute": "blockdev-add",
            "arguments": {
                "node-name": format!("{id}-file"),
                "driver": "raw",
                "read-only": true,
                "file": { "driver": "file", "filename": image, "read-only": true },
            }
        }))?;
        qmp.execute(&serde_json::json!({
            "execute": "device_add",
            "arguments": {
                "driver": "usb-storage",
                "id": id,
                "bus": "xhci.0",
                "drive": format!("{id}-file"),
                "removable": true,
            }
        }))?;
        Ok(())
    }

    /// Pulls a stick plugged with [`LabNode::plug_usb_stick`] out again.
    pub fn unplug_usb_stick(&self, id: &str) -> Result<(), LabError> {
        let mut qmp = Qmp::connect(&self.qmp)?;
        qmp.execute(&serde_json::json!({ "execute": "device_del", "arguments": { "id": id } }))?;
        qmp.wait_event("DEVICE_DELETED", Duration::from_secs(30))?;
        qmp.execute(&serde_json::json!({
            "execute": "blockdev-del", "arguments": { "node-name": format!("{id}-file") }
        }))?;
        Ok(())
    }

    /// Waits until systemd reports the agent active — it is `Type=notify`, so active means READY=1
    /// was sent — and returns the time since QEMU started. A failed agent, or none within `timeout`,
    /// is an error carrying the provisioning and agent journal.
    pub fn wait_agent_ready(&self, timeout: Duration) -> Result<Duration, LabError> {
        let outcome = poll_until(timeout, || {
            let (_, state) = self
                .console
                .shell(
                    "systemctl is-active scs-edge-agent.service",
                    Duration::from_mins(2),
                )
                .ok()?;
            match state.trim() {
                "active" => Some(Ok(self.started.elapsed())),
                "failed" => Some(Err("the agent failed")),
                _ => None,
            }
        });
        match outcome {
            Some(Ok(ready)) => Ok(ready),
            failure => {
                let journal = self
                    .console
                    .shell(
                        "journalctl -b --no-pager -u scs-edge-provision -u scs-edge-agent | tail -n 40",
                        Duration::from_mins(2),
                    )
                    .map(|(_, out)| out)
                    .unwrap_or_default();
                let what = match failure {
                    Some(Err(what)) => what.to_owned(),
                    _ => format!("the agent did not become active (READY) within {timeout:?}"),
                };
                Err(LabError(format!("{what}:\n{journal}")))
            }
        }
    }

    /// The agent's API base URL on the host.
    pub fn api_url(&self) -> String {
        format!("https://{}:{}", self.api_address, self.api_port)
    }

    /// The console log file (everything the node printed).
    pub fn console_log(&self) -> PathBuf {
        self.work_dir.join("console.log")
    }

    /// Powers the node off (QEMU is killed; the overlay disk stays for inspection).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LabNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A lab whose runner was killed leaves its QEMU behind (holding the port forward and the disk):
/// the next boot in the same directory, and `scs-edge-lab down`, stop it. Only a process whose
/// command line names this directory's pid file is touched.
pub fn stop_qemu(work: &Path) {
    let pidfile = work.join("qemu.pid");
    let Some(pid) = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
    else {
        return;
    };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains(&*pidfile.to_string_lossy()) {
        let _ = Command::new("kill").arg(pid.to_string()).status();
        poll_until(Duration::from_secs(10), || process_gone(pid).then_some(()));
    }
    let _ = std::fs::remove_file(pidfile);
}

/// Whether process `pid` has exited: no longer there, or a zombie its parent has yet to reap (the
/// runner's own QEMU when the runner tears down on a signal).
pub fn process_gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |stat| {
        // The state follows the command name, which is in parentheses and may hold spaces.
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
    })
}

fn run(command: &mut Command) -> Result<(), LabError> {
    let output = command
        .output()
        .map_err(|e| fail(&format!("running {command:?}"), e))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(LabError(format!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )))
    }
}

/// Makes a FAT-formatted "USB stick" labelled `SCSEDGE` holding one `site.toml`.
pub fn make_site_stick(path: &Path, site_toml: &str) -> Result<(), LabError> {
    let _ = std::fs::remove_file(path);
    run(Command::new("mkfs.vfat")
        .args(["-n", "SCSEDGE", "-C"])
        .arg(path)
        .arg("4096"))?;
    let file = path.with_extension("site.toml");
    std::fs::write(&file, site_toml).map_err(|e| fail("writing site.toml", e))?;
    run(Command::new("mcopy")
        .arg("-i")
        .arg(path)
        .arg(&file)
        .arg("::site.toml"))
}

/// A serial console: everything the node prints, kept in memory, and a way to type.
pub struct Console {
    seen: Arc<Mutex<Vec<u8>>>,
    input: Option<UnixStream>,
    next_marker: Mutex<u32>,
}

impl Console {
    fn placeholder() -> Self {
        Self {
            seen: Arc::default(),
            input: None,
            next_marker: Mutex::new(0),
        }
    }

    fn attach(stream: UnixStream) -> Result<Self, LabError> {
        let mut reader = stream
            .try_clone()
            .map_err(|e| fail("cloning the console socket", e))?;
        let seen: Arc<Mutex<Vec<u8>>> = Arc::default();
        let sink = Arc::clone(&seen);
        std::thread::Builder::new()
            .name("lab-console".into())
            .spawn(move || {
                let mut chunk = [0_u8; 8192];
                while let Ok(n) = reader.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    sink.lock()
                        .expect("console buffer")
                        .extend_from_slice(&chunk[..n]);
                }
            })
            .map_err(|e| fail("starting the console reader", e))?;
        Ok(Self {
            seen,
            input: Some(stream),
            next_marker: Mutex::new(0),
        })
    }

    /// Everything printed so far, with carriage returns removed.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().expect("console buffer")).replace('\r', "")
    }

    /// The last `lines` lines, for failure messages.
    pub fn tail(&self, lines: usize) -> String {
        let text = self.text();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Waits until `needle` has been printed (anywhere since boot); returns the time waited.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<Duration, LabError> {
        let started = Instant::now();
        poll_until(timeout, || self.text().contains(needle).then_some(()))
            .map(|()| started.elapsed())
            .ok_or_else(|| {
                LabError(format!(
                    "{needle:?} not printed within {timeout:?}; console tail:\n{}",
                    self.tail(40)
                ))
            })
    }

    /// How much has been printed so far: a position to wait from with [`Console::wait_for_since`].
    pub fn position(&self) -> usize {
        self.text().len()
    }

    /// Waits until `needle` is printed after `position` (text printed before it does not count:
    /// a second boot prints what the first did).
    pub fn wait_for_since(
        &self,
        position: usize,
        needle: &str,
        timeout: Duration,
    ) -> Result<Duration, LabError> {
        let started = Instant::now();
        poll_until(timeout, || {
            let text = self.text();
            text.get(position.min(text.len())..)?
                .contains(needle)
                .then_some(())
        })
        .map(|()| started.elapsed())
        .ok_or_else(|| {
            LabError(format!(
                "{needle:?} not printed within {timeout:?}; console tail:\n{}",
                self.tail(40)
            ))
        })
    }

    /// After the node rebooted, the next [`Console::shell`] prepares the new login shell again.
    pub fn new_session(&self) {
        *self.next_marker.lock().expect("marker") = 0;
    }

    /// Types a line.
    pub fn send(&self, line: &str) -> Result<(), LabError> {
        let mut input = self
            .input
            .as_ref()
            .ok_or_else(|| LabError("console not attached".into()))?;
        input
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| fail("typing on the console", e))
    }

    /// Runs a shell command on the logged-in console; returns its exit status and output. The
    /// markers are printed by arithmetic so the echoed command line never matches them. The command
    /// runs in the login shell itself: wrap anything that may `exit` in `( … )`.
    pub fn shell(&self, command: &str, timeout: Duration) -> Result<(i32, String), LabError> {
        let marker = {
            let mut next = self.next_marker.lock().expect("marker");
            *next += 1;
            1000 + *next
        };
        // The first command also makes the session script-friendly: no pager (systemctl pipes
        // long lines into less), no colours.
        let command = if marker == 1001 {
            format!("export SYSTEMD_PAGER=cat PAGER=cat SYSTEMD_COLORS=0; {command}")
        } else {
            command.to_owned()
        };
        let begin = format!("<<BEGIN-{marker}>>");
        let end = format!("<<END-{marker}:");
        let start_len = self.text().len();
        self.send(&format!(
            "echo \"<<BEGIN-$(({marker}))>>\"; {command}; echo \"<<END-$(({marker})):$?>>\""
        ))?;
        let (status, output) = poll_until(timeout, || {
            let text = self.text();
            let fresh = &text[start_len.min(text.len())..];
            let from = fresh.find(&format!("{begin}\n"))? + begin.len() + 1;
            let to = fresh[from..].find(&end)? + from;
            let rest = &fresh[to + end.len()..];
            let status = rest[..rest.find(">>")?].parse::<i32>().ok()?;
            Some((status, fresh[from..to].to_string()))
        })
        .ok_or_else(|| {
            LabError(format!(
                "`{command}` did not finish within {timeout:?}; console tail:\n{}",
                self.tail(40)
            ))
        })?;
        Ok((status, output))
    }
}

/// A QMP connection (QEMU's JSON control socket).
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn connect(path: &Path) -> Result<Self, LabError> {
        let stream = UnixStream::connect(path).map_err(|e| fail("connecting to QMP", e))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| fail("QMP timeout", e))?;
        let writer = stream.try_clone().map_err(|e| fail("QMP socket", e))?;
        let mut qmp = Self {
            reader: BufReader::new(stream),
            writer,
        };
        qmp.read_message()?; // greeting
        qmp.execute(&serde_json::json!({ "execute": "qmp_capabilities" }))?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<serde_json::Value, LabError> {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .map_err(|e| fail("reading QMP", e))?;
        serde_json::from_str(&line).map_err(|e| fail(&format!("QMP message {line:?}"), e))
    }

    fn execute(&mut self, command: &serde_json::Value) -> Result<serde_json::Value, LabError> {
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|e| fail("writing QMP", e))?;
        loop {
            let message = self.read_message()?;
            if let Some(ok) = message.get("return") {
                return Ok(ok.clone());
            }
            if let Some(err) = message.get("error") {
                return Err(LabError(format!("QMP {command}: {err}")));
            }
        }
    }

    fn wait_event(&mut self, event: &str, timeout: Duration) -> Result<(), LabError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let message = self.read_message()?;
            if message.get("event").and_then(|e| e.as_str()) == Some(event) {
                return Ok(());
            }
        }
        Err(LabError(format!("no QMP event {event} within {timeout:?}")))
    }
}

/// Polls `probe` (every 50 ms) until it yields a value, or gives `None` once `timeout` passed.
/// Watching an observable condition is the synchronisation; the interval only bounds how soon we
/// notice.
pub fn poll_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let started = Instant::now();
    loop {
        if let Some(value) = probe() {
            return Some(value);
        }
        if started.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The workspace's target directory (`$CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(
        || PathBuf::from("target"),
        |workspace| workspace.join("target"),
    )
}

/// The image `make image` builds for this workspace's version.
pub fn default_image() -> PathBuf {
    let version = env!("CARGO_PKG_VERSION");
    target_dir()
        .join("image")
        .join(format!("scs-edge_{version}.raw"))
}

/// A free TCP port on loopback for a port forward.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}
