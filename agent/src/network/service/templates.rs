//! The templates new security groups take their rules from (Neutron's `default-security-group-rules`,
//! SCS-0115). A template changes what groups created afterwards get; existing groups keep their rules.

use super::{NetworkService, RuleShape, check_name, invalid};
use crate::network::NetworkError;
use crate::network::model::{DefaultSecurityGroupRule, TemplateRemoteGroup};
use crate::network::repo;
use uuid::Uuid;

/// A request to create a template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NewDefaultRule {
    /// Client-chosen id.
    pub id: Option<Uuid>,
    /// `ingress` or `egress`.
    pub direction: String,
    /// `IPv4` (default) or `IPv6`.
    pub ethertype: Option<String>,
    /// Protocol name or number.
    pub protocol: Option<String>,
    /// First port / ICMP type.
    pub port_range_min: Option<i64>,
    /// Last port / ICMP code.
    pub port_range_max: Option<i64>,
    /// Remote prefix.
    pub remote_ip_prefix: Option<String>,
    /// `PARENT` (the group the rule lands in) or a security group id.
    pub remote_group_id: Option<String>,
    /// Use in each project's `default` group (Neutron's default: false).
    pub used_in_default_sg: Option<bool>,
    /// Use in every other new group (Neutron's default: true).
    pub used_in_non_default_sg: Option<bool>,
    /// Description.
    pub description: String,
}

impl NetworkService {
    /// Every template, oldest first.
    pub fn default_rules(&self) -> Result<Vec<DefaultSecurityGroupRule>, NetworkError> {
        self.read(repo::default_rules)
    }

    /// One template.
    pub fn default_rule(&self, id: Uuid) -> Result<DefaultSecurityGroupRule, NetworkError> {
        self.read(|tx| repo::default_rule(tx, id))?
            .ok_or(NetworkError::DefaultSecurityGroupRuleNotFound(id))
    }

    /// Adds a template; the same match twice is refused, as for rules.
    pub fn create_default_rule(
        &self,
        request: NewDefaultRule,
    ) -> Result<DefaultSecurityGroupRule, NetworkError> {
        check_name("description", &request.description)?;
        let shape = RuleShape::parse(
            &request.direction,
            request.ethertype.as_deref(),
            request.protocol.as_deref(),
            request.port_range_min,
            request.port_range_max,
            request.remote_ip_prefix.as_deref(),
        )?;
        let remote_group = match request.remote_group_id.as_deref() {
            None => None,
            Some(text) => Some(TemplateRemoteGroup::parse(text).ok_or_else(|| {
                invalid(format!(
                    "remote_group_id '{text}' must be PARENT or a security group id"
                ))
            })?),
        };
        if shape.prefix.is_some() && remote_group.is_some() {
            return Err(invalid(
                "Only remote_ip_prefix or remote_group_id may be provided.",
            ));
        }
        // Neutron's defaults: a template applies to custom groups unless told otherwise.
        let used_in_default_sg = request.used_in_default_sg.unwrap_or(false);
        let used_in_non_default_sg = request.used_in_non_default_sg.unwrap_or(true);
        // Templates are not OVN state: no generation bump, the reconciler has nothing to do.
        let now = self.clock.now();
        self.store.write(|tx| {
            if let Some(TemplateRemoteGroup::Group(group)) = remote_group {
                repo::security_group(tx, group)?
                    .ok_or(NetworkError::SecurityGroupNotFound(group))?;
            }
            let template = DefaultSecurityGroupRule {
                id: request.id.unwrap_or_else(Uuid::new_v4),
                direction: shape.direction,
                ethertype: shape.ethertype,
                protocol: shape.protocol,
                port_range_min: shape.min,
                port_range_max: shape.max,
                remote_ip_prefix: shape.prefix,
                remote_group,
                used_in_default_sg,
                used_in_non_default_sg,
                description: request.description,
                created_at: now,
            };
            if let Some(existing) = repo::default_rules(tx)?
                .iter()
                .find(|t| t.signature() == template.signature())
            {
                return Err(NetworkError::DefaultSecurityGroupRuleExists(existing.id));
            }
            if repo::default_rule(tx, template.id)?.is_some() {
                return Err(NetworkError::Duplicate {
                    what: "Default security group rule",
                    id: template.id,
                });
            }
            repo::insert_default_rule(tx, &template)?;
            Ok(template)
        })
    }

    /// Deletes a template (groups already made keep the rules it gave them).
    pub fn delete_default_rule(&self, id: Uuid) -> Result<(), NetworkError> {
        self.store.write(|tx| {
            repo::default_rule(tx, id)?
                .ok_or(NetworkError::DefaultSecurityGroupRuleNotFound(id))?;
            repo::delete_default_rule(tx, id)
        })
    }
}
