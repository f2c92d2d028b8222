//! Fleet rollouts (issue 12): a release rolled out across the sites in waves, halting by itself when
//! sites get worse. [`machine`] decides; the store, the driver that applies its decisions, and the
//! operator surfaces follow.

pub mod machine;

#[cfg(test)]
mod tests;
