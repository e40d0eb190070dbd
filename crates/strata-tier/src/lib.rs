//! strata-tier: tiered storage. Rolled log segments live in an object store (a local folder,
//! S3, GCS, Azure, or memory for tests), each partition's tiered part described by one remote
//! manifest; reads below the local log come back from there with every batch's CRC checked.
//!
//! This crate knows objects and manifests; deciding what to upload and when to delete local
//! segments is the broker's (strata-server).

mod error;
mod manifest;
mod remote_partition;
mod store;

pub use error::TierError;
pub use manifest::{RemoteManifest, RemoteSegment, MANIFEST_VERSION};
pub use remote_partition::{RemotePartition, SegmentUpload};
pub use store::TierStore;

#[cfg(test)]
mod tests;
