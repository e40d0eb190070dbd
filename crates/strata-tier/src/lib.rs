//! strata-tier: tiered storage. Rolled log segments live in an object store (a local folder,
//! S3, GCS, Azure, or memory for tests), each partition's tiered part described by one remote
//! manifest; reads below the local log come back from there with every batch's CRC and
//! offsets checked.
//!
//! Reads can go through a [`RemoteReadCache`] shared by all partitions (bounded, chunked,
//! with read-ahead); [`RemotePartition::offset_for_timestamp`] answers ListOffsets by
//! timestamp from the tier; [`TierStore::list_topic_dirs`] and
//! [`TierStore::delete_topic_dir`] collect the data of deleted topics.
//!
//! This crate knows objects and manifests; deciding what to upload and when to delete local
//! segments is the broker's (strata-server).

mod cache;
mod error;
mod manifest;
mod remote_partition;
mod store;

pub use cache::{CacheStats, RemoteReadCache};
pub use error::TierError;
pub use manifest::{RemoteManifest, RemoteSegment, MANIFEST_VERSION};
pub use remote_partition::{AuxData, RemotePartition, SegmentUpload};
pub use store::TierStore;

#[cfg(test)]
mod tests;
