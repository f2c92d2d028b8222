//! Keystone routes driven in-process through the real router over a temporary store: token issue
//! and validation, the catalog, policy personas, grants, role assignments and application
//! credentials, and that refused requests change nothing.

use crate::api::test_state::{ADMIN_PASSWORD, Answer, BASE, TestApi};
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

const V3: &str = "/identity/v3";

fn path(p: &str) -> String {
    format!("{V3}/{p}")
}

fn count(api: &TestApi, table: &str) -> i64 {
    api.store
        .read(|tx| {
            Ok::<_, crate::store::StoreError>(tx.query_row(
                &format!("SELECT count(*) FROM {table}"),
                [],
                |r| r.get(0),
            )?)
        })
        .expect("count")
}

fn ok(answer: &Answer, status: StatusCode) {
    assert_eq!(answer.status, status, "{}", answer.body);
}

fn forbidden(answer: &Answer, rule: &str) {
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.body);
    assert_eq!(
        answer.body,
        json!({"error": {"code": 403, "title": "Forbidden", "message":
            format!("You are not authorized to perform the requested action: identity:{rule}.")}})
    );
}

fn subject(answer: &Answer) -> String {
    answer.headers["x-subject-token"]
        .to_str()
        .expect("header")
        .to_owned()
}

fn password_auth(user: &str, domain: &str, password: &str, scope: Option<Value>) -> Value {
    let mut auth = json!({
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": user, "domain": {"id": domain}, "password": password}},
        }
    });
    if let Some(scope) = scope {
        auth["scope"] = scope;
    }
    json!({ "auth": auth })
}

/// A world: admin, domain `d1` with a reader, a manager and a project member, all via the API.
struct World {
    api: TestApi,
    admin: String,
    d1: String,
    p1: String,
    reader: String,
    manager: String,
    member: String,
    member_id: String,
}

impl World {
    async fn new() -> Self {
        let api = TestApi::new();
        let admin = api.admin_token().await;
        let d1 = api
            .json(
                Method::POST,
                &path("domains"),
                Some(&admin),
                &json!({"domain": {"name": "d1"}}),
            )
            .await;
        ok(&d1, StatusCode::CREATED);
        let d1 = d1.body["domain"]["id"].as_str().expect("id").to_owned();
        let p1 = api
            .json(
                Method::POST,
                &path("projects"),
                Some(&admin),
                &json!({"project": {"name": "p1", "domain_id": d1}}),
            )
            .await;
        ok(&p1, StatusCode::CREATED);
        let p1 = p1.body["project"]["id"].as_str().expect("id").to_owned();
        let mut world = Self {
            api,
            admin,
            d1,
            p1,
            reader: String::new(),
            manager: String::new(),
            member: String::new(),
            member_id: String::new(),
        };
        world.reader = world
            .persona("rita", "reader", &format!("domains/{}", world.d1))
            .await
            .1;
        world.manager = world
            .persona("mona", "manager", &format!("domains/{}", world.d1))
            .await
            .1;
        let (member_id, member) = world
            .persona("max", "member", &format!("projects/{}", world.p1))
            .await;
        world.member = member;
        world.member_id = member_id;
        world
    }

    fn role(&self, name: &str) -> String {
        self.api.boot.roles[name].clone()
    }

    /// Creates user `name` in d1 with `role` on `on` and returns its id and a token scoped there.
    async fn persona(&self, name: &str, role: &str, on: &str) -> (String, String) {
        let user = self.user(name).await;
        let grant = self
            .api
            .bare(
                Method::PUT,
                &path(&format!("{on}/users/{user}/roles/{}", self.role(role))),
                Some(&self.admin),
            )
            .await;
        ok(&grant, StatusCode::NO_CONTENT);
        let scope = if let Some(domain) = on.strip_prefix("domains/") {
            json!({"domain": {"id": domain}})
        } else {
            json!({"project": {"id": on.trim_start_matches("projects/")}})
        };
        let token = self
            .api
            .token(name, &self.d1, &format!("{name}-pw"), scope)
            .await;
        (user, token)
    }

    async fn user(&self, name: &str) -> String {
        let created = self
            .api
            .json(
                Method::POST,
                &path("users"),
                Some(&self.admin),
                &json!({"user": {"name": name, "domain_id": self.d1, "password": format!("{name}-pw")}}),
            )
            .await;
        ok(&created, StatusCode::CREATED);
        created.body["user"]["id"].as_str().expect("id").to_owned()
    }
}

