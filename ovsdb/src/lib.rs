//! An RFC 7047 OVSDB client. Knows nothing of SCS.
