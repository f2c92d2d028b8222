//! The Neutron routes driven in-process through the whole router (auth, body limits, error dialect)
//! over a temporary store, with real identity tokens for an admin and for members and readers of two
//! projects.

use crate::api::router;
use crate::api::test_state::{ADMIN_PASSWORD, BASE, TestApi};
use crate::identity::{
    Actor, AuthIdentity, AuthRequest, DEFAULT_DOMAIN_ID, DomainRef, NewProject, NewUser,
    ProjectRef, ScopeRequest, Target, UserRef,
};
use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt as _;

const V: &str = "/network/v2.0";

/// A site with an admin and, in projects A and B, a member each plus a reader in A.
struct Rig {
    _api: TestApi,
    app: Router,
    admin: String,
    member_a: String,
    reader_a: String,
    member_b: String,
    project_a: String,
    project_b: String,
}

fn rig() -> Rig {
    let api = TestApi::new();
    let identity = api.state.identity.clone();
    let boot = api.boot.clone();
    let login = |user: &str, password: &str, project: &str| -> String {
        identity
            .authenticate(AuthRequest {
                identity: AuthIdentity::Password {
                    user: UserRef::Name {
                        name: user.into(),
                        domain: DomainRef::Id(DEFAULT_DOMAIN_ID.into()),
                    },
                    password: password.into(),
                },
                scope: ScopeRequest::Project(ProjectRef::Id(project.into())),
            })
            .expect("login")
            .token
    };
    let project = |name: &str| {
        identity
            .create_project(NewProject {
                name: name.into(),
                domain_id: DEFAULT_DOMAIN_ID.into(),
                description: String::new(),
                enabled: true,
            })
            .expect("project")
            .id
    };
    let (project_a, project_b) = (project("a"), project("b"));
    let user = |name: &str, project: &str, role: &str| -> String {
        let user = identity
            .create_user(NewUser {
                name: name.into(),
                domain_id: DEFAULT_DOMAIN_ID.into(),
                password: Some(format!("{name}-pw")),
                enabled: true,
                ..NewUser::default()
            })
            .expect("user");
        identity
            .grant(
                &Actor::User(user.id),
                &Target::Project(project.into()),
                &boot.roles[role],
            )
            .expect("grant");
        login(name, &format!("{name}-pw"), project)
    };
    let member_a = user("alice", &project_a, "member");
    let reader_a = user("rita", &project_a, "reader");
    let member_b = user("bob", &project_b, "member");
    let admin = login("admin", ADMIN_PASSWORD, &boot.project_id);
    let app = router(api.state.clone());
    Rig {
        _api: api,
        app,
        admin,
        member_a,
        reader_a,
        member_b,
        project_a,
        project_b,
    }
}

impl Rig {
    async fn raw(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Body,
    ) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header("x-auth-token", token)
            .header("content-type", "application/json")
            .body(body)
            .expect("request");
        let response = self.app.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        (status, value)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let body = body.map_or_else(Body::empty, |b| Body::from(b.to_string()));
        self.raw(method, &format!("{V}{path}"), token, body).await
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    async fn put(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, token, Some(body)).await
    }

    async fn delete(&self, path: &str, token: &str) -> StatusCode {
        self.call(Method::DELETE, path, token, None).await.0
    }

    /// Creates a resource that must succeed; returns its document.
    async fn made(&self, path: &str, token: &str, resource: &str, body: Value) -> Value {
        let (status, doc) = self.post(path, token, json!({ resource: body })).await;
        assert_eq!(status, StatusCode::CREATED, "{path}: {doc}");
        doc[resource].clone()
    }

    async fn network(&self, token: &str, name: &str) -> Value {
        self.made("/networks", token, "network", json!({ "name": name }))
            .await
    }

    async fn subnet(&self, token: &str, network: &Value, cidr: &str) -> Value {
        self.made(
            "/subnets",
            token,
            "subnet",
            json!({ "network_id": network["id"], "ip_version": 4, "cidr": cidr }),
        )
        .await
    }

    /// An admin-made external flat network with a /24.
    async fn external(&self) -> (Value, Value) {
        let net = self
            .made(
                "/networks",
                &self.admin,
                "network",
                json!({
                    "name": "public", "router:external": true,
                    "provider:network_type": "flat", "provider:physical_network": "physnet1",
                }),
            )
            .await;
        let subnet = self.subnet(&self.admin, &net, "203.0.113.0/24").await;
        (net, subnet)
    }
}

