//! The region's offer of an OS release, as the link saved it: the desired state (its
//! `target_os_version` and `maintenance_window`) and the node's credentials, read from the
//! federation folder each time the update task asks, so a renewed certificate or a new desired
//! state is used at once.

use super::credentials::FederationDir;
use super::transport::HttpsTransport;
use crate::update::region::{self, RegionOffer, RegionWindowError};
use crate::update::window::MaintenanceWindow;
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
    fn wanted(&self) -> Result<Option<String>, String> {
        let desired = self.files.load_desired().map_err(|err| err.to_string())?;
        Ok(desired.and_then(|desired| desired.target_os_version))
    }

    fn window(&self) -> Result<Option<MaintenanceWindow>, RegionWindowError> {
        // An unreadable desired state: `wanted` says so each round; the node's own window holds
        // meanwhile.
        match self.files.load_desired() {
            Ok(Some(desired)) => region::desired_window(&desired),
            Ok(None) | Err(_) => Ok(None),
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

#[cfg(test)]
mod tests {
    use super::*;
    use scs_edge_proto::DesiredState;

    fn offer(dir: &tempfile::TempDir) -> SavedOffer {
        let files = FederationDir::new(dir.path().join("federation"));
        SavedOffer::new(files, "https://region.example:8443", "factory-7")
    }

    #[test]
    fn the_saved_desired_state_names_version_and_window_and_an_unreadable_one_names_nothing_new() {
        let dir = tempfile::tempdir().expect("dir");
        let offer = offer(&dir);
        assert_eq!(offer.wanted(), Ok(None), "nothing saved yet");
        assert_eq!(offer.window(), Ok(None));

        let files = FederationDir::new(dir.path().join("federation"));
        files
            .save_desired(&DesiredState {
                generation: 5,
                target_os_version: Some("26.12.0".into()),
                maintenance_window: Some("sun,sat 22:00-02:00".into()),
                ..DesiredState::default()
            })
            .expect("save");
        assert_eq!(offer.wanted(), Ok(Some("26.12.0".into())));
        let window = offer.window().expect("readable").expect("a window");
        assert_eq!(window.to_string(), "sat,sun 22:00-02:00");

        files
            .save_desired(&DesiredState {
                generation: 6,
                maintenance_window: Some("weekends".into()),
                ..DesiredState::default()
            })
            .expect("save");
        let err = offer.window().expect_err("not a window");
        assert_eq!(err.generation, 6);

        // A torn or foreign file is no news that the region changed its mind: an error for the
        // version (nothing staged is dropped for it), the node's own window meanwhile.
        std::fs::write(
            dir.path()
                .join("federation")
                .join(super::super::credentials::DESIRED),
            "{",
        )
        .expect("spoil");
        assert!(offer.wanted().is_err());
        assert_eq!(offer.window(), Ok(None));
    }
}
