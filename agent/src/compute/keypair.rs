//! SSH keypairs (Nova `os-keypairs`): imported or generated, owned by a user, copied into the
//! config drive of the servers booted with them.
//!
//! A generated keypair's private key is returned once and never stored. Keys are Ed25519 where we
//! generate them (small, fast, what current OpenSSH prefers); imports accept any OpenSSH public key
//! the `ssh-key` crate parses. The fingerprint is Nova's: MD5 of the key blob, colon-separated hex,
//! so clients comparing fingerprints with a central cloud see the same format.

use super::ComputeError;
use jiff::Timestamp;
use md5::{Digest, Md5};
use rusqlite::{OptionalExtension, Row, Transaction, params};
use serde::Serialize;
use ssh_key::{Algorithm, LineEnding, PrivateKey, PublicKey};

/// A keypair as Nova shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Keypair {
    /// Name, unique per user.
    pub name: String,
    /// Owner.
    pub user_id: String,
    /// `ssh` (x509 is not offered).
    pub key_type: String,
    /// OpenSSH public key line.
    pub public_key: String,
    /// MD5 fingerprint, `aa:bb:…`.
    pub fingerprint: String,
    /// Creation time.
    pub created_at: Timestamp,
}

/// A request to import (`public_key` set) or generate a keypair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewKeypair {
    /// Name: 1–255 of letters, digits, space, `-`, `_`, `.` and `@` (Nova's rule).
    pub name: String,
    /// Owner.
    pub user_id: String,
    /// OpenSSH public key to import; generated when absent.
    pub public_key: Option<String>,
}

