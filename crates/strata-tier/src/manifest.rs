//! The remote manifest of one partition: which segments are in the tier.
//!
//! An object becomes part of the tier only when the manifest naming it is written; anything
//! under the partition's prefix that the manifest does not name is an orphan of an interrupted
//! upload or deletion and may be deleted. The manifest is one object, rewritten whole on every
//! change (object stores replace an object atomically).

use serde::{Deserialize, Serialize};

use crate::error::TierError;

/// Manifest format version; a reader refuses newer versions rather than misreading them.
pub const MANIFEST_VERSION: u32 = 1;

/// One uploaded segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSegment {
    /// Unique per upload, part of every object name of the segment, so a retried upload of the
    /// same offsets never overwrites objects a manifest already names.
    pub id: String,
    pub base_offset: i64,
    /// Last offset in the segment (inclusive).
    pub end_offset: i64,
    /// Largest record timestamp in the segment (-1 if none).
    pub max_timestamp_ms: i64,
    /// Offset of the first batch holding `max_timestamp_ms` (Kafka's offset of the max
    /// timestamp, for ListOffsets with `MAX_TIMESTAMP`); -1 if unknown, as in manifests
    /// written before the field existed.
    #[serde(default = "unknown_offset")]
    pub max_timestamp_offset: i64,
    /// The segment went through log compaction before it was uploaded (a topic compacted
    /// once, then tiered), so its batches may leave gaps between offsets. Reads check that
    /// other segments' batches are contiguous.
    #[serde(default)]
    pub compacted: bool,
    /// Size of the `.log` object.
    pub size_bytes: u64,
    /// CRC-32C of the whole `.log` object.
    pub crc32c: u32,
    /// Leader epochs that start inside the segment: (epoch, start offset).
    pub leader_epochs: Vec<(i32, i64)>,
    /// Which of the segment's auxiliary files were uploaded (extensions, e.g. "index").
    pub files: Vec<String>,
}

/// Serde default of [`RemoteSegment::max_timestamp_offset`] for manifests written before the
/// field existed.
fn unknown_offset() -> i64 {
    -1
}

/// The tiered part of one partition's log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteManifest {
    pub version: u32,
    /// Offset below which records are deleted (retention, DeleteRecords); segments entirely
    /// below it are deleted from the store.
    pub log_start_offset: i64,
    /// Segments in offset order, contiguous or with gaps (compacted topics), never overlapping.
    pub segments: Vec<RemoteSegment>,
}

impl RemoteManifest {
    pub fn new() -> Self {
        RemoteManifest {
            version: MANIFEST_VERSION,
            log_start_offset: 0,
            segments: Vec::new(),
        }
    }

    /// The offset after the last uploaded segment; `None` when nothing is uploaded.
    pub fn next_offset(&self) -> Option<i64> {
        self.segments.last().map(|s| s.end_offset + 1)
    }

    /// Where the partition's records end in the tier: after its last segment, or at its log
    /// start if retention emptied it (0 for a partition that never uploaded).
    pub fn records_end(&self) -> i64 {
        self.next_offset().unwrap_or(0).max(self.log_start_offset)
    }

    /// The segment holding `offset`, or the first one after it (offsets removed by
    /// compaction fall in a gap).
    pub fn segment_for(&self, offset: i64) -> Option<&RemoteSegment> {
        let i = self.segments.partition_point(|s| s.end_offset < offset);
        self.segments.get(i)
    }

