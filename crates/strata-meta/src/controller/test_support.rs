//! What the managers' tests share: an image with registered brokers, and topics created
//! through the [`Controller`].

use uuid::Uuid;

use super::{
    BrokerRegistrationRequest, Controller, ControllerError, CreateTopicSpec, NO_UNCLEAN_ELECTION,
};
use crate::image::MetadataImage;

pub(super) fn spec(name: &str, partitions: i32) -> CreateTopicSpec {
    CreateTopicSpec {
        name: name.into(),
        num_partitions: partitions,
        replication_factor: -1,
        ..Default::default()
    }
}

/// An image with brokers `ids` registered and unfenced, racks "r<id % 2>".
pub(super) fn cluster(ids: &[i32]) -> MetadataImage {
    let controller = Controller::new(1);
    let mut image = MetadataImage::default();
    for &broker_id in ids {
        let request = BrokerRegistrationRequest {
            broker_id,
            incarnation_id: Uuid::new_v4(),
            host: "localhost".into(),
            port: 9092 + broker_id,
            rack: Some(format!("r{}", broker_id % 2)),
            supported_features: crate::features::supported(),
            listeners: Vec::new(),
        };
        let (epoch, records) = controller.register_broker(&image, &request, NO_UNCLEAN_ELECTION);
        image = image.apply(&records);
        image =
            image.apply(&controller.unfence_broker(&image, broker_id, epoch, NO_UNCLEAN_ELECTION));
    }
    image
}

pub(super) fn single() -> MetadataImage {
    cluster(&[1])
}

pub(super) fn create(
    image: &MetadataImage,
    s: &CreateTopicSpec,
) -> Result<MetadataImage, ControllerError> {
    let (_, records) = Controller::new(1).create_topic(image, s, (1, 1))?;
    Ok(image.apply(&records))
}
