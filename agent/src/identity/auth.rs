//! Authentication (`POST /v3/auth/tokens`) and application credentials.
//!
//! Every failure of authentication is the one [`IdentityError::Unauthorized`]: unknown user, wrong
//! password, disabled user, project or domain, a scope without a role. The real reason goes to the
//! debug log. An unknown user or credential still costs one argon2 verification, so timing does not
//! tell whether it exists either.

use super::IdentityError;
use super::model::{
    ApplicationCredential, CreatedApplicationCredential, IssuedToken, Scope, Target, TokenInfo,
    User,
};
use super::repo::{self, TokenRow, TokenScope};
use super::service::{
    AppCredRef, AuthIdentity, AuthRequest, DomainRef, IdentityService, NewApplicationCredential,
    ProjectRef, ScopeRequest, UserRef, check_name, conflict_on_unique, new_id,
};
use super::token::{self, describe, digest, hex};
use jiff::{SignedDuration, Timestamp};
use rusqlite::Transaction;

type Result<T> = std::result::Result<T, IdentityError>;

fn unauthorized(reason: impl std::fmt::Display) -> IdentityError {
    tracing::debug!(%reason, "authentication refused");
    IdentityError::Unauthorized
}

fn resolve_domain(tx: &Transaction<'_>, domain: &DomainRef) -> Result<Option<super::Domain>> {
    match domain {
        DomainRef::Id(id) => repo::domain(tx, id),
        DomainRef::Name(name) => repo::domain_by_name(tx, name),
    }
}

fn resolve_user(tx: &Transaction<'_>, user: &UserRef) -> Result<Option<User>> {
    match user {
        UserRef::Id(id) => repo::user(tx, id),
        UserRef::Name { name, domain } => match resolve_domain(tx, domain)? {
            Some(d) => Ok(repo::users(tx, Some(d.id), Some(name.clone()))?.pop()),
            None => Ok(None),
        },
    }
}

fn resolve_project(tx: &Transaction<'_>, project: &ProjectRef) -> Result<Option<super::Project>> {
    match project {
        ProjectRef::Id(id) => repo::project(tx, id),
        ProjectRef::Name { name, domain } => match resolve_domain(tx, domain)? {
            Some(d) => Ok(repo::projects(tx, Some(d.id), Some(name.clone()), None)?.pop()),
            None => Ok(None),
        },
    }
}

/// Seconds only: token times are compared as text in the store and must all have one format.
fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

impl IdentityService {
    /// Checks `secret` against `stored`; with no stored hash, verifies against a throw-away hash so
    /// that the answer takes as long as a real check. Blocking (argon2).
    pub(super) fn verify_or_waste(&self, secret: &str, stored: Option<&str>) -> bool {
        if let Some(stored) = stored {
            return self.hasher.verify(secret, stored);
        }
        let dummy = self
            .dummy_hash
            .get_or_init(|| self.hasher.hash("").unwrap_or_default());
        let _ = self.hasher.verify(secret, dummy);
        false
    }

