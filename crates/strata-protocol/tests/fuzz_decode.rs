//! Property-based fuzzing of framing and request decoding: arbitrary bytes must produce either a
//! request or a typed error, never a panic or an unbounded allocation. Runs in `cargo test`; the
//! case count is kept small so the suite stays fast (raise `PROPTEST_CASES` to fuzz longer).

use bytes::BytesMut;
use proptest::prelude::*;
use strata_protocol::{decode_request, supported_versions, FrameDecoder};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn frame_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let decoder = FrameDecoder::new(256);
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(frame)) = decoder.decode(&mut buf) {
            prop_assert!(frame.len() <= 256);
        }
    }

    #[test]
    fn random_bodies_of_served_apis_never_panic(
        which in 0usize..64,
        version_offset in 0i16..20,
        correlation_id in any::<i32>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let table = supported_versions();
        let served = table[which % table.len()];
        let span = served.max_version - served.min_version + 1;
        let version = served.min_version + version_offset % span;
        let mut frame = Vec::with_capacity(8 + body.len());
        frame.extend_from_slice(&(served.api_key as i16).to_be_bytes());
        frame.extend_from_slice(&version.to_be_bytes());
        frame.extend_from_slice(&correlation_id.to_be_bytes());
        frame.extend_from_slice(&body);
        let _ = decode_request(frame.into());
    }

    /// Array lengths near i32::MAX right after a valid header: the case that used to make the
    /// codec preallocate gigabytes (see vendor/README.md).
    #[test]
    fn huge_array_lengths_do_not_allocate(which in 0usize..64, len in 0x1000_0000u32..=0x7fff_ffff) {
        let table = supported_versions();
        let served = table[which % table.len()];
        let mut frame = Vec::new();
        frame.extend_from_slice(&(served.api_key as i16).to_be_bytes());
        frame.extend_from_slice(&served.min_version.to_be_bytes());
        frame.extend_from_slice(&1i32.to_be_bytes());
        frame.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
        for _ in 0..4 {
            frame.extend_from_slice(&len.to_be_bytes());
        }
        let _ = decode_request(frame.into());
    }
}
