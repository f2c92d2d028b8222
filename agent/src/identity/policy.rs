//! Who may do what: a [`Caller`] built from a validated token, with the checks routes need.
//!
//! The rules follow Keystone's default policies with its reader / member / manager / admin personas
//! (admin ⊃ manager ⊃ member ⊃ reader through implied roles, so a token's roles already include the
//! weaker ones). As in Keystone's and Nova's legacy-compatible defaults, the `admin` role on any scope
//! makes a cloud admin.
//!
//! | resource action ([`IdentityAction`])        | reader                                    | manager (domain-scoped)                  | admin |
//! |---------------------------------------------|-------------------------------------------|------------------------------------------|-------|
//! | list/get domains                            | system scope; get own domain (any role)   | get own domain                           | all   |
//! | create/update/delete domain                 | —                                         | —                                        | all   |
//! | list/get projects, users, groups            | system scope, or in own domain; get own project / self | same                        | all   |
//! | create/update/delete projects, users, groups | —                                        | in own domain                            | all   |
//! | list/get roles                              | system scope                              | yes                                      | all   |
//! | create/delete roles, implied roles          | —                                         | —                                        | all   |
//! | list role assignments                       | system scope, or targets in own domain    | same                                     | all   |
//! | grant/revoke a role                         | —                                         | in own domain, roles manager/member/reader only | all |
//! | own application credentials                 | self                                      | self                                     | all   |
//!
//! "Own domain" is the domain a domain-scoped token names; the persona column needs that role there
//! (or on the system for "system scope").

use super::model::{Scope, TokenInfo};

/// Roles a domain manager may grant and revoke (Keystone's `domain_managed_target_role`).
pub const DOMAIN_MANAGED_ROLES: [&str; 3] = ["manager", "member", "reader"];

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    info: TokenInfo,
}

/// An identity operation a route is about to perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityAction {
    /// `GET /v3/domains`.
    ListDomains,
    /// `GET /v3/domains/{id}`.
    GetDomain,
    /// Create, update or delete a domain.
    ManageDomain,
    /// `GET /v3/projects`, `/v3/users`, `/v3/groups` (target: the domain filter, if any).
    ListInDomain,
    /// Get one project, user or group (target: its domain, and its id as project or user).
    GetInDomain,
    /// Create, update or delete a project, user or group, or change group membership.
    ManageInDomain,
    /// `GET /v3/roles` and one role.
    ReadRoles,
    /// Create or delete roles and implications.
    ManageRoles,
    /// `GET /v3/role_assignments` (target: the project's or domain's domain, if filtered).
    ListAssignments,
    /// Grant or revoke a role (target: domain of the project or the domain, and the role name).
    ManageGrant,
    /// List, get, create, delete an application credential (target: its user).
    OwnApplicationCredentials,
}

/// What an action is applied to; unset fields are unknown or not applicable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyTarget {
    /// The domain the resource lives in.
    pub domain_id: Option<String>,
    /// The project concerned.
    pub project_id: Option<String>,
    /// The user concerned.
    pub user_id: Option<String>,
    /// The role being granted or revoked.
    pub role_name: Option<String>,
}

impl Caller {
    /// The caller holding this validated token.
    pub fn new(info: TokenInfo) -> Self {
        Self { info }
    }

    /// The token behind the caller.
    pub fn token(&self) -> &TokenInfo {
        &self.info
    }

    /// The caller's user id.
    pub fn user_id(&self) -> &str {
        &self.info.user.id
    }

    /// Whether the token carries the role (implied roles included) on its scope.
    pub fn has_role(&self, name: &str) -> bool {
        self.info.roles.iter().any(|r| r.name == name)
    }

    /// The project of a project-scoped token.
    pub fn project_id(&self) -> Option<&str> {
        match &self.info.scope {
            Scope::Project { id, .. } => Some(id),
            _ => None,
        }
    }

    /// The domain of a domain-scoped token.
    pub fn domain_id(&self) -> Option<&str> {
        match &self.info.scope {
            Scope::Domain { id, .. } => Some(id),
            _ => None,
        }
    }

    /// Whether the token is system-scoped.
    pub fn is_system(&self) -> bool {
        self.info.scope == Scope::System
    }

    /// Cloud admin: the `admin` role on any scope (Keystone and Nova legacy-compatible defaults).
    pub fn is_admin(&self) -> bool {
        self.has_role("admin")
    }