#[tokio::test]
async fn password_tokens_for_every_scope() {
    let api = TestApi::new();
    let boot = &api.boot;
    let issue = |body: Value, query: &'static str| {
        let api = &api;
        async move {
            api.json(
                Method::POST,
                &format!("{V3}/auth/tokens{query}"),
                None,
                &body,
            )
            .await
        }
    };

    // Project by id: the full Keystone document.
    let project = issue(
        password_auth(
            "admin",
            "default",
            ADMIN_PASSWORD,
            Some(json!({"project": {"id": boot.project_id}})),
        ),
        "",
    )
    .await;
    ok(&project, StatusCode::CREATED);
    assert_eq!(subject(&project).len(), 43);
    let token = &project.body["token"];
    assert_eq!(token["methods"], json!(["password"]));
    assert_eq!(token["user"]["name"], "admin");
    assert_eq!(
        token["user"]["domain"],
        json!({"id": "default", "name": "Default"})
    );
    assert!(token["user"]["password_expires_at"].is_null());
    assert_eq!(token["issued_at"], "2026-11-01T12:00:00.000000Z");
    assert_eq!(token["expires_at"], "2026-11-01T13:00:00.000000Z");
    assert_eq!(token["audit_ids"].as_array().expect("audit").len(), 1);
    assert_eq!(
        token["project"],
        json!({"id": boot.project_id, "name": "admin", "domain": {"id": "default", "name": "Default"}})
    );
    assert_eq!(token["is_domain"], false);
    let roles: Vec<&str> = token["roles"]
        .as_array()
        .expect("roles")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(roles, ["admin", "manager", "member", "reader"]);
    assert_eq!(token["catalog"].as_array().expect("catalog").len(), 4);
    assert!(token.get("application_credential").is_none());

    // Project by name in a domain named by name; no catalog when asked.
    let by_name = issue(
        password_auth(
            "admin",
            "default",
            ADMIN_PASSWORD,
            Some(json!({"project": {"name": "admin", "domain": {"name": "Default"}}})),
        ),
        "?nocatalog",
    )
    .await;
    ok(&by_name, StatusCode::CREATED);
    assert_eq!(
        by_name.body["token"]["project"]["id"],
        json!(boot.project_id)
    );
    assert!(by_name.body["token"].get("catalog").is_none());

    // The admin has no role on the default domain itself: 401.
    let domain = issue(
        password_auth(
            "admin",
            "default",
            ADMIN_PASSWORD,
            Some(json!({"domain": {"id": "default"}})),
        ),
        "",
    )
    .await;
    ok(&domain, StatusCode::UNAUTHORIZED);

    let system = issue(
        password_auth(
            "admin",
            "default",
            ADMIN_PASSWORD,
            Some(json!({"system": {"all": true}})),
        ),
        "",
    )
    .await;
    ok(&system, StatusCode::CREATED);
    assert_eq!(system.body["token"]["system"], json!({"all": true}));
    assert!(system.body["token"].get("project").is_none());
    assert!(system.body["token"]["catalog"].is_array());

    // No scope and no default project: unscoped, without roles or catalog.
    let unscoped = issue(password_auth("admin", "default", ADMIN_PASSWORD, None), "").await;
    ok(&unscoped, StatusCode::CREATED);
    for absent in ["project", "domain", "system", "roles", "catalog"] {
        assert!(unscoped.body["token"].get(absent).is_none(), "{absent}");
    }
    let explicit = issue(
        password_auth("admin", "default", ADMIN_PASSWORD, Some(json!("unscoped"))),
        "",
    )
    .await;
    ok(&explicit, StatusCode::CREATED);

    // Rescope the unscoped token onto the project with the token method.
    let rescoped = issue(
        json!({"auth": {"identity": {"methods": ["token"], "token": {"id": subject(&unscoped)}},
                        "scope": {"project": {"id": boot.project_id}}}}),
        "",
    )
    .await;
    ok(&rescoped, StatusCode::CREATED);
    assert_eq!(
        rescoped.body["token"]["methods"],
        json!(["token", "password"])
    );
    assert_eq!(
        rescoped.body["token"]["audit_ids"][1],
        unscoped.body["token"]["audit_ids"][0]
    );

    // The user by id, and the domain of the project by id.
    let by_id = issue(
        json!({"auth": {"identity": {"methods": ["password"],
            "password": {"user": {"id": boot.user_id, "password": ADMIN_PASSWORD}}},
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}),
        "",
    )
    .await;
    ok(&by_id, StatusCode::CREATED);
}

