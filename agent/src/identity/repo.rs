//! SQL for the identity model. Every function takes the caller's transaction, so a request's checks
//! and writes happen atomically; nothing here decides policy.

use super::IdentityError;
use super::model::{
    Actor, ApplicationCredential, Domain, Group, ImpliedRole, Project, Role, RoleRef, Target, User,
};
use crate::store::{from_json, to_json};
use jiff::Timestamp;
use rusqlite::{OptionalExtension, Row, Transaction, params};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

type Result<T> = std::result::Result<T, IdentityError>;

fn time(text: &str) -> Result<Timestamp> {
    text.parse()
        .map_err(|_| IdentityError::Corrupt(format!("malformed time {text:?}")))
}

fn opt_time(text: Option<&str>) -> Result<Option<Timestamp>> {
    text.map(time).transpose()
}

/// Bumps the identity generation: every cached token validation made before is stale.
pub(super) fn bump_generation(tx: &Transaction<'_>) -> Result<()> {
    tx.execute(
        "UPDATE settings SET value = CAST(value AS INTEGER) + 1 WHERE key = 'identity_generation'",
        [],
    )?;
    Ok(())
}

/// The identity generation.
pub(super) fn generation(tx: &Transaction<'_>) -> Result<i64> {
    let text: String = tx.query_row(
        "SELECT value FROM settings WHERE key = 'identity_generation'",
        [],
        |r| r.get(0),
    )?;
    text.parse()
        .map_err(|_| IdentityError::Corrupt("identity_generation".into()))
}

/// Appends `AND column = ?` for each set filter; returns the clause and its values.
fn filters(pairs: &[(&str, Option<String>)]) -> (String, Vec<String>) {
    let mut clause = String::new();
    let mut values = Vec::new();
    for (column, value) in pairs {
        if let Some(value) = value {
            values.push(value.clone());
            let _ = write!(clause, " AND {column} = ?{}", values.len());
        }
    }
    (clause, values)
}

fn collect<T>(
    tx: &Transaction<'_>,
    sql: &str,
    values: &[String],
    map: impl Fn(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = tx.prepare(sql)?;
    let mut rows = stmt.query(rusqlite::params_from_iter(values.iter()))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(map(row)?);
    }
    Ok(out)
}

// ---- domains ----------------------------------------------------------------------------------

const DOMAIN_COLUMNS: &str = "id, name, description, enabled";

fn domain_row(r: &Row<'_>) -> Result<Domain> {
    Ok(Domain {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        enabled: r.get(3)?,
    })
}

pub(super) fn insert_domain(tx: &Transaction<'_>, d: &Domain, now: Timestamp) -> Result<()> {
    tx.execute(
        "INSERT INTO identity_domains (id, name, description, enabled, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![d.id, d.name, d.description, d.enabled, now.to_string()],
    )?;
    Ok(())
}

pub(super) fn domain(tx: &Transaction<'_>, id: &str) -> Result<Option<Domain>> {
    tx.query_row(
        &format!("SELECT {DOMAIN_COLUMNS} FROM identity_domains WHERE id = ?1"),
        [id],
        |r| Ok(domain_row(r)),
    )
    .optional()?
    .transpose()
}

pub(super) fn domain_by_name(tx: &Transaction<'_>, name: &str) -> Result<Option<Domain>> {
    tx.query_row(
        &format!("SELECT {DOMAIN_COLUMNS} FROM identity_domains WHERE name = ?1"),
        [name],
        |r| Ok(domain_row(r)),
    )
    .optional()?
    .transpose()
}

pub(super) fn domains(
    tx: &Transaction<'_>,
    name: Option<String>,
    enabled: Option<bool>,
) -> Result<Vec<Domain>> {
    let (clause, values) = filters(&[
        ("name", name),
        ("enabled", enabled.map(|e| i64::from(e).to_string())),
    ]);
    collect(
        tx,
        &format!(
            "SELECT {DOMAIN_COLUMNS} FROM identity_domains WHERE 1 = 1{clause} ORDER BY name, id"
        ),
        &values,
        domain_row,
    )
}

pub(super) fn update_domain(tx: &Transaction<'_>, d: &Domain) -> Result<()> {
    tx.execute(
        "UPDATE identity_domains SET name = ?2, description = ?3, enabled = ?4 WHERE id = ?1",
        params![d.id, d.name, d.description, d.enabled],
    )?;
    Ok(())
}

