//! The region's offer of an OS release, as the link saved it: the desired state (its
//! `target_os_version`) and the node's credentials, read from the federation folder each time the
//! update task asks, so a renewed certificate or a new desired state is used at once.

use super::credentials::FederationDir;
use super::transport::HttpsTransport;
use crate::update::region::RegionOffer;
use scs_edge_proto::paths;

/// [`RegionOffer`] over the federation folder.
#[derive(Debug)]
pub struct SavedOffer {
    files: FederationDir,
    transport: HttpsTransport,
    site: String,
}

impl SavedOffer {
    /// The offer to `site` from the region at `region_url`, as saved in `files`.
    pub fn new(files: FederationDir, region_url: &str, site: &str) -> Self {
        Self {
            files,
            transport: HttpsTransport::new(region_url),
            site: site.to_owned(),
        }
    }
}

impl RegionOffer for SavedOffer {
    fn wanted(&self) -> Option<String> {
        match self.files.load_desired() {
            Ok(desired) => desired?.target_os_version,
            Err(err) => {
                tracing::warn!(%err, "cannot read the desired state the region sent");
                None
            }
        }
    }

    fn repository(&self) -> Result<(reqwest::Url, reqwest::Client), String> {
        let credentials = self
            .files
            .load()
            .map_err(|err| err.to_string())?
            .ok_or("the node has not joined its region yet")?;
        let client = self
            .transport
            .repository_client(&credentials)
            .map_err(|err| err.to_string())?;
        let url = format!("{}{}", self.transport.base(), paths::repository(&self.site));
        let url = reqwest::Url::parse(&url).map_err(|err| format!("{url}: {err}"))?;
        Ok((url, client))
    }
}
