//! Nova routes through the whole router: policy per persona, bodies, microversions, error shapes.
//! The compute domain runs over fakes (no reconcile loop: servers stay BUILD), which is what these
//! tests are about — the API path; real guests are in `tests/tests/openstack_api.rs`.

use crate::api::test_state::{Answer, TestApi};
use crate::identity::{Actor, NewProject, NewUser, Target};
use crate::image::NewImage;
use crate::image::format::DiskFormat;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "persona-secret";
const V261: (&str, &str) = ("openstack-api-version", "compute 2.61");

/// A site with project `demo` (member `alice`, reader `bob`), project `other` (member `carol`) and a
/// public image.
struct Site {
    api: TestApi,
    image: String,
}

impl Site {
    fn new() -> Self {
        let api = TestApi::new();
        let identity = &api.state.identity;
        for project in ["demo", "other"] {
            identity
                .create_project(NewProject {
                    name: project.into(),
                    domain_id: "default".into(),
                    description: String::new(),
                    enabled: true,
                })
                .expect("project");
        }
        let project_id = |name: &str| {
            identity
                .list_projects(&crate::identity::ProjectFilter {
                    name: Some(name.into()),
                    ..Default::default()
                })
                .expect("projects")[0]
                .id
                .clone()
        };
        for (user, project, role) in [
            ("alice", "demo", "member"),
            ("bob", "demo", "reader"),
            ("carol", "other", "member"),
        ] {
            let created = identity
                .create_user(NewUser {
                    name: user.into(),
                    domain_id: "default".into(),
                    password: Some(PASSWORD.into()),
                    enabled: true,
                    ..NewUser::default()
                })
                .expect("user");
            identity
                .grant(
                    &Actor::User(created.id),
                    &Target::Project(project_id(project)),
                    &api.boot.roles[role],
                )
                .expect("grant");
        }
        let image = api
            .state
            .images
            .import(
                NewImage {
                    name: "guest".into(),
                    disk_format: Some(DiskFormat::Raw),
                    ..NewImage::default()
                },
                &mut &b"bootable bytes"[..],
            )
            .expect("image");
        api.state
            .compute
            .create_flavor(crate::compute::NewFlavor {
                id: Some("tiny".into()),
                name: "tiny".into(),
                description: None,
                vcpus: 1,
                ram_mb: 128,
                disk_gb: 1,
                ephemeral_gb: 0,
                swap_mb: 0,
                is_public: true,
                extra_specs: std::collections::BTreeMap::from([(
                    "scs:cpu-type".into(),
                    "shared-core".into(),
                )]),
            })
            .expect("flavor");
        Self {
            api,
            image: image.id.to_string(),
        }
    }

    async fn token(&self, user: &str, project: &str) -> String {
        self.api
            .token(
                user,
                "default",
                PASSWORD,
                json!({"project": {"name": project, "domain": {"id": "default"}}}),
            )
            .await
    }

