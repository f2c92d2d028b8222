//! The few ways a domain error can surface to a client.
//!
//! Domain folders classify their own errors; `api/` maps a class to an HTTP status and an OpenStack error
//! body in one place, and the CLI maps it to an exit code. Neither adapter has to know every variant of
//! every domain error, and no domain folder knows HTTP.

/// How a failed request should be reported to whoever made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The request itself is wrong (bad name, impossible size): fixing the request fixes it.
    BadRequest,
    /// The caller could not be authenticated (no, bad or expired token, wrong password). Deliberately
    /// vague: it never says which.
    Unauthorized,
    /// The caller is authenticated but not allowed to do this.
    Forbidden,
    /// Something the request names does not exist.
    NotFound,
    /// The request clashes with current state (duplicate id, resource in use, no capacity left).
    Conflict,
    /// The agent cannot serve the request right now (a host daemon is down); retrying later may work.
    Unavailable,
    /// A fault inside the agent or on the host; the message is logged, the client sees a generic text.
    Internal,
}

/// Implemented by every domain error so adapters can report it without matching on variants.
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;
}
