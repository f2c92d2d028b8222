//! Identity: Keystone v3 domains, projects, users, groups, roles, role assignments, tokens and
//! application credentials, kept in the store and checked here. No HTTP: `api/` shapes Keystone's JSON
//! on top of [`IdentityService`]; the admin CLI calls the same functions.
//!
//! Every method of [`IdentityService`] blocks (SQLite, and argon2 for anything that hashes or checks
//! a secret): async callers run them in `tokio::task::spawn_blocking`.
//!
//! Tokens are opaque random strings; the store only knows their SHA-256. [`IdentityService::validate`]
//! answers from an in-memory cache while no identity write has happened since the entry was made
//! (see `token.rs`), so the hot path costs a hash and a map lookup.

mod auth;
pub mod model;
pub mod password;
pub mod policy;
mod repo;
pub mod service;
#[cfg(test)]
mod tests;
mod token;

use crate::error_class::{Classify, ErrorClass};
use crate::store::StoreError;

pub use model::*;
pub use service::{
    AppCredRef, AuthIdentity, AuthRequest, BootstrapReport, BootstrapRequest, DomainRef,
    IdentityService, IdentitySettings, NewApplicationCredential, NewDomain, NewGroup, NewProject,
    NewRole, NewUser, ProjectRef, ScopeRequest, UserRef,
};
pub use service::{
    DomainUpdate, GroupUpdate, ProjectFilter, ProjectUpdate, UserFilter, UserUpdate,
};

/// Why an identity request was refused or failed. Messages follow Keystone's wording where clients
/// show them; none reveals a secret or whether a user exists.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A named resource does not exist (Keystone: `Could not find project: <id>.`).
    #[error("Could not find {what}: {id}.")]
    NotFound {
        /// Resource kind (`project`, `user`, …).
        what: &'static str,
        /// The id or name asked for.
        id: String,
    },
    /// A token is unknown, expired, revoked, or its user, project or domain is gone or disabled.
    /// Keystone answers 404 for a bad `X-Subject-Token`; for the caller's own token the API wants
    /// 401: see [`IdentityError::for_caller`].
    #[error("The token could not be found.")]
    TokenNotFound,
    /// Authentication failed. One message for every reason (unknown user, wrong password, disabled
    /// user, project or domain, no role on the scope): the real reason is logged at debug level.
    #[error("The request you have made requires authentication.")]
    Unauthorized,
    /// Authenticated, but not allowed to do this (e.g. a restricted application credential creating
    /// another, or asking for a role the caller lacks).
    #[error("You are not authorized to perform the requested action: {0}")]
    Forbidden(String),
    /// Input is malformed (empty or over-long name, bad reference shape).
    #[error("Invalid input: {0}")]
    Validation(String),
    /// A name or relation exists already (Keystone: `Conflict occurred attempting to store …`).
    #[error("Conflict occurred attempting to store {what} - {detail}")]
    Conflict {
        /// Resource kind.
        what: &'static str,
        /// Which duplicate.
        detail: String,
    },
    /// Hashing failed (only impossible parameters can cause it).
    #[error(transparent)]
    Hash(#[from] password::HashError),
    /// The store holds something it should not.
    #[error("identity store is inconsistent: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for IdentityError {
    fn from(err: rusqlite::Error) -> Self {
        Self::Store(StoreError::Query(err))
    }
}

impl IdentityError {
    /// The error to report when the token that failed validation is the caller's own
    /// (`X-Auth-Token`): Keystone answers 401 there, and 404 only for a bad subject token.
    #[must_use]
    pub fn for_caller(self) -> Self {
        match self {
            Self::TokenNotFound => Self::Unauthorized,
            other => other,
        }
    }

    pub(crate) fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Self::NotFound {
            what,
            id: id.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Validation(message.into())
    }
}

impl Classify for IdentityError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::NotFound { .. } | Self::TokenNotFound => ErrorClass::NotFound,
            Self::Unauthorized => ErrorClass::Unauthorized,
            Self::Forbidden(_) => ErrorClass::Forbidden,
            Self::Validation(_) => ErrorClass::BadRequest,
            Self::Conflict { .. } => ErrorClass::Conflict,
            Self::Hash(_) | Self::Corrupt(_) | Self::Store(_) => ErrorClass::Internal,
        }
    }
}
