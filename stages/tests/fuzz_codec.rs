//! Random and mutated frames never make the decoder panic.

use brigade_stages::codec::{self, Kind, Route, decode, decode_header, encode};
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
    fn lying_headers_are_refused(shape in prop::collection::vec(any::<u64>(), 0..6), len in any::<u64>()) {
        let (header, payload) = valid_frames();
        let mut h = decode_header(&header).unwrap();
        h.shape = shape;
        h.payload_len = len;
        let _ = decode(&codec::encode_header(&h), payload, 1 << 20);
    }
}