#[tokio::test]
async fn the_catalog_names_four_services_on_three_interfaces() {
    let api = TestApi::new();
    let admin = api.admin_token().await;
    let catalog = api
        .bare(Method::GET, &path("auth/catalog"), Some(&admin))
        .await;
    ok(&catalog, StatusCode::OK);
    let services = catalog.body["catalog"].as_array().expect("catalog");
    let expect = [
        ("identity", "keystone", format!("{BASE}/identity")),
        ("compute", "nova", format!("{BASE}/compute/v2.1")),
        ("image", "glance", format!("{BASE}/image")),
        ("network", "neutron", format!("{BASE}/network")),
    ];
    assert_eq!(services.len(), expect.len());
    for (kind, name, url) in expect {
        let service = services
            .iter()
            .find(|s| s["type"] == kind)
            .expect("service");
        assert_eq!(service["name"], name);
        let endpoints = service["endpoints"].as_array().expect("endpoints");
        let mut interfaces: Vec<&str> = endpoints
            .iter()
            .map(|e| e["interface"].as_str().expect("interface"))
            .collect();
        interfaces.sort_unstable();
        assert_eq!(interfaces, ["admin", "internal", "public"]);
        for endpoint in endpoints {
            assert_eq!(endpoint["url"], json!(url));
            assert_eq!(endpoint["region_id"], "RegionOne");
            assert_eq!(endpoint["region"], "RegionOne");
        }
    }
    // The same ids in /v3/services and /v3/endpoints, and stable between calls.
    let listed = api.bare(Method::GET, &path("services"), Some(&admin)).await;
    ok(&listed, StatusCode::OK);
    let compute_id = services
        .iter()
        .find(|s| s["type"] == "compute")
        .expect("compute")["id"]
        .clone();
    assert!(
        listed.body["services"]
            .as_array()
            .expect("services")
            .iter()
            .any(|s| s["id"] == compute_id && s["enabled"] == true)
    );
    assert_eq!(
        listed.body["links"],
        json!({"self": format!("{BASE}/identity/v3/services"), "previous": null, "next": null})
    );
    let endpoints = api
        .bare(
            Method::GET,
            &format!(
                "{V3}/endpoints?interface=public&service_id={}",
                compute_id.as_str().expect("id")
            ),
            Some(&admin),
        )
        .await;
    ok(&endpoints, StatusCode::OK);
    assert_eq!(endpoints.body["endpoints"].as_array().expect("e").len(), 1);
    let one = api
        .bare(
            Method::GET,
            &path(&format!("services/{}", compute_id.as_str().expect("id"))),
            Some(&admin),
        )
        .await;
    ok(&one, StatusCode::OK);
    let regions = api.bare(Method::GET, &path("regions"), Some(&admin)).await;
    ok(&regions, StatusCode::OK);
    assert_eq!(regions.body["regions"][0]["id"], "RegionOne");
    ok(
        &api.bare(Method::GET, &path("regions/Elsewhere"), Some(&admin))
            .await,
        StatusCode::NOT_FOUND,
    );
    // Unscoped tokens carry no catalog and may not read it.
    let unscoped = api
        .token("admin", "default", ADMIN_PASSWORD, Value::Null)
        .await;
    ok(
        &api.bare(Method::GET, &path("auth/catalog"), Some(&unscoped))
            .await,
        StatusCode::FORBIDDEN,
    );
    // But they see what they could be scoped to.
    let projects = api
        .bare(Method::GET, &path("auth/projects"), Some(&unscoped))
        .await;
    ok(&projects, StatusCode::OK);
    assert_eq!(projects.body["projects"][0]["name"], "admin");
    let system = api
        .bare(Method::GET, &path("auth/system"), Some(&unscoped))
        .await;
    assert_eq!(system.body["system"], json!([{"all": true}]));
    let domains = api
        .bare(Method::GET, &path("auth/domains"), Some(&unscoped))
        .await;
    assert_eq!(domains.body["domains"], json!([]));
}

