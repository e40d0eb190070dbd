//! Where the broker's metadata comes from and how it commits changes: the single node's own
//! file log, or the Raft quorum of a cluster.
//!
//! Both give the same contract to handlers (`Broker::commit`): records are built from an image
//! and applied to exactly that image. The file log has one writer under a lock. In a cluster
//! every node may propose, so a proposal carries the offset of the image it was built from,
//! and the quorum applies it only if that is still the latest image (optimistic concurrency,
//! decided in the replicated state machine, hence the same on every node); otherwise the
//! change is built again from the newer image.

use std::sync::Arc;
use std::time::Duration;

use strata_meta::{MetaError, MetadataImage, MetadataRecord, MetadataStore};
use strata_quorum::{Proposal, Quorum};

/// A change that keeps losing the race against others is given up after this many builds.
const MAX_COMMIT_ATTEMPTS: usize = 32;
/// Longest wait for this node's image to catch up with a newer one the leader reported.
const CATCH_UP_WAIT: Duration = Duration::from_secs(10);

pub enum MetadataSource {
    /// Single node: the file log under `meta/`.
    Local(MetadataStore),
    /// Cluster: the Raft quorum's replicated log.
    Quorum(Arc<Quorum>),
}

impl MetadataSource {
    pub fn image(&self) -> Arc<MetadataImage> {
        match self {
            MetadataSource::Local(store) => store.image(),
            MetadataSource::Quorum(quorum) => quorum.image(),
        }
    }

    pub fn quorum(&self) -> Option<&Arc<Quorum>> {
        match self {
            MetadataSource::Local(_) => None,
            MetadataSource::Quorum(q) => Some(q),
        }
    }

    /// Builds records from the latest image and commits them (see the module docs). `build`
    /// may run more than once in a cluster; its last run's value is returned with the image
    /// after the commit. Blocking: call from a blocking thread or `block_in_place`.
    pub fn commit_with<T>(
        &self,
        build: impl FnMut(&MetadataImage) -> (Vec<MetadataRecord>, T),
    ) -> Result<(T, Arc<MetadataImage>), MetaError> {
        match self {
            MetadataSource::Local(store) => store.commit_with(build),
            MetadataSource::Quorum(quorum) => {
                tokio::runtime::Handle::current().block_on(commit_to_quorum(quorum, build))
            }
        }
    }
}

/// The cluster's commit: build, propose against the image's offset, and build again from
/// the newer image when another change got in first.
pub async fn commit_to_quorum<T>(
    quorum: &Quorum,
    mut build: impl FnMut(&MetadataImage) -> (Vec<MetadataRecord>, T),
) -> Result<(T, Arc<MetadataImage>), MetaError> {
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        let image = quorum.image();
        let (records, value) = build(&image);
        if records.is_empty() {
            return Ok((value, image));
        }
        match quorum.propose(image.offset, records).await {
            Ok(Proposal::Committed { offset }) => {
                let image = quorum.image();
                debug_assert!(
                    image.offset >= offset,
                    "propose returns after the local apply"
                );
                return Ok((value, image));
            }
            Ok(Proposal::Conflict { current_offset }) => {
                let mut images = quorum.subscribe();
                let caught_up = tokio::time::timeout(
                    CATCH_UP_WAIT,
                    images.wait_for(|i| i.offset >= current_offset),
                )
                .await;
                if !matches!(caught_up, Ok(Ok(_))) {
                    return Err(MetaError::Unavailable(format!(
                        "this node's metadata did not reach offset {current_offset} within {CATCH_UP_WAIT:?}"
                    )));
                }
            }
            Err(e) => return Err(MetaError::Unavailable(e.to_string())),
        }
    }
    Err(MetaError::Unavailable(format!(
        "the change lost {MAX_COMMIT_ATTEMPTS} races against concurrent metadata changes"
    )))
}