    /// `role:reader and system_scope:all`.
    pub fn is_system_reader(&self) -> bool {
        self.is_system() && self.has_role("reader")
    }

    /// May read the project's resources: admin, system reader, or reader on that project.
    pub fn can_read_project(&self, project_id: &str) -> bool {
        self.is_admin()
            || self.is_system_reader()
            || (self.project_id() == Some(project_id) && self.has_role("reader"))
    }

    /// May change the project's resources: admin, or member (or higher) on that project.
    pub fn can_write_project(&self, project_id: &str) -> bool {
        self.is_admin() || (self.project_id() == Some(project_id) && self.has_role("member"))
    }

    /// Manager of the domain: admin, or a domain-scoped token for it with `manager`.
    pub fn is_domain_manager(&self, domain_id: &str) -> bool {
        self.is_admin() || (self.domain_id() == Some(domain_id) && self.has_role("manager"))
    }

    /// Reader in the domain: admin, system reader, or a domain-scoped token for it with `reader`.
    pub fn is_domain_reader(&self, domain_id: &str) -> bool {
        self.is_admin()
            || self.is_system_reader()
            || (self.domain_id() == Some(domain_id) && self.has_role("reader"))
    }

    fn in_own_domain(&self, target: &PolicyTarget, role: &str) -> bool {
        match (self.domain_id(), &target.domain_id) {
            (Some(own), Some(domain)) => own == domain && self.has_role(role),
            _ => false,
        }
    }