pub(super) fn delete_domain(tx: &Transaction<'_>, id: &str) -> Result<()> {
    tx.execute("DELETE FROM identity_domains WHERE id = ?1", [id])?;
    Ok(())
}

// ---- projects ---------------------------------------------------------------------------------

const PROJECT_COLUMNS: &str = "id, name, domain_id, description, enabled";

fn project_row(r: &Row<'_>) -> Result<Project> {
    Ok(Project {
        id: r.get(0)?,
        name: r.get(1)?,
        domain_id: r.get(2)?,
        description: r.get(3)?,
        enabled: r.get(4)?,
    })
}

pub(super) fn insert_project(tx: &Transaction<'_>, p: &Project, now: Timestamp) -> Result<()> {
    tx.execute(
        "INSERT INTO projects (id, name, domain_id, description, enabled, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![p.id, p.name, p.domain_id, p.description, p.enabled, now.to_string()],
    )?;
    Ok(())
}

pub(super) fn project(tx: &Transaction<'_>, id: &str) -> Result<Option<Project>> {
    tx.query_row(
        &format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?1"),
        [id],
        |r| Ok(project_row(r)),
    )
    .optional()?
    .transpose()
}

pub(super) fn projects(
    tx: &Transaction<'_>,
    domain_id: Option<String>,
    name: Option<String>,
    enabled: Option<bool>,
) -> Result<Vec<Project>> {
    let (clause, values) = filters(&[
        ("domain_id", domain_id),
        ("name", name),
        ("enabled", enabled.map(|e| i64::from(e).to_string())),
    ]);
    collect(
        tx,
        &format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE 1 = 1{clause} ORDER BY name, id"),
        &values,
        project_row,
    )
}

/// How many projects exist in all domains.
pub(super) fn project_count(tx: &Transaction<'_>) -> Result<u64> {
    Ok(tx.query_row("SELECT count(*) FROM projects", [], |row| {
        row.get::<_, i64>(0)
    })? as u64)
}

pub(super) fn update_project(tx: &Transaction<'_>, p: &Project) -> Result<()> {
    tx.execute(
        "UPDATE projects SET name = ?2, description = ?3, enabled = ?4 WHERE id = ?1",
        params![p.id, p.name, p.description, p.enabled],
    )?;
    Ok(())
}

pub(super) fn delete_project(tx: &Transaction<'_>, id: &str) -> Result<()> {
    tx.execute("DELETE FROM projects WHERE id = ?1", [id])?;
    Ok(())
}

// ---- users ------------------------------------------------------------------------------------

const USER_COLUMNS: &str =
    "id, name, domain_id, description, enabled, default_project_id, options, password_expires_at";

fn user_row(r: &Row<'_>) -> Result<User> {
    Ok(User {
        id: r.get(0)?,
        name: r.get(1)?,
        domain_id: r.get(2)?,
        description: r.get(3)?,
        enabled: r.get(4)?,
        default_project_id: r.get(5)?,
        options: from_json("users.options", &r.get::<_, String>(6)?)?,
        password_expires_at: opt_time(r.get::<_, Option<String>>(7)?.as_deref())?,
    })
}

pub(super) fn insert_user(
    tx: &Transaction<'_>,
    u: &User,
    password_hash: Option<&str>,
    now: Timestamp,
) -> Result<()> {
    tx.execute(
        "INSERT INTO users (id, name, domain_id, description, enabled, default_project_id, options,
             password_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            u.id,
            u.name,
            u.domain_id,
            u.description,
            u.enabled,
            u.default_project_id,
            to_json(&u.options),
            password_hash,
            now.to_string()
        ],
    )?;
    Ok(())
}

pub(super) fn user(tx: &Transaction<'_>, id: &str) -> Result<Option<User>> {
    tx.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE id = ?1"),
        [id],
        |r| Ok(user_row(r)),
    )
    .optional()?
    .transpose()
}

pub(super) fn users(
    tx: &Transaction<'_>,
    domain_id: Option<String>,
    name: Option<String>,
) -> Result<Vec<User>> {
    let (clause, values) = filters(&[("domain_id", domain_id), ("name", name)]);
    collect(
        tx,
        &format!("SELECT {USER_COLUMNS} FROM users WHERE 1 = 1{clause} ORDER BY name, id"),
        &values,
        user_row,
    )
}