#[tokio::test]
async fn validate_head_and_revoke() {
    let w = World::new().await;
    let api = &w.api;
    let with_subject = |method: Method, caller: &str, subject: &str| {
        let (caller, subject) = (caller.to_owned(), subject.to_owned());
        async move {
            let headers = [
                ("x-auth-token", caller.as_str()),
                ("x-subject-token", subject.as_str()),
            ];
            api.call(method, &path("auth/tokens"), &headers, None).await
        }
    };
    // Admin validates anyone's token; the answer is the token document.
    let validated = with_subject(Method::GET, &w.admin, &w.member).await;
    ok(&validated, StatusCode::OK);
    assert_eq!(validated.body["token"]["user"]["name"], "max");
    assert_eq!(validated.body["token"]["project"]["id"], json!(w.p1));
    assert!(validated.body["token"]["catalog"].is_array());
    assert_eq!(subject(&validated), w.member);
    // A user validates their own; not someone else's.
    ok(
        &with_subject(Method::GET, &w.member, &w.member).await,
        StatusCode::OK,
    );
    forbidden(
        &with_subject(Method::GET, &w.member, &w.reader).await,
        "validate_token",
    );
    // Unknown subject: 404; HEAD answers 200 / 404 without body.
    let unknown = with_subject(Method::GET, &w.admin, "nonsense").await;
    ok(&unknown, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"]["code"], 404);
    let head = with_subject(Method::HEAD, &w.admin, &w.member).await;
    ok(&head, StatusCode::OK);
    assert!(head.body.is_null());
    ok(
        &with_subject(Method::HEAD, &w.admin, "nonsense").await,
        StatusCode::NOT_FOUND,
    );
    // Revoking someone else's token needs admin; one's own is fine.
    forbidden(
        &with_subject(Method::DELETE, &w.member, &w.reader).await,
        "revoke_token",
    );
    ok(
        &with_subject(Method::DELETE, &w.member, &w.member).await,
        StatusCode::NO_CONTENT,
    );
    ok(
        &with_subject(Method::GET, &w.admin, &w.member).await,
        StatusCode::NOT_FOUND,
    );
    let used = api
        .bare(
            Method::GET,
            &path(&format!("users/{}", w.member_id)),
            Some(&w.member),
        )
        .await;
    ok(&used, StatusCode::UNAUTHORIZED);
    ok(
        &with_subject(Method::DELETE, &w.admin, &w.reader).await,
        StatusCode::NO_CONTENT,
    );
}

#[tokio::test]
async fn missing_or_bad_credentials_are_401_with_www_authenticate() {
    let api = TestApi::new();
    for token in [None, Some("not-a-token")] {
        let answer = api.bare(Method::GET, &path("projects"), token).await;
        ok(&answer, StatusCode::UNAUTHORIZED);
        assert!(answer.headers.contains_key("www-authenticate"));
        assert_eq!(
            answer.body,
            json!({"error": {"code": 401, "title": "Unauthorized",
                "message": "The request you have made requires authentication."}})
        );
    }
    let tokens = count(&api, "tokens");
    for body in [
        password_auth("admin", "default", "wrong", None),
        password_auth("nobody", "default", "wrong", None),
        password_auth("admin", "nodomain", ADMIN_PASSWORD, None),
        json!({"auth": {"identity": {"methods": ["totp"], "totp": {}}}}),
        json!({"auth": {"identity": {"methods": ["token"], "token": {"id": "bogus"}}}}),
    ] {
        let answer = api
            .json(Method::POST, &path("auth/tokens"), None, &body)
            .await;
        ok(&answer, StatusCode::UNAUTHORIZED);
        assert!(answer.headers.contains_key("www-authenticate"));
        assert!(!answer.headers.contains_key("x-subject-token"));
    }
    assert_eq!(count(&api, "tokens"), tokens, "refusals store no token");
}

#[tokio::test]
async fn malformed_bodies_are_400_and_oversized_ones_413_and_change_nothing() {
    let api = TestApi::new();
    let admin = api.admin_token().await;
    let (tokens, users) = (count(&api, "tokens"), count(&api, "users"));
    let raw = |body: &'static [u8], token: Option<&'static str>| {
        let api = &api;
        async move {
            let headers: Vec<(&str, &str)> =
                token.map(|t| ("x-auth-token", t)).into_iter().collect();
            api.call(
                Method::POST,
                &path("auth/tokens"),
                &headers,
                Some(body.to_vec()),
            )
            .await
        }
    };
    let broken = raw(b"{\"auth\": ", None).await;
    ok(&broken, StatusCode::BAD_REQUEST);
    assert_eq!(broken.body["error"]["code"], 400);
    for (body, field) in [
        (json!({}), "auth"),
        (json!({"auth": {}}), "identity"),
        (
            json!({"auth": {"identity": {"methods": "password"}}}),
            "auth.identity.methods",
        ),
        (
            json!({"auth": {"identity": {"methods": ["password"],
                "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": 7}}}}}),
            "auth.identity.password.user.password",
        ),
        (
            json!({"auth": {"identity": {"methods": ["password"]}}}),
            "auth.identity.password",
        ),
        (
            json!({"auth": {"identity": {"methods": ["password"],
                "password": {"user": {"name": "admin", "password": "x"}}}}}),
            "auth.identity.password.user.domain",
        ),
        (
            password_auth(
                "admin",
                "default",
                ADMIN_PASSWORD,
                Some(json!({"project": {"id": 5}})),
            ),
            "auth.scope.project.id",
        ),
        (
            password_auth(
                "admin",
                "default",
                ADMIN_PASSWORD,
                Some(json!({"project": {"id": "x"}, "domain": {"id": "default"}})),
            ),
            "auth.scope",
        ),
    ] {
        let answer = api
            .json(Method::POST, &path("auth/tokens"), None, &body)
            .await;
        ok(&answer, StatusCode::BAD_REQUEST);
        let message = answer.body["error"]["message"].as_str().expect("message");
        assert!(message.contains(field), "{message} should name {field}");
    }
    // A wrong type on a resource names the field; nothing is created.
    let bad_user = api
        .json(
            Method::POST,
            &path("users"),
            Some(&admin),
            &json!({"user": {"name": 7}}),
        )
        .await;
    ok(&bad_user, StatusCode::BAD_REQUEST);
    assert!(
        bad_user.body["error"]["message"]
            .as_str()
            .expect("message")
            .contains("user.name")
    );
    let nameless = api
        .json(
            Method::POST,
            &path("users"),
            Some(&admin),
            &json!({"user": {}}),
        )
        .await;
    ok(&nameless, StatusCode::BAD_REQUEST);
    // Over the body limit: 413 in Keystone's dialect.
    let huge = format!(
        "{{\"user\": {{\"name\": \"big\", \"description\": \"{}\"}}}}",
        "x".repeat(crate::api::body::JSON_BODY_LIMIT)
    );
    let too_large = api
        .call(
            Method::POST,
            &path("users"),
            &[("x-auth-token", &admin)],
            Some(huge.into_bytes()),
        )
        .await;
    ok(&too_large, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(too_large.body["error"]["code"], 413);
    assert_eq!(count(&api, "tokens"), tokens);
    assert_eq!(count(&api, "users"), users);
}