    /// The leader epoch `offset` was written in, as far as the manifest's segments tell
    /// (Kafka's `epochForOffset` over the epochs they record): the last epoch starting at or
    /// before `offset`; `None` when none does.
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.segments
            .iter()
            .take_while(|s| s.base_offset <= offset)
            .flat_map(|s| s.leader_epochs.iter())
            .take_while(|&&(_, start)| start <= offset)
            .last()
            .map(|&(epoch, _)| epoch)
    }

    /// Checks that `segment` can follow the manifest's last segment.
    pub(crate) fn check_append(&self, segment: &RemoteSegment) -> Result<(), TierError> {
        if segment.end_offset < segment.base_offset {
            return Err(TierError::InvalidUpload(format!(
                "segment {}..={} ends before it starts",
                segment.base_offset, segment.end_offset
            )));
        }
        if let Some(next) = self.next_offset() {
            if segment.base_offset < next {
                return Err(TierError::InvalidUpload(format!(
                    "segment at {} overlaps the tier, which ends before {next}",
                    segment.base_offset
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn check(&self) -> Result<(), TierError> {
        if self.version > MANIFEST_VERSION {
            return Err(TierError::Corrupt(format!(
                "manifest version {} is newer than this broker understands ({MANIFEST_VERSION})",
                self.version
            )));
        }
        for w in self.segments.windows(2) {
            if w[1].base_offset <= w[0].end_offset || w[1].end_offset < w[1].base_offset {
                return Err(TierError::Corrupt(format!(
                    "manifest segments {}..={} and {}..={} overlap or are out of order",
                    w[0].base_offset, w[0].end_offset, w[1].base_offset, w[1].end_offset
                )));
            }
        }
        Ok(())
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        // Serialising plain data to a Vec cannot fail.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    pub(crate) fn from_json(bytes: &[u8]) -> Result<Self, TierError> {
        let manifest: RemoteManifest = serde_json::from_slice(bytes)
            .map_err(|e| TierError::Corrupt(format!("unreadable manifest: {e}")))?;
        manifest.check()?;
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, end: i64) -> RemoteSegment {
        RemoteSegment {
            id: format!("s{base}"),
            base_offset: base,
            end_offset: end,
            max_timestamp_ms: -1,
            max_timestamp_offset: -1,
            compacted: false,
            size_bytes: 1,
            crc32c: 0,
            leader_epochs: vec![(0, base)],
            files: vec![],
        }
    }

    #[test]
    fn finds_segments_and_refuses_overlaps() {
        let mut m = RemoteManifest::new();
        assert_eq!(m.next_offset(), None);
        assert_eq!(m.records_end(), 0);
        for s in [seg(0, 9), seg(10, 19), seg(25, 30)] {
            m.check_append(&s).unwrap();
            m.segments.push(s);
        }
        assert_eq!(m.next_offset(), Some(31));
        assert_eq!(m.records_end(), 31);
        let emptied = RemoteManifest {
            log_start_offset: 40,
            ..RemoteManifest::new()
        };
        assert_eq!(emptied.records_end(), 40, "retention emptied it");
        assert_eq!(m.segment_for(0).unwrap().base_offset, 0);
        assert_eq!(m.segment_for(19).unwrap().base_offset, 10);
        assert_eq!(
            m.segment_for(21).unwrap().base_offset,
            25,
            "a gap leads to the next"
        );
        assert!(m.segment_for(31).is_none());
        assert!(m.check_append(&seg(30, 40)).is_err());
        assert!(m.check_append(&seg(45, 44)).is_err());
        let back = RemoteManifest::from_json(&m.to_json()).unwrap();
        assert_eq!(back, m);
        let mut bad = m.clone();
        bad.segments.swap(0, 1);
        assert!(RemoteManifest::from_json(&bad.to_json()).is_err());
        let mut newer = m;
        newer.version = MANIFEST_VERSION + 1;
        assert!(RemoteManifest::from_json(&newer.to_json()).is_err());
        assert!(RemoteManifest::from_json(b"{not json").is_err());
    }

    #[test]
    fn manifests_without_max_timestamp_offset_still_load() {
        let old = br#"{"version":1,"log_start_offset":0,"segments":[{"id":"a","base_offset":0,
            "end_offset":9,"max_timestamp_ms":5,"size_bytes":1,"crc32c":0,
            "leader_epochs":[[0,0]],"files":[]}]}"#;
        let m = RemoteManifest::from_json(old).unwrap();
        assert_eq!(m.segments[0].max_timestamp_offset, -1);
        let mut s = seg(0, 9);
        s.max_timestamp_offset = 7;
        let m = RemoteManifest {
            segments: vec![s],
            ..RemoteManifest::new()
        };
        assert_eq!(RemoteManifest::from_json(&m.to_json()).unwrap(), m);
    }
}
