//! An edge site as OpenStack clients see it: the agent binary with its HTTPS API over a real OVS/OVN
//! stack, bootstrapped identity, and the pinned python-openstackclient and openstacksdk (installed
//! by `scripts/install-deps.sh` into `/opt/scs-edge-clients`) driving it through a `clouds.yaml`.
//!
//! Clouds: `admin` (password, project `admin`), `member` (application credential of `alice`, member
//! of `demo`), `member-password` (alice's password), `reader` (`bob`, reader of `demo`) and
//! `outsider` (`carol`, member of project `other`).

use crate::RunLock;
use crate::agent::{AgentOptions, AgentProcess};
use crate::ovn::{Netns, OvnStack};
use crate::site::{PHYSNET, PROVIDER_BRIDGE};
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where `install-deps.sh` puts the clients.
pub const CLIENTS: &str = "/opt/scs-edge-clients";

/// Passwords of the seeded users (test-only secrets).
const ADMIN_PASSWORD: &str = "admin-secret-for-tests";
const USER_PASSWORD: &str = "user-secret-for-tests";

/// What a client run printed.
#[derive(Debug)]
pub struct ClientOutput {
    /// Exit code.
    pub code: i32,
    /// stdout parsed as JSON (null when empty or not JSON).
    pub json: Value,
    /// stdout text.
    pub stdout: String,
    /// stderr text.
    pub stderr: String,
}

/// A site with an API and clients configured for it.
pub struct Cloud {
    /// The agent process.
    pub agent: AgentProcess,
    /// A host on the physical (external) network.
    pub external: Netns,
    clouds_yaml: PathBuf,
    /// The OVS/OVN stack (in the root namespace: libvirt's taps live there).
    pub stack: OvnStack,
    _root: RunLock,
}

impl Cloud {
    /// Starts the stack and the agent, bootstraps identity and seeds projects, users and clouds.
    pub fn start(label: &str) -> Self {
        assert!(
            Path::new(CLIENTS).join("bin/openstack").exists(),
            "{CLIENTS} missing: run scripts/install-deps.sh"
        );
        let root = RunLock::acquire("ovn-root-namespace");
        let stack = OvnStack::start(label, false);
        let external = Netns::new(&stack, "ext", "02:00:00:00:00:fe");
        let extra = format!(
            "\n[network]\nenabled = true\nnorthbound = \"{}\"\nsouthbound = \"{}\"\novs_database = \"{}\"\ndatapath_type = \"netdev\"\n\n[network.physical_networks.{PHYSNET}]\nbridge = \"{PROVIDER_BRIDGE}\"\nmtu = 1500\nuplinks = [\"{}\"]\n",
            stack.northbound(),
            stack.southbound(),
            stack.switch(),
            external.outside,
        );
        let agent = AgentProcess::start(
            label,
            AgentOptions {
                extra,
                ..AgentOptions::default()
            },
        );
        stack.wait_integration_bridge("br-int");
        let password_file = agent.state_dir.join("admin-password");
        std::fs::write(&password_file, ADMIN_PASSWORD).expect("password file");
        let out = agent.cli(&[
            "identity",
            "bootstrap",
            "--admin-password-file",
            password_file.to_str().expect("utf-8 path"),
        ]);
        assert_eq!(out.code, 0, "bootstrap failed: {}", out.stderr);
        let clouds_yaml = agent.state_dir.join("clouds.yaml");
        let mut cloud = Self {
            agent,
            external,
            clouds_yaml,
            stack,
            _root: root,
        };
        cloud.write_clouds(None);
        cloud.seed();
        cloud
    }

    fn auth_url(&self) -> String {
        format!("https://127.0.0.1:{}/identity/v3", self.agent.port)
    }

    fn password_cloud(&self, user: &str, password: &str, project: &str) -> String {
        format!(
            "    auth:\n      auth_url: {}\n      username: {user}\n      password: {password}\n      project_name: {project}\n      user_domain_name: Default\n      project_domain_name: Default\n    region_name: RegionOne\n    identity_api_version: 3\n    cacert: {}\n",
            self.auth_url(),
            self.cacert().display()
        )
    }

    /// The agent's certificate, which the clients verify against.
    pub fn cacert(&self) -> PathBuf {
        self.agent.state_dir.join("tls/api.crt")
    }

