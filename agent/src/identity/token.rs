//! Tokens: opaque random strings, stored only as their SHA-256, validated through an in-memory
//! cache.
//!
//! Why opaque tokens rather than Keystone's Fernet: a node is its own single identity authority, so
//! nothing has to validate a token offline, and a 43-character random token needs no key rotation.
//!
//! Cache: validating a token means checking its row, its user, domain and project and computing the
//! effective roles (groups and implied roles included). The result is kept in memory under the
//! token's hash, tagged with the identity generation it was computed at. Every identity write bumps
//! that generation (a row in `settings`, so writes by the admin CLI in another process count too),
//! which makes every entry stale at once. Reading the generation on every call is avoided with
//! SQLite's `data_version`, which changes only when any connection commits: while it stands still
//! the hot path is one SHA-256, one `PRAGMA` on the store's watcher connection and a map lookup.
//! Expiry is checked against the clock on every hit.

use super::IdentityError;
use super::model::{RoleRef, Target};
use super::model::{Scope, TokenAppCred, TokenInfo, TokenUser};
use super::repo::{self, TokenRow, TokenScope};
use super::service::IdentityService;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jiff::Timestamp;
use rand::TryRngCore as _;
use rusqlite::Transaction;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, PoisonError};

type Result<T> = std::result::Result<T, IdentityError>;

/// Most cached validations kept; past this, stale and expired entries go, then all of them.
const CACHE_CAPACITY: usize = 10_000;

/// The cache of validated tokens.
#[derive(Default)]
pub(super) struct TokenCache {
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    /// The store's `data_version` when `generation` was read.
    data_version: Option<i64>,
    /// The identity generation as of `data_version`.
    generation: i64,
    entries: HashMap<[u8; 32], (i64, TokenInfo)>,
}

impl TokenCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `n` random bytes from the OS RNG, URL-safe base64 without padding.
pub(super) fn random_urlsafe(n: usize) -> Result<String> {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| IdentityError::Corrupt(format!("OS random generator failed: {e}")))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// A new token: 32 random bytes, 43 characters.
pub(super) fn new_token() -> Result<String> {
    random_urlsafe(32)
}

/// A new audit id: 16 random bytes, 22 characters, as Keystone's.
pub(super) fn new_audit_id() -> Result<String> {
    random_urlsafe(16)
}

pub(super) fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub(super) fn hex(digest: &[u8; 32]) -> String {
    use std::fmt::Write as _;
    digest.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Effective roles of a user on a target: direct and group assignments plus everything they imply,
/// sorted by name.
pub(super) fn effective_roles(
    tx: &Transaction<'_>,
    user_id: &str,
    target: &Target,
) -> Result<Vec<RoleRef>> {
    let assigned = repo::assigned_roles(tx, user_id, target)?;
    if assigned.is_empty() {
        return Ok(assigned);
    }
    Ok(expand(tx, assigned)?.into_iter().collect())
}

/// The roles and every role they imply.
pub(super) fn expand(tx: &Transaction<'_>, roles: Vec<RoleRef>) -> Result<BTreeSet<RoleRef>> {
    let closure = repo::implication_closure(tx)?;
    let mut out = BTreeSet::new();
    for role in roles {
        if let Some(implied) = closure.get(&role.id) {
            out.extend(implied.iter().cloned());
        }
        out.insert(role);
    }
    Ok(out)
}

fn sorted_by_name(roles: impl IntoIterator<Item = RoleRef>) -> Vec<RoleRef> {
    let mut roles: Vec<RoleRef> = roles.into_iter().collect();
    roles.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.id.cmp(&b.id)));
    roles.dedup();
    roles
}

/// The facts of a token row as they stand now, or why the token is not (or no longer) valid.
/// The outer error is a store failure; the inner one a reason for the debug log.
pub(super) fn describe(
    tx: &Transaction<'_>,
    row: &TokenRow,
    now: Timestamp,
) -> Result<std::result::Result<TokenInfo, String>> {
    if row.revoked {
        return Ok(Err("token revoked".into()));
    }
    if now >= row.expires_at {
        return Ok(Err("token expired".into()));
    }
    let Some(user) = repo::user(tx, &row.user_id)? else {
        return Ok(Err(format!("user {} gone", row.user_id)));
    };
    if !user.enabled {
        return Ok(Err(format!("user {} disabled", user.id)));
    }
    let Some(user_domain) = repo::domain(tx, &user.domain_id)? else {
        return Ok(Err(format!("domain {} gone", user.domain_id)));
    };
    if !user_domain.enabled {
        return Ok(Err(format!("user's domain {} disabled", user_domain.id)));
    }
    let (scope, target) = match &row.scope {
        TokenScope::Unscoped => (Scope::Unscoped, None),
        TokenScope::Scoped(Target::System) => (Scope::System, Some(Target::System)),
        TokenScope::Scoped(Target::Domain(id)) => match repo::domain(tx, id)? {
            Some(d) if d.enabled => (
                Scope::Domain {
                    id: d.id,
                    name: d.name,
                },
                Some(Target::Domain(id.clone())),
            ),
            _ => return Ok(Err(format!("domain {id} gone or disabled"))),
        },
        TokenScope::Scoped(Target::Project(id)) => {
            let Some(project) = repo::project(tx, id)?.filter(|p| p.enabled) else {
                return Ok(Err(format!("project {id} gone or disabled")));
            };
            let Some(domain) = repo::domain(tx, &project.domain_id)?.filter(|d| d.enabled) else {
                return Ok(Err(format!("project {id}'s domain gone or disabled")));
            };
            (
                Scope::Project {
                    id: project.id,
                    name: project.name,
                    domain_id: domain.id,
                    domain_name: domain.name,
                },
                Some(Target::Project(id.clone())),
            )
        }
    };
    let mut roles = match &target {
        Some(target) => effective_roles(tx, &user.id, target)?,
        None => Vec::new(),
    };
    let mut application_credential = None;
    if let Some(cred_id) = &row.app_cred_id {
        let Some((cred, _)) = repo::app_cred(tx, cred_id)? else {
            return Ok(Err(format!("application credential {cred_id} gone")));
        };
        if cred.expires_at.is_some_and(|t| now >= t) {
            return Ok(Err(format!("application credential {cred_id} expired")));
        }
        // Only the credential's roles (and what they imply), and only while the user still holds them.
        let allowed = expand(tx, cred.roles)?;
        roles.retain(|r| allowed.contains(r));
        application_credential = Some(TokenAppCred {
            id: cred.id,
            name: cred.name,
            restricted: !cred.unrestricted,
        });
    }
    if target.is_some() && roles.is_empty() {
        return Ok(Err(format!("user {} has no role on the scope", user.id)));
    }
    let mut audit_ids = vec![row.audit_id.clone()];
    audit_ids.extend(row.audit_chain.clone());
    Ok(Ok(TokenInfo {
        user: TokenUser {
            id: user.id,
            name: user.name,
            domain_id: user_domain.id,
            domain_name: user_domain.name,
            password_expires_at: user.password_expires_at,
        },
        scope,
        roles: sorted_by_name(roles),
        methods: row.methods.clone(),
        issued_at: row.issued_at,
        expires_at: row.expires_at,
        audit_ids,
        application_credential,
    }))
}

