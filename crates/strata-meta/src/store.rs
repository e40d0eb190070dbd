//! The metadata store: the log plus the current image, committed through one lock so that
//! records are validated against, and applied to, exactly the image they were built from.

use std::sync::{Arc, Mutex, RwLock};

use strata_durable::{LockExt, RwLockExt};

use crate::image::MetadataImage;
use crate::log::MetadataLog;
use crate::records::MetadataRecord;
use crate::MetaError;

pub struct MetadataStore {
    log: Mutex<Box<dyn MetadataLog>>,
    image: RwLock<Arc<MetadataImage>>,
}

impl MetadataStore {
    /// Replays the log into an image.
    pub fn open(mut log: Box<dyn MetadataLog>) -> Result<Self, MetaError> {
        let mut image = MetadataImage::default();
        for batch in log.replay()? {
            image = image.apply(&batch);
        }
        tracing::info!(
            offset = image.offset,
            topics = image.topics().count(),
            "metadata image loaded"
        );
        Ok(Self {
            log: Mutex::new(log),
            image: RwLock::new(Arc::new(image)),
        })
    }

    /// The current image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read_locked().clone()
    }

    /// Builds records from the current image with `build` and commits them, all under the
    /// commit lock. `build` returns the records to write (possibly none) and a value for the
    /// caller. Returns that value and the image after the commit. Records that do not fit
    /// the image are refused ([`MetaError::InvalidBatch`]) before anything is written.
    pub fn commit_with<T>(
        &self,
        mut build: impl FnMut(&MetadataImage) -> (Vec<MetadataRecord>, T),
    ) -> Result<(T, Arc<MetadataImage>), MetaError> {
        let mut log = self.log.locked();
        let current = self.image();
        let (records, value) = build(&current);
        if records.is_empty() {
            return Ok((value, current));
        }
        let next = Arc::new(current.try_apply(&records)?);
        log.append(&records)?;
        *self.image.write_locked() = next.clone();
        Ok((value, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::FileMetadataLog;

    #[test]
    fn a_batch_that_does_not_fit_is_refused_before_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.log");
        let open = || MetadataStore::open(Box::new(FileMetadataLog::open(&path).unwrap())).unwrap();
        let topic = |name: &str| MetadataRecord::Topic {
            name: name.into(),
            topic_id: uuid::Uuid::new_v4(),
        };
        let store = open();
        store.commit_with(|_| (vec![topic("t")], ())).unwrap();
        let error = store
            .commit_with(|_| (vec![topic("u"), topic("t")], ()))
            .unwrap_err();
        assert!(matches!(error, MetaError::InvalidBatch(_)), "{error}");
        assert_eq!(store.image().offset, 1);
        assert!(store.image().topic("u").is_none());
        drop(store);
        // Nothing of the refused batch reached the log: a restart replays cleanly.
        let reopened = open();
        assert_eq!(reopened.image().offset, 1);
        assert!(reopened.image().topic("u").is_none());
    }
}
