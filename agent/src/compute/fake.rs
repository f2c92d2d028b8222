//! An in-memory hypervisor for unit tests: domains, power states, injected failures and a guest model
//! (does it answer the ACPI power button?). Real behaviour is proven against libvirt in `tests/`.

use super::hypervisor::{
    DomainPower, DomainSpec, DomainStatus, Hypervisor, HypervisorError, ShutoffReason,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use uuid::Uuid;

/// One fake domain.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeDomain {
    /// The spec it was defined from.
    pub spec: DomainSpec,
    /// Owning node (foreign domains have another).
    pub node_id: String,
    /// Power.
    pub power: DomainPower,
    /// Times started.
    pub starts: u32,
}

#[derive(Debug, Default)]
struct State {
    domains: HashMap<Uuid, FakeDomain>,
    /// Operations that fail once, by name (`define`, `start`, `shutdown`, `power_off`, `undefine`, `list`).
    fail_once: HashSet<&'static str>,
    unreachable: bool,
    /// Whether guests power off when asked via ACPI.
    guests_ignore_acpi: bool,
    calls: Vec<String>,
}

/// The fake hypervisor, seen from node `node_id`.
#[derive(Debug)]
pub struct FakeHypervisor {
    node_id: String,
    state: Mutex<State>,
}

impl FakeHypervisor {
    /// A fake hypervisor whose owned domains carry `node_id`.
    pub fn new(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_owned(),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A domain, owned or foreign.
    pub fn get(&self, id: Uuid) -> Option<FakeDomain> {
        self.lock().domains.get(&id).cloned()
    }

    /// Number of domains of any owner.
    pub fn count(&self) -> usize {
        self.lock().domains.len()
    }

    /// Makes the next call of `operation` fail.
    pub fn fail_once(&self, operation: &'static str) {
        self.lock().fail_once.insert(operation);
    }

    /// Simulates libvirtd being down.
    pub fn set_unreachable(&self, down: bool) {
        self.lock().unreachable = down;
    }

    /// Guests ignore (true) or honour (false) ACPI shutdown requests.
    pub fn set_guests_ignore_acpi(&self, ignore: bool) {
        self.lock().guests_ignore_acpi = ignore;
    }

    /// The guest shuts itself down (as `poweroff` inside it would).
    pub fn guest_poweroff(&self, id: Uuid) {
        if let Some(d) = self.lock().domains.get_mut(&id) {
            d.power = DomainPower::Shutoff(ShutoffReason::GuestShutdown);
        }
    }

    /// QEMU dies under the guest.
    pub fn crash(&self, id: Uuid) {
        if let Some(d) = self.lock().domains.get_mut(&id) {
            d.power = DomainPower::Shutoff(ShutoffReason::Crashed);
        }
    }

    /// Removes a domain behind the agent's back.
    pub fn vanish(&self, id: Uuid) {
        self.lock().domains.remove(&id);
    }

    /// Plants a domain (owned by `node_id`) as if left by an earlier run or another tool.
    pub fn plant(&self, spec: DomainSpec, node_id: &str, power: DomainPower) {
        let id = spec.id;
        self.lock().domains.insert(
            id,
            FakeDomain {
                spec,
                node_id: node_id.to_owned(),
                power,
                starts: 0,
            },
        );
    }

    /// Every call so far, as `operation:id`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    fn enter(
        &self,
        operation: &'static str,
        id: Option<Uuid>,
    ) -> Result<std::sync::MutexGuard<'_, State>, HypervisorError> {
        let mut state = self.lock();
        state.calls.push(format!(
            "{operation}:{}",
            id.map(|i| i.to_string()).unwrap_or_default()
        ));
        if state.unreachable {
            return Err(HypervisorError::Unreachable("fake libvirtd is down".into()));
        }
        if state.fail_once.remove(operation) {
            return Err(HypervisorError::Operation {
                operation,
                id: id.unwrap_or_default(),
                message: "injected failure".into(),
            });
        }
        Ok(state)
    }

    fn status(domain: &FakeDomain) -> DomainStatus {
        DomainStatus {
            id: domain.spec.id,
            power: domain.power,
            spec_digest: Some(domain.spec.digest()),
        }
    }

    fn owned<'a>(
        &self,
        state: &'a mut State,
        operation: &'static str,
        id: Uuid,
    ) -> Result<&'a mut FakeDomain, HypervisorError> {
        state
            .domains
            .get_mut(&id)
            .filter(|d| d.node_id == self.node_id)
            .ok_or_else(|| HypervisorError::Operation {
                operation,
                id,
                message: "no such domain".into(),
            })
    }
}

