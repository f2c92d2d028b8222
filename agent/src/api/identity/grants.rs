//! Grants (`/v3/{projects,domains}/{id}/{users,groups}/{actor}/roles[/{role}]`,
//! `/v3/system/{users,groups}/{actor}/roles[/{role}]`) and `GET /v3/role_assignments`.
//!
//! Policy looks at both ends of a grant, as Keystone's does: a domain manager may grant only the
//! roles in `DOMAIN_MANAGED_ROLES`, and only when the project (or domain) and the user (or group)
//! both live in its domain; only an admin touches system grants. Reading grants needs the reader role
//! on both domains.

use super::roles::role_doc;
use super::{QueryMap, authorize, collection, flag, url};
use crate::api::ApiState;
use crate::api::auth::{Authenticated, blocking};
use crate::api::error::ApiError;
use crate::identity::policy::{Caller, IdentityAction, PolicyTarget};
use crate::identity::service::DomainFilter;
use crate::identity::{
    Actor, AssignmentFilter, IdentityError, IdentityService, ProjectFilter, RoleAssignment, Target,
    UserFilter,
};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use serde_json::{Value, json};
use std::collections::HashMap;

/// What a grant applies to.
#[derive(Debug, Clone, Copy)]
enum On {
    Project,
    Domain,
    System,
}

/// Who a grant is for.
#[derive(Debug, Clone, Copy)]
enum Who {
    User,
    Group,
}

/// One grant path, parsed.
struct GrantPath {
    target: Target,
    actor: Actor,
    role: Option<String>,
}

impl GrantPath {
    /// From the path parameters in order: target id (unless system), actor id, role id (if any).
    fn parse(on: On, who: Who, mut params: Vec<String>) -> Result<Self, ApiError> {
        params.reverse();
        let mut next = || {
            params
                .pop()
                .ok_or_else(|| ApiError::not_found("The resource could not be found."))
        };
        let target = match on {
            On::Project => Target::Project(next()?),
            On::Domain => Target::Domain(next()?),
            On::System => Target::System,
        };
        let actor = match who {
            Who::User => Actor::User(next()?),
            Who::Group => Actor::Group(next()?),
        };
        let role = next().ok();
        Ok(Self {
            target,
            actor,
            role,
        })
    }
}

/// The grant routes.
pub(super) fn routes(v: &str) -> Router<ApiState> {
    type Params = Path<Vec<String>>;
    let mut router = Router::new();
    let targets = [
        (On::Project, "projects/{id}"),
        (On::Domain, "domains/{id}"),
        (On::System, "system"),
    ];
    for (on, prefix) in targets {
        for (who, segment) in [(Who::User, "users"), (Who::Group, "groups")] {
            router = router
                .route(
                    &format!("{v}/{prefix}/{segment}/{{actor}}/roles"),
                    get(
                        move |s: State<ApiState>, c: Authenticated, Path(p): Params| {
                            list(s, c, on, who, p)
                        },
                    ),
                )
                .route(
                    &format!("{v}/{prefix}/{segment}/{{actor}}/roles/{{role}}"),
                    put(
                        move |s: State<ApiState>, c: Authenticated, Path(p): Params| {
                            change(s, c, on, who, p, Change::Grant)
                        },
                    )
                    .get(
                        move |s: State<ApiState>, c: Authenticated, Path(p): Params| {
                            change(s, c, on, who, p, Change::Check)
                        },
                    )
                    .delete(
                        move |s: State<ApiState>, c: Authenticated, Path(p): Params| {
                            change(s, c, on, who, p, Change::Revoke)
                        },
                    ),
                );
        }
    }
    router
}

/// The domain a grant's target lives in: `Ok(None)` for the system, `Err` with the NotFound when
/// missing (kept until the policy has spoken).
fn target_domain(
    identity: &IdentityService,
    target: &Target,
) -> Result<Result<Option<String>, IdentityError>, ApiError> {
    let found = match target {
        Target::Project(id) => identity.project(id).map(|p| Some(p.domain_id)),
        Target::Domain(id) => identity.domain(id).map(|d| Some(d.id)),
        Target::System => Ok(None),
    };
    keep_not_found(found)
}