fn neutron_type(body: &Value) -> &str {
    body["NeutronError"]["type"].as_str().unwrap_or_default()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("list")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn networks_have_neutron_shapes_and_crud() {
    let rig = rig();
    let net = rig.network(&rig.member_a, "net-a").await;
    assert_eq!(net["status"], "ACTIVE");
    assert_eq!(net["project_id"], json!(rig.project_a));
    assert_eq!(net["tenant_id"], json!(rig.project_a));
    assert_eq!(net["router:external"], false);
    assert_eq!(net["shared"], false);
    assert_eq!(net["mtu"], 1442);
    assert_eq!(net["l2_adjacency"], true);
    assert_eq!(net["is_default"], false);
    assert_eq!(net["subnets"], json!([]));
    assert!(net["ipv4_address_scope"].is_null());
    assert!(net.get("provider:network_type").is_none(), "admin-only");
    let created = net["created_at"].as_str().expect("created_at");
    assert_eq!(created.len(), 20, "{created}");
    assert!(created.ends_with('Z'));

    let id = net["id"].as_str().expect("id");
    let (status, shown) = rig.get(&format!("/networks/{id}"), &rig.reader_a).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["network"]["name"], "net-a");
    let (_, admin_view) = rig.get(&format!("/networks/{id}"), &rig.admin).await;
    assert_eq!(admin_view["network"]["provider:network_type"], "geneve");

    let (status, updated) = rig
        .put(
            &format!("/networks/{id}"),
            &rig.member_a,
            json!({ "network": { "name": "renamed", "description": "d", "admin_state_up": false } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["network"]["name"], "renamed");
    assert_eq!(updated["network"]["admin_state_up"], false);

    let (_, listed) = rig.get("/networks?name=renamed", &rig.member_a).await;
    assert_eq!(ids(&listed["networks"]), vec![id.to_owned()]);
    let (_, listed) = rig.get("/networks?name=other", &rig.member_a).await;
    assert_eq!(ids(&listed["networks"]).len(), 0);
    let (_, fields) = rig
        .get(
            &format!("/networks/{id}?fields=id&fields=name"),
            &rig.member_a,
        )
        .await;
    assert_eq!(
        fields,
        json!({ "network": { "id": id, "name": "renamed" } })
    );

    assert_eq!(
        rig.delete(&format!("/networks/{id}"), &rig.member_a).await,
        StatusCode::NO_CONTENT
    );
    let (status, body) = rig.get(&format!("/networks/{id}"), &rig.member_a).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(neutron_type(&body), "NetworkNotFound");
}

#[tokio::test]
async fn projects_are_isolated_and_roles_enforced() {
    let rig = rig();
    let net = rig.network(&rig.member_a, "private").await;
    let id = net["id"].as_str().expect("id");

    // Another project does not see it: 404 in Neutron's type, and not in its list.
    let (status, body) = rig.get(&format!("/networks/{id}"), &rig.member_b).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(neutron_type(&body), "NetworkNotFound");
    let (status, body) = rig
        .put(
            &format!("/networks/{id}"),
            &rig.member_b,
            json!({ "network": { "name": "mine" } }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(
        rig.delete(&format!("/networks/{id}"), &rig.member_b).await,
        StatusCode::NOT_FOUND
    );
    let (_, listed) = rig.get("/networks", &rig.member_b).await;
    assert!(!ids(&listed["networks"]).contains(&id.to_owned()));

    // A reader reads but does not write.
    let (status, body) = rig
        .post(
            "/networks",
            &rig.reader_a,
            json!({ "network": { "name": "x" } }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(neutron_type(&body), "HTTPForbidden");
    let (status, _) = rig
        .put(
            &format!("/networks/{id}"),
            &rig.reader_a,
            json!({ "network": { "name": "y" } }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Only admins share, make external networks, or pick provider segments; or name other projects.
    for attrs in [
        json!({ "shared": true }),
        json!({ "router:external": true }),
        json!({ "provider:network_type": "vlan", "provider:physical_network": "physnet1", "provider:segmentation_id": 7 }),
        json!({ "project_id": rig.project_b }),
    ] {
        let (status, body) = rig
            .post("/networks", &rig.member_a, json!({ "network": attrs }))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{attrs}: {body}");
    }

    // Shared and external networks are visible to everyone; admins see all and filter by project.
    let shared = rig
        .made(
            "/networks",
            &rig.admin,
            "network",
            json!({ "name": "shared", "shared": true }),
        )
        .await;
    let (public, _) = rig.external().await;
    let (_, listed) = rig.get("/networks", &rig.member_b).await;
    let seen = ids(&listed["networks"]);
    assert!(seen.contains(&shared["id"].as_str().expect("id").to_owned()));
    assert!(seen.contains(&public["id"].as_str().expect("id").to_owned()));
    assert_eq!(seen.len(), 2);
    let (_, listed) = rig
        .get("/networks?router:external=true", &rig.member_b)
        .await;
    assert_eq!(
        ids(&listed["networks"]),
        vec![public["id"].as_str().expect("id").to_owned()]
    );
    let (_, all) = rig.get("/networks", &rig.admin).await;
    assert_eq!(ids(&all["networks"]).len(), 3);
    let (_, filtered) = rig
        .get(
            &format!("/networks?project_id={}", rig.project_a),
            &rig.admin,
        )
        .await;
    assert_eq!(ids(&filtered["networks"]), vec![id.to_owned()]);

    // Visible but not one's own: 403 on change.
    let shared_id = shared["id"].as_str().expect("id");
    let (status, _) = rig
        .put(
            &format!("/networks/{shared_id}"),
            &rig.member_b,
            json!({ "network": { "name": "taken" } }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // No token: 401 in Neutron's dialect.
    let (status, body) = rig.get("/networks", "").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(neutron_type(&body), "HTTPUnauthorized");
}

#[tokio::test]
async fn subnets_and_ports() {
    let rig = rig();
    let net = rig.network(&rig.member_a, "net").await;
    let subnet = rig.subnet(&rig.member_a, &net, "10.0.0.0/24").await;
    assert_eq!(subnet["gateway_ip"], "10.0.0.1");
    assert_eq!(
        subnet["allocation_pools"],
        json!([{ "start": "10.0.0.2", "end": "10.0.0.254" }])
    );
    assert!(subnet["subnetpool_id"].is_null());
    assert_eq!(subnet["enable_dhcp"], true);
    let nogw = rig
        .made(
            "/subnets",
            &rig.member_a,
            "subnet",
            json!({ "network_id": net["id"], "ip_version": 4, "cidr": "10.1.0.0/24", "gateway_ip": null,
                    "dns_nameservers": ["9.9.9.9"], "host_routes": [{"destination": "192.168.0.0/16", "nexthop": "10.1.0.254"}] }),
        )
        .await;
    assert!(nogw["gateway_ip"].is_null());
    assert_eq!(nogw["dns_nameservers"], json!(["9.9.9.9"]));
    let nogw_id = nogw["id"].as_str().expect("id");
    let (status, updated) = rig
        .put(
            &format!("/subnets/{nogw_id}"),
            &rig.member_a,
            json!({ "subnet": { "name": "renamed", "dns_nameservers": [] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["subnet"]["dns_nameservers"], json!([]));
    let (_, shown) = rig
        .get(
            &format!("/networks/{}", net["id"].as_str().expect("id")),
            &rig.member_a,
        )
        .await;
    assert_eq!(
        shown["network"]["subnets"]
            .as_array()
            .expect("subnets")
            .len(),
        2
    );
    // Another project cannot add a subnet to it (it does not see it).
    let (status, body) = rig
        .post(
            "/subnets",
            &rig.member_b,
            json!({ "subnet": { "network_id": net["id"], "ip_version": 4, "cidr": "10.9.0.0/24" } }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(neutron_type(&body), "NetworkNotFound");

    let port = rig
        .made(
            "/ports",
            &rig.member_a,
            "port",
            json!({ "network_id": net["id"], "name": "p1", "device_id": "dev-1", "device_owner": "compute:nova",
                    "fixed_ips": [{ "subnet_id": subnet["id"], "ip_address": "10.0.0.10" }],
                    "allowed_address_pairs": [{ "ip_address": "10.0.0.200" }] }),
        )
        .await;
    assert_eq!(port["status"], "DOWN");
    assert_eq!(port["binding:vnic_type"], "normal");
    assert!(port.get("binding:host_id").is_none(), "admin-only");
    assert_eq!(port["fixed_ips"][0]["ip_address"], "10.0.0.10");
    assert_eq!(port["allowed_address_pairs"][0]["ip_address"], "10.0.0.200");
    assert_eq!(
        port["allowed_address_pairs"][0]["mac_address"],
        port["mac_address"]
    );
    assert!(
        port["mac_address"]
            .as_str()
            .expect("mac")
            .starts_with("fa:16:3e:")
    );
    assert_eq!(port["security_groups"].as_array().expect("groups").len(), 1);
    let port_id = port["id"].as_str().expect("id");
    let (_, admin_view) = rig.get(&format!("/ports/{port_id}"), &rig.admin).await;
    assert_eq!(admin_view["port"]["binding:vif_type"], "unbound");

    // The same address twice is refused.
    let (status, body) = rig
        .post(
            "/ports",
            &rig.member_a,
            json!({ "port": { "network_id": net["id"], "fixed_ips": [{ "ip_address": "10.0.0.10" }] } }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(neutron_type(&body), "IpAddressInUse");

    for query in [
        "fixed_ips=ip_address=10.0.0.10".to_owned(),
        "device_id=dev-1".to_owned(),
        "device_owner=compute:nova".to_owned(),
        format!("network_id={}", net["id"].as_str().expect("id")),
        format!("mac_address={}", port["mac_address"].as_str().expect("mac")),
    ] {
        let (_, listed) = rig.get(&format!("/ports?{query}"), &rig.member_a).await;
        assert_eq!(ids(&listed["ports"]), vec![port_id.to_owned()], "{query}");
    }
    let (_, none) = rig
        .get("/ports?fixed_ips=ip_address=10.0.0.11", &rig.member_a)
        .await;
    assert_eq!(ids(&none["ports"]).len(), 0);
    let (_, others) = rig.get("/ports", &rig.member_b).await;
    assert_eq!(ids(&others["ports"]).len(), 0);

    // Port security off needs no groups: refused while groups remain, fine with them cleared.
    let (status, body) = rig
        .put(
            &format!("/ports/{port_id}"),
            &rig.member_a,
            json!({ "port": { "port_security_enabled": false } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = rig
        .put(
            &format!("/ports/{port_id}"),
            &rig.member_a,
            json!({ "port": { "port_security_enabled": false, "security_groups": [], "allowed_address_pairs": [], "name": "open" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["port"]["port_security_enabled"], false);
    assert_eq!(body["port"]["name"], "open");

    // Router ports are made by routers only; a port in use keeps its network.
    let (status, _) = rig
        .post(
            "/ports",
            &rig.member_a,
            json!({ "port": { "network_id": net["id"], "device_owner": "network:router_interface" } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let net_id = net["id"].as_str().expect("id");
    let (status, body) = rig
        .call(
            Method::DELETE,
            &format!("/networks/{net_id}"),
            &rig.member_a,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(neutron_type(&body), "NetworkInUse");
    let subnet_id = subnet["id"].as_str().expect("id");
    let (status, body) = rig
        .call(
            Method::DELETE,
            &format!("/subnets/{subnet_id}"),
            &rig.member_a,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(neutron_type(&body), "SubnetInUse");

    assert_eq!(
        rig.delete(&format!("/ports/{port_id}"), &rig.member_a)
            .await,
        StatusCode::NO_CONTENT
    );
    let (status, body) = rig.get(&format!("/ports/{port_id}"), &rig.member_a).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(neutron_type(&body), "PortNotFound");
    assert_eq!(
        rig.delete(&format!("/subnets/{subnet_id}"), &rig.member_a)
            .await,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn routers_interfaces_and_floating_ips() {
    let rig = rig();
    let (public, public_subnet) = rig.external().await;
    let net = rig.network(&rig.member_a, "net").await;
    let subnet = rig.subnet(&rig.member_a, &net, "10.0.0.0/24").await;
    let router = rig
        .made(
            "/routers",
            &rig.member_a,
            "router",
            json!({ "name": "r", "external_gateway_info": { "network_id": public["id"] } }),
        )
        .await;
    let gateway = &router["external_gateway_info"];
    assert_eq!(gateway["network_id"], public["id"]);
    assert_eq!(gateway["enable_snat"], true);
    assert_eq!(
        gateway["external_fixed_ips"][0]["subnet_id"],
        public_subnet["id"]
    );
    let router_id = router["id"].as_str().expect("id");

    // Turning SNAT off is the admin's.
    let (status, _) = rig
        .put(
            &format!("/routers/{router_id}"),
            &rig.member_a,
            json!({ "router": { "external_gateway_info": { "network_id": public["id"], "enable_snat": false } } }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, added) = rig
        .put(
            &format!("/routers/{router_id}/add_router_interface"),
            &rig.member_a,
            json!({ "subnet_id": subnet["id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    assert_eq!(added["id"], router["id"]);
    assert_eq!(added["subnet_id"], subnet["id"]);
    assert_eq!(added["subnet_ids"], json!([subnet["id"]]));
    assert_eq!(added["network_id"], net["id"]);
    assert_eq!(added["project_id"], json!(rig.project_a));
    assert_eq!(added["tenant_id"], json!(rig.project_a));
    let (_, ports) = rig
        .get(
            &format!("/ports?device_id={router_id}&device_owner=network:router_interface"),
            &rig.member_a,
        )
        .await;
    assert_eq!(
        ids(&ports["ports"]),
        vec![added["port_id"].as_str().expect("port").to_owned()]
    );
    assert_eq!(ports["ports"][0]["fixed_ips"][0]["ip_address"], "10.0.0.1");

    let (status, body) = rig
        .put(
            &format!("/routers/{router_id}/add_router_interface"),
            &rig.member_a,
            json!({ "subnet_id": subnet["id"], "port_id": added["port_id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Static routes need a connected next hop.
    let (status, body) = rig
        .put(
            &format!("/routers/{router_id}"),
            &rig.member_a,
            json!({ "router": { "routes": [{ "destination": "192.168.0.0/16", "nexthop": "10.0.0.50" }] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["router"]["routes"][0]["nexthop"], "10.0.0.50");
    let (status, _) = rig
        .put(
            &format!("/routers/{router_id}"),
            &rig.member_a,
            json!({ "router": { "routes": [{ "destination": "192.168.0.0/16", "nexthop": "172.16.0.1" }] } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // Floating IP: allocate, associate, dissociate.
    let port = rig
        .made(
            "/ports",
            &rig.member_a,
            "port",
            json!({ "network_id": net["id"] }),
        )
        .await;
    let fip = rig
        .made(
            "/floatingips",
            &rig.member_a,
            "floatingip",
            json!({ "floating_network_id": public["id"] }),
        )
        .await;
    assert_eq!(fip["status"], "DOWN");
    assert!(fip["port_id"].is_null());
    assert!(
        fip["floating_ip_address"]
            .as_str()
            .expect("address")
            .starts_with("203.0.113.")
    );
    let fip_id = fip["id"].as_str().expect("id");
    let (status, associated) = rig
        .put(
            &format!("/floatingips/{fip_id}"),
            &rig.member_a,
            json!({ "floatingip": { "port_id": port["id"] } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{associated}");
    let associated = &associated["floatingip"];
    assert_eq!(associated["status"], "ACTIVE");
    assert_eq!(associated["port_id"], port["id"]);
    assert_eq!(associated["router_id"], router["id"]);
    assert_eq!(
        associated["fixed_ip_address"],
        port["fixed_ips"][0]["ip_address"]
    );
    let (status, described) = rig
        .put(
            &format!("/floatingips/{fip_id}"),
            &rig.member_a,
            json!({ "floatingip": { "description": "web" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        described["floatingip"]["port_id"], port["id"],
        "a description keeps the association"
    );
    let (_, by_port) = rig
        .get(
            &format!("/floatingips?port_id={}", port["id"].as_str().expect("id")),
            &rig.member_a,
        )
        .await;
    assert_eq!(ids(&by_port["floatingips"]), vec![fip_id.to_owned()]);

    // The interface is needed while the floating IP uses it.
    let (status, body) = rig
        .put(
            &format!("/routers/{router_id}/remove_router_interface"),
            &rig.member_a,
            json!({ "subnet_id": subnet["id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(neutron_type(&body), "RouterInUse");

    let (status, dissociated) = rig
        .put(
            &format!("/floatingips/{fip_id}"),
            &rig.member_a,
            json!({ "floatingip": { "port_id": null } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(dissociated["floatingip"]["status"], "DOWN");
    assert!(dissociated["floatingip"]["router_id"].is_null());
    assert!(dissociated["floatingip"]["fixed_ip_address"].is_null());

    // Another project's port cannot be associated: it does not exist for them.
    let (status, body) = rig
        .post(
            "/floatingips",
            &rig.member_b,
            json!({ "floatingip": { "floating_network_id": public["id"], "port_id": port["id"] } }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(neutron_type(&body), "PortNotFound");
    let (status, body) = rig
        .get(&format!("/floatingips/{fip_id}"), &rig.member_b)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(neutron_type(&body), "FloatingIPNotFound");

    let (status, removed) = rig
        .put(
            &format!("/routers/{router_id}/remove_router_interface"),
            &rig.member_a,
            json!({ "subnet_id": subnet["id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["port_id"], added["port_id"]);
    assert_eq!(removed["subnet_ids"], json!([subnet["id"]]));
    let (status, body) = rig
        .put(
            &format!("/routers/{router_id}/remove_router_interface"),
            &rig.member_a,
            json!({ "subnet_id": subnet["id"] }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(neutron_type(&body), "RouterInterfaceNotFound");

    assert_eq!(
        rig.delete(&format!("/floatingips/{fip_id}"), &rig.member_a)
            .await,
        StatusCode::NO_CONTENT
    );
    let (status, cleared) = rig
        .put(
            &format!("/routers/{router_id}"),
            &rig.member_a,
            json!({ "router": { "external_gateway_info": {} } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cleared}");
    assert!(cleared["router"]["external_gateway_info"].is_null());
    assert_eq!(
        rig.delete(&format!("/routers/{router_id}"), &rig.member_a)
            .await,
        StatusCode::NO_CONTENT
    );
    let (status, body) = rig
        .get(&format!("/routers/{router_id}"), &rig.member_a)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(neutron_type(&body), "RouterNotFound");
}

#[tokio::test]
async fn security_groups_and_rules() {
    let rig = rig();
    // Listing makes the project's default group.
    let (_, listed) = rig.get("/security-groups", &rig.member_a).await;
    let groups = listed["security_groups"].as_array().expect("groups");
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["name"], "default");
    assert_eq!(groups[0]["stateful"], true);
    let default_id = groups[0]["id"].as_str().expect("id").to_owned();

    let group = rig
        .made(
            "/security-groups",
            &rig.member_a,
            "security_group",
            json!({ "name": "web", "description": "w" }),
        )
        .await;
    let rules = group["security_group_rules"].as_array().expect("rules");
    assert_eq!(rules.len(), 2, "egress IPv4 and IPv6");
    assert!(rules.iter().all(|r| r["direction"] == "egress"));
    let group_id = group["id"].as_str().expect("id");

    let rule = rig
        .made(
            "/security-group-rules",
            &rig.member_a,
            "security_group_rule",
            json!({ "security_group_id": group_id, "direction": "ingress", "protocol": "tcp",
                    "port_range_min": 22, "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0" }),
        )
        .await;
    assert_eq!(rule["ethertype"], "IPv4");
    assert_eq!(rule["protocol"], "tcp");
    assert_eq!(rule["port_range_min"], 22);
    assert_eq!(rule["project_id"], json!(rig.project_a));
    assert!(rule["remote_group_id"].is_null());
    // The same rule again (protocol given by number) is a duplicate.
    let (status, body) = rig
        .post(
            "/security-group-rules",
            &rig.member_a,
            json!({ "security_group_rule": { "security_group_id": group_id, "direction": "ingress", "protocol": 6,
                    "port_range_min": "22", "port_range_max": 22, "remote_ip_prefix": "0.0.0.0/0" } }),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(neutron_type(&body), "SecurityGroupRuleExists");
    let (status, body) = rig
        .post(
            "/security-group-rules",
            &rig.member_a,
            json!({ "security_group_rule": { "security_group_id": group_id, "direction": "sideways" } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(neutron_type(&body), "InvalidInput");
    // A remote group of the same project.
    let remote = rig
        .made(
            "/security-group-rules",
            &rig.member_a,
            "security_group_rule",
            json!({ "security_group_id": group_id, "direction": "ingress", "ethertype": "IPv6",
                    "remote_group_id": default_id }),
        )
        .await;
    assert_eq!(remote["remote_group_id"], json!(default_id));

    let (_, shown) = rig
        .get(&format!("/security-groups/{group_id}"), &rig.reader_a)
        .await;
    assert_eq!(
        shown["security_group"]["security_group_rules"]
            .as_array()
            .expect("rules")
            .len(),
        4
    );
    let (_, filtered) = rig
        .get(
            &format!("/security-group-rules?security_group_id={group_id}&direction=ingress"),
            &rig.member_a,
        )
        .await;
    assert_eq!(
        filtered["security_group_rules"]
            .as_array()
            .expect("rules")
            .len(),
        2
    );

    // Isolation: another project sees neither group nor rule and cannot add to them.
    let rule_id = rule["id"].as_str().expect("id");
    let (status, body) = rig
        .get(&format!("/security-groups/{group_id}"), &rig.member_b)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(neutron_type(&body), "SecurityGroupNotFound");
    let (status, body) = rig
        .get(&format!("/security-group-rules/{rule_id}"), &rig.member_b)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(neutron_type(&body), "SecurityGroupRuleNotFound");
    let (status, _) = rig
        .post(
            "/security-group-rules",
            &rig.member_b,
            json!({ "security_group_rule": { "security_group_id": group_id, "direction": "ingress" } }),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = rig
        .post(
            "/security-group-rules",
            &rig.reader_a,
            json!({ "security_group_rule": { "security_group_id": group_id, "direction": "egress", "protocol": "udp" } }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, renamed) = rig
        .put(
            &format!("/security-groups/{group_id}"),
            &rig.member_a,
            json!({ "security_group": { "name": "www" } }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(renamed["security_group"]["name"], "www");
    let (status, _) = rig
        .post(
            "/security-groups",
            &rig.member_a,
            json!({ "security_group": { "name": "stateless", "stateful": false } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    assert_eq!(
        rig.delete(&format!("/security-group-rules/{rule_id}"), &rig.member_a)
            .await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        rig.delete(&format!("/security-group-rules/{rule_id}"), &rig.member_a)
            .await,
        StatusCode::NOT_FOUND
    );
    let (status, body) = rig
        .call(
            Method::DELETE,
            &format!("/security-groups/{default_id}"),
            &rig.member_a,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(neutron_type(&body), "SecurityGroupCannotRemoveDefault");
    assert_eq!(
        rig.delete(&format!("/security-groups/{group_id}"), &rig.member_a)
            .await,
        StatusCode::NO_CONTENT
    );
}

/// SCS-0115's check, as its test script makes it: no ingress template but "from the same group" for
/// default groups only, and egress for both families in default and custom groups.
fn scs_0115_compliant(templates: &[Value]) -> bool {
    let mut egress = std::collections::BTreeSet::new();
    for t in templates {
        match t["direction"].as_str() {
            Some("ingress")
                if !(t["remote_group_id"] == "PARENT" && t["used_in_non_default_sg"] == false) =>
            {
                return false;
            }
            Some("egress") if t["remote_ip_prefix"].is_null() => {
                let family = t["ethertype"].as_str().unwrap_or_default().to_owned();
                if t["used_in_default_sg"] == true {
                    egress.insert((family.clone(), "default"));
                }
                if t["used_in_non_default_sg"] == true {
                    egress.insert((family, "custom"));
                }
            }
            _ => {}
        }
    }
    egress.len() == 4
}

#[tokio::test]
async fn default_security_group_rules_shape_new_groups() {
    let rig = rig();
    let (status, listed) = rig
        .get("/default-security-group-rules", &rig.reader_a)
        .await;
    assert_eq!(status, StatusCode::OK);
    let seeded = listed["default_security_group_rules"]
        .as_array()
        .expect("templates")
        .clone();
    assert_eq!(seeded.len(), 4, "{listed}");
    assert!(scs_0115_compliant(&seeded));
    assert!(
        seeded
            .iter()
            .all(|t| t["remote_address_group_id"].is_null())
    );
    let id = seeded[0]["id"].as_str().expect("id");
    let (status, shown) = rig
        .get(
            &format!("/default-security-group-rules/{id}"),
            &rig.member_b,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["default_security_group_rule"]["id"], json!(id));

    // Project A's default group exists before the change and keeps its rules.
    let (_, before) = rig
        .get("/security-groups?name=default", &rig.member_a)
        .await;
    let before_rules = before["security_groups"][0]["security_group_rules"].clone();
    assert_eq!(before_rules.as_array().expect("rules").len(), 4);

    // Only admins change templates.
    let ssh = json!({ "default_security_group_rule": {
        "direction": "ingress", "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
        "remote_ip_prefix": "0.0.0.0/0", "used_in_default_sg": true, "used_in_non_default_sg": false,
        "description": "ssh" } });
    let (status, body) = rig
        .post("/default-security-group-rules", &rig.member_a, ssh.clone())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(neutron_type(&body), "HTTPForbidden");
    let (status, created) = rig
        .post("/default-security-group-rules", &rig.admin, ssh.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let template = &created["default_security_group_rule"];
    assert_eq!(template["used_in_default_sg"], true);
    assert_eq!(template["remote_ip_prefix"], "0.0.0.0/0");
    let (status, body) = rig
        .post("/default-security-group-rules", &rig.admin, ssh)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(neutron_type(&body), "DefaultSecurityGroupRuleExists");
    let (_, listed) = rig
        .get("/default-security-group-rules", &rig.member_a)
        .await;
    assert!(!scs_0115_compliant(
        listed["default_security_group_rules"]
            .as_array()
            .expect("templates")
    ));

    // Without the egress IPv6 template, groups made from now on get no IPv6 egress.
    let egress_v6 = seeded
        .iter()
        .find(|t| t["direction"] == "egress" && t["ethertype"] == "IPv6")
        .expect("egress v6");
    let egress_v6_id = egress_v6["id"].as_str().expect("id");
    assert_eq!(
        rig.delete(
            &format!("/default-security-group-rules/{egress_v6_id}"),
            &rig.member_a
        )
        .await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        rig.delete(
            &format!("/default-security-group-rules/{egress_v6_id}"),
            &rig.admin
        )
        .await,
        StatusCode::NO_CONTENT
    );

    // Project B's default group is made now: from the templates as they are.
    let (_, after) = rig
        .get("/security-groups?name=default", &rig.member_b)
        .await;
    let group = &after["security_groups"][0];
    assert_eq!(group["project_id"], json!(rig.project_b));
    let rules = group["security_group_rules"].as_array().expect("rules");
    let shape: std::collections::BTreeSet<String> = rules
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {}",
                r["direction"],
                r["ethertype"],
                r["protocol"],
                r["port_range_min"],
                if r["remote_group_id"] == group["id"] {
                    "self".to_owned()
                } else {
                    r["remote_ip_prefix"].to_string()
                }
            )
        })
        .collect();
    let expected: std::collections::BTreeSet<String> = [
        r#""ingress" "IPv4" null null self"#,
        r#""ingress" "IPv6" null null self"#,
        r#""egress" "IPv4" null null null"#,
        r#""ingress" "IPv4" "tcp" 22 "0.0.0.0/0""#,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(shape, expected);
    // A custom group of B gets only the custom templates: egress IPv4.
    let custom = rig
        .made(
            "/security-groups",
            &rig.member_b,
            "security_group",
            json!({ "name": "c" }),
        )
        .await;
    let custom_rules = custom["security_group_rules"].as_array().expect("rules");
    assert_eq!(custom_rules.len(), 1);
    assert_eq!(custom_rules[0]["direction"], "egress");
    assert_eq!(custom_rules[0]["ethertype"], "IPv4");

    // A's default group did not change.
    let (_, again) = rig
        .get("/security-groups?name=default", &rig.member_a)
        .await;
    assert_eq!(
        again["security_groups"][0]["security_group_rules"],
        before_rules
    );

    let (status, body) = rig
        .get(
            &format!("/default-security-group-rules/{egress_v6_id}"),
            &rig.member_a,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(neutron_type(&body), "DefaultSecurityGroupRuleNotFound");
}

#[tokio::test]
async fn bad_requests_are_neutron_errors_and_change_nothing() {
    let rig = rig();
    let (status, body) = rig
        .raw(
            Method::POST,
            &format!("{V}/networks"),
            &rig.member_a,
            Body::from("{\"network\": "),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(neutron_type(&body), "HTTPBadRequest");

    let (status, body) = rig
        .post(
            "/networks",
            &rig.member_a,
            json!({ "network": { "name": "x", "bogus": 1, "other": 2 } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["NeutronError"]["message"],
        "Unrecognized attribute(s) 'bogus, other'"
    );
    let (status, body) = rig
        .post(
            "/networks",
            &rig.member_a,
            json!({ "network": { "status": "DOWN" } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["NeutronError"]["message"],
        "Attribute 'status' not allowed in POST"
    );
    let (status, body) = rig
        .post("/networks", &rig.member_a, json!({ "net": {} }))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["NeutronError"]["message"],
        "Unable to find 'network' in request body"
    );
    let (status, body) = rig
        .post(
            "/networks",
            &rig.member_a,
            json!({ "network": { "admin_state_up": "maybe" } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = rig
        .post(
            "/networks",
            &rig.member_a,
            json!({ "network": { "mtu": 9000 } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(neutron_type(&body), "InvalidInput");

    let big = format!(
        "{{\"network\": {{\"name\": \"{}\"}}}}",
        "x".repeat(1024 * 1024 + 10)
    );
    let (status, body) = rig
        .raw(
            Method::POST,
            &format!("{V}/networks"),
            &rig.member_a,
            Body::from(big),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(neutron_type(&body), "HTTPRequestEntityTooLarge");

    let (_, listed) = rig.get("/networks", &rig.member_a).await;
    assert_eq!(ids(&listed["networks"]).len(), 0, "nothing was made");

    let net = rig.network(&rig.member_a, "n").await;
    for bad in [
        json!({ "network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.1/24" }),
        json!({ "network_id": net["id"], "ip_version": 6, "cidr": "10.0.0.0/24" }),
        json!({ "network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24", "gateway_ip": "192.168.0.1" }),
        json!({ "network_id": net["id"], "ip_version": 4 }),
        json!({ "network_id": net["id"], "ip_version": 4, "cidr": "10.0.0.0/24", "subnetpool_id": "x" }),
    ] {
        let (status, body) = rig
            .post("/subnets", &rig.member_a, json!({ "subnet": bad }))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    let (_, subnets) = rig.get("/subnets", &rig.member_a).await;
    assert_eq!(ids(&subnets["subnets"]).len(), 0);
    let net_id = net["id"].as_str().expect("id");
    let (status, _) = rig
        .put(
            &format!("/networks/{net_id}"),
            &rig.member_a,
            json!({ "network": { "name": "ok", "mtu": 1 } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, shown) = rig.get(&format!("/networks/{net_id}"), &rig.member_a).await;
    assert_eq!(
        shown["network"]["name"], "n",
        "a refused update changes nothing"
    );

    let (status, body) = rig.get("/networks/not-a-uuid", &rig.member_a).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(neutron_type(&body), "NetworkNotFound");
    let (status, body) = rig.get("/nothing-here", &rig.member_a).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(neutron_type(&body), "HTTPNotFound");
}

#[tokio::test]
async fn lists_sort_page_and_project_fields() {
    let rig = rig();
    for name in ["c", "a", "b"] {
        rig.network(&rig.member_a, name).await;
    }
    let (_, sorted) = rig
        .get(
            "/networks?sort_key=name&sort_dir=asc&fields=name",
            &rig.member_a,
        )
        .await;
    assert_eq!(
        sorted["networks"],
        json!([{ "name": "a" }, { "name": "b" }, { "name": "c" }])
    );
    let (_, page) = rig
        .get(
            "/networks?sort_key=name&sort_dir=desc&limit=2",
            &rig.member_a,
        )
        .await;
    let first = page["networks"].as_array().expect("page");
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["name"], "c");
    let next = page["networks_links"][0]["href"]
        .as_str()
        .expect("next link");
    assert!(
        next.starts_with(&format!("{BASE}/network/v2.0/networks?")),
        "{next}"
    );
    let marker = first[1]["id"].as_str().expect("id");
    let (_, rest) = rig
        .get(
            &format!("/networks?sort_key=name&sort_dir=desc&limit=2&marker={marker}"),
            &rig.member_a,
        )
        .await;
    assert_eq!(rest["networks"].as_array().expect("rest").len(), 1);
    assert_eq!(rest["networks"][0]["name"], "a");
    assert!(rest.get("networks_links").is_none());
    let (status, _) = rig.get("/networks?sort_key=bogus", &rig.member_a).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn extensions_and_quotas() {
    let rig = rig();
    let (status, listed) = rig.get("/extensions", &rig.member_a).await;
    assert_eq!(status, StatusCode::OK);
    let aliases: Vec<&str> = listed["extensions"]
        .as_array()
        .expect("extensions")
        .iter()
        .map(|e| e["alias"].as_str().expect("alias"))
        .collect();
    for alias in [
        "security-groups-default-rules",
        "router",
        "external-net",
        "quotas",
        "provider",
    ] {
        assert!(aliases.contains(&alias), "{alias}");
    }
    for absent in [
        "extra_dhcp_opt",
        "default-subnetpools",
        "standard-attr-revisions",
    ] {
        assert!(!aliases.contains(&absent), "{absent}");
    }
    let (status, shown) = rig.get("/extensions/router", &rig.member_a).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["extension"]["links"], json!([]));
    let (status, _) = rig.get("/extensions/nope", &rig.member_a).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    rig.network(&rig.member_a, "n").await;
    let project = rig.project_a.clone();
    let (status, quota) = rig.get(&format!("/quotas/{project}"), &rig.reader_a).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(quota["quota"]["network"], -1);
    let (_, details) = rig
        .get(&format!("/quotas/{project}/details.json"), &rig.member_a)
        .await;
    assert_eq!(
        details["quota"]["network"],
        json!({ "used": 1, "limit": -1, "reserved": 0 })
    );
    let (status, _) = rig.get(&format!("/quotas/{project}"), &rig.member_b).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = rig
        .put(
            &format!("/quotas/{project}"),
            &rig.admin,
            json!({ "quota": { "network": 5 } }),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = rig
        .put(
            &format!("/quotas/{project}"),
            &rig.member_a,
            json!({ "quota": { "network": 5 } }),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, all) = rig.get("/quotas", &rig.admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(all, json!({ "quotas": [] }));
}