    async fn send(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Answer {
        let headers = [("x-auth-token", token), V261];
        self.api
            .call(
                method,
                path,
                &headers,
                body.map(|b| b.to_string().into_bytes()),
            )
            .await
    }

    async fn create_server(&self, token: &str, name: &str) -> Answer {
        let body = json!({"server": {"name": name, "imageRef": self.image, "flavorRef": "tiny", "networks": "none"}});
        self.send(Method::POST, "/compute/v2.1/servers", token, Some(body))
            .await
    }

    fn server_rows(&self) -> i64 {
        self.api
            .store
            .read(|tx| {
                tx.query_row("SELECT count(*) FROM servers", [], |r| r.get(0))
                    .map_err(crate::store::StoreError::Query)
            })
            .expect("count")
    }
}

#[tokio::test]
async fn a_member_creates_lists_acts_on_and_deletes_its_server() {
    let site = Site::new();
    let alice = site.token("alice", "demo").await;
    let created = site.create_server(&alice, "web-1").await;
    assert_eq!(created.status, StatusCode::ACCEPTED, "{}", created.body);
    assert_eq!(created.headers["openstack-api-version"], "compute 2.61");
    let id = created.body["server"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(created.body["server"]["adminPass"].is_string());

    let detail = site
        .send(Method::GET, "/compute/v2.1/servers/detail", &alice, None)
        .await;
    assert_eq!(detail.status, StatusCode::OK);
    let server = &detail.body["servers"][0];
    assert_eq!(server["id"], id.as_str());
    assert_eq!(server["status"], "BUILD");
    assert_eq!(
        server["flavor"]["original_name"], "tiny",
        "2.47+: the flavor is embedded"
    );
    assert_eq!(
        server["flavor"]["extra_specs"]["scs:cpu-type"],
        "shared-core"
    );
    assert_eq!(server["OS-EXT-AZ:availability_zone"], "nova");
    assert!(
        server.get("OS-EXT-SRV-ATTR:host").is_none(),
        "admin-only attributes hidden"
    );

    let console = site
        .send(
            Method::POST,
            &format!("/compute/v2.1/servers/{id}/action"),
            &alice,
            Some(json!({"os-getConsoleOutput": {"length": 10}})),
        )
        .await;
    assert_eq!(console.status, StatusCode::OK);
    assert_eq!(console.body["output"], "");

    // Starting a server that is not stopped conflicts, in Nova's words.
    let start = site
        .send(
            Method::POST,
            &format!("/compute/v2.1/servers/{id}/action"),
            &alice,
            Some(json!({"os-start": null})),
        )
        .await;
    assert_eq!(start.status, StatusCode::CONFLICT, "{}", start.body);
    assert!(
        start.body["conflictingRequest"]["message"]
            .as_str()
            .expect("message")
            .contains("Cannot 'start'")
    );

    let deleted = site
        .send(
            Method::DELETE,
            &format!("/compute/v2.1/servers/{id}"),
            &alice,
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn other_projects_see_nothing_and_readers_change_nothing() {
    let site = Site::new();
    let alice = site.token("alice", "demo").await;
    let bob = site.token("bob", "demo").await;
    let carol = site.token("carol", "other").await;
    let id = site.create_server(&alice, "private").await.body["server"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let listed = site
        .send(Method::GET, "/compute/v2.1/servers", &carol, None)
        .await;
    assert_eq!(listed.body["servers"], json!([]));
    let shown = site
        .send(
            Method::GET,
            &format!("/compute/v2.1/servers/{id}"),
            &carol,
            None,
        )
        .await;
    assert_eq!(shown.status, StatusCode::NOT_FOUND);
    assert_eq!(shown.body["itemNotFound"]["code"], 404);
    let deleted = site
        .send(
            Method::DELETE,
            &format!("/compute/v2.1/servers/{id}"),
            &carol,
            None,
        )
        .await;
    assert_eq!(
        deleted.status,
        StatusCode::NOT_FOUND,
        "another project's server does not exist for it"
    );

    let shown = site
        .send(
            Method::GET,
            &format!("/compute/v2.1/servers/{id}"),
            &bob,
            None,
        )
        .await;
    assert_eq!(shown.status, StatusCode::OK, "a reader reads");
    let deleted = site
        .send(
            Method::DELETE,
            &format!("/compute/v2.1/servers/{id}"),
            &bob,
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::FORBIDDEN);
    assert_eq!(deleted.body["forbidden"]["code"], 403);
    let created = site.create_server(&bob, "not-allowed").await;
    assert_eq!(created.status, StatusCode::FORBIDDEN);
    let flavor = site
        .send(
            Method::POST,
            "/compute/v2.1/flavors",
            &alice,
            Some(json!({"flavor": {"name": "x", "ram": 1, "vcpus": 1, "disk": 0}})),
        )
        .await;
    assert_eq!(
        flavor.status,
        StatusCode::FORBIDDEN,
        "only admins make flavors"
    );
    assert_eq!(site.server_rows(), 1);
}

#[tokio::test]
async fn bad_requests_are_refused_and_create_nothing() {
    let site = Site::new();
    let alice = site.token("alice", "demo").await;
    let image = site.image.clone();
    let cases = [
        json!({"server": {"name": "a", "imageRef": image, "flavorRef": "nope", "networks": "none"}}),
        json!({"server": {"name": "a", "imageRef": "00000000-0000-0000-0000-000000000000", "flavorRef": "tiny", "networks": "none"}}),
        json!({"server": {"name": "a", "imageRef": image, "flavorRef": "tiny"}}),
        json!({"server": {"name": "a", "imageRef": image, "flavorRef": "tiny", "networks": "none", "user_data": "%%%"}}),
        json!({"server": {"name": "a", "imageRef": image, "flavorRef": "tiny", "networks": "none", "key_name": "missing"}}),
        json!({"server": {"name": "a", "imageRef": image, "flavorRef": "tiny", "networks": "none", "max_count": 3}}),
        json!({"server": {"name": "a", "imageRef": image, "flavorRef": "tiny", "networks": "none", "bogus": 1}}),
        json!({"server": {"name": "", "imageRef": image, "flavorRef": "tiny", "networks": "none"}}),
        json!({"server": {"name": "a", "imageRef": image, "flavorRef": "tiny", "networks": [{"uuid": "not-a-uuid"}]}}),
        json!({"server": {"name": "a", "flavorRef": "tiny", "networks": "none", "block_device_mapping_v2": [
            {"boot_index": 0, "uuid": image, "source_type": "volume", "destination_type": "volume"}]}}),
    ];
    for body in cases {
        let answer = site
            .send(
                Method::POST,
                "/compute/v2.1/servers",
                &alice,
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{body} → {}",
            answer.body
        );
        assert_eq!(answer.body["badRequest"]["code"], 400, "{}", answer.body);
    }
    let malformed = site
        .api
        .call(
            Method::POST,
            "/compute/v2.1/servers",
            &[("x-auth-token", &alice)],
            Some(b"{\"server\": ".to_vec()),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let action = site
        .send(
            Method::POST,
            "/compute/v2.1/servers/00000000-0000-0000-0000-000000000000/action",
            &alice,
            Some(json!({"os-explode": null})),
        )
        .await;
    assert_eq!(action.status, StatusCode::BAD_REQUEST);
    assert_eq!(site.server_rows(), 0);

    let too_new = site
        .api
        .call(
            Method::GET,
            "/compute/v2.1/flavors",
            &[
                ("x-auth-token", &alice),
                ("openstack-api-version", "compute 2.200"),
            ],
            None,
        )
        .await;
    assert_eq!(too_new.status, StatusCode::NOT_ACCEPTABLE);
    let anonymous = site
        .api
        .bare(Method::GET, "/compute/v2.1/flavors", None)
        .await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert_eq!(anonymous.body["unauthorized"]["code"], 401);
}

#[tokio::test]
async fn keypairs_are_generated_once_imported_and_private_to_their_user() {
    let site = Site::new();
    let alice = site.token("alice", "demo").await;
    let carol = site.token("carol", "other").await;
    let generated = site
        .send(
            Method::POST,
            "/compute/v2.1/os-keypairs",
            &alice,
            Some(json!({"keypair": {"name": "ops"}})),
        )
        .await;
    assert_eq!(generated.status, StatusCode::CREATED, "{}", generated.body);
    assert!(
        generated.body["keypair"]["private_key"]
            .as_str()
            .expect("private key")
            .contains("OPENSSH PRIVATE KEY")
    );
    let again = site
        .send(
            Method::POST,
            "/compute/v2.1/os-keypairs",
            &alice,
            Some(json!({"keypair": {"name": "ops"}})),
        )
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let shown = site
        .send(Method::GET, "/compute/v2.1/os-keypairs/ops", &alice, None)
        .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert!(
        shown.body["keypair"].get("private_key").is_none(),
        "the private key is shown once"
    );
    let hidden = site
        .send(Method::GET, "/compute/v2.1/os-keypairs/ops", &carol, None)
        .await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    let foreign = site
        .send(
            Method::GET,
            "/compute/v2.1/os-keypairs?user_id=someone",
            &alice,
            None,
        )
        .await;
    assert_eq!(foreign.status, StatusCode::FORBIDDEN);
    let bad = site
        .send(
            Method::POST,
            "/compute/v2.1/os-keypairs",
            &alice,
            Some(json!({"keypair": {"name": "x", "public_key": "ssh-rsa garbage"}})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let listed = site
        .send(Method::GET, "/compute/v2.1/os-keypairs", &alice, None)
        .await;
    assert_eq!(listed.body["keypairs"].as_array().expect("list").len(), 1);
    let deleted = site
        .send(
            Method::DELETE,
            "/compute/v2.1/os-keypairs/ops",
            &alice,
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn flavors_show_extra_specs_from_2_61_and_limits_and_zones_answer() {
    let site = Site::new();
    let alice = site.token("alice", "demo").await;
    let detail = site
        .send(Method::GET, "/compute/v2.1/flavors/detail", &alice, None)
        .await;
    assert_eq!(
        detail.body["flavors"][0]["extra_specs"]["scs:cpu-type"],
        "shared-core"
    );
    let old = site
        .api
        .call(
            Method::GET,
            "/compute/v2.1/flavors/tiny",
            &[("x-auth-token", &alice)],
            None,
        )
        .await;
    assert!(
        old.body["flavor"].get("extra_specs").is_none(),
        "2.1 has no extra_specs in the flavor"
    );
    let spec = site
        .send(
            Method::GET,
            "/compute/v2.1/flavors/tiny/os-extra_specs/scs:cpu-type",
            &alice,
            None,
        )
        .await;
    assert_eq!(spec.body["scs:cpu-type"], "shared-core");
    let limits = site
        .send(Method::GET, "/compute/v2.1/limits", &alice, None)
        .await;
    assert_eq!(limits.body["limits"]["absolute"]["maxTotalCores"], 64);
    let zones = site
        .send(
            Method::GET,
            "/compute/v2.1/os-availability-zone",
            &alice,
            None,
        )
        .await;
    assert_eq!(zones.body["availabilityZoneInfo"][0]["zoneName"], "nova");
}