fn actor_domain(
    identity: &IdentityService,
    actor: &Actor,
) -> Result<Result<Option<String>, IdentityError>, ApiError> {
    let found = match actor {
        Actor::User(id) => identity.user(id).map(|u| Some(u.domain_id)),
        Actor::Group(id) => identity.group(id).map(|g| Some(g.domain_id)),
    };
    keep_not_found(found)
}

/// Store failures end the request; a NotFound waits for the policy decision.
fn keep_not_found<T>(
    found: Result<T, IdentityError>,
) -> Result<Result<T, IdentityError>, ApiError> {
    match found {
        Err(err @ IdentityError::NotFound { .. }) => Ok(Err(err)),
        Err(err) => Err(ApiError::domain(err)),
        Ok(value) => Ok(Ok(value)),
    }
}

/// Checks `action` against both ends of a grant, then reports a missing resource (404) if any.
fn authorize_grant(
    identity: &IdentityService,
    caller: &Caller,
    rule: &str,
    action: IdentityAction,
    path: &GrantPath,
) -> Result<(), ApiError> {
    let target = target_domain(identity, &path.target)?;
    let actor = actor_domain(identity, &path.actor)?;
    let role = match &path.role {
        Some(role) => Some(keep_not_found(identity.role(role))?),
        None => None,
    };
    let role_name = match &role {
        Some(Ok(role)) => Some(role.name.clone()),
        _ => None,
    };
    for domain in [&target, &actor] {
        let policy_target = PolicyTarget {
            domain_id: domain.as_ref().ok().cloned().flatten(),
            role_name: role_name.clone(),
            ..PolicyTarget::default()
        };
        authorize(caller, rule, action, &policy_target)?;
    }
    if let Err(err) = target {
        return Err(ApiError::domain(err));
    }
    if let Err(err) = actor {
        return Err(ApiError::domain(err));
    }
    if let Some(Err(err)) = role {
        return Err(ApiError::domain(err));
    }
    Ok(())
}

/// What a request does to one grant.
#[derive(Debug, Clone, Copy)]
enum Change {
    Grant,
    Check,
    Revoke,
}

