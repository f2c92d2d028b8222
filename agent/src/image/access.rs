//! Who may see and who may change an image: Glance's ownership and visibility rules as pure functions.
//!
//! Kept free of the store so every combination can be tested as a table, and so `list`, `show`,
//! `update` and the member calls cannot drift apart. An image the caller may not see answers
//! `NotFound`, never `Forbidden`: a project must not learn that another project's private image exists.

use super::{Image, MemberStatus, Visibility};
use serde::Serialize;

/// The identity a request runs as, already authenticated by `identity/`.
///
/// Only the project and the admin flag matter to images: Glance scopes images to projects, not users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Caller {
    /// The project the token is scoped to.
    pub project_id: String,
    /// Holds the admin role: sees and changes every image.
    pub is_admin: bool,
}

impl Caller {
    /// A non-admin caller in `project_id`.
    pub fn project(project_id: &str) -> Self {
        Self {
            project_id: project_id.to_owned(),
            is_admin: false,
        }
    }

    /// The node operator (CLI): admin, in no project, so it owns nothing it creates.
    pub fn operator() -> Self {
        Self {
            project_id: String::new(),
            is_admin: true,
        }
    }

    /// Whether this caller's project owns `image`. An empty project owns nothing.
    pub fn owns(&self, image: &Image) -> bool {
        !self.project_id.is_empty() && image.owner.as_deref() == Some(self.project_id.as_str())
    }
}

/// Whether `caller` may see `image` at all (show, download, list with the right filter).
///
/// `membership` is the caller's member status on the image, if it is a member. A member sees a shared
/// image whatever its status (Glance lets a pending member look before accepting); listing by default
/// shows only accepted ones, which is `list`'s business.
pub fn can_see(image: &Image, caller: &Caller, membership: Option<MemberStatus>) -> bool {
    caller.is_admin
        || caller.owns(image)
        || match image.visibility {
            Visibility::Public | Visibility::Community => true,
            Visibility::Shared => membership.is_some(),
            Visibility::Private => false,
        }
}

/// Whether `caller` may change or delete `image` (assuming it can see it): admin or owner only.
pub fn can_modify(image: &Image, caller: &Caller) -> bool {
    caller.is_admin || caller.owns(image)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::tests::sample_image;

    #[test]
    fn visibility_matrix() {
        use MemberStatus::{Accepted, Pending, Rejected};
        let owner = Caller::project("owner");
        let other = Caller::project("other");
        let admin = Caller {
            project_id: "ops".into(),
            is_admin: true,
        };
        // (visibility, caller, membership, sees, modifies)
        let cases = [
            (Visibility::Public, &owner, None, true, true),
            (Visibility::Public, &other, None, true, false),
            (Visibility::Public, &admin, None, true, true),
            (Visibility::Community, &other, None, true, false),
            (Visibility::Community, &owner, None, true, true),
            (Visibility::Private, &owner, None, true, true),
            (Visibility::Private, &other, None, false, false),
            (Visibility::Private, &other, Some(Accepted), false, false),
            (Visibility::Private, &admin, None, true, true),
            (Visibility::Shared, &owner, None, true, true),
            (Visibility::Shared, &other, None, false, false),
            (Visibility::Shared, &other, Some(Pending), true, false),
            (Visibility::Shared, &other, Some(Accepted), true, false),
            (Visibility::Shared, &other, Some(Rejected), true, false),
            (Visibility::Shared, &admin, None, true, true),
        ];
        for (visibility, caller, membership, sees, modifies) in cases {
            let mut image = sample_image();
            image.owner = Some("owner".into());
            image.visibility = visibility;
            assert_eq!(
                can_see(&image, caller, membership),
                sees,
                "{visibility:?} {caller:?} {membership:?}"
            );
            if sees {
                assert_eq!(
                    can_modify(&image, caller),
                    modifies,
                    "{visibility:?} {caller:?}"
                );
            }
        }
    }

    #[test]
    fn an_ownerless_image_is_only_the_admins_to_change() {
        let mut image = sample_image();
        image.owner = None;
        image.visibility = Visibility::Public;
        assert!(!can_modify(&image, &Caller::project("p")));
        assert!(!can_modify(&image, &Caller::project("")));
        assert!(can_modify(&image, &Caller::operator()));
    }
}
