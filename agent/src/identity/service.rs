//! The identity domain API: request types, [`IdentityService`] and the management half of it
//! (domains, projects, users, groups, roles, assignments, bootstrap). Authentication and tokens are in
//! `auth.rs` and `token.rs`.
//!
//! Rules shared by every write: names are 1–255 characters without leading or trailing whitespace;
//! ids are server-generated hex UUIDs (the `default` domain excepted); a duplicate name is a Conflict,
//! an unknown reference NotFound; a refused request changes nothing (checks and writes share one
//! transaction); and every accepted write bumps the identity generation so cached token validations
//! are recomputed.

use super::IdentityError;
use super::model::{
    Actor, AssignmentFilter, DEFAULT_DOMAIN_ID, Domain, Group, ImpliedRole, Project, Role,
    RoleAssignment, RoleRef, Target, User,
};
use super::password::{Argon2Params, PasswordHasher};
use super::repo;
use super::token::TokenCache;
use crate::store::Store;
use crate::system::clock::Clock;
use rusqlite::Transaction;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

type Result<T> = std::result::Result<T, IdentityError>;

/// Identity policy of this node (from `[identity]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySettings {
    /// The region this node's catalog names (`identity.region_id`).
    pub region_id: String,
    /// Lifetime of a new token (`identity.token_ttl_secs`).
    pub token_ttl: Duration,
    /// Cost of new password and secret hashes. Configuration enforces a floor; tests go below it.
    pub argon2: Argon2Params,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            region_id: "RegionOne".into(),
            token_ttl: Duration::from_hours(1),
            argon2: Argon2Params::DEFAULT,
        }
    }
}

/// A domain, project or user named the way Keystone requests allow: by id, or by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DomainRef {
    /// By id.
    Id(String),
    /// By name.
    Name(String),
}

/// A project named by id, or by name within a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectRef {
    /// By id.
    Id(String),
    /// By name in a domain.
    Name {
        /// Project name.
        name: String,
        /// Its domain.
        domain: DomainRef,
    },
}

/// A user named by id, or by name within a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserRef {
    /// By id.
    Id(String),
    /// By name in a domain.
    Name {
        /// User name.
        name: String,
        /// Their domain.
        domain: DomainRef,
    },
}

/// An application credential named by id, or by name and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppCredRef {
    /// By id.
    Id(String),
    /// By name and owning user.
    Name {
        /// Credential name.
        name: String,
        /// Its owner.
        user: UserRef,
    },
}

/// How the caller proves who they are.
#[derive(Clone, PartialEq, Eq)]
pub enum AuthIdentity {
    /// `password`.
    Password {
        /// Who.
        user: UserRef,
        /// Their password.
        password: String,
    },
    /// `token`: a valid token, rescoped.
    Token {
        /// The token.
        token: String,
    },
    /// `application_credential`.
    ApplicationCredential {
        /// Which credential.
        credential: AppCredRef,
        /// Its secret.
        secret: String,
    },
}

impl std::fmt::Debug for AuthIdentity {
    // Secrets stay out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Password { user, .. } => f.debug_struct("Password").field("user", user).finish(),
            Self::Token { .. } => f.write_str("Token"),
            Self::ApplicationCredential { credential, .. } => f
                .debug_struct("ApplicationCredential")
                .field("credential", credential)
                .finish(),
        }
    }
}

/// What the new token should be scoped to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ScopeRequest {
    /// No scope given: the user's default project if they have a role there, else unscoped.
    #[default]
    Default,
    /// Explicitly unscoped (Keystone's `"scope": "unscoped"`).
    Unscoped,
    /// A project.
    Project(ProjectRef),
    /// A domain.
    Domain(DomainRef),
    /// The system (`all`).
    System,
}

/// `POST /v3/auth/tokens`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthRequest {
    /// The proof.
    pub identity: AuthIdentity,
    /// The scope asked for.
    pub scope: ScopeRequest,
}

/// A request to create a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDomain {
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Default true.
    pub enabled: bool,
}

/// Changes to a domain; `None` keeps the field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainUpdate {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// Domain list filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainFilter {
    /// Exact name.
    pub name: Option<String>,
    /// Enabled state.
    pub enabled: Option<bool>,
}

/// A request to create a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewProject {
    /// Name, unique in the domain.
    pub name: String,
    /// Domain (`default` in most clouds).
    pub domain_id: String,
    /// Free text.
    pub description: String,
    /// Default true.
    pub enabled: bool,
}

/// Changes to a project; `None` keeps the field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectUpdate {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// Project list filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectFilter {
    /// Domain.
    pub domain_id: Option<String>,
    /// Exact name.
    pub name: Option<String>,
    /// Enabled state.
    pub enabled: Option<bool>,
}

