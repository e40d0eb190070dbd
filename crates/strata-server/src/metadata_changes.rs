//! Metadata changes as every floor above sees them: the controller's validation builds the
//! records, [`MetadataSource`] commits them, and the logs hosted here are brought in line with
//! the new image before the change is answered (a topic a client just created can be produced
//! to at once). Services that create internal topics and handlers of admin APIs share it.

use std::sync::Arc;

use strata_meta::{Controller, MetaError, MetadataImage, MetadataRecord};

use crate::config::ServerConfig;
use crate::metadata_source::MetadataSource;
use crate::replica_manager::ReplicaManager;

pub struct MetadataChanges {
    store: Arc<MetadataSource>,
    controller: Controller,
    replicas: Arc<ReplicaManager>,
    config: Arc<ServerConfig>,
}

impl MetadataChanges {
    pub fn new(
        store: Arc<MetadataSource>,
        replicas: Arc<ReplicaManager>,
        config: Arc<ServerConfig>,
    ) -> Self {
        MetadataChanges {
            controller: Controller::new(config.node_id),
            store,
            replicas,
            config,
        }
    }

    /// The latest image this node has applied.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.store.image()
    }

    /// The controller's validation and record building (sans-IO).
    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    /// Runs a controller operation under the metadata commit lock (in a cluster: builds it
    /// again from a newer image as often as another change gets in first), then brings the
    /// hosted logs in line with the new image. Blocks the calling thread on fsync and file
    /// creation, so async callers wrap it in `block_in_place`.
    pub fn commit<T>(
        &self,
        build: impl FnMut(&MetadataImage) -> (Vec<MetadataRecord>, T),
    ) -> Result<T, MetaError> {
        let (value, image) = self.store.commit_with(build)?;
        self.replicas.reconcile(&image, &self.config);
        Ok(value)
    }
}