pub(super) fn update_user(tx: &Transaction<'_>, u: &User) -> Result<()> {
    tx.execute(
        "UPDATE users SET name = ?2, description = ?3, enabled = ?4, default_project_id = ?5,
             options = ?6 WHERE id = ?1",
        params![
            u.id,
            u.name,
            u.description,
            u.enabled,
            u.default_project_id,
            to_json(&u.options)
        ],
    )?;
    Ok(())
}

pub(super) fn set_password(tx: &Transaction<'_>, user_id: &str, hash: &str) -> Result<()> {
    tx.execute(
        "UPDATE users SET password_hash = ?2 WHERE id = ?1",
        params![user_id, hash],
    )?;
    Ok(())
}

pub(super) fn password_hash(tx: &Transaction<'_>, user_id: &str) -> Result<Option<String>> {
    Ok(tx
        .query_row(
            "SELECT password_hash FROM users WHERE id = ?1",
            [user_id],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten())
}

pub(super) fn delete_user(tx: &Transaction<'_>, id: &str) -> Result<()> {
    tx.execute("DELETE FROM users WHERE id = ?1", [id])?;
    Ok(())
}

// ---- groups -----------------------------------------------------------------------------------

const GROUP_COLUMNS: &str = "id, name, domain_id, description";

fn group_row(r: &Row<'_>) -> Result<Group> {
    Ok(Group {
        id: r.get(0)?,
        name: r.get(1)?,
        domain_id: r.get(2)?,
        description: r.get(3)?,
    })
}

pub(super) fn insert_group(tx: &Transaction<'_>, g: &Group, now: Timestamp) -> Result<()> {
    tx.execute(
        "INSERT INTO groups (id, name, domain_id, description, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![g.id, g.name, g.domain_id, g.description, now.to_string()],
    )?;
    Ok(())
}

pub(super) fn group(tx: &Transaction<'_>, id: &str) -> Result<Option<Group>> {
    tx.query_row(
        &format!("SELECT {GROUP_COLUMNS} FROM groups WHERE id = ?1"),
        [id],
        |r| Ok(group_row(r)),
    )
    .optional()?
    .transpose()
}

pub(super) fn groups(
    tx: &Transaction<'_>,
    domain_id: Option<String>,
    name: Option<String>,
) -> Result<Vec<Group>> {
    let (clause, values) = filters(&[("domain_id", domain_id), ("name", name)]);
    collect(
        tx,
        &format!("SELECT {GROUP_COLUMNS} FROM groups WHERE 1 = 1{clause} ORDER BY name, id"),
        &values,
        group_row,
    )
}

pub(super) fn update_group(tx: &Transaction<'_>, g: &Group) -> Result<()> {
    tx.execute(
        "UPDATE groups SET name = ?2, description = ?3 WHERE id = ?1",
        params![g.id, g.name, g.description],
    )?;
    Ok(())
}

pub(super) fn delete_group(tx: &Transaction<'_>, id: &str) -> Result<()> {
    tx.execute("DELETE FROM groups WHERE id = ?1", [id])?;
    Ok(())
}

/// Adds a member; true when it was not one already.
pub(super) fn add_member(tx: &Transaction<'_>, group_id: &str, user_id: &str) -> Result<bool> {
    Ok(tx.execute(
        "INSERT INTO group_members (group_id, user_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        [group_id, user_id],
    )? > 0)
}

/// Removes a member; true when it was one.
pub(super) fn remove_member(tx: &Transaction<'_>, group_id: &str, user_id: &str) -> Result<bool> {
    Ok(tx.execute(
        "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
        [group_id, user_id],
    )? > 0)
}

pub(super) fn is_member(tx: &Transaction<'_>, group_id: &str, user_id: &str) -> Result<bool> {
    Ok(tx
        .query_row(
            "SELECT 1 FROM group_members WHERE group_id = ?1 AND user_id = ?2",
            [group_id, user_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

pub(super) fn members(tx: &Transaction<'_>, group_id: &str) -> Result<Vec<User>> {
    collect(
        tx,
        "SELECT u.id, u.name, u.domain_id, u.description, u.enabled, u.default_project_id, u.options,
             u.password_expires_at
         FROM users u JOIN group_members m ON m.user_id = u.id WHERE m.group_id = ?1
         ORDER BY u.name, u.id",
        &[group_id.to_owned()],
        user_row,
    )
}

pub(super) fn user_groups(tx: &Transaction<'_>, user_id: &str) -> Result<Vec<Group>> {
    collect(
        tx,
        "SELECT g.id, g.name, g.domain_id, g.description
         FROM groups g JOIN group_members m ON m.group_id = g.id WHERE m.user_id = ?1
         ORDER BY g.name, g.id",
        &[user_id.to_owned()],
        group_row,
    )
}

// ---- roles ------------------------------------------------------------------------------------

fn role_row(r: &Row<'_>) -> Result<Role> {
    Ok(Role {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
    })
}

pub(super) fn insert_role(tx: &Transaction<'_>, role: &Role, now: Timestamp) -> Result<()> {
    tx.execute(
        "INSERT INTO roles (id, name, description, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![role.id, role.name, role.description, now.to_string()],
    )?;
    Ok(())
}

pub(super) fn role(tx: &Transaction<'_>, id: &str) -> Result<Option<Role>> {
    tx.query_row(
        "SELECT id, name, description FROM roles WHERE id = ?1",
        [id],
        |r| Ok(role_row(r)),
    )
    .optional()?
    .transpose()
}

pub(super) fn role_by_name(tx: &Transaction<'_>, name: &str) -> Result<Option<Role>> {
    tx.query_row(
        "SELECT id, name, description FROM roles WHERE name = ?1",
        [name],
        |r| Ok(role_row(r)),
    )
    .optional()?
    .transpose()
}

pub(super) fn roles(tx: &Transaction<'_>, name: Option<String>) -> Result<Vec<Role>> {
    let (clause, values) = filters(&[("name", name)]);
    collect(
        tx,
        &format!("SELECT id, name, description FROM roles WHERE 1 = 1{clause} ORDER BY name, id"),
        &values,
        role_row,
    )
}

pub(super) fn delete_role(tx: &Transaction<'_>, id: &str) -> Result<()> {
    tx.execute("DELETE FROM roles WHERE id = ?1", [id])?;
    Ok(())
}

/// Adds `prior ⊃ implied`; true when it is new.
pub(super) fn insert_implied(tx: &Transaction<'_>, prior: &str, implied: &str) -> Result<bool> {
    Ok(tx.execute(
        "INSERT INTO implied_roles (prior_role_id, implied_role_id) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
        [prior, implied],
    )? > 0)
}

/// Removes `prior ⊃ implied`; true when it existed.
pub(super) fn delete_implied(tx: &Transaction<'_>, prior: &str, implied: &str) -> Result<bool> {
    Ok(tx.execute(
        "DELETE FROM implied_roles WHERE prior_role_id = ?1 AND implied_role_id = ?2",
        [prior, implied],
    )? > 0)
}

/// Every implication, optionally only those of one prior role.
pub(super) fn implied_roles(tx: &Transaction<'_>, prior: Option<&str>) -> Result<Vec<ImpliedRole>> {
    let (clause, values) = filters(&[("i.prior_role_id", prior.map(str::to_owned))]);
    collect(
        tx,
        &format!(
            "SELECT p.id, p.name, r.id, r.name FROM implied_roles i
             JOIN roles p ON p.id = i.prior_role_id JOIN roles r ON r.id = i.implied_role_id
             WHERE 1 = 1{clause} ORDER BY p.name, r.name"
        ),
        &values,
        |r| {
            Ok(ImpliedRole {
                prior: RoleRef {
                    id: r.get(0)?,
                    name: r.get(1)?,
                },
                implied: RoleRef {
                    id: r.get(2)?,
                    name: r.get(3)?,
                },
            })
        },
    )
}

/// Role id → the roles it implies, directly or transitively (never itself).
pub(super) fn implication_closure(tx: &Transaction<'_>) -> Result<BTreeMap<String, Vec<RoleRef>>> {
    let edges = implied_roles(tx, None)?;
    let mut direct: BTreeMap<&str, Vec<&RoleRef>> = BTreeMap::new();
    for edge in &edges {
        direct
            .entry(&edge.prior.id)
            .or_default()
            .push(&edge.implied);
    }
    let mut closure = BTreeMap::new();
    for prior in direct.keys() {
        let mut seen: BTreeSet<&RoleRef> = BTreeSet::new();
        let mut stack: Vec<&RoleRef> = direct[prior].clone();
        while let Some(role) = stack.pop() {
            if role.id != *prior && seen.insert(role) {
                stack.extend(direct.get(role.id.as_str()).into_iter().flatten());
            }
        }
        closure.insert(
            (*prior).to_owned(),
            seen.into_iter().cloned().collect::<Vec<_>>(),
        );
    }
    Ok(closure)
}

// ---- role assignments -------------------------------------------------------------------------

fn actor_columns(actor: &Actor) -> (Option<&str>, Option<&str>) {
    match actor {
        Actor::User(id) => (Some(id), None),
        Actor::Group(id) => (None, Some(id)),
    }
}

fn target_columns(target: &Target) -> (Option<&str>, Option<&str>, Option<&str>) {
    match target {
        Target::Project(id) => (Some(id), None, None),
        Target::Domain(id) => (None, Some(id), None),
        Target::System => (None, None, Some(super::model::SYSTEM_ALL)),
    }
}

/// Grants; true when the assignment is new.
pub(super) fn insert_assignment(
    tx: &Transaction<'_>,
    actor: &Actor,
    target: &Target,
    role_id: &str,
) -> Result<bool> {
    let (user, group) = actor_columns(actor);
    let (project, domain, system) = target_columns(target);
    Ok(tx.execute(
        "INSERT INTO role_assignments (user_id, group_id, project_id, domain_id, system, role_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        params![user, group, project, domain, system, role_id],
    )? > 0)
}

/// Revokes; true when the assignment existed.
pub(super) fn delete_assignment(
    tx: &Transaction<'_>,
    actor: &Actor,
    target: &Target,
    role_id: &str,
) -> Result<bool> {
    let (user, group) = actor_columns(actor);
    let (project, domain, system) = target_columns(target);
    Ok(tx.execute(
        "DELETE FROM role_assignments WHERE user_id IS ?1 AND group_id IS ?2 AND project_id IS ?3
             AND domain_id IS ?4 AND system IS ?5 AND role_id = ?6",
        params![user, group, project, domain, system, role_id],
    )? > 0)
}

/// A stored (direct) assignment with its role's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DirectAssignment {
    pub actor: Actor,
    pub target: Target,
    pub role: RoleRef,
}

/// Direct assignments matching the filters (`None` matches anything).
pub(super) fn assignments(
    tx: &Transaction<'_>,
    actor: Option<&Actor>,
    target: Option<&Target>,
    role_id: Option<&str>,
) -> Result<Vec<DirectAssignment>> {
    let mut pairs: Vec<(&str, Option<String>)> = Vec::new();
    match actor {
        Some(Actor::User(id)) => pairs.push(("a.user_id", Some(id.clone()))),
        Some(Actor::Group(id)) => pairs.push(("a.group_id", Some(id.clone()))),
        None => {}
    }
    match target {
        Some(Target::Project(id)) => pairs.push(("a.project_id", Some(id.clone()))),
        Some(Target::Domain(id)) => pairs.push(("a.domain_id", Some(id.clone()))),
        Some(Target::System) => pairs.push(("a.system", Some(super::model::SYSTEM_ALL.into()))),
        None => {}
    }
    pairs.push(("a.role_id", role_id.map(str::to_owned)));
    let (clause, values) = filters(&pairs);
    collect(
        tx,
        &format!(
            "SELECT a.user_id, a.group_id, a.project_id, a.domain_id, a.system, r.id, r.name
             FROM role_assignments a JOIN roles r ON r.id = a.role_id WHERE 1 = 1{clause}
             ORDER BY a.user_id, a.group_id, a.project_id, a.domain_id, a.system, r.name"
        ),
        &values,
        |r| {
            let actor = match (
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
            ) {
                (Some(user), None) => Actor::User(user),
                (None, Some(group)) => Actor::Group(group),
                _ => return Err(IdentityError::Corrupt("assignment actor".into())),
            };
            let target = match (
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ) {
                (Some(project), None, None) => Target::Project(project),
                (None, Some(domain), None) => Target::Domain(domain),
                (None, None, Some(_)) => Target::System,
                _ => return Err(IdentityError::Corrupt("assignment target".into())),
            };
            Ok(DirectAssignment {
                actor,
                target,
                role: RoleRef {
                    id: r.get(5)?,
                    name: r.get(6)?,
                },
            })
        },
    )
}

/// The roles a user holds on a target directly or through a group, without implied roles.
pub(super) fn assigned_roles(
    tx: &Transaction<'_>,
    user_id: &str,
    target: &Target,
) -> Result<Vec<RoleRef>> {
    let (project, domain, system) = target_columns(target);
    let mut stmt = tx.prepare_cached(
        "SELECT DISTINCT r.id, r.name FROM role_assignments a JOIN roles r ON r.id = a.role_id
         WHERE (a.user_id = ?1 OR a.group_id IN (SELECT group_id FROM group_members WHERE user_id = ?1))
           AND a.project_id IS ?2 AND a.domain_id IS ?3 AND a.system IS ?4
         ORDER BY r.name",
    )?;
    let rows = stmt.query_map(params![user_id, project, domain, system], |r| {
        Ok(RoleRef {
            id: r.get(0)?,
            name: r.get(1)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

// ---- application credentials ------------------------------------------------------------------

const APP_CRED_COLUMNS: &str =
    "id, name, description, user_id, project_id, expires_at, unrestricted, roles";

/// A stored application credential: the role ids still to be resolved to names.
fn app_cred_row(r: &Row<'_>) -> Result<(ApplicationCredential, Vec<String>)> {
    let role_ids: Vec<String> =
        from_json("application_credentials.roles", &r.get::<_, String>(7)?)?;
    Ok((
        ApplicationCredential {
            id: r.get(0)?,
            name: r.get(1)?,
            description: r.get(2)?,
            user_id: r.get(3)?,
            project_id: r.get(4)?,
            expires_at: opt_time(r.get::<_, Option<String>>(5)?.as_deref())?,
            unrestricted: r.get(6)?,
            roles: Vec::new(),
        },
        role_ids,
    ))
}

fn resolve_roles(
    tx: &Transaction<'_>,
    (mut cred, ids): (ApplicationCredential, Vec<String>),
) -> Result<ApplicationCredential> {
    for id in ids {
        // A role deleted since creation is simply gone from the credential.
        if let Some(role) = role(tx, &id)? {
            cred.roles.push(RoleRef {
                id: role.id,
                name: role.name,
            });
        }
    }
    cred.roles.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(cred)
}

pub(super) fn insert_app_cred(
    tx: &Transaction<'_>,
    c: &ApplicationCredential,
    secret_hash: &str,
    now: Timestamp,
) -> Result<()> {
    let role_ids: Vec<&str> = c.roles.iter().map(|r| r.id.as_str()).collect();
    tx.execute(
        "INSERT INTO application_credentials (id, name, description, user_id, project_id, expires_at,
             unrestricted, roles, secret_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            c.id,
            c.name,
            c.description,
            c.user_id,
            c.project_id,
            c.expires_at.map(|t| t.to_string()),
            c.unrestricted,
            to_json(&role_ids),
            secret_hash,
            now.to_string()
        ],
    )?;
    Ok(())
}

/// The credential and its secret hash.
pub(super) fn app_cred(
    tx: &Transaction<'_>,
    id: &str,
) -> Result<Option<(ApplicationCredential, String)>> {
    let found = tx
        .query_row(
            &format!(
                "SELECT {APP_CRED_COLUMNS}, secret_hash FROM application_credentials WHERE id = ?1"
            ),
            [id],
            |r| Ok(app_cred_row(r).map(|c| (c, r.get::<_, String>(8)))),
        )
        .optional()?;
    match found {
        Some(Ok((cred, hash))) => Ok(Some((resolve_roles(tx, cred)?, hash?))),
        Some(Err(err)) => Err(err),
        None => Ok(None),
    }
}

pub(super) fn app_cred_id_by_name(
    tx: &Transaction<'_>,
    user_id: &str,
    name: &str,
) -> Result<Option<String>> {
    Ok(tx
        .query_row(
            "SELECT id FROM application_credentials WHERE user_id = ?1 AND name = ?2",
            [user_id, name],
            |r| r.get(0),
        )
        .optional()?)
}

pub(super) fn app_creds(tx: &Transaction<'_>, user_id: &str) -> Result<Vec<ApplicationCredential>> {
    let raw = collect(
        tx,
        &format!(
            "SELECT {APP_CRED_COLUMNS} FROM application_credentials WHERE user_id = ?1 ORDER BY name"
        ),
        &[user_id.to_owned()],
        app_cred_row,
    )?;
    raw.into_iter().map(|c| resolve_roles(tx, c)).collect()
}

pub(super) fn delete_app_cred(tx: &Transaction<'_>, id: &str) -> Result<()> {
    tx.execute("DELETE FROM application_credentials WHERE id = ?1", [id])?;
    Ok(())
}

// ---- tokens -----------------------------------------------------------------------------------

/// A token row: the immutable facts of a token, as stored under its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TokenRow {
    pub user_id: String,
    pub scope: TokenScope,
    pub methods: Vec<String>,
    pub app_cred_id: Option<String>,
    pub audit_id: String,
    pub audit_chain: Option<String>,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub revoked: bool,
}

/// A token's scope as stored: an assignment target, or nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TokenScope {
    Unscoped,
    Scoped(Target),
}

pub(super) fn insert_token(tx: &Transaction<'_>, hash: &str, t: &TokenRow) -> Result<()> {
    let (kind, project, domain) = match &t.scope {
        TokenScope::Unscoped => ("unscoped", None, None),
        TokenScope::Scoped(Target::Project(id)) => ("project", Some(id.as_str()), None),
        TokenScope::Scoped(Target::Domain(id)) => ("domain", None, Some(id.as_str())),
        TokenScope::Scoped(Target::System) => ("system", None, None),
    };
    tx.execute(
        "INSERT INTO tokens (hash, user_id, scope_kind, project_id, domain_id, methods, app_cred_id,
             audit_id, audit_chain, issued_at, expires_at, revoked)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            hash,
            t.user_id,
            kind,
            project,
            domain,
            to_json(&t.methods),
            t.app_cred_id,
            t.audit_id,
            t.audit_chain,
            t.issued_at.to_string(),
            t.expires_at.to_string(),
            t.revoked
        ],
    )?;
    Ok(())
}

pub(super) fn token(tx: &Transaction<'_>, hash: &str) -> Result<Option<TokenRow>> {
    tx.query_row(
        "SELECT user_id, scope_kind, project_id, domain_id, methods, app_cred_id, audit_id,
             audit_chain, issued_at, expires_at, revoked FROM tokens WHERE hash = ?1",
        [hash],
        |r| {
            Ok((|| -> Result<TokenRow> {
                let kind: String = r.get(1)?;
                let scope = match (
                    kind.as_str(),
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ) {
                    ("unscoped", None, None) => TokenScope::Unscoped,
                    ("project", Some(id), None) => TokenScope::Scoped(Target::Project(id)),
                    ("domain", None, Some(id)) => TokenScope::Scoped(Target::Domain(id)),
                    ("system", None, None) => TokenScope::Scoped(Target::System),
                    _ => return Err(IdentityError::Corrupt("token scope".into())),
                };
                Ok(TokenRow {
                    user_id: r.get(0)?,
                    scope,
                    methods: from_json("tokens.methods", &r.get::<_, String>(4)?)?,
                    app_cred_id: r.get(5)?,
                    audit_id: r.get(6)?,
                    audit_chain: r.get(7)?,
                    issued_at: time(&r.get::<_, String>(8)?)?,
                    expires_at: time(&r.get::<_, String>(9)?)?,
                    revoked: r.get(10)?,
                })
            })())
        },
    )
    .optional()?
    .transpose()
}

/// Marks one token revoked; true when it existed and was valid.
pub(super) fn revoke_token(tx: &Transaction<'_>, hash: &str) -> Result<bool> {
    Ok(tx.execute(
        "UPDATE tokens SET revoked = 1 WHERE hash = ?1 AND revoked = 0",
        [hash],
    )? > 0)
}

/// Marks every token of a user revoked.
pub(super) fn revoke_user_tokens(tx: &Transaction<'_>, user_id: &str) -> Result<usize> {
    Ok(tx.execute(
        "UPDATE tokens SET revoked = 1 WHERE user_id = ?1 AND revoked = 0",
        [user_id],
    )?)
}

/// Forgets tokens that expired by `now` (revoked or not: either way they validate no more).
pub(super) fn purge_expired_tokens(tx: &Transaction<'_>, now: Timestamp) -> Result<usize> {
    Ok(tx.execute(
        "DELETE FROM tokens WHERE expires_at <= ?1",
        [now.to_string()],
    )?)
}