/// A request to create a user.
#[derive(Clone, PartialEq, Default)]
pub struct NewUser {
    /// Name, unique in the domain.
    pub name: String,
    /// Domain.
    pub domain_id: String,
    /// Password; `None`: the user cannot log in with a password.
    pub password: Option<String>,
    /// Default true (`NewUser::default()` gives false: set it).
    pub enabled: bool,
    /// Project for unscoped requests.
    pub default_project_id: Option<String>,
    /// Free text.
    pub description: String,
    /// Keystone user options.
    pub options: BTreeMap<String, serde_json::Value>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("name", &self.name)
            .field("domain_id", &self.domain_id)
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// Changes to a user; `None` keeps the field.
#[derive(Clone, PartialEq, Default)]
pub struct UserUpdate {
    /// New name.
    pub name: Option<String>,
    /// New password (revokes the user's tokens).
    pub password: Option<String>,
    /// Enable or disable (disabling revokes the user's tokens).
    pub enabled: Option<bool>,
    /// `Some(None)` clears the default project.
    pub default_project_id: Option<Option<String>>,
    /// New description.
    pub description: Option<String>,
    /// Replacement options.
    pub options: Option<BTreeMap<String, serde_json::Value>>,
}

impl std::fmt::Debug for UserUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserUpdate")
            .field("name", &self.name)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("enabled", &self.enabled)
            .finish_non_exhaustive()
    }
}

/// User (and group) list filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    /// Domain.
    pub domain_id: Option<String>,
    /// Exact name.
    pub name: Option<String>,
}

/// A request to create a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewGroup {
    /// Name, unique in the domain.
    pub name: String,
    /// Domain.
    pub domain_id: String,
    /// Free text.
    pub description: String,
}

/// Changes to a group; `None` keeps the field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupUpdate {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
}

/// A request to create a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRole {
    /// Name, unique.
    pub name: String,
    /// Free text.
    pub description: String,
}

/// A request to create an application credential for the caller.
#[derive(Clone, PartialEq, Default)]
pub struct NewApplicationCredential {
    /// Name, unique per user.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Secret; 64 URL-safe random characters are generated when absent.
    pub secret: Option<String>,
    /// Role ids or names; all of the caller's current roles on the project when absent.
    pub roles: Option<Vec<String>>,
    /// Expiry; never when absent.
    pub expires_at: Option<jiff::Timestamp>,
    /// May its tokens create further application credentials?
    pub unrestricted: bool,
}

impl std::fmt::Debug for NewApplicationCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApplicationCredential")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("expires_at", &self.expires_at)
            .field("unrestricted", &self.unrestricted)
            .finish_non_exhaustive()
    }
}

/// `keystone-manage bootstrap`: what to create if missing.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapRequest {
    /// The admin password: set on a new admin user, and reset on an existing one.
    pub admin_password: Option<String>,
    /// Admin user name (Keystone: `admin`).
    pub admin_user: String,
    /// Admin project name (Keystone: `admin`).
    pub admin_project: String,
    /// Region to record for the catalog; `None` keeps the configured one.
    pub region_id: Option<String>,
}

impl std::fmt::Debug for BootstrapRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BootstrapRequest")
            .field("admin_user", &self.admin_user)
            .field("admin_project", &self.admin_project)
            .field("region_id", &self.region_id)
            .finish_non_exhaustive()
    }
}

/// What bootstrap found or made.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BootstrapReport {
    /// The `default` domain.
    pub domain_id: String,
    /// The admin project.
    pub project_id: String,
    /// The admin user.
    pub user_id: String,
    /// Role name → id for admin, manager, member, reader.
    pub roles: BTreeMap<String, String>,
    /// The region recorded.
    pub region_id: String,
    /// Whether the admin password was set or reset.
    pub password_set: bool,
    /// What did not exist before (`domain default`, `role admin`, …); empty on a re-run.
    pub created: Vec<String>,
}

/// Keystone v3 identity over the store. Cheap to share behind an `Arc`; every method blocks.
pub struct IdentityService {
    pub(super) store: Arc<Store>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) settings: IdentitySettings,
    pub(super) hasher: PasswordHasher,
    pub(super) cache: TokenCache,
    /// A hash of nothing, verified against when a user is unknown so that an unknown user costs the
    /// same time as a wrong password.
    pub(super) dummy_hash: OnceLock<String>,
}

/// Roles bootstrap makes, each implying the next (Keystone's default personas).
pub const BOOTSTRAP_ROLES: [&str; 4] = ["admin", "manager", "member", "reader"];

