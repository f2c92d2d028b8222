//! Glance's image attribute catalogue: which names are core, read-only or reserved, and the limits on
//! names, tags and free-form properties.
//!
//! Create and update both go through these rules, so an attribute refused by one is refused by the
//! other with the same message. Messages follow Glance's wording because clients (and the tempest
//! tests) show or match them.

use super::ImageError;
use std::collections::{BTreeMap, BTreeSet};

/// At most this many free-form properties per image (Glance's `image_property_quota` default).
pub const MAX_PROPERTIES: usize = 128;
/// At most this many tags per image (Glance's `image_tag_quota` default).
pub const MAX_TAGS: usize = 128;
/// Longest property key, tag and name, in characters (Glance's column widths).
pub const MAX_KEY_CHARS: usize = 255;
/// Longest property value in bytes (Glance stores values in a 64 KiB TEXT column).
pub const MAX_VALUE_BYTES: usize = 65_535;

/// Attributes computed by the store; a client may never set them. `owner` is read-only too, except for
/// admins, which is decided where the caller is known.
pub const READ_ONLY: &[&str] = &[
    "id",
    "status",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "size",
    "virtual_size",
    "created_at",
    "updated_at",
    "file",
    "schema",
    "self",
    "direct_url",
    "locations",
];

/// Names Glance keeps for itself: refused as properties so they never shadow its own fields.
pub const RESERVED: &[&str] = &["location", "deleted", "deleted_at"];

/// Property names starting with this belong to Glance (`os_glance_import_task`, …).
pub const RESERVED_PREFIX: &str = "os_glance";

/// Core attributes a client may write (subject to the rules in `patch`).
pub const WRITABLE_CORE: &[&str] = &[
    "name",
    "visibility",
    "protected",
    "min_disk",
    "min_ram",
    "disk_format",
    "container_format",
    "tags",
    "owner",
];

/// Refuses names a client may not use as a free-form property: read-only, reserved, or a core
/// attribute (which has its own typed field).
pub fn check_property_key(key: &str) -> Result<(), ImageError> {
    if READ_ONLY.contains(&key) {
        return Err(ImageError::ReadOnly(key.to_owned()));
    }
    if RESERVED.contains(&key) || key.starts_with(RESERVED_PREFIX) {
        return Err(ImageError::Reserved(key.to_owned()));
    }
    if WRITABLE_CORE.contains(&key) {
        return Err(ImageError::Invalid {
            field: "properties",
            reason: format!("'{key}' is a core attribute, not a property"),
        });
    }
    if key.is_empty() || key.chars().count() > MAX_KEY_CHARS {
        return Err(ImageError::Invalid {
            field: "properties",
            reason: format!("property names must be 1 to {MAX_KEY_CHARS} characters"),
        });
    }
    Ok(())
}

/// Checks one property value's size.
pub fn check_property_value(key: &str, value: &str) -> Result<(), ImageError> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(ImageError::Invalid {
            field: "properties",
            reason: format!("value of '{key}' is longer than {MAX_VALUE_BYTES} bytes"),
        });
    }
    Ok(())
}

/// Checks a whole property map: every key and value, and the quota.
pub fn check_properties(properties: &BTreeMap<String, String>) -> Result<(), ImageError> {
    for (key, value) in properties {
        check_property_key(key)?;
        check_property_value(key, value)?;
    }
    if properties.len() > MAX_PROPERTIES {
        return Err(ImageError::QuotaExceeded {
            what: "properties",
            limit: MAX_PROPERTIES,
        });
    }
    Ok(())
}

/// Validates a display name the way Glance does: at most 255 characters, no control characters.
pub fn check_name(name: &str) -> Result<(), ImageError> {
    if name.chars().count() > MAX_KEY_CHARS {
        return Err(ImageError::Invalid {
            field: "name",
            reason: "longer than 255 characters".into(),
        });
    }
    if name.chars().any(char::is_control) {
        return Err(ImageError::Invalid {
            field: "name",
            reason: "contains control characters".into(),
        });
    }
    Ok(())
}

/// Validates tags (length, no control characters, quota) and makes them a set, as Glance does.
pub fn check_tags(tags: impl IntoIterator<Item = String>) -> Result<BTreeSet<String>, ImageError> {
    let tags: BTreeSet<String> = tags.into_iter().collect();
    for tag in &tags {
        if tag.is_empty()
            || tag.chars().count() > MAX_KEY_CHARS
            || tag.chars().any(char::is_control)
        {
            return Err(ImageError::Invalid {
                field: "tags",
                reason: format!("tags must be 1 to {MAX_KEY_CHARS} printable characters"),
            });
        }
    }
    if tags.len() > MAX_TAGS {
        return Err(ImageError::QuotaExceeded {
            what: "tags",
            limit: MAX_TAGS,
        });
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_class::{Classify, ErrorClass};

    #[test]
    fn read_only_reserved_and_core_names_are_not_properties() {
        let err = check_property_key("checksum").expect_err("read-only");
        assert_eq!(err.to_string(), "Attribute 'checksum' is read-only.");
        assert_eq!(err.class(), ErrorClass::Forbidden);
        let err = check_property_key("os_glance_importing_to_stores").expect_err("reserved");
        assert_eq!(
            err.to_string(),
            "Attribute 'os_glance_importing_to_stores' is reserved."
        );
        assert_eq!(err.class(), ErrorClass::Forbidden);
        assert_eq!(
            check_property_key("deleted").expect_err("reserved").class(),
            ErrorClass::Forbidden
        );
        assert_eq!(
            check_property_key("name").expect_err("core").class(),
            ErrorClass::BadRequest
        );
        assert_eq!(
            check_property_key(&"k".repeat(256))
                .expect_err("long")
                .class(),
            ErrorClass::BadRequest
        );
        check_property_key(&"k".repeat(255)).expect("255 is fine");
        check_property_key("os_distro").expect("scs metadata");
    }

    #[test]
    fn property_quota_is_enforced() {
        let ok: BTreeMap<String, String> = (0..MAX_PROPERTIES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        check_properties(&ok).expect("at the quota");
        let mut over = ok;
        over.insert("one_more".into(), "v".into());
        let err = check_properties(&over).expect_err("over");
        assert!(matches!(err, ImageError::QuotaExceeded { limit: 128, .. }));
        assert_eq!(err.class(), ErrorClass::BadRequest);
    }

    #[test]
    fn tags_become_a_set_and_are_bounded() {
        let tags = check_tags(["b".to_owned(), "a".to_owned(), "b".to_owned()]).expect("tags");
        assert_eq!(tags.into_iter().collect::<Vec<_>>(), ["a", "b"]);
        assert!(check_tags([String::new()]).is_err());
        assert!(check_tags((0..=MAX_TAGS).map(|i| i.to_string())).is_err());
    }
}