#[tokio::test]
async fn policy_follows_the_personas() {
    let w = World::new().await;
    let api = &w.api;
    let d1 = &w.d1;
    // Reader of d1: reads d1, changes nothing, sees nothing elsewhere.
    let listed = api.bare(Method::GET, &path("users"), Some(&w.reader)).await;
    ok(&listed, StatusCode::OK);
    let users = listed.body["users"].as_array().expect("users");
    assert_eq!(users.len(), 3, "only d1's users: {users:?}");
    assert!(users.iter().all(|u| u["domain_id"] == json!(d1)));
    forbidden(
        &api.bare(
            Method::GET,
            &format!("{V3}/users?domain_id=default"),
            Some(&w.reader),
        )
        .await,
        "list_users",
    );
    let users_before = count(api, "users");
    forbidden(
        &api.json(
            Method::POST,
            &path("users"),
            Some(&w.reader),
            &json!({"user": {"name": "eve", "domain_id": d1}}),
        )
        .await,
        "create_user",
    );
    assert_eq!(count(api, "users"), users_before);
    ok(
        &api.bare(
            Method::GET,
            &path(&format!("domains/{d1}")),
            Some(&w.reader),
        )
        .await,
        StatusCode::OK,
    );
    forbidden(
        &api.bare(Method::GET, &path("domains/default"), Some(&w.reader))
            .await,
        "get_domain",
    );
    forbidden(
        &api.bare(Method::GET, &path("domains"), Some(&w.reader))
            .await,
        "list_domains",
    );

    // Manager of d1: creates in d1 (domain from the token when not named), not elsewhere.
    let created = api
        .json(
            Method::POST,
            &path("users"),
            Some(&w.manager),
            &json!({"user": {"name": "nina", "password": "nina-pw", "email": "n@example.org"}}),
        )
        .await;
    ok(&created, StatusCode::CREATED);
    assert_eq!(created.body["user"]["domain_id"], json!(d1));
    let nina = created.body["user"]["id"].as_str().expect("id").to_owned();
    forbidden(
        &api.json(
            Method::POST,
            &path("projects"),
            Some(&w.manager),
            &json!({"project": {"name": "x", "domain_id": "default"}}),
        )
        .await,
        "create_project",
    );
    ok(
        &api.bare(
            Method::PUT,
            &path(&format!(
                "projects/{}/users/{nina}/roles/{}",
                w.p1,
                w.role("member")
            )),
            Some(&w.manager),
        )
        .await,
        StatusCode::NO_CONTENT,
    );
    let assignments = count(api, "role_assignments");
    forbidden(
        &api.bare(
            Method::PUT,
            &path(&format!(
                "projects/{}/users/{nina}/roles/{}",
                w.p1,
                w.role("admin")
            )),
            Some(&w.manager),
        )
        .await,
        "create_grant",
    );
    forbidden(
        &api.bare(
            Method::PUT,
            &path(&format!(
                "projects/{}/users/{}/roles/{}",
                w.api.boot.project_id,
                nina,
                w.role("member")
            )),
            Some(&w.manager),
        )
        .await,
        "create_grant",
    );
    assert_eq!(count(api, "role_assignments"), assignments);
    ok(
        &api.json(
            Method::PATCH,
            &path(&format!("users/{nina}")),
            Some(&w.manager),
            &json!({"user": {"description": "ops"}}),
        )
        .await,
        StatusCode::OK,
    );
    forbidden(
        &api.json(
            Method::PATCH,
            &path(&format!("users/{}", w.api.boot.user_id)),
            Some(&w.manager),
            &json!({"user": {"enabled": false}}),
        )
        .await,
        "update_user",
    );
    forbidden(
        &api.json(
            Method::POST,
            &path("roles"),
            Some(&w.manager),
            &json!({"role": {"name": "boss"}}),
        )
        .await,
        "create_role",
    );

    // Project member: own project and self only.
    forbidden(
        &api.bare(Method::GET, &path("projects"), Some(&w.member))
            .await,
        "list_projects",
    );
    ok(
        &api.bare(
            Method::GET,
            &path(&format!("projects/{}", w.p1)),
            Some(&w.member),
        )
        .await,
        StatusCode::OK,
    );
    ok(
        &api.bare(
            Method::GET,
            &path(&format!("users/{}", w.member_id)),
            Some(&w.member),
        )
        .await,
        StatusCode::OK,
    );
    forbidden(
        &api.bare(
            Method::GET,
            &path(&format!("users/{nina}")),
            Some(&w.member),
        )
        .await,
        "get_user",
    );
    forbidden(
        &api.bare(Method::GET, &path("roles"), Some(&w.member)).await,
        "list_roles",
    );
    // Missing resources: 404 for the admin, 403 for those who could not see them anyway.
    ok(
        &api.bare(Method::GET, &path("users/missing"), Some(&w.admin))
            .await,
        StatusCode::NOT_FOUND,
    );
    forbidden(
        &api.bare(Method::GET, &path("users/missing"), Some(&w.member))
            .await,
        "get_user",
    );
    // Admin sees everything.
    let all = api.bare(Method::GET, &path("users"), Some(&w.admin)).await;
    assert_eq!(all.body["users"].as_array().expect("users").len(), 5);
}

