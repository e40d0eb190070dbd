//! Cluster metadata as a log, in KRaft's model.
//!
//! Every change (topics, partitions, configs, producer-id blocks) is a [`MetadataRecord`]
//! appended to a [`MetadataLog`] and folded into an immutable [`MetadataImage`]. The
//! [`Controller`] turns requests into records after validating them against the current image;
//! the [`MetadataStore`] makes them durable and publishes the next image. Request handlers only
//! read images. Replicating the log (openraft) replaces [`FileMetadataLog`] behind the same trait.

pub mod acl;
pub mod authorizer;
pub mod client_quota;
pub mod config;
pub mod controller;
pub mod features;
pub mod frame;
pub mod image;
pub mod log;
pub mod partition_change;
pub mod records;
pub mod scram;
pub mod store;
pub mod tenant;

pub use controller::{
    Controller, ControllerError, CreateTopicSpec, UncleanElection, NO_UNCLEAN_ELECTION,
};
pub use image::{BrokerRegistration, ImageError, MetadataImage, PartitionImage, TopicImage};
pub use log::{FileMetadataLog, MetadataLog};
pub use records::{ConfigResource, MetadataRecord};
pub use store::MetadataStore;

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt metadata log: {0}")]
    Corrupt(String),
    #[error("metadata batch of {size_bytes} bytes is too large")]
    TooLarge { size_bytes: usize },
    /// The metadata quorum could not commit (no active controller within the wait, or too
    /// many concurrent changes). Retriable: nothing was written.
    #[error("metadata quorum unavailable: {0}")]
    Unavailable(String),
    /// A batch that does not fit the image it was built from (a controller bug): refused
    /// before it is written, since once in the log it would fail every replay.
    #[error("metadata batch does not apply to the image: {0}")]
    InvalidBatch(#[from] image::ImageError),
}

impl MetaError {
    pub(crate) fn io(context: String, source: std::io::Error) -> Self {
        MetaError::Io { context, source }
    }
}
