//! Random and mutated frames never make the decoder panic.

use brigade_stages::codec::{self, CodecError, Kind, Route, decode, decode_header, encode};
use burn::prelude::*;
use proptest::prelude::*;

fn valid_frames() -> (Vec<u8>, Vec<u8>) {
    let route = Route {
        run_id: 9,
        step: 1,
        microbatch: 2,
        kind: Kind::Gradient,
        edge: 0,
    };
    encode(
        route,
        TensorData::new((0..24).map(|i| i as f32).collect::<Vec<f32>>(), vec![4, 6]),
    )
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(5000))]

    #[test]
    fn random_bytes_are_errors_not_panics(header in prop::collection::vec(any::<u8>(), 0..200), payload in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&header, payload, 1 << 20);
    }

    #[test]
    fn mutated_headers_never_panic(flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), cut in any::<prop::sample::Index>(), truncate in any::<bool>()) {
        let (mut header, payload) = valid_frames();
        for (i, b) in flips {
            let i = i.index(header.len());
            header[i] = b;
        }
        if truncate {
            header.truncate(cut.index(header.len() + 1));
        }
        if let Ok((h, data)) = decode(&header, payload, 1 << 20) {
            // Whatever decodes is self-consistent and can become a tensor or a clear error.
            prop_assert_eq!(h.payload_len as usize, data.as_bytes().len());
            let _ = codec::to_act(data, &Device::flex());
        }
    }

    #[test]
    fn lying_headers_are_refused(
        shape in prop::collection::vec(prop_oneof![0u64..64, any::<u64>()], 0..6),
        len in prop_oneof![Just(96u64), 0u64..4096, any::<u64>()],
    ) {
        check_header(shape, len)?;
    }

    // Small dimensions and lengths near the payload's 96 bytes: lies that are off by a little
    // (a dimension, a byte count, a rank) rather than absurdly large.
    #[test]
    fn near_miss_headers_are_refused(shape in prop::collection::vec(0u64..30, 0..6), len in prop_oneof![Just(96u64), 0u64..200]) {
        check_header(shape, len)?;
    }
}

/// A header over the 96-byte payload of `valid_frames` (f32 [4, 6]) that claims `shape` and
/// `len`: decodes exactly when it tells the truth (rank 1 to 4, 4 bytes × the shape's
/// elements = `len` = 96), and is refused with the reason otherwise.
fn check_header(shape: Vec<u64>, len: u64) -> Result<(), TestCaseError> {
    let (header, payload) = valid_frames();
    let mut h = decode_header(&header).unwrap();
    h.shape = shape.clone();
    h.payload_len = len;
    let bytes = shape.iter().try_fold(4u64, |acc, &d| acc.checked_mul(d));
    let rank_ok = (1..=4).contains(&shape.len());
    let truthful = rank_ok && bytes == Some(96) && len == 96;
    match decode(&codec::encode_header(&h), payload, 1 << 20) {
        Ok((got, data)) => {
            prop_assert!(
                truthful,
                "accepted a lying header: shape {:?}, payload_len {}",
                shape,
                len
            );
            prop_assert_eq!(got.shape, shape);
            prop_assert_eq!(data.as_bytes().len(), 96);
        }
        Err(e) => {
            prop_assert!(
                !truthful,
                "refused a truthful header (shape {:?}): {}",
                shape,
                e
            );
            let why_ok = match &e {
                CodecError::Rank(r) => !rank_ok && *r == shape.len(),
                CodecError::TooLarge { .. } => len > 1 << 20,
                CodecError::Length { .. } => rank_ok,
                _ => false,
            };
            prop_assert!(
                why_ok,
                "shape {:?}, payload_len {}: refused for the wrong reason: {:?}",
                shape,
                len,
                e
            );
        }
    }
    Ok(())
}
