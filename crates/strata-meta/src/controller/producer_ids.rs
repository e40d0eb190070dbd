//! Producer ids (Kafka's `ProducerIdControlManager`): blocks of ids reserved in the metadata
//! log, so that no id is handed out twice, across restarts and controllers.

use crate::image::MetadataImage;
use crate::records::MetadataRecord;

/// Producer-id blocks as records.
#[derive(Debug, Default)]
pub struct ProducerIdControl;

impl ProducerIdControl {
    /// Reserves the next block of `block_size` producer ids; returns its first id.
    pub fn allocate_producer_ids(
        &self,
        image: &MetadataImage,
        block_size: i64,
    ) -> (i64, Vec<MetadataRecord>) {
        assert!(block_size > 0);
        let start = image.next_producer_id_block;
        (
            start,
            vec![MetadataRecord::ProducerIds {
                next_block_start: start + block_size,
            }],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_follow_each_other_without_overlap() {
        let control = ProducerIdControl;
        let image = MetadataImage::default();
        let (first, records) = control.allocate_producer_ids(&image, 1000);
        let image = image.apply(&records);
        let (second, records) = control.allocate_producer_ids(&image, 10);
        assert_eq!(second, first + 1000);
        let image = image.apply(&records);
        assert_eq!(image.next_producer_id_block, second + 10);
    }
}
