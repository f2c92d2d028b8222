//! Image members: how an owner shares a `shared` image with other projects, and how those projects
//! accept or reject it.
//!
//! The owner proposes (status `pending`); only the member project decides (`accepted` puts the image
//! in its default list, `rejected` keeps it out). Glance's rules: only the owner adds and removes
//! members, only the member changes its status, and only `shared` images have members.

use super::access::{Caller, can_modify, can_see};
use super::{Image, ImageError, ImageService, Visibility, repo};
use jiff::Timestamp;
use rusqlite::Transaction;
use serde::Serialize;
use uuid::Uuid;

/// At most this many members per image (Glance's `image_member_quota` default).
pub const MAX_MEMBERS: usize = 128;

/// A member's answer to the owner's offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Offered, not answered yet: the image is visible to the member but not in its default list.
    Pending,
    /// Accepted: listed by default.
    Accepted,
    /// Rejected: visible on request only.
    Rejected,
}

impl MemberStatus {
    /// Glance's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
        }
    }

    /// Parses Glance's name; anything else is a bad request.
    pub fn parse(text: &str) -> Result<Self, ImageError> {
        match text {
            "pending" => Ok(Self::Pending),
            "accepted" => Ok(Self::Accepted),
            "rejected" => Ok(Self::Rejected),
            other => Err(ImageError::Invalid {
                field: "status",
                reason: format!("Invalid status: {other}"),
            }),
        }
    }
}

/// One project's membership of one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageMember {
    /// The image.
    pub image_id: Uuid,
    /// The member project.
    pub member: String,
    /// Its answer.
    pub status: MemberStatus,
    /// When the owner added it.
    pub created_at: Timestamp,
    /// When the status last changed.
    pub updated_at: Timestamp,
}

fn only_shared(image: &Image) -> Result<(), ImageError> {
    if image.visibility != Visibility::Shared {
        return Err(ImageError::Forbidden(
            "Only shared images have members.".into(),
        ));
    }
    Ok(())
}

fn member_not_found(image_id: Uuid, member: &str) -> ImageError {
    ImageError::MemberNotFound {
        image: image_id,
        member: member.to_owned(),
    }
}

impl ImageService {
    /// Loads an image the caller can see, or `NotFound` (also for images it cannot see).
    pub(super) fn visible(
        tx: &Transaction<'_>,
        id: Uuid,
        caller: &Caller,
    ) -> Result<Image, ImageError> {
        let image = repo::find(tx, id)?.ok_or(ImageError::NotFound(id))?;
        let membership = repo::member(tx, id, &caller.project_id)?.map(|m| m.status);
        if can_see(&image, caller, membership) {
            Ok(image)
        } else {
            Err(ImageError::NotFound(id))
        }
    }

    /// Loads an image the caller can see and change: `NotFound` if it cannot see it, `Forbidden` if it
    /// can see but does not own it.
    pub(super) fn modifiable(
        tx: &Transaction<'_>,
        id: Uuid,
        caller: &Caller,
    ) -> Result<Image, ImageError> {
        let image = Self::visible(tx, id, caller)?;
        if !can_modify(&image, caller) {
            return Err(ImageError::Forbidden(format!(
                "You are not permitted to modify image {id}."
            )));
        }
        Ok(image)
    }

    /// Offers a `shared` image to another project (status `pending`). Owner or admin only.
    pub fn add_member(
        &self,
        image_id: Uuid,
        caller: &Caller,
        member: &str,
    ) -> Result<ImageMember, ImageError> {
        if member.is_empty() || member.chars().count() > 255 {
            return Err(ImageError::Invalid {
                field: "member",
                reason: "must be a project id of 1 to 255 characters".into(),
            });
        }
        let now = self.clock.now();
        self.store.write(|tx| {
            let image = Self::modifiable(tx, image_id, caller)?;
            only_shared(&image)?;
            if repo::member(tx, image_id, member)?.is_some() {
                return Err(ImageError::DuplicateMember {
                    image: image_id,
                    member: member.to_owned(),
                });
            }
            if repo::member_count(tx, image_id)? >= MAX_MEMBERS {
                return Err(ImageError::QuotaExceeded {
                    what: "members",
                    limit: MAX_MEMBERS,
                });
            }
            let created = ImageMember {
                image_id,
                member: member.to_owned(),
                status: MemberStatus::Pending,
                created_at: now,
                updated_at: now,
            };
            repo::insert_member(tx, &created)?;
            Ok(created)
        })
    }

    /// The image's members. The owner (and admins) see all; a member sees only its own entry.
    pub fn list_members(
        &self,
        image_id: Uuid,
        caller: &Caller,
    ) -> Result<Vec<ImageMember>, ImageError> {
        self.store.read(|tx| {
            let image = Self::visible(tx, image_id, caller)?;
            only_shared(&image)?;
            let members = repo::members(tx, image_id)?;
            if can_modify(&image, caller) {
                Ok(members)
            } else {
                Ok(members
                    .into_iter()
                    .filter(|m| m.member == caller.project_id)
                    .collect())
            }
        })
    }

    /// One membership, for the owner or the member itself; anyone else gets `NotFound`.
    pub fn get_member(
        &self,
        image_id: Uuid,
        caller: &Caller,
        member: &str,
    ) -> Result<ImageMember, ImageError> {
        self.store.read(|tx| {
            let image = Self::visible(tx, image_id, caller)?;
            only_shared(&image)?;
            if !can_modify(&image, caller) && caller.project_id != member {
                return Err(member_not_found(image_id, member));
            }
            repo::member(tx, image_id, member)?.ok_or_else(|| member_not_found(image_id, member))
        })
    }

    /// The member accepts or rejects (or goes back to pending). Only the member project may; the owner
    /// gets `Forbidden`.
    pub fn update_member_status(
        &self,
        image_id: Uuid,
        caller: &Caller,
        member: &str,
        status: MemberStatus,
    ) -> Result<ImageMember, ImageError> {
        let now = self.clock.now();
        self.store.write(|tx| {
            let image = Self::visible(tx, image_id, caller)?;
            only_shared(&image)?;
            let mut found = repo::member(tx, image_id, member)?
                .ok_or_else(|| member_not_found(image_id, member))?;
            if caller.project_id != member {
                return Err(ImageError::Forbidden(
                    "Only the member may change its membership status.".into(),
                ));
            }
            found.status = status;
            found.updated_at = now;
            repo::update_member(tx, &found)?;
            Ok(found)
        })
    }

    /// Withdraws the offer. Owner or admin only.
    pub fn delete_member(
        &self,
        image_id: Uuid,
        caller: &Caller,
        member: &str,
    ) -> Result<(), ImageError> {
        self.store.write(|tx| {
            let image = Self::visible(tx, image_id, caller)?;
            if !can_modify(&image, caller) {
                // A member may see the image but must not learn about the other members.
                return Err(ImageError::Forbidden(
                    "Only the image owner may remove members.".into(),
                ));
            }
            only_shared(&image)?;
            if !repo::delete_member(tx, image_id, member)? {
                return Err(member_not_found(image_id, member));
            }
            Ok(())
        })
    }
}