impl Hypervisor for FakeHypervisor {
    fn domains(&self) -> Result<Vec<DomainStatus>, HypervisorError> {
        let state = self.enter("list", None)?;
        Ok(state
            .domains
            .values()
            .filter(|d| d.node_id == self.node_id)
            .map(Self::status)
            .collect())
    }

    fn domain(&self, id: Uuid) -> Result<Option<DomainStatus>, HypervisorError> {
        let state = self.enter("lookup", Some(id))?;
        Ok(state
            .domains
            .get(&id)
            .filter(|d| d.node_id == self.node_id)
            .map(Self::status))
    }

    fn define(&self, spec: &DomainSpec) -> Result<(), HypervisorError> {
        let mut state = self.enter("define", Some(spec.id))?;
        match state.domains.get_mut(&spec.id) {
            Some(existing) if existing.node_id != self.node_id => Err(HypervisorError::Operation {
                operation: "define",
                id: spec.id,
                message: "domain with this uuid belongs to someone else".into(),
            }),
            Some(existing) => {
                existing.spec = spec.clone();
                Ok(())
            }
            None => {
                state.domains.insert(
                    spec.id,
                    FakeDomain {
                        spec: spec.clone(),
                        node_id: self.node_id.clone(),
                        power: DomainPower::Shutoff(ShutoffReason::Unknown),
                        starts: 0,
                    },
                );
                Ok(())
            }
        }
    }

    fn start(&self, id: Uuid) -> Result<(), HypervisorError> {
        let mut state = self.enter("start", Some(id))?;
        let domain = self.owned(&mut state, "start", id)?;
        if domain.power == DomainPower::Running {
            return Err(HypervisorError::Operation {
                operation: "start",
                id,
                message: "domain is already running".into(),
            });
        }
        domain.power = DomainPower::Running;
        domain.starts += 1;
        Ok(())
    }

    fn shutdown(&self, id: Uuid) -> Result<(), HypervisorError> {
        let mut state = self.enter("shutdown", Some(id))?;
        let ignore = state.guests_ignore_acpi;
        let domain = self.owned(&mut state, "shutdown", id)?;
        if !ignore && domain.power == DomainPower::Running {
            domain.power = DomainPower::Shutoff(ShutoffReason::GuestShutdown);
        }
        Ok(())
    }

    fn power_off(&self, id: Uuid) -> Result<(), HypervisorError> {
        let mut state = self.enter("power_off", Some(id))?;
        let domain = self.owned(&mut state, "power_off", id)?;
        if !matches!(domain.power, DomainPower::Shutoff(_)) {
            domain.power = DomainPower::Shutoff(ShutoffReason::Destroyed);
        }
        Ok(())
    }

    fn undefine(&self, id: Uuid) -> Result<(), HypervisorError> {
        let mut state = self.enter("undefine", Some(id))?;
        if let Some(domain) = state.domains.get(&id) {
            if domain.node_id != self.node_id {
                return Err(HypervisorError::Operation {
                    operation: "undefine",
                    id,
                    message: "not ours".into(),
                });
            }
            if domain.power == DomainPower::Running {
                return Err(HypervisorError::Operation {
                    operation: "undefine",
                    id,
                    message: "domain is running".into(),
                });
            }
            state.domains.remove(&id);
        }
        Ok(())
    }
}