    /// The table in the module documentation.
    pub fn allows(&self, action: IdentityAction, target: &PolicyTarget) -> bool {
        if self.is_admin() {
            return true;
        }
        let self_user = target.user_id.as_deref() == Some(self.user_id());
        match action {
            IdentityAction::ListDomains => self.is_system_reader(),
            IdentityAction::ManageDomain | IdentityAction::ManageRoles => false,
            IdentityAction::GetDomain => {
                self.is_system_reader()
                    || target.domain_id.is_some() && target.domain_id.as_deref() == self.domain_id()
            }
            IdentityAction::ListInDomain | IdentityAction::ListAssignments => {
                self.is_system_reader() || self.in_own_domain(target, "reader")
            }
            IdentityAction::GetInDomain => {
                self.is_system_reader()
                    || self.in_own_domain(target, "reader")
                    || self_user
                    || (target.project_id.is_some()
                        && target.project_id.as_deref() == self.project_id())
            }
            IdentityAction::ManageInDomain => self.in_own_domain(target, "manager"),
            IdentityAction::ReadRoles => self.is_system_reader() || self.has_role("manager"),
            IdentityAction::ManageGrant => {
                self.in_own_domain(target, "manager")
                    && target
                        .role_name
                        .as_deref()
                        .is_some_and(|r| DOMAIN_MANAGED_ROLES.contains(&r))
            }
            IdentityAction::OwnApplicationCredentials => self_user,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::model::{RoleRef, TokenUser};

    fn caller(scope: Scope, roles: &[&str]) -> Caller {
        Caller::new(TokenInfo {
            user: TokenUser {
                id: "u1".into(),
                name: "alice".into(),
                domain_id: "d1".into(),
                domain_name: "D1".into(),
                password_expires_at: None,
            },
            scope,
            roles: roles
                .iter()
                .map(|r| RoleRef {
                    id: format!("id-{r}"),
                    name: (*r).into(),
                })
                .collect(),
            methods: vec!["password".into()],
            issued_at: jiff::Timestamp::UNIX_EPOCH,
            expires_at: jiff::Timestamp::UNIX_EPOCH,
            audit_ids: vec!["a".into()],
            application_credential: None,
        })
    }

    fn project(id: &str) -> Scope {
        Scope::Project {
            id: id.into(),
            name: id.into(),
            domain_id: "d1".into(),
            domain_name: "D1".into(),
        }
    }

    fn domain(id: &str) -> Scope {
        Scope::Domain {
            id: id.into(),
            name: id.into(),
        }
    }

    fn in_domain(d: &str) -> PolicyTarget {
        PolicyTarget {
            domain_id: Some(d.into()),
            ..PolicyTarget::default()
        }
    }

    #[test]
    fn project_helpers_follow_the_personas() {
        let reader = caller(project("p1"), &["reader"]);
        let member = caller(project("p1"), &["member", "reader"]);
        let admin_elsewhere = caller(project("p9"), &["admin", "manager", "member", "reader"]);
        assert!(reader.can_read_project("p1") && !reader.can_write_project("p1"));
        assert!(!reader.can_read_project("p2"));
        assert!(member.can_write_project("p1") && !member.can_write_project("p2"));
        assert!(member.has_role("member") && !member.is_admin());
        assert_eq!(member.project_id(), Some("p1"));
        assert!(
            admin_elsewhere.is_admin(),
            "admin on any scope is cloud admin"
        );
        assert!(admin_elsewhere.can_write_project("p1"));
        let system_reader = caller(Scope::System, &["reader"]);
        assert!(system_reader.is_system_reader() && system_reader.can_read_project("p1"));
        assert!(!system_reader.can_write_project("p1"));
        assert!(
            !reader.is_system_reader(),
            "reader on a project is not a system reader"
        );
        let manager = caller(domain("d1"), &["manager", "member", "reader"]);
        assert!(manager.is_domain_manager("d1") && !manager.is_domain_manager("d2"));
        assert!(!member.is_domain_manager("d1"));
    }

    #[test]
    fn keystone_default_rule_table() {
        use IdentityAction as A;
        let reader_d1 = caller(domain("d1"), &["reader"]);
        let manager_d1 = caller(domain("d1"), &["manager", "member", "reader"]);
        let system_reader = caller(Scope::System, &["reader"]);
        let admin = caller(Scope::System, &["admin", "manager", "member", "reader"]);
        let project_member = caller(project("p1"), &["member", "reader"]);
        let d1 = in_domain("d1");
        let d2 = in_domain("d2");
        let grant = |role: &str| PolicyTarget {
            domain_id: Some("d1".into()),
            role_name: Some(role.into()),
            ..PolicyTarget::default()
        };
        let myself = PolicyTarget {
            user_id: Some("u1".into()),
            ..PolicyTarget::default()
        };
        let someone = PolicyTarget {
            user_id: Some("u2".into()),
            ..PolicyTarget::default()
        };
        // (caller, action, target, allowed)
        let table: Vec<(&Caller, A, PolicyTarget, bool)> = vec![
            (&system_reader, A::ListDomains, d1.clone(), true),
            (&reader_d1, A::ListDomains, d1.clone(), false),
            (&reader_d1, A::GetDomain, d1.clone(), true),
            (&reader_d1, A::GetDomain, d2.clone(), false),
            (&manager_d1, A::ManageDomain, d1.clone(), false),
            (&admin, A::ManageDomain, d1.clone(), true),
            (&reader_d1, A::ListInDomain, d1.clone(), true),
            (&reader_d1, A::ListInDomain, d2.clone(), false),
            (&system_reader, A::ListInDomain, d2.clone(), true),
            (&reader_d1, A::ManageInDomain, d1.clone(), false),
            (&manager_d1, A::ManageInDomain, d1.clone(), true),
            (&manager_d1, A::ManageInDomain, d2.clone(), false),
            (&system_reader, A::ManageInDomain, d1.clone(), false),
            (&project_member, A::GetInDomain, myself.clone(), true),
            (&project_member, A::GetInDomain, someone.clone(), false),
            (
                &project_member,
                A::GetInDomain,
                PolicyTarget {
                    project_id: Some("p1".into()),
                    ..PolicyTarget::default()
                },
                true,
            ),
            (&project_member, A::ListInDomain, d1.clone(), false),
            (&manager_d1, A::ReadRoles, d1.clone(), true),
            (&project_member, A::ReadRoles, d1.clone(), false),
            (&manager_d1, A::ManageRoles, d1.clone(), false),
            (&admin, A::ManageRoles, d1.clone(), true),
            (&reader_d1, A::ListAssignments, d1.clone(), true),
            (&reader_d1, A::ListAssignments, d2.clone(), false),
            (&manager_d1, A::ManageGrant, grant("member"), true),
            (&manager_d1, A::ManageGrant, grant("manager"), true),
            (&manager_d1, A::ManageGrant, grant("admin"), false),
            (&reader_d1, A::ManageGrant, grant("member"), false),
            (&admin, A::ManageGrant, grant("admin"), true),
            (
                &project_member,
                A::OwnApplicationCredentials,
                myself.clone(),
                true,
            ),
            (
                &project_member,
                A::OwnApplicationCredentials,
                someone.clone(),
                false,
            ),
        ];
        for (who, action, target, allowed) in table {
            assert_eq!(
                who.allows(action, &target),
                allowed,
                "{action:?} on {target:?} by {:?} with {:?}",
                who.token().scope,
                who.token().roles
            );
        }
    }
}
