//! SCS Edge node agent.
//!
//! The agent turns desired state (rows in a local SQLite store) into real resources on this node and
//! keeps them there: libvirt/QEMU domains today, OVN, host links and k3s as the project grows. Every
//! front end — the OpenStack-compatible HTTPS API, the admin CLI, the region link — is a thin adapter over
//! the domain folders below; reconcilers drive the host and write status back. The agent can be killed at
//! any instant and converges again on restart.
//!
//! Layering (dependencies point downwards only):
//! `daemon`/`cli`/`api`/`federation` (the region link) → domain folders (`compute`, `image`, `network`, `identity`, `update`) → `store`,
//! `reconcile`, `system`, `health`, `metrics`.

pub mod api;
pub mod cli;
pub mod compute;
pub mod config;
pub mod daemon;
pub mod error_class;
pub mod federation;
pub mod health;
pub mod identity;
pub mod image;
pub mod metrics;
pub mod network;
pub mod provision;
pub mod reconcile;
pub mod store;
pub mod system;
pub mod update;
