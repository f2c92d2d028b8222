//! Keeps image rows and files in step after crashes.
//!
//! An upload commits `saving`, streams into a locked partial file, commits `active` and then publishes
//! the file. A kill at any point leaves one of these, each repaired here:
//!
//! | row      | file                      | repair                                              |
//! |----------|---------------------------|-----------------------------------------------------|
//! | none     | partial or published      | remove the file (an import refused or killed early) |
//! | `active` | partial, nobody writing   | publish it (killed between commit and rename)       |
//! | `saving` | none, or nobody writing   | back to `queued`, partial removed                   |
//! | `queued` | partial or published      | remove the file (a queued image owns no data)       |
//!
//! A partial file someone holds the lock on is an upload in progress and is never touched.
//!
//! One race remains by design: an upload that committed `saving` but has not opened its file yet looks
//! like a killed one. Resetting it is safe: the upload's final commit requires `saving`, so it fails
//! with `UploadInterrupted` (409), discards its file, and the client retries. Nothing is half-done.

use super::files::{BlobState, ImageFiles};
use super::{ImageError, ImageStatus, repo};
use crate::reconcile::{BoxError, Next, Reconciler};
use crate::store::Store;
use crate::system::clock::Clock;
use std::collections::HashSet;
use std::sync::Arc;
use uuid::Uuid;

/// The image store's reconciler.
pub struct ImageReconciler {
    store: Arc<Store>,
    files: Arc<dyn ImageFiles>,
    clock: Arc<dyn Clock>,
}

impl ImageReconciler {
    /// A reconciler over the same store and files as the service.
    pub fn new(store: Arc<Store>, files: Arc<dyn ImageFiles>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            files,
            clock,
        }
    }

    fn status(&self, id: Uuid) -> Result<Option<ImageStatus>, ImageError> {
        self.store
            .read(|tx| Ok::<_, ImageError>(repo::find(tx, id)?.map(|i| i.status)))
    }
}

impl Reconciler for ImageReconciler {
    fn kind(&self) -> &'static str {
        "images"
    }

    /// Files not being written, and rows a killed upload left in `saving`.
    fn all_keys(&self) -> Result<Vec<String>, BoxError> {
        let mut keys: HashSet<String> = HashSet::new();
        for (id, state) in self.files.scan()? {
            if state != BlobState::InProgress {
                keys.insert(id.to_string());
            }
        }
        let saving = self
            .store
            .read(|tx| repo::ids_in_status(tx, ImageStatus::Saving))?;
        keys.extend(saving.iter().map(Uuid::to_string));
        Ok(keys.into_iter().collect())
    }

    fn changed(&self) -> Result<Vec<(String, i64)>, BoxError> {
        Ok(Vec::new())
    }

    fn reconcile(&self, key: &str) -> Result<Next, BoxError> {
        let id = Uuid::parse_str(key)?;
        let file = self
            .files
            .scan()?
            .into_iter()
            .find(|(found, _)| *found == id)
            .map(|(_, s)| s);
        if file == Some(BlobState::InProgress) {
            return Ok(Next::Done);
        }
        match (self.status(id)?, file) {
            (Some(ImageStatus::Active), Some(BlobState::Abandoned)) => {
                tracing::info!(image = %id, "completing image upload interrupted after commit");
                self.files.publish_abandoned(id)?;
            }
            (None | Some(ImageStatus::Queued), Some(_)) => {
                tracing::info!(image = %id, "removing image file no active image owns");
                self.files.remove(id)?;
            }
            (Some(ImageStatus::Saving), file) => {
                let now = self.clock.now();
                let reset = self.store.write(|tx| {
                    repo::transition(tx, id, ImageStatus::Saving, ImageStatus::Queued, now)
                })?;
                // If the upload committed `active` meanwhile, its file is its own.
                if reset {
                    tracing::info!(image = %id, "upload was interrupted; image is queued again");
                    if file.is_some() {
                        self.files.remove(id)?;
                    }
                }
            }
            _ => {}
        }
        Ok(Next::Done)
    }
}
