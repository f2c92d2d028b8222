//! Image updates: Glance's JSON-patch operations, already parsed by `api/` into attribute names and
//! plain values, applied as a pure function.
//!
//! The operations are applied to a copy; the service writes the copy in one transaction only if every
//! operation succeeded. So one bad operation changes nothing, and the rules can be tested (and
//! property-tested) without a store.

use super::access::Caller;
use super::attributes::{self, MAX_PROPERTIES, READ_ONLY, RESERVED, RESERVED_PREFIX};
use super::{ContainerFormat, Image, ImageError, ImageStatus, Visibility};
use crate::image::format::DiskFormat;

/// A value in a patch operation: the JSON shapes Glance's image attributes take, without JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeValue {
    /// `null`: clears an optional attribute (`name`, and the formats while queued).
    Null,
    /// `true`/`false` (`protected`).
    Bool(bool),
    /// A non-negative integer (`min_disk`, `min_ram`).
    Int(u64),
    /// A string (most attributes, every property).
    Text(String),
    /// A list of strings (`tags`).
    List(Vec<String>),
}

/// One operation of a PATCH request. `attribute` is the first segment of the JSON pointer, unescaped
/// (`/os_distro` → `os_distro`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageChange {
    /// Sets a core attribute, or adds a property that must not exist yet.
    Add {
        /// Attribute or property name.
        attribute: String,
        /// New value.
        value: ChangeValue,
    },
    /// Sets a core attribute, or changes a property that must exist.
    Replace {
        /// Attribute or property name.
        attribute: String,
        /// New value.
        value: ChangeValue,
    },
    /// Removes a property (core attributes cannot be removed).
    Remove {
        /// Property name.
        attribute: String,
    },
}

impl ImageChange {
    /// The attribute the operation touches.
    pub fn attribute(&self) -> &str {
        match self {
            Self::Add { attribute, .. }
            | Self::Replace { attribute, .. }
            | Self::Remove { attribute } => attribute,
        }
    }
}

fn invalid(attribute: &str, expected: &str) -> ImageError {
    ImageError::Invalid {
        field: "value",
        reason: format!("'{attribute}' must be {expected}"),
    }
}

fn text<'a>(attribute: &str, value: &'a ChangeValue) -> Result<&'a str, ImageError> {
    match value {
        ChangeValue::Text(text) => Ok(text),
        _ => Err(invalid(attribute, "a string")),
    }
}

fn optional_text<'a>(
    attribute: &str,
    value: &'a ChangeValue,
) -> Result<Option<&'a str>, ImageError> {
    match value {
        ChangeValue::Null => Ok(None),
        ChangeValue::Text(text) => Ok(Some(text)),
        _ => Err(invalid(attribute, "a string or null")),
    }
}

fn int(attribute: &str, value: &ChangeValue) -> Result<u64, ImageError> {
    match value {
        ChangeValue::Int(n) => Ok(*n),
        _ => Err(invalid(attribute, "a non-negative integer")),
    }
}

/// Applies `changes` in order to a copy of `image` as `caller` (who may already modify it).
///
/// Returns the changed copy, timestamps untouched (the service stamps `updated_at`), or the first
/// refusal, in which case nothing is to be written.
pub fn apply_changes(
    image: &Image,
    caller: &Caller,
    changes: &[ImageChange],
) -> Result<Image, ImageError> {
    let mut next = image.clone();
    for change in changes {
        apply_one(&mut next, caller, change)?;
    }
    if next.properties.len() > MAX_PROPERTIES {
        return Err(ImageError::QuotaExceeded {
            what: "properties",
            limit: MAX_PROPERTIES,
        });
    }
    Ok(next)
}

