//! Errors of the tier.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum TierError {
    /// The `--object-store` URL or an option is not usable.
    #[error("object store configuration: {0}")]
    Config(String),
    /// The object store failed (unreachable, denied, missing object, ...). Retriable.
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
    /// Reading a local segment file to upload it failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// Remote data or a manifest does not match what was written: a CRC mismatch, a torn
    /// object, an unreadable manifest. Never answered with the data.
    #[error("corrupt remote data: {0}")]
    Corrupt(String),
    /// A read at an offset the tier does not hold (below its first segment, or no segment at
    /// all): retention or DeleteRecords removed it meanwhile, or the tier lost it.
    #[error("offset {0} is not in the tier")]
    NotInTier(i64),
    /// An upload that would break the manifest's invariants (overlapping or out-of-order
    /// segments): a caller bug, refused rather than recorded.
    #[error("invalid upload: {0}")]
    InvalidUpload(String),
}

impl TierError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> TierError {
        let context = context.into();
        move |source| TierError::Io { context, source }
    }
}
