//! Releases from the region: the OS version the site's desired state names (the region's rollouts
//! set it) and the region's release repository, reached over the node's mTLS link. The federation
//! link implements [`RegionOffer`] from what it saved; the update domain only asks.

/// What the region wants this node to run, and where to fetch it.
pub trait RegionOffer: Send + Sync {
    /// The OS version the site's desired state names, if any.
    fn wanted(&self) -> Option<String>;

    /// The region's repository for this site (its base URL) and a client that presents the node's
    /// certificate; an error while the node has not joined its region.
    fn repository(&self) -> Result<(reqwest::Url, reqwest::Client), String>;
}
