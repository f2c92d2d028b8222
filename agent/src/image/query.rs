//! Listing images: Glance's default scope, filters, sorting and marker pagination, as a pure function
//! over the images and the caller's memberships.
//!
//! An edge node holds tens to hundreds of images, and properties and tags live in JSON columns, so the
//! store hands over every row and the selection happens here, where it is easy to test exhaustively.
//! Should image counts grow by orders of magnitude, the scope and the cheap filters move into SQL and
//! this function keeps the rest.

use super::access::{Caller, can_see};
use super::{ContainerFormat, Image, ImageError, MemberStatus, Visibility};
use crate::image::format::DiskFormat;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use uuid::Uuid;

/// The `visibility` filter: one visibility, or `all` (which includes community images).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisibilityFilter {
    /// Exactly this visibility.
    Only(Visibility),
    /// Every visibility the caller may see.
    All,
}

impl VisibilityFilter {
    /// Parses a query-string value; unknown values are a bad request, as in Glance.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        if text == "all" {
            return Ok(Self::All);
        }
        Visibility::parse(text).map(Self::Only)
    }
}

/// The `member_status` filter for shared images: one status, or `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberStatusFilter {
    /// Only memberships in this status (Glance's default is `accepted`).
    Only(MemberStatus),
    /// Any status.
    All,
}

impl MemberStatusFilter {
    /// Parses a query-string value.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        if text == "all" {
            return Ok(Self::All);
        }
        MemberStatus::parse(text).map(Self::Only)
    }

    fn matches(self, status: MemberStatus) -> bool {
        match self {
            Self::All => true,
            Self::Only(wanted) => wanted == status,
        }
    }
}

/// What images can be sorted by (Glance's sortable attributes that this store has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// `created_at` (the default).
    CreatedAt,
    /// `updated_at`.
    UpdatedAt,
    /// `name` (images without a name first when ascending).
    Name,
    /// `status`.
    Status,
    /// `size`.
    Size,
    /// `virtual_size`.
    VirtualSize,
    /// `disk_format`.
    DiskFormat,
    /// `container_format`.
    ContainerFormat,
    /// `visibility`.
    Visibility,
    /// `min_disk`.
    MinDisk,
    /// `min_ram`.
    MinRam,
    /// `owner`.
    Owner,
    /// `id`.
    Id,
}

impl SortKey {
    /// Parses a `sort_key` value.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        Ok(match text {
            "created_at" => Self::CreatedAt,
            "updated_at" => Self::UpdatedAt,
            "name" => Self::Name,
            "status" => Self::Status,
            "size" => Self::Size,
            "virtual_size" => Self::VirtualSize,
            "disk_format" => Self::DiskFormat,
            "container_format" => Self::ContainerFormat,
            "visibility" => Self::Visibility,
            "min_disk" => Self::MinDisk,
            "min_ram" => Self::MinRam,
            "owner" => Self::Owner,
            "id" => Self::Id,
            other => {
                return Err(ImageError::Invalid {
                    field: "sort_key",
                    reason: format!("Unsupported sort_key {other}"),
                });
            }
        })
    }

    fn compare(self, a: &Image, b: &Image) -> Ordering {
        match self {
            Self::CreatedAt => a.created_at.cmp(&b.created_at),
            Self::UpdatedAt => a.updated_at.cmp(&b.updated_at),
            Self::Name => a.name.cmp(&b.name),
            Self::Status => a.status.as_str().cmp(b.status.as_str()),
            Self::Size => a.size_bytes.cmp(&b.size_bytes),
            Self::VirtualSize => a.virtual_size.cmp(&b.virtual_size),
            Self::DiskFormat => a
                .disk_format
                .map(DiskFormat::as_str)
                .cmp(&b.disk_format.map(DiskFormat::as_str)),
            Self::ContainerFormat => a
                .container_format
                .map(ContainerFormat::as_str)
                .cmp(&b.container_format.map(ContainerFormat::as_str)),
            Self::Visibility => a.visibility.as_str().cmp(b.visibility.as_str()),
            Self::MinDisk => a.min_disk_gb.cmp(&b.min_disk_gb),
            Self::MinRam => a.min_ram_mb.cmp(&b.min_ram_mb),
            Self::Owner => a.owner.cmp(&b.owner),
            Self::Id => a.id.cmp(&b.id),
        }
    }
}

/// `sort_dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortDir {
    /// Smallest first.
    Asc,
    /// Largest first (Glance's default).
    #[default]
    Desc,
}

impl SortDir {
    /// Parses a `sort_dir` value.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        match text {
            "asc" => Ok(Self::Asc),
            "desc" => Ok(Self::Desc),
            other => Err(ImageError::Invalid {
                field: "sort_dir",
                reason: format!("Invalid sort direction: {other}"),
            }),
        }
    }
}

