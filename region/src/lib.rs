//! `scs-edge-region`: the central service an SCS Edge fleet federates with.
//!
//! Sites join it once over mTLS with a one-time token ([`ca`], [`fleet`]), report health and inventory
//! continuously, and take their desired state from it; operators manage the fleet through a CLI, a REST
//! API authenticated by the central identity provider ([`operator_auth`]) and a web dashboard. The HTTP
//! server, the CLI and the dashboard are thin adapters over [`fleet::Fleet`]; state lives in SQLite or
//! PostgreSQL ([`store`]). OS releases signed offline are mirrored and served to the sites by
//! [`releases`].

pub mod ca;
pub mod config;
pub mod dashboard;
pub mod fleet;
pub mod http;
pub mod operator_auth;
pub mod releases;
pub mod rollouts;
pub mod store;