    /// Authenticates and issues a token (`POST /v3/auth/tokens`).
    ///
    /// Blocking: a password or secret check costs one argon2 verification. See the module
    /// documentation for the single Unauthorized answer; rescoping an application-credential token is
    /// Forbidden, as is any scope request for an application credential other than its own project.
    pub fn authenticate(&self, request: AuthRequest) -> Result<IssuedToken> {
        let now = whole_seconds(self.clock.now());
        let ttl = SignedDuration::try_from(self.settings.token_ttl)
            .map_err(|_| IdentityError::invalid("token TTL out of range"))?;
        let default_expiry = now
            .checked_add(ttl)
            .map_err(|_| IdentityError::invalid("token TTL out of range"))?;
        match request.identity {
            AuthIdentity::Password { user, password } => {
                let (found, stored) = self.read(|tx| {
                    let found = resolve_user(tx, &user)?;
                    let stored = match &found {
                        Some(u) => repo::password_hash(tx, &u.id)?,
                        None => None,
                    };
                    Ok((found, stored))
                })?;
                let verified = self.verify_or_waste(&password, stored.as_deref());
                let Some(found) = found else {
                    return Err(unauthorized(format!("no user {user:?}")));
                };
                if !verified {
                    return Err(unauthorized(format!(
                        "wrong password for user {}",
                        found.id
                    )));
                }
                self.issue(
                    &found.id,
                    vec!["password".into()],
                    &request.scope,
                    None,
                    now,
                    default_expiry,
                    None,
                )
            }
            AuthIdentity::Token { token } => {
                let original = self.validate(&token).map_err(IdentityError::for_caller)?;
                if original.application_credential.is_some() {
                    return Err(IdentityError::Forbidden(
                        "a token made from an application credential cannot be rescoped".into(),
                    ));
                }
                let mut methods = vec!["token".to_owned()];
                for m in original.methods {
                    if !methods.contains(&m) {
                        methods.push(m);
                    }
                }
                // The chain keeps the first token's audit id: the last of the original's ids.
                let chain = original.audit_ids.last().cloned();
                self.issue(
                    &original.user.id,
                    methods,
                    &request.scope,
                    None,
                    now,
                    original.expires_at,
                    chain,
                )
            }
            AuthIdentity::ApplicationCredential { credential, secret } => {
                let found = self.read(|tx| {
                    let id = match &credential {
                        AppCredRef::Id(id) => Some(id.clone()),
                        AppCredRef::Name { name, user } => match resolve_user(tx, user)? {
                            Some(u) => repo::app_cred_id_by_name(tx, &u.id, name)?,
                            None => None,
                        },
                    };
                    match id {
                        Some(id) => repo::app_cred(tx, &id),
                        None => Ok(None),
                    }
                })?;
                let verified =
                    self.verify_or_waste(&secret, found.as_ref().map(|(_, h)| h.as_str()));
                let Some((cred, _)) = found else {
                    return Err(unauthorized(format!(
                        "no application credential {credential:?}"
                    )));
                };
                if !verified {
                    return Err(unauthorized(format!(
                        "wrong secret for application credential {}",
                        cred.id
                    )));
                }
                if cred.expires_at.is_some_and(|t| now >= t) {
                    return Err(unauthorized(format!(
                        "application credential {} expired",
                        cred.id
                    )));
                }
                let scope = match &request.scope {
                    ScopeRequest::Default => {
                        ScopeRequest::Project(ProjectRef::Id(cred.project_id.clone()))
                    }
                    ScopeRequest::Project(p) => {
                        let wanted = self.read(|tx| resolve_project(tx, p))?;
                        if wanted.is_none_or(|w| w.id != cred.project_id) {
                            return Err(unauthorized(
                                "application credential asked for a scope other than its project",
                            ));
                        }
                        ScopeRequest::Project(ProjectRef::Id(cred.project_id.clone()))
                    }
                    _ => {
                        return Err(unauthorized(
                            "application credential asked for a scope other than its project",
                        ));
                    }
                };
                let expiry = match cred.expires_at {
                    Some(t) => default_expiry.min(whole_seconds(t)),
                    None => default_expiry,
                };
                self.issue(
                    &cred.user_id,
                    vec!["application_credential".into()],
                    &scope,
                    Some(cred.id),
                    now,
                    expiry,
                    None,
                )
            }
        }
    }

    /// Resolves the scope, checks everything a validation would, and stores the new token.
    #[allow(clippy::too_many_arguments)]
    fn issue(
        &self,
        user_id: &str,
        methods: Vec<String>,
        scope: &ScopeRequest,
        app_cred_id: Option<String>,
        now: Timestamp,
        expires_at: Timestamp,
        audit_chain: Option<String>,
    ) -> Result<IssuedToken> {
        let token = token::new_token()?;
        let key = digest(&token);
        let audit_id = token::new_audit_id()?;
        let (generation, info) = self.store.write(|tx| {
            let user = repo::user(tx, user_id)?.ok_or_else(|| unauthorized("user vanished"))?;
            let scope = match scope {
                ScopeRequest::Unscoped => TokenScope::Unscoped,
                ScopeRequest::System => TokenScope::Scoped(Target::System),
                ScopeRequest::Default => match &user.default_project_id {
                    Some(project)
                        if repo::project(tx, project)?.is_some_and(|p| p.enabled)
                            && !token::effective_roles(
                                tx,
                                user_id,
                                &Target::Project(project.clone()),
                            )?
                            .is_empty() =>
                    {
                        TokenScope::Scoped(Target::Project(project.clone()))
                    }
                    _ => TokenScope::Unscoped,
                },
                ScopeRequest::Project(p) => match resolve_project(tx, p)? {
                    Some(p) => TokenScope::Scoped(Target::Project(p.id)),
                    None => return Err(unauthorized(format!("no project {p:?}"))),
                },
                ScopeRequest::Domain(d) => match resolve_domain(tx, d)? {
                    Some(d) => TokenScope::Scoped(Target::Domain(d.id)),
                    None => return Err(unauthorized(format!("no domain {d:?}"))),
                },
            };
            let row = TokenRow {
                user_id: user_id.to_owned(),
                scope,
                methods,
                app_cred_id,
                audit_id,
                audit_chain,
                issued_at: now,
                expires_at,
                revoked: false,
            };
            let info = describe(tx, &row, now)?.map_err(unauthorized)?;
            repo::insert_token(tx, &hex(&key), &row)?;
            let purged = repo::purge_expired_tokens(tx, now)?;
            if purged > 0 {
                tracing::debug!(purged, "expired tokens forgotten");
            }
            Ok::<_, IdentityError>((repo::generation(tx)?, info))
        })?;
        self.remember(key, generation, &info);
        Ok(IssuedToken { token, info })
    }