fn apply_one(image: &mut Image, caller: &Caller, change: &ImageChange) -> Result<(), ImageError> {
    let attribute = change.attribute();
    if READ_ONLY.contains(&attribute) || (attribute == "owner" && !caller.is_admin) {
        return Err(ImageError::ReadOnly(attribute.to_owned()));
    }
    if RESERVED.contains(&attribute) || attribute.starts_with(RESERVED_PREFIX) {
        return Err(ImageError::Reserved(attribute.to_owned()));
    }
    let is_core = attributes::WRITABLE_CORE.contains(&attribute);
    match change {
        ImageChange::Remove { .. } if is_core => Err(ImageError::Forbidden(format!(
            "Property {attribute} may not be removed."
        ))),
        // Glance treats `add` of a core attribute as `replace`: the attribute always exists.
        ImageChange::Add { value, .. } | ImageChange::Replace { value, .. } if is_core => {
            set_core(image, caller, attribute, value)
        }
        ImageChange::Remove { .. } => {
            if image.properties.remove(attribute).is_none() {
                return Err(ImageError::PropertyMissing(attribute.to_owned()));
            }
            Ok(())
        }
        ImageChange::Add { value, .. } => {
            attributes::check_property_key(attribute)?;
            let value = text(attribute, value)?;
            attributes::check_property_value(attribute, value)?;
            // JSON patch (RFC 6902) and Glance's v2.1 patch media type, which every current client
            // sends: `add` of an existing member replaces its value.
            image
                .properties
                .insert(attribute.to_owned(), value.to_owned());
            Ok(())
        }
        ImageChange::Replace { value, .. } => {
            let value = text(attribute, value)?;
            attributes::check_property_value(attribute, value)?;
            match image.properties.get_mut(attribute) {
                Some(slot) => {
                    value.clone_into(slot);
                    Ok(())
                }
                None => Err(ImageError::PropertyMissing(attribute.to_owned())),
            }
        }
    }
}

fn set_core(
    image: &mut Image,
    caller: &Caller,
    attribute: &str,
    value: &ChangeValue,
) -> Result<(), ImageError> {
    match attribute {
        "name" => {
            let name = optional_text(attribute, value)?;
            if let Some(name) = name {
                attributes::check_name(name)?;
            }
            image.name = name.map(str::to_owned);
        }
        "visibility" => {
            let visibility = Visibility::parse(text(attribute, value)?)?;
            check_visibility_allowed(visibility, caller)?;
            image.visibility = visibility;
        }
        "protected" => match value {
            ChangeValue::Bool(flag) => image.protected = *flag,
            _ => return Err(invalid(attribute, "true or false")),
        },
        "min_disk" => image.min_disk_gb = int(attribute, value)?,
        "min_ram" => image.min_ram_mb = int(attribute, value)?,
        "disk_format" | "container_format" => {
            if image.status != ImageStatus::Queued {
                return Err(ImageError::Forbidden(format!(
                    "Attribute {attribute} can be only replaced for a queued image."
                )));
            }
            let text = optional_text(attribute, value)?;
            if attribute == "disk_format" {
                image.disk_format = text.map(parse_disk_format).transpose()?;
            } else {
                image.container_format = text.map(ContainerFormat::parse).transpose()?;
            }
        }
        "tags" => match value {
            ChangeValue::List(tags) => image.tags = attributes::check_tags(tags.iter().cloned())?,
            _ => return Err(invalid(attribute, "a list of strings")),
        },
        "owner" => {
            // Only admins get here (checked by the caller of this function).
            let owner = optional_text(attribute, value)?;
            if owner.is_some_and(|o| o.is_empty() || o.chars().count() > 255) {
                return Err(invalid(attribute, "a project id of 1 to 255 characters"));
            }
            image.owner = owner.map(str::to_owned);
        }
        _ => unreachable!("{attribute} is listed in WRITABLE_CORE but has no setter"),
    }
    Ok(())
}