#[tokio::test]
async fn grants_groups_and_effective_role_assignments() {
    let w = World::new().await;
    let api = &w.api;
    let admin = Some(w.admin.as_str());
    let group = api
        .json(
            Method::POST,
            &path("groups"),
            admin,
            &json!({"group": {"name": "ops", "domain_id": w.d1}}),
        )
        .await;
    ok(&group, StatusCode::CREATED);
    let g = group.body["group"]["id"].as_str().expect("id").to_owned();
    let u = w.user("gus").await;
    let membership = path(&format!("groups/{g}/users/{u}"));
    ok(
        &api.bare(Method::HEAD, &membership, admin).await,
        StatusCode::NOT_FOUND,
    );
    ok(
        &api.bare(Method::PUT, &membership, admin).await,
        StatusCode::NO_CONTENT,
    );
    ok(
        &api.bare(Method::HEAD, &membership, admin).await,
        StatusCode::NO_CONTENT,
    );
    let groups = api
        .bare(Method::GET, &path(&format!("users/{u}/groups")), admin)
        .await;
    assert_eq!(groups.body["groups"][0]["id"], json!(g));
    let members = api
        .bare(Method::GET, &path(&format!("groups/{g}/users")), admin)
        .await;
    assert_eq!(members.body["users"][0]["id"], json!(u));

    let member = w.role("member");
    let grant = path(&format!("projects/{}/groups/{g}/roles/{member}", w.p1));
    ok(
        &api.bare(Method::HEAD, &grant, admin).await,
        StatusCode::NOT_FOUND,
    );
    ok(
        &api.bare(Method::PUT, &grant, admin).await,
        StatusCode::NO_CONTENT,
    );
    ok(
        &api.bare(Method::HEAD, &grant, admin).await,
        StatusCode::NO_CONTENT,
    );
    ok(
        &api.bare(Method::GET, &grant, admin).await,
        StatusCode::NO_CONTENT,
    );
    let listed = api
        .bare(
            Method::GET,
            &path(&format!("projects/{}/groups/{g}/roles", w.p1)),
            admin,
        )
        .await;
    assert_eq!(listed.body["roles"][0]["name"], "member");

    // The group's member can now scope to the project.
    let gus = api
        .token("gus", &w.d1, "gus-pw", json!({"project": {"id": w.p1}}))
        .await;
    let projects = api
        .bare(
            Method::GET,
            &path(&format!("users/{u}/projects")),
            Some(&gus),
        )
        .await;
    ok(&projects, StatusCode::OK);
    assert_eq!(projects.body["projects"][0]["id"], json!(w.p1));

    // Direct listing: one group row.
    let direct = api
        .bare(
            Method::GET,
            &format!(
                "{V3}/role_assignments?scope.project.id={}&group.id={g}",
                w.p1
            ),
            admin,
        )
        .await;
    ok(&direct, StatusCode::OK);
    assert_eq!(
        direct.body["role_assignments"],
        json!([{
            "role": {"id": member},
            "group": {"id": g},
            "scope": {"project": {"id": w.p1}},
            "links": {"assignment": format!("{BASE}/identity/v3/projects/{}/groups/{g}/roles/{member}", w.p1)},
        }])
    );
    // Effective for the user: member via the group, reader implied by member.
    let effective = api
        .bare(
            Method::GET,
            &format!(
                "{V3}/role_assignments?effective&include_names&user.id={u}&scope.project.id={}",
                w.p1
            ),
            admin,
        )
        .await;
    ok(&effective, StatusCode::OK);
    let rows = effective.body["role_assignments"].as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let by_role = |name: &str| {
        rows.iter()
            .find(|r| r["role"]["name"] == name)
            .expect("row")
    };
    let via_group = by_role("member");
    assert_eq!(via_group["user"]["name"], "gus");
    assert_eq!(via_group["user"]["domain"]["name"], "d1");
    assert_eq!(via_group["scope"]["project"]["name"], "p1");
    assert_eq!(
        via_group["links"]["membership"],
        json!(format!("{BASE}/identity/v3/groups/{g}/users/{u}"))
    );
    let implied = by_role("reader");
    assert_eq!(implied["prior_role"]["id"], json!(member));
    assert!(implied["links"]["prior_role"].is_string());

    // Domain readers list their domain's assignments; system scope filter is refused to them.
    let as_reader = api
        .bare(Method::GET, &path("role_assignments"), Some(&w.reader))
        .await;
    ok(&as_reader, StatusCode::OK);
    assert!(
        as_reader.body["role_assignments"]
            .as_array()
            .expect("rows")
            .iter()
            .all(|r| r["scope"].get("system").is_none())
    );
    forbidden(
        &api.bare(
            Method::GET,
            &format!("{V3}/role_assignments?scope.system=all"),
            Some(&w.reader),
        )
        .await,
        "list_role_assignments",
    );

    // System grants are the admin's.
    let system_grant = path(&format!("system/users/{u}/roles/{}", w.role("reader")));
    forbidden(
        &api.bare(Method::PUT, &system_grant, Some(&w.manager)).await,
        "create_grant",
    );
    ok(
        &api.bare(Method::PUT, &system_grant, admin).await,
        StatusCode::NO_CONTENT,
    );
    let on_system = api
        .bare(
            Method::GET,
            &format!("{V3}/role_assignments?scope.system=all&user.id={u}"),
            admin,
        )
        .await;
    assert_eq!(
        on_system.body["role_assignments"][0]["scope"],
        json!({"system": {"all": true}})
    );
    ok(
        &api.bare(Method::DELETE, &system_grant, admin).await,
        StatusCode::NO_CONTENT,
    );

    // Revoking, then revoking again, then leaving the group.
    ok(
        &api.bare(Method::DELETE, &grant, admin).await,
        StatusCode::NO_CONTENT,
    );
    ok(
        &api.bare(Method::DELETE, &grant, admin).await,
        StatusCode::NOT_FOUND,
    );
    ok(
        &api.bare(Method::DELETE, &membership, admin).await,
        StatusCode::NO_CONTENT,
    );
    ok(
        &api.bare(Method::DELETE, &membership, admin).await,
        StatusCode::NOT_FOUND,
    );
    // Grants on missing things: 404 for the admin.
    ok(
        &api.bare(
            Method::PUT,
            &path(&format!("projects/nope/users/{u}/roles/{member}")),
            admin,
        )
        .await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn application_credentials_authenticate_and_die_with_their_deletion() {
    let w = World::new().await;
    let api = &w.api;
    let user = &w.member_id;
    let creds = path(&format!("users/{user}/application_credentials"));
    // Unknown properties are refused, as Keystone's schema does.
    let rows = count(api, "application_credentials");
    ok(
        &api.json(
            Method::POST,
            &creds,
            Some(&w.member),
            &json!({"application_credential": {"name": "ci", "colour": "red"}}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    );
    // Nobody creates credentials for somebody else.
    forbidden(
        &api.json(
            Method::POST,
            &path(&format!(
                "users/{}/application_credentials",
                w.api.boot.user_id
            )),
            Some(&w.member),
            &json!({"application_credential": {"name": "ci"}}),
        )
        .await,
        "create_application_credential",
    );
    assert_eq!(count(api, "application_credentials"), rows);

    let created = api
        .json(
            Method::POST,
            &creds,
            Some(&w.member),
            &json!({"application_credential": {"name": "ci", "roles": [{"name": "reader"}],
                "expires_at": "2027-01-01T00:00:00"}}),
        )
        .await;
    ok(&created, StatusCode::CREATED);
    let cred = &created.body["application_credential"];
    let id = cred["id"].as_str().expect("id").to_owned();
    let secret = cred["secret"].as_str().expect("secret").to_owned();
    assert_eq!(cred["project_id"], json!(w.p1));
    assert_eq!(cred["unrestricted"], false);
    assert_eq!(cred["expires_at"], "2027-01-01T00:00:00.000000Z");
    assert_eq!(cred["roles"][0]["name"], "reader");

    // The secret is never shown again.
    let shown = api
        .bare(Method::GET, &format!("{creds}/{id}"), Some(&w.member))
        .await;
    ok(&shown, StatusCode::OK);
    assert!(shown.body["application_credential"].get("secret").is_none());
    let by_name = api
        .bare(Method::GET, &format!("{creds}?name=ci"), Some(&w.member))
        .await;
    assert_eq!(by_name.body["application_credentials"][0]["id"], json!(id));
    forbidden(
        &api.bare(Method::GET, &creds, Some(&w.reader)).await,
        "list_application_credentials",
    );

    // Authenticate by id, and by name with the user.
    let issued = api
        .json(
            Method::POST,
            &path("auth/tokens"),
            None,
            &json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"id": id, "secret": secret}}}}),
        )
        .await;
    ok(&issued, StatusCode::CREATED);
    let token = &issued.body["token"];
    assert_eq!(token["methods"], json!(["application_credential"]));
    assert_eq!(
        token["application_credential"],
        json!({"id": id, "name": "ci", "restricted": true})
    );
    assert_eq!(token["project"]["id"], json!(w.p1));
    assert_eq!(
        token["roles"],
        json!([{"id": w.role("reader"), "name": "reader"}])
    );
    let cred_token = subject(&issued);
    let by_name = api
        .json(
            Method::POST,
            &path("auth/tokens"),
            None,
            &json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"name": "ci", "secret": secret,
                    "user": {"name": "max", "domain": {"id": w.d1}}}}}}),
        )
        .await;
    ok(&by_name, StatusCode::CREATED);
    let wrong = api
        .json(
            Method::POST,
            &path("auth/tokens"),
            None,
            &json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"id": id, "secret": "wrong"}}}}),
        )
        .await;
    ok(&wrong, StatusCode::UNAUTHORIZED);

    // A restricted credential's token cannot make another credential.
    let rows = count(api, "application_credentials");
    let refused = api
        .json(
            Method::POST,
            &creds,
            Some(&cred_token),
            &json!({"application_credential": {"name": "again"}}),
        )
        .await;
    ok(&refused, StatusCode::FORBIDDEN);
    assert_eq!(count(api, "application_credentials"), rows);

    // Deleting it revokes its tokens.
    ok(
        &api.bare(Method::DELETE, &format!("{creds}/{id}"), Some(&w.member))
            .await,
        StatusCode::NO_CONTENT,
    );
    ok(
        &api.bare(
            Method::GET,
            &path(&format!("projects/{}", w.p1)),
            Some(&cred_token),
        )
        .await,
        StatusCode::UNAUTHORIZED,
    );
    ok(
        &api.bare(Method::GET, &format!("{creds}/{id}"), Some(&w.member))
            .await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn resources_crud_in_keystone_shapes() {
    let api = TestApi::new();
    let admin = api.admin_token().await;
    let t = Some(admin.as_str());

    // Domains: create, show, patch, and delete only once disabled.
    let created = api
        .json(
            Method::POST,
            &path("domains"),
            t,
            &json!({"domain": {"name": "acme", "description": "A"}}),
        )
        .await;
    ok(&created, StatusCode::CREATED);
    let d = created.body["domain"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        created.body["domain"]["links"],
        json!({"self": format!("{BASE}/identity/v3/domains/{d}")})
    );
    ok(
        &api.json(
            Method::POST,
            &path("domains"),
            t,
            &json!({"domain": {"name": "acme"}}),
        )
        .await,
        StatusCode::CONFLICT,
    );
    let listed = api
        .bare(Method::GET, &format!("{V3}/domains?name=acme"), t)
        .await;
    assert_eq!(listed.body["domains"].as_array().expect("d").len(), 1);
    assert_eq!(listed.body["links"]["next"], Value::Null);

    // Projects with filters.
    let p = api
        .json(
            Method::POST,
            &path("projects"),
            t,
            &json!({"project": {"name": "web", "domain_id": d, "enabled": false, "tags": []}}),
        )
        .await;
    ok(&p, StatusCode::CREATED);
    assert_eq!(p.body["project"]["parent_id"], json!(d));
    assert_eq!(p.body["project"]["is_domain"], false);
    let p = p.body["project"]["id"].as_str().expect("id").to_owned();
    let filtered = api
        .bare(
            Method::GET,
            &format!("{V3}/projects?domain_id={d}&enabled=false"),
            t,
        )
        .await;
    assert_eq!(filtered.body["projects"][0]["id"], json!(p));
    let none = api
        .bare(
            Method::GET,
            &format!("{V3}/projects?domain_id={d}&enabled=true"),
            t,
        )
        .await;
    assert_eq!(none.body["projects"], json!([]));
    let patched = api
        .json(
            Method::PATCH,
            &path(&format!("projects/{p}")),
            t,
            &json!({"project": {"enabled": true, "description": "site"}}),
        )
        .await;
    ok(&patched, StatusCode::OK);
    assert_eq!(patched.body["project"]["description"], "site");

    // Users: create, patch, self-service password change.
    let u = api
        .json(
            Method::POST,
            &path("users"),
            t,
            &json!({"user": {"name": "ann", "domain_id": d, "password": "old-pw", "default_project_id": p}}),
        )
        .await;
    ok(&u, StatusCode::CREATED);
    assert_eq!(u.body["user"]["default_project_id"], json!(p));
    assert!(u.body["user"].get("password").is_none());
    let u = u.body["user"]["id"].as_str().expect("id").to_owned();
    let cleared = api
        .json(
            Method::PATCH,
            &path(&format!("users/{u}")),
            t,
            &json!({"user": {"default_project_id": null}}),
        )
        .await;
    ok(&cleared, StatusCode::OK);
    assert!(cleared.body["user"].get("default_project_id").is_none());
    let change = path(&format!("users/{u}/password"));
    ok(
        &api.json(
            Method::POST,
            &change,
            None,
            &json!({"user": {"password": "new-pw", "original_password": "wrong"}}),
        )
        .await,
        StatusCode::UNAUTHORIZED,
    );
    ok(
        &api.json(
            Method::POST,
            &change,
            None,
            &json!({"user": {"password": "new-pw", "original_password": "old-pw"}}),
        )
        .await,
        StatusCode::NO_CONTENT,
    );
    let unscoped = api
        .json(
            Method::POST,
            &path("auth/tokens"),
            None,
            &password_auth("ann", &d, "new-pw", None),
        )
        .await;
    ok(&unscoped, StatusCode::CREATED);

    // Roles and implications.
    let role = api
        .json(
            Method::POST,
            &path("roles"),
            t,
            &json!({"role": {"name": "auditor"}}),
        )
        .await;
    ok(&role, StatusCode::CREATED);
    assert_eq!(role.body["role"]["domain_id"], Value::Null);
    let auditor = role.body["role"]["id"].as_str().expect("id").to_owned();
    let reader = api.boot.roles["reader"].clone();
    let implies = path(&format!("roles/{auditor}/implies/{reader}"));
    ok(
        &api.bare(Method::HEAD, &implies, t).await,
        StatusCode::NOT_FOUND,
    );
    let put = api.bare(Method::PUT, &implies, t).await;
    ok(&put, StatusCode::CREATED);
    assert_eq!(put.body["role_inference"]["prior_role"]["name"], "auditor");
    assert_eq!(put.body["role_inference"]["implies"]["name"], "reader");
    ok(
        &api.bare(Method::HEAD, &implies, t).await,
        StatusCode::NO_CONTENT,
    );
    ok(&api.bare(Method::GET, &implies, t).await, StatusCode::OK);
    let of = api
        .bare(Method::GET, &path(&format!("roles/{auditor}/implies")), t)
        .await;
    assert_eq!(of.body["role_inference"]["implies"][0]["id"], json!(reader));
    let inferences = api.bare(Method::GET, &path("role_inferences"), t).await;
    ok(&inferences, StatusCode::OK);
    assert_eq!(
        inferences.body["role_inferences"]
            .as_array()
            .expect("rules")
            .len(),
        4,
        "admin, manager, member and auditor each imply something"
    );
    ok(
        &api.bare(Method::DELETE, &implies, t).await,
        StatusCode::NO_CONTENT,
    );
    ok(
        &api.bare(Method::DELETE, &path(&format!("roles/{auditor}")), t)
            .await,
        StatusCode::NO_CONTENT,
    );

    // Deleting: an enabled domain is refused (403), a disabled one goes with its contents.
    let domain_url = path(&format!("domains/{d}"));
    ok(
        &api.bare(Method::DELETE, &domain_url, t).await,
        StatusCode::FORBIDDEN,
    );
    ok(
        &api.json(
            Method::PATCH,
            &domain_url,
            t,
            &json!({"domain": {"enabled": false}}),
        )
        .await,
        StatusCode::OK,
    );
    ok(
        &api.bare(Method::DELETE, &domain_url, t).await,
        StatusCode::NO_CONTENT,
    );
    ok(
        &api.bare(Method::GET, &path(&format!("users/{u}")), t).await,
        StatusCode::NOT_FOUND,
    );
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let api = TestApi::new();
    let admin = api.admin_token().await;
    ok(
        &api.bare(Method::GET, &path("auth/projects"), Some(&admin))
            .await,
        StatusCode::OK,
    );
    api.clock.advance(jiff::SignedDuration::from_mins(61));
    ok(
        &api.bare(Method::GET, &path("auth/projects"), Some(&admin))
            .await,
        StatusCode::UNAUTHORIZED,
    );
}