impl IdentityService {
    /// The identity generation, read from the store only when some connection committed since the
    /// last look.
    fn current_generation(&self) -> Result<i64> {
        let data_version = self.store.data_version()?;
        {
            let state = self.cache.lock();
            if state.data_version == Some(data_version) {
                return Ok(state.generation);
            }
        }
        let generation = self.read(repo::generation)?;
        let mut state = self.cache.lock();
        state.data_version = Some(data_version);
        state.generation = generation;
        Ok(generation)
    }

    pub(super) fn remember(&self, key: [u8; 32], generation: i64, info: &TokenInfo) {
        let now = self.clock.now();
        let mut state = self.cache.lock();
        if state.entries.len() >= CACHE_CAPACITY {
            let current = state.generation;
            state
                .entries
                .retain(|_, (g, info)| *g == current && info.expires_at > now);
            if state.entries.len() >= CACHE_CAPACITY {
                state.entries.clear();
            }
        }
        state.entries.insert(key, (generation, info.clone()));
    }

    /// What a token stands for: the hot path of every API request.
    ///
    /// Unknown, expired and revoked tokens, and tokens whose user, project or domain is gone or
    /// disabled or whose user has lost every role on the scope, give [`IdentityError::TokenNotFound`]
    /// (Keystone's 404 for `X-Subject-Token`); for the caller's own token map it with
    /// [`IdentityError::for_caller`] (401). Cheap while no identity write happens: see the module
    /// documentation.
    pub fn validate(&self, token: &str) -> Result<TokenInfo> {
        let key = digest(token);
        let now = self.clock.now();
        let generation = self.current_generation()?;
        {
            let mut state = self.cache.lock();
            if let Some((g, info)) = state.entries.get(&key)
                && *g == generation
            {
                if now < info.expires_at {
                    return Ok(info.clone());
                }
                state.entries.remove(&key);
                return Err(IdentityError::TokenNotFound);
            }
        }
        let (generation, described) = self.read(|tx| {
            let generation = repo::generation(tx)?;
            let Some(row) = repo::token(tx, &hex(&key))? else {
                return Ok((generation, Err("unknown token".to_owned())));
            };
            Ok((generation, describe(tx, &row, now)?))
        })?;
        match described {
            Ok(info) => {
                self.remember(key, generation, &info);
                Ok(info)
            }
            Err(reason) => {
                tracing::debug!(%reason, "token refused");
                self.cache.lock().entries.remove(&key);
                Err(IdentityError::TokenNotFound)
            }
        }
    }

    /// [`IdentityService::validate`] for the caller's own token (`X-Auth-Token`): failures are
    /// Unauthorized.
    pub fn validate_caller(&self, token: &str) -> Result<TokenInfo> {
        self.validate(token).map_err(IdentityError::for_caller)
    }

    /// Revokes one token (`DELETE /v3/auth/tokens`); TokenNotFound when it is not valid now.
    pub fn revoke(&self, token: &str) -> Result<()> {
        let key = digest(token);
        let now = self.clock.now();
        let revoked = self.write(|tx| {
            let Some(row) = repo::token(tx, &hex(&key))? else {
                return Ok(false);
            };
            if row.expires_at <= now {
                return Ok(false);
            }
            repo::revoke_token(tx, &hex(&key))
        })?;
        self.cache.lock().entries.remove(&key);
        if revoked {
            Ok(())
        } else {
            Err(IdentityError::TokenNotFound)
        }
    }

    /// Revokes every token of a user (what a password change, disabling or deleting does anyway).
    pub fn revoke_user_tokens(&self, user_id: &str) -> Result<usize> {
        self.write(|tx| repo::revoke_user_tokens(tx, user_id))
    }
}
