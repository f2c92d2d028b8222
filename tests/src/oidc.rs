//! The test identity provider: a real OpenID Connect provider (panva `oidc-provider`, in
//! `tests/oidc-idp/`) on loopback, standing in for the central Keycloak.
//!
//! Each [`OidcProvider`] is its own Node process on a free port with its own signing keys, with the
//! issuer in Keycloak's URL layout (`http://127.0.0.1:<port>/realms/scs-edge`), so the region talks
//! to the same paths it will in production. Users, clients and audiences are in
//! `tests/oidc-idp/idp-config.json` (and its README); `POST {issuer}/test/mint` signs arbitrary claims
//! for negative tests.

use crate::{free_port, scratch_dir, wait};
use serde_json::Value;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The `aud` of tokens for the region's API (resource `urn:scs-edge:region`, the default resource).
pub const AUDIENCE: &str = "scs-edge-region";
/// The group alice is in and bob is not (Keycloak full group path).
pub const OPERATOR_GROUP: &str = "/scs-edge/operators";
/// The resource whose tokens carry another audience (`other-service`).
pub const OTHER_RESOURCE: &str = "urn:scs-edge:other";
/// The resource whose tokens are signed with ES256 (audience [`AUDIENCE`]).
pub const ES256_RESOURCE: &str = "urn:scs-edge:region-es256";
/// The client for the password grant (Keycloak's "direct access grants").
pub const CLI_CLIENT: (&str, &str) = ("scs-edge-cli", "scs-edge-cli-secret");
/// The dashboard's authorization-code client. Its redirect URIs are `http(s)://127.0.0.1|localhost`
/// `/oidc/callback` on any port; post-logout redirects go to `/` on any loopback port.
pub const DASHBOARD_CLIENT: (&str, &str) = ("scs-edge-dashboard", "scs-edge-dashboard-secret");

/// Additions to `idp-config.json` for one test.
#[derive(Debug, Clone, Default)]
pub struct OidcOptions {
    /// Clients appended to the configured ones (oidc-provider client metadata, plus our `groups`,
    /// `claims` and `loopback_any_port`).
    pub extra_clients: Vec<Value>,
    /// Users appended: `{"sub", "username", "password", "groups", "claims"}`.
    pub extra_users: Vec<Value>,
}

/// A running test identity provider; killed on drop.
pub struct OidcProvider {
    child: Child,
    issuer: String,
    http: reqwest::blocking::Client,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl OidcProvider {
    /// Installs the provider's packages if needed, starts it on a free port and waits until its
    /// discovery document answers. Panics with the provider's log if it exits or does not answer.
    pub fn start(options: OidcOptions) -> Self {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = crate::npm::installed("oidc-idp");

        let scratch = scratch_dir("oidc-idp");
        let mut config: Value = serde_json::from_slice(
            &std::fs::read(dir.join("idp-config.json")).expect("read idp-config.json"),
        )
        .expect("idp-config.json is JSON");
        for (key, extra) in [
            ("clients", options.extra_clients),
            ("users", options.extra_users),
        ] {
            config[key]
                .as_array_mut()
                .expect("idp-config.json lists")
                .extend(extra);
        }
        let config_path = scratch.path().join("idp-config.json");
        std::fs::write(&config_path, config.to_string()).expect("write idp config");

        let port = free_port();
        let issuer = format!("http://127.0.0.1:{port}/realms/scs-edge");
        let log = scratch.path().join("idp.log");
        let log_file = File::create(&log).expect("create idp log");
        let child = Command::new("node")
            .arg(dir.join("idp.mjs"))
            .current_dir(&dir)
            .env("PORT", port.to_string())
            .env("ISSUER", &issuer)
            .env("IDP_CONFIG", &config_path)
            .env("KEYS_FILE", scratch.path().join("jwks.json"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log handle"))
            .stderr(log_file)
            .spawn()
            .expect("start node (Node.js ≥ 20.18 is installed by scripts/install-deps.sh)");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        let mut provider = Self {
            child,
            issuer,
            http,
            log,
            _dir: scratch,
        };
        provider.wait_for_discovery();
        provider
    }

    fn wait_for_discovery(&mut self) {
        let url = format!("{}/.well-known/openid-configuration", self.issuer);
        let probe = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        let child = &mut self.child;
        let outcome = wait::within(Duration::from_secs(30), || {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(Err(format!("exited with {status}")));
            }
            probe
                .get(&url)
                .send()
                .ok()
                .filter(|response| response.status().is_success())
                .map(|_| Ok(()))
        });
        match outcome {
            Some(Ok(())) => {}
            Some(Err(exit)) => panic!("test IdP {exit}; its log:\n{}", self.log()),
            None => panic!(
                "test IdP did not answer {url} within 30 s; its log:\n{}",
                self.log()
            ),
        }
    }

    /// The issuer URL, as in the tokens' `iss` (no trailing slash).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The token endpoint (Keycloak's path).
    pub fn token_endpoint(&self) -> String {
        format!("{}/protocol/openid-connect/token", self.issuer)
    }

    /// An access token for `user` by the password grant on [`CLI_CLIENT`], for the region API
    /// (audience [`AUDIENCE`], RS256).
    pub fn password_token(&self, user: &str, password: &str) -> String {
        self.password_token_for(user, password, "urn:scs-edge:region")
    }

    /// Like [`Self::password_token`], for another resource ([`OTHER_RESOURCE`], [`ES256_RESOURCE`]).
    pub fn password_token_for(&self, user: &str, password: &str, resource: &str) -> String {
        let response = self
            .http
            .post(self.token_endpoint())
            .basic_auth(CLI_CLIENT.0, Some(CLI_CLIENT.1))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form_body(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", password),
                ("resource", resource),
            ]))
            .send()
            .expect("token request");
        access_token(response, "password grant")
    }

    /// alice's access token for the region API, signed with the provider's ES256 key.
    pub fn alg_es256_token(&self) -> String {
        self.password_token_for("alice", "alice-pw", ES256_RESOURCE)
    }

    /// A token signed by the provider's current key (or, with `"untrusted": true`, a throw-away key
    /// under the same kid) over arbitrary claims: `{"claims": {..overrides, null deletes..},
    /// "ttl": -60, "alg": "ES256", "untrusted": true}`. Defaults are valid claims for [`AUDIENCE`]
    /// with `sub: minted` and no groups.
    pub fn mint(&self, request: &Value) -> String {
        let response = self
            .http
            .post(format!("{}/test/mint", self.issuer))
            .json(request)
            .send()
            .expect("mint request");
        access_token(response, "mint")
    }

    /// The provider's output so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// `application/x-www-form-urlencoded`, by the URL parser's own query serializer (reqwest's `form`
/// is a feature this workspace does not enable for the tests).
fn form_body(pairs: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://form.invalid/").expect("static URL");
    url.query_pairs_mut().extend_pairs(pairs);
    url.query().unwrap_or_default().to_owned()
}

fn access_token(response: reqwest::blocking::Response, what: &str) -> String {
    let status = response.status();
    let body: Value = response.json().unwrap_or(Value::Null);
    assert!(status.is_success(), "{what}: HTTP {status}: {body}");
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{what}: no access_token in {body}"))
        .to_owned()
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