pub(super) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Keystone's name rule plus ours: 1–255 characters, no leading or trailing whitespace.
pub(super) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(IdentityError::invalid(format!(
            "{what} name must not be empty"
        )));
    }
    if name.chars().count() > 255 {
        return Err(IdentityError::invalid(format!(
            "{what} name is longer than 255 characters"
        )));
    }
    if name.trim() != name {
        return Err(IdentityError::invalid(format!(
            "{what} name must not start or end with whitespace"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(IdentityError::invalid(format!(
            "{what} name contains control characters"
        )));
    }
    Ok(())
}

fn check_description(description: &str) -> Result<()> {
    if description.len() > 65_535 {
        return Err(IdentityError::invalid(
            "description is longer than 65535 bytes",
        ));
    }
    Ok(())
}

/// Maps a UNIQUE violation to a Conflict naming the duplicate.
pub(super) fn conflict_on_unique(
    what: &'static str,
    detail: impl FnOnce() -> String,
) -> impl FnOnce(IdentityError) -> IdentityError {
    move |err| match &err {
        IdentityError::Store(crate::store::StoreError::Query(rusqlite::Error::SqliteFailure(
            code,
            _,
        ))) if code.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            || code.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
        {
            IdentityError::Conflict {
                what,
                detail: detail(),
            }
        }
        _ => err,
    }
}

impl IdentityService {
    /// The service over `store`. Nothing is read until the first call.
    pub fn new(store: Arc<Store>, clock: Arc<dyn Clock>, settings: IdentitySettings) -> Self {
        Self {
            hasher: PasswordHasher::new(settings.argon2),
            store,
            clock,
            settings,
            cache: TokenCache::default(),
            dummy_hash: OnceLock::new(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &IdentitySettings {
        &self.settings
    }

    /// One write transaction that bumps the identity generation when `f` succeeds.
    pub(super) fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.store.write(|tx| {
            let value = f(tx)?;
            repo::bump_generation(tx)?;
            Ok(value)
        })
    }

    pub(super) fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.store.read(f)
    }

    pub(super) fn hash_secret(&self, secret: &str) -> Result<String> {
        Ok(self.hasher.hash(secret)?)
    }

    // ---- domains ------------------------------------------------------------------------------

    /// Creates a domain with a generated id.
    pub fn create_domain(&self, new: NewDomain) -> Result<Domain> {
        check_name("domain", &new.name)?;
        check_description(&new.description)?;
        let domain = Domain {
            id: new_id(),
            name: new.name,
            description: new.description,
            enabled: new.enabled,
        };
        let now = self.clock.now();
        self.write(|tx| repo::insert_domain(tx, &domain, now))
            .map_err(conflict_on_unique("domain", || {
                format!("Duplicate entry found with name {}.", domain.name)
            }))?;
        Ok(domain)
    }

    /// One domain.
    pub fn domain(&self, id: &str) -> Result<Domain> {
        self.read(|tx| repo::domain(tx, id))?
            .ok_or_else(|| IdentityError::not_found("domain", id))
    }

    /// Domains matching the filter, by name.
    pub fn list_domains(&self, filter: &DomainFilter) -> Result<Vec<Domain>> {
        self.read(|tx| repo::domains(tx, filter.name.clone(), filter.enabled))
    }

    /// Renames, describes, enables or disables a domain. Disabling invalidates every token of its
    /// users and projects at their next validation. The `default` domain cannot be disabled: the
    /// bootstrap admin lives there and an edge site must not lock itself out.
    pub fn update_domain(&self, id: &str, update: DomainUpdate) -> Result<Domain> {
        if let Some(name) = &update.name {
            check_name("domain", name)?;
        }
        if let Some(description) = &update.description {
            check_description(description)?;
        }
        if id == DEFAULT_DOMAIN_ID && update.enabled == Some(false) {
            return Err(IdentityError::Forbidden(
                "the default domain cannot be disabled".into(),
            ));
        }
        let name = update.name.clone().unwrap_or_default();
        self.write(|tx| {
            let mut domain =
                repo::domain(tx, id)?.ok_or_else(|| IdentityError::not_found("domain", id))?;
            if let Some(name) = update.name {
                domain.name = name;
            }
            if let Some(description) = update.description {
                domain.description = description;
            }
            if let Some(enabled) = update.enabled {
                domain.enabled = enabled;
            }
            repo::update_domain(tx, &domain)?;
            Ok(domain)
        })
        .map_err(conflict_on_unique("domain", || {
            format!("Duplicate entry found with name {name}.")
        }))
    }

    /// Deletes a disabled domain with its projects, users and groups (and so their assignments,
    /// credentials and tokens). An enabled domain is refused, as in Keystone (403): disabling first
    /// guards against deleting by accident.
    pub fn delete_domain(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            let domain =
                repo::domain(tx, id)?.ok_or_else(|| IdentityError::not_found("domain", id))?;
            if domain.enabled {
                return Err(IdentityError::Forbidden(
                    "Cannot delete a domain that is enabled, please disable it first.".into(),
                ));
            }
            repo::delete_domain(tx, id)
        })
    }

    // ---- projects -----------------------------------------------------------------------------

    /// Creates a project in an existing domain.
    pub fn create_project(&self, new: NewProject) -> Result<Project> {
        check_name("project", &new.name)?;
        check_description(&new.description)?;
        let project = Project {
            id: new_id(),
            name: new.name,
            domain_id: new.domain_id,
            description: new.description,
            enabled: new.enabled,
        };
        let now = self.clock.now();
        self.write(|tx| {
            repo::domain(tx, &project.domain_id)?
                .ok_or_else(|| IdentityError::not_found("domain", &project.domain_id))?;
            repo::insert_project(tx, &project, now)
        })
        .map_err(conflict_on_unique("project", || {
            format!(
                "Duplicate entry found with name {} at domain ID {}.",
                project.name, project.domain_id
            )
        }))?;
        Ok(project)
    }

    /// One project.
    pub fn project(&self, id: &str) -> Result<Project> {
        self.read(|tx| repo::project(tx, id))?
            .ok_or_else(|| IdentityError::not_found("project", id))
    }

    /// How many projects exist in all domains (the region link reports it).
    pub fn project_count(&self) -> Result<u64> {
        self.read(repo::project_count)
    }

    /// Projects matching the filter, by name.
    pub fn list_projects(&self, filter: &ProjectFilter) -> Result<Vec<Project>> {
        self.read(|tx| {
            repo::projects(
                tx,
                filter.domain_id.clone(),
                filter.name.clone(),
                filter.enabled,
            )
        })
    }

    /// Projects on which the user holds any role, directly or through a group
    /// (`GET /v3/users/{id}/projects`, and `/v3/auth/projects` after filtering disabled ones).
    pub fn user_projects(&self, user_id: &str) -> Result<Vec<Project>> {
        self.read(|tx| {
            repo::user(tx, user_id)?.ok_or_else(|| IdentityError::not_found("user", user_id))?;
            let mut out = Vec::new();
            for project in repo::projects(tx, None, None, None)? {
                if !repo::assigned_roles(tx, user_id, &Target::Project(project.id.clone()))?
                    .is_empty()
                {
                    out.push(project);
                }
            }
            Ok(out)
        })
    }

    /// Renames, describes, enables or disables a project. Disabling invalidates its tokens.
    pub fn update_project(&self, id: &str, update: ProjectUpdate) -> Result<Project> {
        if let Some(name) = &update.name {
            check_name("project", name)?;
        }
        if let Some(description) = &update.description {
            check_description(description)?;
        }
        let name = update.name.clone().unwrap_or_default();
        self.write(|tx| {
            let mut project =
                repo::project(tx, id)?.ok_or_else(|| IdentityError::not_found("project", id))?;
            if let Some(name) = update.name {
                project.name = name;
            }
            if let Some(description) = update.description {
                project.description = description;
            }
            if let Some(enabled) = update.enabled {
                project.enabled = enabled;
            }
            repo::update_project(tx, &project)?;
            Ok(project)
        })
        .map_err(conflict_on_unique("project", || {
            format!("Duplicate entry found with name {name}.")
        }))
    }

    /// Deletes a project with its role assignments, application credentials and tokens; users whose
    /// default project it was keep no default.
    pub fn delete_project(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            repo::project(tx, id)?.ok_or_else(|| IdentityError::not_found("project", id))?;
            repo::delete_project(tx, id)
        })
    }

    // ---- users --------------------------------------------------------------------------------

    /// Creates a user. The password is hashed before the transaction (blocking, CPU-heavy).
    pub fn create_user(&self, new: NewUser) -> Result<User> {
        check_name("user", &new.name)?;
        check_description(&new.description)?;
        let hash = new
            .password
            .as_deref()
            .map(|p| self.hash_secret(p))
            .transpose()?;
        let user = User {
            id: new_id(),
            name: new.name,
            domain_id: new.domain_id,
            description: new.description,
            enabled: new.enabled,
            default_project_id: new.default_project_id,
            options: new.options,
            password_expires_at: None,
        };
        let now = self.clock.now();
        self.write(|tx| {
            repo::domain(tx, &user.domain_id)?
                .ok_or_else(|| IdentityError::not_found("domain", &user.domain_id))?;
            if let Some(project) = &user.default_project_id {
                repo::project(tx, project)?
                    .ok_or_else(|| IdentityError::not_found("project", project))?;
            }
            repo::insert_user(tx, &user, hash.as_deref(), now)
        })
        .map_err(conflict_on_unique("user", || {
            format!(
                "Duplicate entry found with name {} at domain ID {}.",
                user.name, user.domain_id
            )
        }))?;
        Ok(user)
    }

    /// One user.
    pub fn user(&self, id: &str) -> Result<User> {
        self.read(|tx| repo::user(tx, id))?
            .ok_or_else(|| IdentityError::not_found("user", id))
    }

    /// Users matching the filter, by name.
    pub fn list_users(&self, filter: &UserFilter) -> Result<Vec<User>> {
        self.read(|tx| repo::users(tx, filter.domain_id.clone(), filter.name.clone()))
    }

    /// Changes a user. A new password, or disabling, revokes every token the user holds.
    pub fn update_user(&self, id: &str, update: UserUpdate) -> Result<User> {
        if let Some(name) = &update.name {
            check_name("user", name)?;
        }
        if let Some(description) = &update.description {
            check_description(description)?;
        }
        let hash = update
            .password
            .as_deref()
            .map(|p| self.hash_secret(p))
            .transpose()?;
        let name = update.name.clone().unwrap_or_default();
        self.write(|tx| {
            let mut user =
                repo::user(tx, id)?.ok_or_else(|| IdentityError::not_found("user", id))?;
            if let Some(name) = update.name {
                user.name = name;
            }
            if let Some(description) = update.description {
                user.description = description;
            }
            if let Some(options) = update.options {
                user.options = options;
            }
            if let Some(default_project_id) = update.default_project_id {
                if let Some(project) = &default_project_id {
                    repo::project(tx, project)?
                        .ok_or_else(|| IdentityError::not_found("project", project))?;
                }
                user.default_project_id = default_project_id;
            }
            let disabling = update.enabled == Some(false) && user.enabled;
            if let Some(enabled) = update.enabled {
                user.enabled = enabled;
            }
            repo::update_user(tx, &user)?;
            if let Some(hash) = &hash {
                repo::set_password(tx, id, hash)?;
            }
            if disabling || hash.is_some() {
                repo::revoke_user_tokens(tx, id)?;
            }
            Ok(user)
        })
        .map_err(conflict_on_unique("user", || {
            format!("Duplicate entry found with name {name}.")
        }))
    }

    /// Self-service password change (`POST /v3/users/{id}/password`): needs the current password.
    /// Revokes the user's tokens. A wrong original password is Unauthorized.
    pub fn change_password(&self, user_id: &str, original: &str, new: &str) -> Result<()> {
        let stored = self.read(|tx| repo::password_hash(tx, user_id))?;
        if !self.verify_or_waste(original, stored.as_deref()) {
            tracing::debug!(user_id, "password change refused: original password wrong");
            return Err(IdentityError::Unauthorized);
        }
        self.update_user(
            user_id,
            UserUpdate {
                password: Some(new.to_owned()),
                ..UserUpdate::default()
            },
        )
        .map(drop)
    }

    /// Deletes a user with their group memberships, role assignments, application credentials and
    /// tokens.
    pub fn delete_user(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            repo::user(tx, id)?.ok_or_else(|| IdentityError::not_found("user", id))?;
            repo::delete_user(tx, id)
        })
    }

    // ---- groups -------------------------------------------------------------------------------

    /// Creates a group in an existing domain.
    pub fn create_group(&self, new: NewGroup) -> Result<Group> {
        check_name("group", &new.name)?;
        check_description(&new.description)?;
        let group = Group {
            id: new_id(),
            name: new.name,
            domain_id: new.domain_id,
            description: new.description,
        };
        let now = self.clock.now();
        self.write(|tx| {
            repo::domain(tx, &group.domain_id)?
                .ok_or_else(|| IdentityError::not_found("domain", &group.domain_id))?;
            repo::insert_group(tx, &group, now)
        })
        .map_err(conflict_on_unique("group", || {
            format!(
                "Duplicate entry found with name {} at domain ID {}.",
                group.name, group.domain_id
            )
        }))?;
        Ok(group)
    }

    /// One group.
    pub fn group(&self, id: &str) -> Result<Group> {
        self.read(|tx| repo::group(tx, id))?
            .ok_or_else(|| IdentityError::not_found("group", id))
    }

    /// Groups matching the filter, by name.
    pub fn list_groups(&self, filter: &UserFilter) -> Result<Vec<Group>> {
        self.read(|tx| repo::groups(tx, filter.domain_id.clone(), filter.name.clone()))
    }

    /// Renames or describes a group.
    pub fn update_group(&self, id: &str, update: GroupUpdate) -> Result<Group> {
        if let Some(name) = &update.name {
            check_name("group", name)?;
        }
        if let Some(description) = &update.description {
            check_description(description)?;
        }
        let name = update.name.clone().unwrap_or_default();
        self.write(|tx| {
            let mut group =
                repo::group(tx, id)?.ok_or_else(|| IdentityError::not_found("group", id))?;
            if let Some(name) = update.name {
                group.name = name;
            }
            if let Some(description) = update.description {
                group.description = description;
            }
            repo::update_group(tx, &group)?;
            Ok(group)
        })
        .map_err(conflict_on_unique("group", || {
            format!("Duplicate entry found with name {name}.")
        }))
    }

    /// Deletes a group with its memberships and role assignments.
    pub fn delete_group(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            repo::group(tx, id)?.ok_or_else(|| IdentityError::not_found("group", id))?;
            repo::delete_group(tx, id)
        })
    }

    /// Adds a user to a group (idempotent, like Keystone's `PUT`).
    pub fn add_user_to_group(&self, group_id: &str, user_id: &str) -> Result<()> {
        self.write(|tx| {
            repo::group(tx, group_id)?
                .ok_or_else(|| IdentityError::not_found("group", group_id))?;
            repo::user(tx, user_id)?.ok_or_else(|| IdentityError::not_found("user", user_id))?;
            repo::add_member(tx, group_id, user_id).map(drop)
        })
    }

    /// Removes a user from a group; NotFound when they are not a member.
    pub fn remove_user_from_group(&self, group_id: &str, user_id: &str) -> Result<()> {
        self.write(|tx| {
            repo::group(tx, group_id)?
                .ok_or_else(|| IdentityError::not_found("group", group_id))?;
            repo::user(tx, user_id)?.ok_or_else(|| IdentityError::not_found("user", user_id))?;
            if repo::remove_member(tx, group_id, user_id)? {
                Ok(())
            } else {
                Err(IdentityError::not_found(
                    "membership",
                    format!("user {user_id} in group {group_id}"),
                ))
            }
        })
    }

    /// `HEAD /v3/groups/{g}/users/{u}`: Ok when a member, NotFound otherwise.
    pub fn check_user_in_group(&self, group_id: &str, user_id: &str) -> Result<()> {
        self.read(|tx| {
            repo::group(tx, group_id)?
                .ok_or_else(|| IdentityError::not_found("group", group_id))?;
            repo::user(tx, user_id)?.ok_or_else(|| IdentityError::not_found("user", user_id))?;
            if repo::is_member(tx, group_id, user_id)? {
                Ok(())
            } else {
                Err(IdentityError::not_found(
                    "membership",
                    format!("user {user_id} in group {group_id}"),
                ))
            }
        })
    }

    /// Members of a group.
    pub fn group_members(&self, group_id: &str) -> Result<Vec<User>> {
        self.read(|tx| {
            repo::group(tx, group_id)?
                .ok_or_else(|| IdentityError::not_found("group", group_id))?;
            repo::members(tx, group_id)
        })
    }

    /// Groups a user is in.
    pub fn user_groups(&self, user_id: &str) -> Result<Vec<Group>> {
        self.read(|tx| {
            repo::user(tx, user_id)?.ok_or_else(|| IdentityError::not_found("user", user_id))?;
            repo::user_groups(tx, user_id)
        })
    }

    // ---- roles --------------------------------------------------------------------------------

    /// Creates a global role.
    pub fn create_role(&self, new: NewRole) -> Result<Role> {
        check_name("role", &new.name)?;
        check_description(&new.description)?;
        let role = Role {
            id: new_id(),
            name: new.name,
            description: new.description,
        };
        let now = self.clock.now();
        self.write(|tx| repo::insert_role(tx, &role, now))
            .map_err(conflict_on_unique("role", || {
                format!("Duplicate entry found with name {}.", role.name)
            }))?;
        Ok(role)
    }

    /// One role.
    pub fn role(&self, id: &str) -> Result<Role> {
        self.read(|tx| repo::role(tx, id))?
            .ok_or_else(|| IdentityError::not_found("role", id))
    }

    /// Roles, optionally only the one with this name.
    pub fn list_roles(&self, name: Option<&str>) -> Result<Vec<Role>> {
        self.read(|tx| repo::roles(tx, name.map(str::to_owned)))
    }

    /// Deletes a role with its assignments and implications.
    pub fn delete_role(&self, id: &str) -> Result<()> {
        self.write(|tx| {
            repo::role(tx, id)?.ok_or_else(|| IdentityError::not_found("role", id))?;
            repo::delete_role(tx, id)
        })
    }

    /// `prior` now implies `implied` (idempotent). Like Keystone, nothing may imply `admin`, and an
    /// implication that would close a cycle is refused.
    pub fn create_implied_role(&self, prior_id: &str, implied_id: &str) -> Result<ImpliedRole> {
        self.write(|tx| {
            let prior = repo::role(tx, prior_id)?
                .ok_or_else(|| IdentityError::not_found("role", prior_id))?;
            let implied = repo::role(tx, implied_id)?
                .ok_or_else(|| IdentityError::not_found("role", implied_id))?;
            if implied.name == "admin" {
                return Err(IdentityError::invalid("role admin cannot be implied"));
            }
            if prior_id == implied_id
                || repo::implication_closure(tx)?
                    .get(implied_id)
                    .is_some_and(|all| all.iter().any(|r| r.id == prior_id))
            {
                return Err(IdentityError::invalid(format!(
                    "role {} implying {} would make a cycle",
                    prior.name, implied.name
                )));
            }
            repo::insert_implied(tx, prior_id, implied_id)?;
            Ok(ImpliedRole {
                prior: RoleRef {
                    id: prior.id,
                    name: prior.name,
                },
                implied: RoleRef {
                    id: implied.id,
                    name: implied.name,
                },
            })
        })
    }

    /// Direct implications of one role, or of every role.
    pub fn implied_roles(&self, prior_id: Option<&str>) -> Result<Vec<ImpliedRole>> {
        self.read(|tx| {
            if let Some(id) = prior_id {
                repo::role(tx, id)?.ok_or_else(|| IdentityError::not_found("role", id))?;
            }
            repo::implied_roles(tx, prior_id)
        })
    }

    /// One implication (`GET`/`HEAD /v3/roles/{prior}/implies/{implied}`); NotFound when there is none.
    pub fn implied_role(&self, prior_id: &str, implied_id: &str) -> Result<ImpliedRole> {
        self.read(|tx| repo::implied_roles(tx, Some(prior_id)))?
            .into_iter()
            .find(|i| i.implied.id == implied_id)
            .ok_or_else(|| {
                IdentityError::not_found("implied role", format!("{prior_id} implies {implied_id}"))
            })
    }

    /// Removes an implication; NotFound when there is none.
    pub fn delete_implied_role(&self, prior_id: &str, implied_id: &str) -> Result<()> {
        self.write(|tx| {
            if repo::delete_implied(tx, prior_id, implied_id)? {
                Ok(())
            } else {
                Err(IdentityError::not_found(
                    "implied role",
                    format!("{prior_id} implies {implied_id}"),
                ))
            }
        })
    }

    // ---- role assignments ---------------------------------------------------------------------

    fn check_assignment_refs(
        tx: &Transaction<'_>,
        actor: &Actor,
        target: &Target,
        role_id: &str,
    ) -> Result<()> {
        match actor {
            Actor::User(id) => {
                repo::user(tx, id)?.ok_or_else(|| IdentityError::not_found("user", id))?;
            }
            Actor::Group(id) => {
                repo::group(tx, id)?.ok_or_else(|| IdentityError::not_found("group", id))?;
            }
        }
        match target {
            Target::Project(id) => {
                repo::project(tx, id)?.ok_or_else(|| IdentityError::not_found("project", id))?;
            }
            Target::Domain(id) => {
                repo::domain(tx, id)?.ok_or_else(|| IdentityError::not_found("domain", id))?;
            }
            Target::System => {}
        }
        repo::role(tx, role_id)?.ok_or_else(|| IdentityError::not_found("role", role_id))?;
        Ok(())
    }

    /// Grants a role (idempotent, like Keystone's `PUT`).
    pub fn grant(&self, actor: &Actor, target: &Target, role_id: &str) -> Result<()> {
        self.write(|tx| {
            Self::check_assignment_refs(tx, actor, target, role_id)?;
            repo::insert_assignment(tx, actor, target, role_id).map(drop)
        })
    }

    /// Revokes a role; NotFound when it was not granted.
    pub fn revoke_grant(&self, actor: &Actor, target: &Target, role_id: &str) -> Result<()> {
        self.write(|tx| {
            Self::check_assignment_refs(tx, actor, target, role_id)?;
            if repo::delete_assignment(tx, actor, target, role_id)? {
                Ok(())
            } else {
                Err(IdentityError::not_found("grant", role_id))
            }
        })
    }

    /// `HEAD …/roles/{role}`: Ok when granted directly, NotFound otherwise.
    pub fn check_grant(&self, actor: &Actor, target: &Target, role_id: &str) -> Result<()> {
        self.read(|tx| {
            Self::check_assignment_refs(tx, actor, target, role_id)?;
            if repo::assignments(tx, Some(actor), Some(target), Some(role_id))?.is_empty() {
                Err(IdentityError::not_found("grant", role_id))
            } else {
                Ok(())
            }
        })
    }

    /// `GET /v3/role_assignments`. With `effective`, group assignments become one row per member
    /// (with `via_group`) and each implied role gets its own row (with `prior_role`); combining
    /// `effective` with a group filter is refused, as in Keystone.
    pub fn list_assignments(&self, filter: &AssignmentFilter) -> Result<Vec<RoleAssignment>> {
        let target_filters = usize::from(filter.project_id.is_some())
            + usize::from(filter.domain_id.is_some())
            + usize::from(filter.system);
        if target_filters > 1 {
            return Err(IdentityError::invalid(
                "only one of scope.project.id, scope.domain.id and scope.system may be given",
            ));
        }
        if filter.user_id.is_some() && filter.group_id.is_some() {
            return Err(IdentityError::invalid(
                "only one of user.id and group.id may be given",
            ));
        }
        if filter.effective && filter.group_id.is_some() {
            return Err(IdentityError::invalid(
                "Combining effective and group filter will always result in an empty list.",
            ));
        }
        let target = match (&filter.project_id, &filter.domain_id, filter.system) {
            (Some(p), _, _) => Some(Target::Project(p.clone())),
            (_, Some(d), _) => Some(Target::Domain(d.clone())),
            (_, _, true) => Some(Target::System),
            _ => None,
        };
        self.read(|tx| {
            if !filter.effective {
                let actor = filter
                    .user_id
                    .clone()
                    .map(Actor::User)
                    .or_else(|| filter.group_id.clone().map(Actor::Group));
                return Ok(repo::assignments(
                    tx,
                    actor.as_ref(),
                    target.as_ref(),
                    filter.role_id.as_deref(),
                )?
                .into_iter()
                .map(|a| RoleAssignment {
                    actor: a.actor,
                    target: a.target,
                    role: a.role,
                    via_group: None,
                    prior_role: None,
                })
                .collect());
            }
            let closure = repo::implication_closure(tx)?;
            let mut out = Vec::new();
            for direct in repo::assignments(tx, None, target.as_ref(), None)? {
                let users: Vec<(String, Option<String>)> = match &direct.actor {
                    Actor::User(id) => vec![(id.clone(), None)],
                    Actor::Group(group) => repo::members(tx, group)?
                        .into_iter()
                        .map(|u| (u.id, Some(group.clone())))
                        .collect(),
                };
                for (user, via_group) in users {
                    if filter.user_id.as_ref().is_some_and(|f| *f != user) {
                        continue;
                    }
                    let mut rows = vec![(direct.role.clone(), None)];
                    rows.extend(
                        closure
                            .get(&direct.role.id)
                            .into_iter()
                            .flatten()
                            .map(|implied| (implied.clone(), Some(direct.role.clone()))),
                    );
                    for (role, prior_role) in rows {
                        if filter.role_id.as_ref().is_some_and(|f| *f != role.id) {
                            continue;
                        }
                        out.push(RoleAssignment {
                            actor: Actor::User(user.clone()),
                            target: direct.target.clone(),
                            role,
                            via_group: via_group.clone(),
                            prior_role,
                        });
                    }
                }
            }
            out.sort();
            out.dedup();
            Ok(out)
        })
    }

    // ---- bootstrap ----------------------------------------------------------------------------

    /// `keystone-manage bootstrap`: makes whatever of the `default` domain, the admin, manager,
    /// member and reader roles (each implying the next), the admin project, the admin user and its
    /// `admin` grants on the project and on the system is missing. Re-running changes nothing that
    /// exists, except that a given password is set again (and the admin user re-enabled), which is
    /// how a lost admin password is recovered on site.
    pub fn bootstrap(&self, request: &BootstrapRequest) -> Result<BootstrapReport> {
        check_name("user", &request.admin_user)?;
        check_name("project", &request.admin_project)?;
        let hash = request
            .admin_password
            .as_deref()
            .map(|p| self.hash_secret(p))
            .transpose()?;
        let region_id = request
            .region_id
            .clone()
            .unwrap_or_else(|| self.settings.region_id.clone());
        check_name("region", &region_id)?;
        let now = self.clock.now();
        self.write(|tx| {
            let mut created = Vec::new();
            if repo::domain(tx, DEFAULT_DOMAIN_ID)?.is_none() {
                repo::insert_domain(
                    tx,
                    &Domain {
                        id: DEFAULT_DOMAIN_ID.into(),
                        name: "Default".into(),
                        description: "The default domain".into(),
                        enabled: true,
                    },
                    now,
                )?;
                created.push(format!("domain {DEFAULT_DOMAIN_ID}"));
            }
            let mut roles = BTreeMap::new();
            let mut ids = Vec::new();
            for name in BOOTSTRAP_ROLES {
                let role = if let Some(role) = repo::role_by_name(tx, name)? {
                    role
                } else {
                    let role = Role {
                        id: new_id(),
                        name: name.into(),
                        description: String::new(),
                    };
                    repo::insert_role(tx, &role, now)?;
                    created.push(format!("role {name}"));
                    role
                };
                roles.insert(name.to_owned(), role.id.clone());
                ids.push(role.id);
            }
            for (pair, names) in ids.windows(2).zip(BOOTSTRAP_ROLES.windows(2)) {
                if repo::insert_implied(tx, &pair[0], &pair[1])? {
                    created.push(format!("implied role {} -> {}", names[0], names[1]));
                }
            }
            let project = if let Some(p) = repo::projects(
                tx,
                Some(DEFAULT_DOMAIN_ID.into()),
                Some(request.admin_project.clone()),
                None,
            )?
            .pop()
            {
                p
            } else {
                let p = Project {
                    id: new_id(),
                    name: request.admin_project.clone(),
                    domain_id: DEFAULT_DOMAIN_ID.into(),
                    description: "Bootstrap project for initializing the cloud.".into(),
                    enabled: true,
                };
                repo::insert_project(tx, &p, now)?;
                created.push(format!("project {}", p.name));
                p
            };
            let mut password_set = false;
            let user = if let Some(mut u) = repo::users(
                tx,
                Some(DEFAULT_DOMAIN_ID.into()),
                Some(request.admin_user.clone()),
            )?
            .pop()
            {
                if let Some(hash) = &hash {
                    repo::set_password(tx, &u.id, hash)?;
                    repo::revoke_user_tokens(tx, &u.id)?;
                    u.enabled = true;
                    repo::update_user(tx, &u)?;
                    password_set = true;
                }
                u
            } else {
                let u = User {
                    id: new_id(),
                    name: request.admin_user.clone(),
                    domain_id: DEFAULT_DOMAIN_ID.into(),
                    description: String::new(),
                    enabled: true,
                    default_project_id: None,
                    options: BTreeMap::new(),
                    password_expires_at: None,
                };
                repo::insert_user(tx, &u, hash.as_deref(), now)?;
                password_set = hash.is_some();
                created.push(format!("user {}", u.name));
                u
            };
            let admin = roles["admin"].clone();
            let actor = Actor::User(user.id.clone());
            for (target, label) in [
                (
                    Target::Project(project.id.clone()),
                    format!("project {}", project.name),
                ),
                (Target::System, "system all".to_owned()),
            ] {
                if repo::insert_assignment(tx, &actor, &target, &admin)? {
                    created.push(format!("grant admin on {label}"));
                }
            }
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ('identity_region_id', ?1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [&region_id],
            )?;
            Ok(BootstrapReport {
                domain_id: DEFAULT_DOMAIN_ID.into(),
                project_id: project.id,
                user_id: user.id,
                roles,
                region_id: region_id.clone(),
                password_set,
                created,
            })
        })
    }
}
