//! The host's links, addresses and routes, through rtnetlink, behind a trait.