    // ---- application credentials --------------------------------------------------------------

    /// Creates an application credential for the caller on the project their token is scoped to and
    /// returns its secret, this once.
    ///
    /// The roles must be a subset of the caller's current roles there (default: all of them); asking
    /// for one the caller lacks is Forbidden, as is creating one with a token from a restricted
    /// application credential. Blocking: the secret is hashed with argon2.
    pub fn create_application_credential(
        &self,
        caller: &TokenInfo,
        new: NewApplicationCredential,
    ) -> Result<CreatedApplicationCredential> {
        check_name("application credential", &new.name)?;
        if caller
            .application_credential
            .as_ref()
            .is_some_and(|c| c.restricted)
        {
            return Err(IdentityError::Forbidden(
                "a restricted application credential cannot create application credentials".into(),
            ));
        }
        let Scope::Project { id: project_id, .. } = &caller.scope else {
            return Err(IdentityError::invalid(
                "application credentials are created with a project-scoped token",
            ));
        };
        let roles = match &new.roles {
            // Keystone treats an empty list like no list (python-openstackclient sends `[]`).
            None => caller.roles.clone(),
            Some(wanted) if wanted.is_empty() => caller.roles.clone(),
            Some(wanted) => {
                let mut roles = Vec::new();
                for w in wanted {
                    let role = caller
                        .roles
                        .iter()
                        .find(|r| r.id == *w || r.name == *w)
                        .ok_or_else(|| {
                            IdentityError::Forbidden(format!(
                                "the caller does not hold role {w} on project {project_id}"
                            ))
                        })?;
                    if !roles.contains(role) {
                        roles.push(role.clone());
                    }
                }
                roles
            }
        };
        if roles.is_empty() {
            return Err(IdentityError::invalid(
                "an application credential needs a role",
            ));
        }
        let now = self.clock.now();
        if new.expires_at.is_some_and(|t| t <= now) {
            return Err(IdentityError::invalid("expires_at must be in the future"));
        }
        let secret = match new.secret {
            Some(secret) if secret.is_empty() => {
                return Err(IdentityError::invalid("secret must not be empty"));
            }
            Some(secret) => secret,
            None => token::random_urlsafe(48)?,
        };
        let hash = self.hash_secret(&secret)?;
        let mut credential = ApplicationCredential {
            id: new_id(),
            name: new.name,
            description: new.description,
            user_id: caller.user.id.clone(),
            project_id: project_id.clone(),
            expires_at: new.expires_at,
            unrestricted: new.unrestricted,
            roles,
        };
        credential.roles.sort_by(|a, b| a.name.cmp(&b.name));
        self.write(|tx| {
            repo::project(tx, &credential.project_id)?
                .ok_or_else(|| IdentityError::not_found("project", &credential.project_id))?;
            repo::insert_app_cred(tx, &credential, &hash, now)
        })
        .map_err(conflict_on_unique("application credential", || {
            format!("Duplicate entry found with name {}.", credential.name)
        }))?;
        Ok(CreatedApplicationCredential { credential, secret })
    }

    /// A user's application credentials.
    pub fn list_application_credentials(
        &self,
        user_id: &str,
    ) -> Result<Vec<ApplicationCredential>> {
        self.read(|tx| {
            repo::user(tx, user_id)?.ok_or_else(|| IdentityError::not_found("user", user_id))?;
            repo::app_creds(tx, user_id)
        })
    }

    /// One of a user's application credentials; another user's is NotFound.
    pub fn application_credential(&self, user_id: &str, id: &str) -> Result<ApplicationCredential> {
        self.read(|tx| repo::app_cred(tx, id))?
            .map(|(c, _)| c)
            .filter(|c| c.user_id == user_id)
            .ok_or_else(|| IdentityError::not_found("application credential", id))
    }

    /// Deletes one of a user's application credentials, which revokes every token made from it.
    pub fn delete_application_credential(&self, user_id: &str, id: &str) -> Result<()> {
        self.write(|tx| {
            match repo::app_cred(tx, id)? {
                Some((c, _)) if c.user_id == user_id => {}
                _ => return Err(IdentityError::not_found("application credential", id)),
            }
            repo::delete_app_cred(tx, id)
        })
    }
}