/// Parses a `disk_format` this node can boot; anything else is a bad request.
pub fn parse_disk_format(text: &str) -> Result<DiskFormat, ImageError> {
    DiskFormat::parse(text).ok_or_else(|| ImageError::Invalid {
        field: "disk_format",
        reason: format!("'{text}' is not supported here; this node boots raw and qcow2"),
    })
}

/// Glance's default policy: only admins publicize images (`publicize_image` is `role:admin`).
pub fn check_visibility_allowed(visibility: Visibility, caller: &Caller) -> Result<(), ImageError> {
    if visibility == Visibility::Public && !caller.is_admin {
        return Err(ImageError::Forbidden(
            "You are not authorized to complete publicize_image action.".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_class::{Classify, ErrorClass};
    use crate::image::tests::sample_image;

    fn owner() -> Caller {
        Caller::project("owner")
    }

    fn replace(attribute: &str, value: ChangeValue) -> ImageChange {
        ImageChange::Replace {
            attribute: attribute.into(),
            value,
        }
    }

    fn add(attribute: &str, value: &str) -> ImageChange {
        ImageChange::Add {
            attribute: attribute.into(),
            value: ChangeValue::Text(value.into()),
        }
    }

    fn remove(attribute: &str) -> ImageChange {
        ImageChange::Remove {
            attribute: attribute.into(),
        }
    }

    #[test]
    fn core_attributes_and_properties_change() {
        let image = sample_image();
        let next = apply_changes(
            &image,
            &owner(),
            &[
                replace("name", ChangeValue::Text("renamed".into())),
                replace("visibility", ChangeValue::Text("community".into())),
                replace("protected", ChangeValue::Bool(true)),
                replace("min_disk", ChangeValue::Int(3)),
            ],
        )
        .expect("apply");
        assert_eq!(next.name.as_deref(), Some("renamed"));
        assert_eq!(next.visibility, Visibility::Community);
        assert!(next.protected);
        assert_eq!(next.min_disk_gb, 3);

        let next = apply_changes(
            &next,
            &owner(),
            &[
                add("os_version", "12"),
                replace("os_distro", ChangeValue::Text("ubuntu".into())),
                add("hw_rng_model", "virtio"),
                remove("hw_rng_model"),
                replace("tags", ChangeValue::List(vec!["b".into(), "a".into()])),
            ],
        )
        .expect("properties");
        assert_eq!(next.properties["os_distro"], "ubuntu");
        assert_eq!(next.properties["os_version"], "12");
        assert!(!next.properties.contains_key("hw_rng_model"));
        assert_eq!(next.tags.iter().collect::<Vec<_>>(), ["a", "b"]);
    }

    #[test]
    fn read_only_attributes_are_forbidden_with_glances_message() {
        let image = sample_image();
        for attribute in READ_ONLY.iter().chain(&["owner"]) {
            for change in [
                replace(attribute, ChangeValue::Text("x".into())),
                add(attribute, "x"),
                remove(attribute),
            ] {
                let err = apply_changes(&image, &owner(), &[change]).expect_err(attribute);
                assert_eq!(
                    err.to_string(),
                    format!("Attribute '{attribute}' is read-only.")
                );
                assert_eq!(err.class(), ErrorClass::Forbidden);
            }
        }
    }

    #[test]
    fn admins_may_change_the_owner() {
        let image = sample_image();
        let next = apply_changes(
            &image,
            &Caller::operator(),
            &[replace("owner", ChangeValue::Text("p2".into()))],
        )
        .expect("admin");
        assert_eq!(next.owner.as_deref(), Some("p2"));
    }

    #[test]
    fn reserved_names_are_forbidden() {
        for attribute in ["location", "deleted", "deleted_at", "os_glance_stores"] {
            let err = apply_changes(&sample_image(), &owner(), &[add(attribute, "x")])
                .expect_err(attribute);
            assert_eq!(
                err.to_string(),
                format!("Attribute '{attribute}' is reserved.")
            );
            assert_eq!(err.class(), ErrorClass::Forbidden);
        }
    }

    #[test]
    fn missing_properties_conflict_and_adding_a_present_one_replaces_it() {
        let image = sample_image();
        let err = apply_changes(&image, &owner(), &[remove("nope")]).expect_err("remove");
        assert_eq!(err.to_string(), "Property nope does not exist.");
        assert_eq!(err.class(), ErrorClass::Conflict);
        let err = apply_changes(
            &image,
            &owner(),
            &[replace("nope", ChangeValue::Text("v".into()))],
        )
        .expect_err("replace");
        assert_eq!(err.class(), ErrorClass::Conflict);
        // `add` of a present property replaces it (RFC 6902, Glance's v2.1 patch media type).
        let updated = apply_changes(
            &image,
            &owner(),
            &[add("os_distro", "a"), add("os_distro", "b")],
        )
        .expect("add twice");
        assert_eq!(updated.properties["os_distro"], "b");
    }

    #[test]
    fn core_attributes_cannot_be_removed() {
        let err = apply_changes(&sample_image(), &owner(), &[remove("name")]).expect_err("core");
        assert_eq!(err.class(), ErrorClass::Forbidden);
    }

    #[test]
    fn formats_change_only_while_queued_and_only_to_bootable_ones() {
        let mut image = sample_image();
        image.status = ImageStatus::Queued;
        let next = apply_changes(
            &image,
            &owner(),
            &[replace("disk_format", ChangeValue::Text("qcow2".into()))],
        )
        .expect("queued");
        assert_eq!(next.disk_format, Some(DiskFormat::Qcow2));
        let err = apply_changes(
            &image,
            &owner(),
            &[replace("disk_format", ChangeValue::Text("vmdk".into()))],
        )
        .expect_err("vmdk");
        assert_eq!(err.class(), ErrorClass::BadRequest);
        let err = apply_changes(
            &image,
            &owner(),
            &[replace("container_format", ChangeValue::Text("ova".into()))],
        )
        .expect_err("ova");
        assert_eq!(err.class(), ErrorClass::BadRequest);
        image.status = ImageStatus::Active;
        let err = apply_changes(
            &image,
            &owner(),
            &[replace("disk_format", ChangeValue::Text("raw".into()))],
        )
        .expect_err("active");
        assert_eq!(err.class(), ErrorClass::Forbidden);
    }

    #[test]
    fn wrong_value_types_and_public_by_non_admin_are_refused() {
        let image = sample_image();
        for (change, class) in [
            (
                replace("protected", ChangeValue::Text("yes".into())),
                ErrorClass::BadRequest,
            ),
            (
                replace("min_ram", ChangeValue::Text("1".into())),
                ErrorClass::BadRequest,
            ),
            (
                replace("tags", ChangeValue::Text("a".into())),
                ErrorClass::BadRequest,
            ),
            (
                replace("visibility", ChangeValue::Text("everyone".into())),
                ErrorClass::BadRequest,
            ),
            (
                replace("visibility", ChangeValue::Text("public".into())),
                ErrorClass::Forbidden,
            ),
            (
                ImageChange::Add {
                    attribute: "os_version".into(),
                    value: ChangeValue::Int(12),
                },
                ErrorClass::BadRequest,
            ),
        ] {
            assert_eq!(
                apply_changes(&image, &owner(), std::slice::from_ref(&change))
                    .expect_err("refused")
                    .class(),
                class,
                "{change:?}"
            );
        }
    }

    #[test]
    fn property_quota_counts_the_result() {
        let mut image = sample_image();
        image.properties = (0..MAX_PROPERTIES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let err = apply_changes(&image, &owner(), &[add("extra", "v")]).expect_err("over");
        assert!(matches!(err, ImageError::QuotaExceeded { .. }));
        // Removing one first makes room.
        apply_changes(&image, &owner(), &[remove("k0"), add("extra", "v")]).expect("room");
    }
}