/// `PUT` (grant), `GET`/`HEAD` (check) and `DELETE` (revoke) of one grant: 204, or 404.
async fn change(
    State(state): State<ApiState>,
    caller: Authenticated,
    on: On,
    who: Who,
    params: Vec<String>,
    change: Change,
) -> Result<StatusCode, ApiError> {
    let path = GrantPath::parse(on, who, params)?;
    let identity = state.identity.clone();
    blocking(move || {
        let role = path.role.clone().unwrap_or_default();
        let (rule, action) = match change {
            Change::Grant => ("create_grant", IdentityAction::ManageGrant),
            Change::Check => ("check_grant", IdentityAction::ListAssignments),
            Change::Revoke => ("revoke_grant", IdentityAction::ManageGrant),
        };
        authorize_grant(&identity, &caller.0, rule, action, &path)?;
        match change {
            Change::Grant => identity.grant(&path.actor, &path.target, &role),
            Change::Check => identity.check_grant(&path.actor, &path.target, &role),
            Change::Revoke => identity.revoke_grant(&path.actor, &path.target, &role),
        }
        .map_err(ApiError::domain)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET …/roles`: the roles granted directly on the target.
async fn list(
    State(state): State<ApiState>,
    caller: Authenticated,
    on: On,
    who: Who,
    params: Vec<String>,
) -> Result<Json<Value>, ApiError> {
    let path = GrantPath::parse(on, who, params)?;
    let identity = state.identity.clone();
    let roles = blocking(move || {
        authorize_grant(
            &identity,
            &caller.0,
            "list_grants",
            IdentityAction::ListAssignments,
            &path,
        )?;
        let (user_id, group_id) = match &path.actor {
            Actor::User(id) => (Some(id.clone()), None),
            Actor::Group(id) => (None, Some(id.clone())),
        };
        let (project_id, domain_id, system) = match &path.target {
            Target::Project(id) => (Some(id.clone()), None, false),
            Target::Domain(id) => (None, Some(id.clone()), false),
            Target::System => (None, None, true),
        };
        let rows = identity
            .list_assignments(&AssignmentFilter {
                user_id,
                group_id,
                project_id,
                domain_id,
                system,
                ..AssignmentFilter::default()
            })
            .map_err(ApiError::domain)?;
        let mut roles = Vec::new();
        for row in rows {
            roles.push(identity.role(&row.role.id).map_err(ApiError::domain)?);
        }
        Ok(roles)
    })
    .await?;
    let base = &state.public_base;
    let docs = roles.iter().map(|r| role_doc(base, r)).collect();
    Ok(Json(collection(base, "roles", docs)))
}

/// The grant URL of an assignment (`links.assignment`).
fn assignment_path(actor: &Actor, target: &Target, role: &str) -> String {
    let actor = match actor {
        Actor::User(id) => format!("users/{id}"),
        Actor::Group(id) => format!("groups/{id}"),
    };
    match target {
        Target::Project(id) => format!("projects/{id}/{actor}/roles/{role}"),
        Target::Domain(id) => format!("domains/{id}/{actor}/roles/{role}"),
        Target::System => format!("system/{actor}/roles/{role}"),
    }
}

/// Names for `include_names`, read once per request.
#[derive(Default)]
struct Names {
    users: HashMap<String, (String, String)>,
    groups: HashMap<String, (String, String)>,
    projects: HashMap<String, (String, String)>,
    domains: HashMap<String, String>,
}

impl Names {
    fn load(identity: &IdentityService) -> Result<Self, IdentityError> {
        Ok(Self {
            users: identity
                .list_users(&UserFilter::default())?
                .into_iter()
                .map(|u| (u.id, (u.name, u.domain_id)))
                .collect(),
            groups: identity
                .list_groups(&UserFilter::default())?
                .into_iter()
                .map(|g| (g.id, (g.name, g.domain_id)))
                .collect(),
            projects: identity
                .list_projects(&ProjectFilter::default())?
                .into_iter()
                .map(|p| (p.id, (p.name, p.domain_id)))
                .collect(),
            domains: identity
                .list_domains(&DomainFilter::default())?
                .into_iter()
                .map(|d| (d.id, d.name))
                .collect(),
        })
    }

    fn domain(&self, id: &str) -> Value {
        json!({ "id": id, "name": self.domains.get(id) })
    }

    fn named(&self, table: &HashMap<String, (String, String)>, id: &str) -> Value {
        match table.get(id) {
            Some((name, domain)) => {
                json!({ "id": id, "name": name, "domain": self.domain(domain) })
            }
            None => json!({ "id": id }),
        }
    }
}

fn assignment_doc(base: &str, row: &RoleAssignment, names: Option<&Names>) -> Value {
    let mut doc = json!({});
    let mut role = json!({ "id": row.role.id });
    if names.is_some() {
        role["name"] = json!(row.role.name);
    }
    doc["role"] = role;
    match &row.actor {
        Actor::User(id) => {
            doc["user"] = names.map_or_else(|| json!({ "id": id }), |n| n.named(&n.users, id));
        }
        Actor::Group(id) => {
            doc["group"] = names.map_or_else(|| json!({ "id": id }), |n| n.named(&n.groups, id));
        }
    }
    doc["scope"] = match &row.target {
        Target::Project(id) => {
            json!({ "project": names.map_or_else(|| json!({ "id": id }), |n| n.named(&n.projects, id)) })
        }
        Target::Domain(id) => {
            json!({ "domain": names.map_or_else(|| json!({ "id": id }), |n| n.domain(id)) })
        }
        Target::System => json!({ "system": { "all": true } }),
    };
    // The assignment actually made: the group's when inherited through one, the prior role's when
    // implied by it.
    let granted_role = row.prior_role.as_ref().map_or(&row.role.id, |p| &p.id);
    let granted_actor = match (&row.via_group, &row.actor) {
        (Some(group), _) => Actor::Group(group.clone()),
        (None, actor) => actor.clone(),
    };
    let mut links = json!({
        "assignment": url(base, &assignment_path(&granted_actor, &row.target, granted_role)),
    });
    if let (Some(group), Actor::User(user)) = (&row.via_group, &row.actor) {
        links["membership"] = json!(url(base, &format!("groups/{group}/users/{user}")));
    }
    if let Some(prior) = &row.prior_role {
        links["prior_role"] = json!(url(
            base,
            &format!("prior_roles/{}/implies/{}", prior.id, row.role.id)
        ));
        let mut prior_doc = json!({ "id": prior.id });
        if names.is_some() {
            prior_doc["name"] = json!(prior.name);
        }
        doc["prior_role"] = prior_doc;
    }
    doc["links"] = links;
    doc
}

/// `GET /v3/role_assignments` (filters `user.id`, `group.id`, `scope.project.id`,
/// `scope.domain.id`, `scope.system`, `role.id`, `effective`, `include_names`).
///
/// A domain-scoped reader without a scope filter sees the assignments on its domain and on the
/// projects in it.
pub(super) async fn role_assignments(
    State(state): State<ApiState>,
    caller: Authenticated,
    Query(query): Query<QueryMap>,
) -> Result<Json<Value>, ApiError> {
    let filter = AssignmentFilter {
        user_id: query.get("user.id").cloned(),
        group_id: query.get("group.id").cloned(),
        project_id: query.get("scope.project.id").cloned(),
        domain_id: query.get("scope.domain.id").cloned(),
        system: query.contains_key("scope.system"),
        role_id: query.get("role.id").cloned(),
        effective: flag(&query, "effective"),
    };
    let include_names = flag(&query, "include_names");
    let identity = state.identity.clone();
    let (rows, names) = blocking(move || {
        let caller = &caller.0;
        let rule = "list_role_assignments";
        let action = IdentityAction::ListAssignments;
        // The domain the listing is confined to, for policy and (for domain readers) filtering.
        let confined = if let Some(project) = &filter.project_id {
            match identity.project(project) {
                Ok(p) => Some(p.domain_id),
                Err(IdentityError::NotFound { .. }) => None,
                Err(err) => return Err(ApiError::domain(err)),
            }
        } else if let Some(domain) = &filter.domain_id {
            Some(domain.clone())
        } else if filter.system || caller.is_admin() || caller.is_system_reader() {
            None
        } else {
            caller.domain_id().map(str::to_owned)
        };
        authorize(
            caller,
            rule,
            action,
            &PolicyTarget {
                domain_id: confined.clone(),
                ..PolicyTarget::default()
            },
        )?;
        let mut rows = identity
            .list_assignments(&filter)
            .map_err(ApiError::domain)?;
        let unfiltered =
            filter.project_id.is_none() && filter.domain_id.is_none() && !filter.system;
        if unfiltered && let Some(domain) = &confined {
            let projects: Vec<String> = identity
                .list_projects(&ProjectFilter {
                    domain_id: Some(domain.clone()),
                    ..ProjectFilter::default()
                })
                .map_err(ApiError::domain)?
                .into_iter()
                .map(|p| p.id)
                .collect();
            rows.retain(|row| match &row.target {
                Target::Project(id) => projects.contains(id),
                Target::Domain(id) => id == domain,
                Target::System => false,
            });
        }
        let names = if include_names {
            Some(Names::load(&identity).map_err(ApiError::domain)?)
        } else {
            None
        };
        Ok((rows, names))
    })
    .await?;
    let base = &state.public_base;
    let docs = rows
        .iter()
        .map(|row| assignment_doc(base, row, names.as_ref()))
        .collect();
    Ok(Json(collection(base, "role_assignments", docs)))
}
