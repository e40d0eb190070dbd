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
    /// caller. Returns that value and the image after the commit.
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
        log.append(&records)?;
        let next = Arc::new(current.apply(&records));
        *self.image.write_locked() = next.clone();
        Ok((value, next))
    }
}