/// A created keypair and, when we generated it, its private key (shown once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedKeypair {
    /// The stored keypair.
    pub keypair: Keypair,
    /// OpenSSH private key PEM, only for generated keys.
    pub private_key: Option<String>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ComputeError {
    ComputeError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Checks a keypair name.
pub fn validate_name(name: &str) -> Result<(), ComputeError> {
    let allowed = |c: char| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_' | '.' | '@');
    if name.is_empty() || name.chars().count() > 255 || name.trim() != name {
        return Err(invalid(
            "name",
            "must be 1 to 255 characters without surrounding spaces",
        ));
    }
    if !name.chars().all(allowed) {
        return Err(invalid(
            "name",
            "may contain only letters, digits, spaces, '-', '_', '.' and '@'",
        ));
    }
    Ok(())
}

/// Parses an OpenSSH public key line and gives its canonical text and Nova fingerprint.
pub fn parse_public_key(text: &str) -> Result<(String, String), ComputeError> {
    let key = PublicKey::from_openssh(text.trim())
        .map_err(|err| invalid("public_key", format!("not an OpenSSH public key: {err}")))?;
    let blob = key
        .to_bytes()
        .map_err(|err| invalid("public_key", format!("cannot encode the key: {err}")))?;
    let canonical = key
        .to_openssh()
        .map_err(|err| invalid("public_key", format!("cannot encode the key: {err}")))?;
    Ok((canonical, fingerprint(&blob)))
}

fn fingerprint(blob: &[u8]) -> String {
    Md5::digest(blob)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Builds the keypair a request asks for (generating one if needed); nothing is stored yet.
pub fn prepare(request: &NewKeypair, now: Timestamp) -> Result<CreatedKeypair, ComputeError> {
    validate_name(&request.name)?;
    let (public_key, private_key) = if let Some(text) = &request.public_key {
        (text.clone(), None)
    } else {
        let encode =
            |err: ssh_key::Error| invalid("public_key", format!("cannot encode the key: {err}"));
        let private = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
            .map_err(|err| invalid("public_key", format!("cannot generate a key: {err}")))?;
        let pem = private.to_openssh(LineEnding::LF).map_err(encode)?;
        let public = private.public_key().to_openssh().map_err(encode)?;
        (public, Some(pem.to_string()))
    };
    let (public_key, fingerprint) = parse_public_key(&public_key)?;
    Ok(CreatedKeypair {
        keypair: Keypair {
            name: request.name.clone(),
            user_id: request.user_id.clone(),
            key_type: "ssh".into(),
            public_key,
            fingerprint,
            created_at: now,
        },
        private_key,
    })
}

pub(super) fn insert(tx: &Transaction<'_>, keypair: &Keypair) -> Result<(), ComputeError> {
    if find(tx, &keypair.user_id, &keypair.name)?.is_some() {
        return Err(ComputeError::Duplicate {
            what: "key pair",
            id: keypair.name.clone(),
        });
    }
    tx.execute(
        "INSERT INTO keypairs (user_id, name, key_type, public_key, fingerprint, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            keypair.user_id,
            keypair.name,
            keypair.key_type,
            keypair.public_key,
            keypair.fingerprint,
            keypair.created_at.to_string()
        ],
    )?;
    Ok(())
}

fn from_row(row: &Row<'_>) -> rusqlite::Result<Keypair> {
    Ok(Keypair {
        user_id: row.get(0)?,
        name: row.get(1)?,
        key_type: row.get(2)?,
        public_key: row.get(3)?,
        fingerprint: row.get(4)?,
        created_at: row
            .get::<_, String>(5)?
            .parse()
            .unwrap_or(Timestamp::UNIX_EPOCH),
    })
}

pub(super) fn find(
    tx: &Transaction<'_>,
    user_id: &str,
    name: &str,
) -> Result<Option<Keypair>, ComputeError> {
    Ok(tx
        .query_row(
            "SELECT user_id, name, key_type, public_key, fingerprint, created_at
             FROM keypairs WHERE user_id = ?1 AND name = ?2",
            params![user_id, name],
            from_row,
        )
        .optional()?)
}

pub(super) fn list(tx: &Transaction<'_>, user_id: &str) -> Result<Vec<Keypair>, ComputeError> {
    let mut stmt = tx.prepare(
        "SELECT user_id, name, key_type, public_key, fingerprint, created_at
         FROM keypairs WHERE user_id = ?1 ORDER BY name",
    )?;
    let rows = stmt.query_map(params![user_id], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn delete(tx: &Transaction<'_>, user_id: &str, name: &str) -> Result<(), ComputeError> {
    let gone = tx.execute(
        "DELETE FROM keypairs WHERE user_id = ?1 AND name = ?2",
        params![user_id, name],
    )?;
    if gone == 0 {
        return Err(ComputeError::KeypairNotFound(name.to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made with `ssh-keygen -t ed25519`; `ssh-keygen -l -E md5` prints the fingerprint below.
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2drWbc/6O74aOFoTX5rPJxojoycef+G/v5IH9gQKGT test@example";

    #[test]
    fn imported_keys_get_nova_style_md5_fingerprints() {
        let (canonical, fingerprint) = parse_public_key(KEY).expect("key");
        assert!(canonical.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"));
        assert_eq!(
            fingerprint,
            "bc:54:11:60:db:bc:b6:50:98:8a:70:bf:3e:78:34:21"
        );
    }

    #[test]
    fn generated_keys_come_with_a_private_key_that_matches() {
        let created = prepare(
            &NewKeypair {
                name: "gen".into(),
                user_id: "u".into(),
                public_key: None,
            },
            Timestamp::UNIX_EPOCH,
        )
        .expect("generate");
        let pem = created.private_key.expect("private key");
        let private = PrivateKey::from_openssh(&pem).expect("parse private");
        assert_eq!(
            private.public_key().to_openssh().expect("public"),
            created.keypair.public_key
        );
    }

    #[test]
    fn bad_names_and_keys_are_refused() {
        for name in ["", " lead", "slash/name", &"x".repeat(256)] {
            assert!(validate_name(name).is_err(), "{name:?}");
        }
        validate_name("my key_1.2@host").expect("valid");
        assert!(parse_public_key("ssh-rsa notbase64").is_err());
        assert!(parse_public_key("").is_err());
    }
}