/// A list request: filters (all must match), order and page. `Default` is Glance's plain `GET /images`.
#[derive(Debug, Clone, Default)]
pub struct ImageQuery {
    /// Exact name.
    pub name: Option<String>,
    /// Exact status (`queued`, `saving`, `active`).
    pub status: Option<String>,
    /// Which visibilities; absent: public, own, and shared-with-me (community only if owned).
    pub visibility: Option<VisibilityFilter>,
    /// Exact owner project.
    pub owner: Option<String>,
    /// Which memberships count for shared images of other projects; absent: `accepted`.
    pub member_status: Option<MemberStatusFilter>,
    /// Exact disk format.
    pub disk_format: Option<String>,
    /// Exact container format.
    pub container_format: Option<String>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    /// Free-form properties, each with exactly this value.
    pub properties: BTreeMap<String, String>,
    /// Sort keys in priority order; empty: `created_at` descending. `created_at` and `id` are always
    /// appended as tie-breakers (in the first key's direction) so pages never overlap or skip.
    pub sort: Vec<(SortKey, SortDir)>,
    /// At most this many images; absent: all (the API applies its own default and maximum).
    pub limit: Option<usize>,
    /// Start after this image (the last one of the previous page).
    pub marker: Option<Uuid>,
}

/// One page of images.
#[derive(Debug, Clone, PartialEq)]
pub struct ImagePage {
    /// The images, in order.
    pub images: Vec<Image>,
    /// The marker for the next page, when more images follow.
    pub next_marker: Option<Uuid>,
}

/// Whether `image` is in the default (or explicitly filtered) scope of `caller`'s list.
fn in_scope(
    image: &Image,
    caller: &Caller,
    membership: Option<MemberStatus>,
    query: &ImageQuery,
) -> bool {
    if !can_see(image, caller, membership) {
        return false;
    }
    match query.visibility {
        Some(VisibilityFilter::Only(v)) if v != image.visibility => return false,
        // Community images are not listed unless asked for (or owned), as in Glance.
        None if image.visibility == Visibility::Community && !caller.owns(image) => return false,
        _ => {}
    }
    if caller.is_admin || caller.owns(image) || image.visibility != Visibility::Shared {
        return true;
    }
    // A shared image of another project, seen through a membership.
    let wanted = query
        .member_status
        .unwrap_or(MemberStatusFilter::Only(MemberStatus::Accepted));
    membership.is_some_and(|status| wanted.matches(status))
}

fn matches_filters(image: &Image, query: &ImageQuery) -> bool {
    let eq =
        |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
    eq(&query.name, image.name.as_deref())
        && eq(&query.status, Some(image.status.as_str()))
        && eq(&query.owner, image.owner.as_deref())
        && eq(
            &query.disk_format,
            image.disk_format.map(DiskFormat::as_str),
        )
        && eq(
            &query.container_format,
            image.container_format.map(ContainerFormat::as_str),
        )
        && query.tags.iter().all(|t| image.tags.contains(t))
        && query
            .properties
            .iter()
            .all(|(k, v)| image.properties.get(k) == Some(v))
}

fn order(query: &ImageQuery) -> Vec<(SortKey, SortDir)> {
    let mut keys = if query.sort.is_empty() {
        vec![(SortKey::CreatedAt, SortDir::Desc)]
    } else {
        query.sort.clone()
    };
    let dir = keys[0].1;
    for tie in [SortKey::CreatedAt, SortKey::Id] {
        if !keys.iter().any(|(k, _)| *k == tie) {
            keys.push((tie, dir));
        }
    }
    keys
}

fn compare(keys: &[(SortKey, SortDir)], a: &Image, b: &Image) -> Ordering {
    keys.iter()
        .map(|(key, dir)| match dir {
            SortDir::Asc => key.compare(a, b),
            SortDir::Desc => key.compare(b, a),
        })
        .find(|o| o.is_ne())
        .unwrap_or(Ordering::Equal)
}

/// Selects one page of `images` for `caller`. `memberships` maps image ids to the caller's member
/// status. The marker must be an image the caller can see (filters aside), else `BadRequest` as in
/// Glance; the page starts right after its position in the order.
pub fn select<S: BuildHasher>(
    images: Vec<Image>,
    memberships: &HashMap<Uuid, MemberStatus, S>,
    caller: &Caller,
    query: &ImageQuery,
) -> Result<ImagePage, ImageError> {
    let keys = order(query);
    let marker = match query.marker {
        None => None,
        Some(id) => Some(
            images
                .iter()
                .find(|i| i.id == id && can_see(i, caller, memberships.get(&i.id).copied()))
                .cloned()
                .ok_or(ImageError::BadMarker(id))?,
        ),
    };
    let mut selected: Vec<Image> = images
        .into_iter()
        .filter(|i| in_scope(i, caller, memberships.get(&i.id).copied(), query))
        .filter(|i| matches_filters(i, query))
        .filter(|i| {
            marker
                .as_ref()
                .is_none_or(|m| compare(&keys, m, i) == Ordering::Less)
        })
        .collect();
    selected.sort_by(|a, b| compare(&keys, a, b));
    let next_marker = match query.limit {
        Some(limit) if selected.len() > limit => {
            selected.truncate(limit);
            selected.last().map(|i| i.id)
        }
        _ => None,
    };
    Ok(ImagePage {
        images: selected,
        next_marker,
    })
}
