//! Fleet rollouts (issue 12): a release rolled out across the sites in waves, halting by itself when
//! sites get worse. [`spec`] checks what an operator asks for and fixes
//! each wave's sites; [`observe`] reads each site's latest heartbeat;
//! [`machine`] decides, step by step; [`service`] puts them together over the store for operators
//! and the driver; [`progress`] is what the operator surfaces (REST, CLI, dashboard) show.

pub mod machine;
pub mod observe;
pub mod progress;
pub mod service;
pub mod spec;

#[cfg(test)]
mod tests;
