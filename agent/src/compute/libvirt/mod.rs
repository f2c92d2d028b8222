//! The libvirt implementation of [`Hypervisor`].
//!
//! libvirt's API blocks; the reconciler already runs on blocking threads, so calls are made directly.
//! One connection is shared (libvirt connections are thread-safe) and replaced when it dies, so a
//! restarted libvirtd costs one failed reconcile, not an agent restart.

pub mod domain_xml;

use crate::compute::hypervisor::{
    DomainPower, DomainSpec, DomainStatus, Hypervisor, HypervisorError, ShutoffReason,
};
use std::sync::{Arc, Mutex, PoisonError};
use uuid::Uuid;
use virt::connect::Connect;
use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::sys;

/// Domains the agent owns all have names with this prefix; others are skipped without an RPC.
const NAME_PREFIX: &str = "scs-";

/// A connection reference, closed when the last user drops it (`Connect` itself never closes).
struct Conn(Connect);

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.0.close();
    }
}

/// libvirt/QEMU through libvirtd.
pub struct LibvirtHypervisor {
    uri: String,
    node_id: String,
    conn: Mutex<Option<Arc<Conn>>>,
}

impl std::fmt::Debug for LibvirtHypervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LibvirtHypervisor")
            .field("uri", &self.uri)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

fn unreachable(err: &virt::error::Error) -> HypervisorError {
    HypervisorError::Unreachable(err.message().to_owned())
}

impl LibvirtHypervisor {
    /// A hypervisor at `uri` acting for node `node_id`. Connects lazily, so the agent starts (and serves
    /// its API) while libvirtd is down.
    pub fn new(uri: &str, node_id: &str) -> Self {
        // libvirt prints every error to stderr by default; ours are returned and logged instead.
        virt::error::clear_error_callback();
        Self {
            uri: uri.to_owned(),
            node_id: node_id.to_owned(),
            conn: Mutex::new(None),
        }
    }

    /// A live connection, opened anew if there is none or the last one died. The lock is held only
    /// for this, so workers call libvirt in parallel.
    fn connection(&self) -> Result<Arc<Conn>, HypervisorError> {
        let mut guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = guard.as_ref()
            && conn.0.is_alive().unwrap_or(false)
        {
            return Ok(conn.clone());
        }
        let conn = Arc::new(Conn(
            Connect::open(Some(&self.uri)).map_err(|e| unreachable(&e))?,
        ));
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Runs `f` with a live connection; forgets the connection if the call failed because it died.
    fn with_conn<T>(
        &self,
        f: impl FnOnce(&Connect) -> Result<T, HypervisorError>,
    ) -> Result<T, HypervisorError> {
        let conn = self.connection()?;
        let result = f(&conn.0);
        if result.is_err() && !conn.0.is_alive().unwrap_or(false) {
            let mut guard = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
            if guard
                .as_ref()
                .is_some_and(|current| Arc::ptr_eq(current, &conn))
            {
                guard.take();
            }
        }
        result
    }

    /// The domain if it exists and this node owns it.
    fn owned(&self, conn: &Connect, id: Uuid) -> Result<Option<(Domain, String)>, HypervisorError> {
        let domain = match Domain::lookup_by_uuid_string(conn, &id.to_string()) {
            Ok(domain) => domain,
            Err(err) if err.code() == ErrorNumber::NoDomain => return Ok(None),
            Err(err) => return Err(op_error("lookup", id, &err)),
        };
        Ok(self
            .owner_digest(&domain, id)?
            .map(|digest| (domain, digest)))
    }

    /// The spec digest if `domain` carries this node's owner element.
    fn owner_digest(&self, domain: &Domain, id: Uuid) -> Result<Option<String>, HypervisorError> {
        match domain.get_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(domain_xml::METADATA_NS),
            0,
        ) {
            Ok(xml) => Ok(domain_xml::parse_owner(&xml)
                .filter(|o| o.node == self.node_id)
                .map(|o| o.digest)),
            Err(err) if err.code() == ErrorNumber::NoDomainMetadata => Ok(None),
            Err(err) if err.code() == ErrorNumber::NoDomain => Ok(None),
            Err(err) => Err(op_error("read metadata", id, &err)),
        }
    }