    fn write_clouds(&self, app_credential: Option<(&str, &str)>) {
        let mut text = String::from("clouds:\n");
        text.push_str("  admin:\n");
        text.push_str(&self.password_cloud("admin", ADMIN_PASSWORD, "admin"));
        for (name, user, project) in [
            ("member-password", "alice", "demo"),
            ("reader", "bob", "demo"),
            ("outsider", "carol", "other"),
        ] {
            let _ = writeln!(text, "  {name}:");
            text.push_str(&self.password_cloud(user, USER_PASSWORD, project));
        }
        if let Some((id, secret)) = app_credential {
            let _ = write!(
                text,
                "  member:\n    auth_type: v3applicationcredential\n    auth:\n      auth_url: {}\n      application_credential_id: {id}\n      application_credential_secret: {secret}\n    region_name: RegionOne\n    identity_api_version: 3\n    cacert: {}\n",
                self.auth_url(),
                self.cacert().display()
            );
        }
        std::fs::write(&self.clouds_yaml, text).expect("write clouds.yaml");
    }

    /// Projects, users and roles through the identity API as the admin would make them, then an
    /// application credential for alice made by alice.
    fn seed(&mut self) {
        for project in ["demo", "other"] {
            self.openstack_json(
                "admin",
                &["project", "create", "--domain", "default", project],
            );
        }
        for (user, project, role) in [
            ("alice", "demo", "member"),
            ("bob", "demo", "reader"),
            ("carol", "other", "member"),
        ] {
            self.openstack_json(
                "admin",
                &[
                    "user",
                    "create",
                    "--domain",
                    "default",
                    "--password",
                    USER_PASSWORD,
                    user,
                ],
            );
            self.openstack_ok(
                "admin",
                &["role", "add", "--project", project, "--user", user, role],
            );
        }
        let credential = self.openstack_json(
            "member-password",
            &["application", "credential", "create", "scs-edge-tests"],
        );
        let (id, secret) = (field(&credential, "id"), field(&credential, "secret"));
        self.write_clouds(Some((&id, &secret)));
    }

    /// Runs `openstack --os-cloud <cloud> <args>` as given.
    pub fn openstack(&self, cloud: &str, args: &[&str]) -> ClientOutput {
        let mut command = Command::new(Path::new(CLIENTS).join("bin/openstack"));
        command
            .env("OS_CLIENT_CONFIG_FILE", &self.clouds_yaml)
            .env_remove("OS_CLOUD")
            .arg("--os-cloud")
            .arg(cloud)
            .args(args);
        run(command)
    }

    /// Runs a command that prints, with `-f json`, asserting success; returns the parsed output.
    pub fn openstack_json(&self, cloud: &str, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-f", "json"]);
        self.openstack_ok(cloud, &all)
    }

    /// Like [`Cloud::openstack`], asserting success.
    pub fn openstack_ok(&self, cloud: &str, args: &[&str]) -> Value {
        let out = self.openstack(cloud, args);
        assert_eq!(
            out.code,
            0,
            "openstack --os-cloud {cloud} {}\nstdout: {}\nstderr: {}\nagent log:\n{}",
            args.join(" "),
            out.stdout,
            out.stderr,
            self.agent.log_tail()
        );
        out.json
    }

    /// Runs a Python snippet with openstacksdk; `conn` is connected to `cloud`. Whatever it prints
    /// as JSON on its last line is returned.
    pub fn sdk(&self, cloud: &str, body: &str) -> ClientOutput {
        let script =
            format!("import json, openstack\nconn = openstack.connect(cloud={cloud:?})\n{body}\n");
        let mut command = Command::new(Path::new(CLIENTS).join("bin/python"));
        command
            .env("OS_CLIENT_CONFIG_FILE", &self.clouds_yaml)
            .arg("-c")
            .arg(script);
        run(command)
    }

    /// Path of the clouds.yaml the clients use.
    pub fn clouds_yaml(&self) -> &Path {
        &self.clouds_yaml
    }
}

/// A string field of a client's `-f json` output. The client's column names vary between commands and
/// versions (`id`, `ID`, `Project ID`, `project_id`), so `name` matches case- and separator-blind.
pub fn field(output: &Value, name: &str) -> String {
    let normal = |key: &str| key.to_ascii_lowercase().replace(' ', "_");
    output
        .as_object()
        .and_then(|object| object.iter().find(|(key, _)| normal(key) == normal(name)))
        .and_then(|(_, value)| value.as_str())
        .unwrap_or_else(|| panic!("{name} missing in {output}"))
        .to_owned()
}

fn run(mut command: Command) -> ClientOutput {
    let output = command.output().expect("run client");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    // The whole output (`-f json`), else its last line (what an SDK snippet printed last).
    let json = serde_json::from_str(&stdout)
        .ok()
        .or_else(|| {
            stdout
                .lines()
                .last()
                .and_then(|l| serde_json::from_str(l).ok())
        })
        .unwrap_or(Value::Null);
    ClientOutput {
        code: output.status.code().unwrap_or(-1),
        json,
        stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
