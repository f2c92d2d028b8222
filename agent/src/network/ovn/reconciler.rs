//! Keeps the northbound database equal to the network model: one key for the whole database.

use super::desired::{self, OvnSettings};
use super::plan;
use crate::network::database::{Database, DatabaseView};
use crate::network::model::PortStatus;
use crate::network::service::{NetworkService, OVN, OVN_KEY};
use crate::reconcile::{BoxError, Next, Reconciler};
use ovsdb::{Atom, Value};
use std::sync::{Arc, Mutex, PoisonError};
use tracing::info;
use uuid::Uuid;

/// The OVN reconciler.
pub struct OvnReconciler {
    network: Arc<NetworkService>,
    northbound: Arc<dyn Database>,
    settings: OvnSettings,
    /// (generation, revision) of the database right after our last pass: anything else is news.
    seen: Mutex<Option<(u64, u64)>>,
}

impl OvnReconciler {
    /// A reconciler writing `network`'s model into `northbound`.
    pub fn new(
        network: Arc<NetworkService>,
        northbound: Arc<dyn Database>,
        settings: OvnSettings,
    ) -> Self {
        Self {
            network,
            northbound,
            settings,
            seen: Mutex::new(None),
        }
    }

    fn port_statuses(&self, view: &DatabaseView) -> Vec<(Uuid, PortStatus)> {
        let mut statuses = Vec::new();
        for (_, row) in view.rows("Logical_Switch_Port").unwrap_or_default() {
            let Some(Value::Map(ids)) = row.get("external_ids") else {
                continue;
            };
            let owner = ids.get(&Atom::String(super::naming::OWNER.into()));
            let key = ids.get(&Atom::String(super::naming::KEY.into()));
            let (Some(Atom::String(owner)), Some(Atom::String(key))) = (owner, key) else {
                continue;
            };
            if *owner != self.settings.owner {
                continue;
            }
            let Some(port) = key
                .strip_prefix("port/")
                .and_then(|id| Uuid::parse_str(id).ok())
            else {
                continue;
            };
            let up = match row.get("up") {
                Some(Value::Atom(Atom::Boolean(b))) => *b,
                Some(Value::Set(set)) => set.contains(&Atom::Boolean(true)),
                _ => false,
            };
            statuses.push((
                port,
                if up {
                    PortStatus::Active
                } else {
                    PortStatus::Down
                },
            ));
        }
        statuses
    }

    fn remember(&self, view: &DatabaseView) {
        *self.seen.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((view.generation, view.revision));
    }
}

impl Reconciler for OvnReconciler {
    fn kind(&self) -> &'static str {
        OVN
    }

    fn all_keys(&self) -> Result<Vec<String>, BoxError> {
        Ok(vec![OVN_KEY.to_owned()])
    }

    fn changed(&self) -> Result<Vec<(String, i64)>, BoxError> {
        Ok(vec![(OVN_KEY.to_owned(), self.network.model()?.generation)])
    }

    /// The database changed since our last pass: drift, a reload after reconnecting, or ports going up.
    fn observe(&self) -> Result<Vec<String>, BoxError> {
        let view = self.northbound.view()?;
        let seen = *self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(if seen == Some((view.generation, view.revision)) {
            Vec::new()
        } else {
            vec![OVN_KEY.to_owned()]
        })
    }

    fn reconcile(&self, _key: &str) -> Result<Next, BoxError> {
        let model = self.network.model()?;
        let wanted = desired::northbound(&model, &self.settings);
        let view = self.northbound.view()?;
        let existing = plan::existing(|table| view.rows(table), &self.settings.owner);
        let (ops, summary) = plan::plan(&wanted, &existing);
        let view = if ops.is_empty() {
            view
        } else {
            self.northbound.transact(ops)?;
            info!(
                inserted = summary.inserted,
                updated = summary.updated,
                deleted = summary.deleted,
                generation = model.generation,
                "OVN northbound updated"
            );
            self.northbound.view()?
        };
        self.remember(&view);
        let changed = self
            .network
            .record_port_status(&self.port_statuses(&view))?;
        if !changed.is_empty() {
            info!(ports = changed.len(), "port status changed");
        }
        Ok(Next::Done)
    }
}
