//! OVN: the network model programmed into the OVN northbound database.
//!
//! [`desired`] turns the model into the rows OVN should hold, [`plan`] diffs them against the rows it
//! holds, and [`OvnReconciler`] applies the difference in one transaction whenever the model changes
//! or the database drifts (someone edited or deleted a row, the database restarted and came back
//! empty). The northbound connection sits behind [`crate::network::database::Database`].

pub mod acl;
pub mod desired;
pub mod naming;
pub mod plan;
mod reconciler;
#[cfg(test)]
mod tests;

pub use desired::OvnSettings;
pub use reconciler::OvnReconciler;