    /// The domain's status; `None` if it vanished since it was looked up (someone undefined it).
    fn status(
        domain: &Domain,
        id: Uuid,
        digest: String,
    ) -> Result<Option<DomainStatus>, HypervisorError> {
        let (state, reason) = match domain.get_state() {
            Ok(state) => state,
            Err(err) if err.code() == ErrorNumber::NoDomain => return Ok(None),
            Err(err) => return Err(op_error("read state", id, &err)),
        };
        let power = match state {
            sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED | sys::VIR_DOMAIN_SHUTDOWN => {
                DomainPower::Running
            }
            sys::VIR_DOMAIN_PAUSED | sys::VIR_DOMAIN_PMSUSPENDED => DomainPower::Paused,
            sys::VIR_DOMAIN_CRASHED => DomainPower::Crashed,
            sys::VIR_DOMAIN_SHUTOFF => DomainPower::Shutoff(match reason as u32 {
                sys::VIR_DOMAIN_SHUTOFF_SHUTDOWN => ShutoffReason::GuestShutdown,
                sys::VIR_DOMAIN_SHUTOFF_DESTROYED => ShutoffReason::Destroyed,
                sys::VIR_DOMAIN_SHUTOFF_CRASHED | sys::VIR_DOMAIN_SHUTOFF_FAILED => {
                    ShutoffReason::Crashed
                }
                _ => ShutoffReason::Unknown,
            }),
            _ if domain.is_active().unwrap_or(false) => DomainPower::Running,
            _ => DomainPower::Shutoff(ShutoffReason::Unknown),
        };
        Ok(Some(DomainStatus {
            id,
            power,
            spec_digest: Some(digest).filter(|d| !d.is_empty()),
        }))
    }

    /// Runs a power call on an owned domain; "not running" style refusals count as success.
    fn power_call(
        &self,
        operation: &'static str,
        id: Uuid,
        call: impl FnOnce(&Domain) -> Result<(), virt::error::Error>,
    ) -> Result<(), HypervisorError> {
        self.with_conn(|conn| {
            let Some((domain, _)) = self.owned(conn, id)? else {
                return Err(HypervisorError::Operation { operation, id, message: "no such domain owned by this node".into() });
            };
            match call(&domain) {
                Ok(()) => Ok(()),
                Err(err) if err.code() == ErrorNumber::OperationInvalid => {
                    tracing::debug!(server = %id, operation, message = err.message(), "already in the requested state");
                    Ok(())
                }
                Err(err) => Err(op_error(operation, id, &err)),
            }
        })
    }
}

fn op_error(operation: &'static str, id: Uuid, err: &virt::error::Error) -> HypervisorError {
    HypervisorError::Operation {
        operation,
        id,
        message: err.message().to_owned(),
    }
}

impl Hypervisor for LibvirtHypervisor {
    fn domains(&self) -> Result<Vec<DomainStatus>, HypervisorError> {
        self.with_conn(|conn| {
            let all = conn.list_all_domains(0).map_err(|e| unreachable(&e))?;
            let mut owned = Vec::new();
            for domain in all {
                let Ok(name) = domain.get_name() else {
                    continue;
                };
                let Some(id) = name
                    .strip_prefix(NAME_PREFIX)
                    .and_then(|s| Uuid::parse_str(s).ok())
                else {
                    continue;
                };
                match self.owner_digest(&domain, id) {
                    Ok(Some(digest)) => owned.extend(Self::status(&domain, id, digest)?),
                    Ok(None) => {}
                    Err(err) => return Err(err),
                }
            }
            Ok(owned)
        })
    }

    fn domain(&self, id: Uuid) -> Result<Option<DomainStatus>, HypervisorError> {
        self.with_conn(|conn| match self.owned(conn, id)? {
            Some((domain, digest)) => Self::status(&domain, id, digest),
            None => Ok(None),
        })
    }

    fn define(&self, spec: &DomainSpec) -> Result<(), HypervisorError> {
        let xml = domain_xml::render(spec);
        self.with_conn(|conn| {
            // Never overwrite a domain someone else owns under the same UUID.
            if let Ok(existing) = Domain::lookup_by_uuid_string(conn, &spec.id.to_string())
                && self.owner_digest(&existing, spec.id)?.is_none()
            {
                return Err(HypervisorError::Operation {
                    operation: "define",
                    id: spec.id,
                    message: "a domain with this UUID exists and is not owned by this node".into(),
                });
            }
            Domain::define_xml(conn, &xml)
                .map(|_| ())
                .map_err(|e| op_error("define", spec.id, &e))
        })
    }

    fn start(&self, id: Uuid) -> Result<(), HypervisorError> {
        self.power_call("start", id, |d| d.create().map(|_| ()))
    }

    fn shutdown(&self, id: Uuid) -> Result<(), HypervisorError> {
        self.power_call("shutdown", id, |d| {
            d.shutdown_flags(sys::VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
                .map(|_| ())
        })
    }

    fn power_off(&self, id: Uuid) -> Result<(), HypervisorError> {
        self.power_call("power off", id, Domain::destroy)
    }

    fn undefine(&self, id: Uuid) -> Result<(), HypervisorError> {
        self.with_conn(|conn| {
            let Some((domain, _)) = self.owned(conn, id)? else {
                return Ok(());
            };
            let flags = sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | sys::VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | sys::VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
                | sys::VIR_DOMAIN_UNDEFINE_NVRAM;
            match domain.undefine_flags(flags) {
                Ok(()) => Ok(()),
                Err(err) if err.code() == ErrorNumber::NoDomain => Ok(()),
                Err(err) => Err(op_error("undefine", id, &err)),
            }
        })
    }
}
