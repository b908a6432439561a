//! The wire format of a tensor message: a small msgpack header (rmp-serde) and the tensor's
//! raw little-endian bytes as a separate buffer — never element-by-element msgpack, so encoding
//! a 4 MiB activation is one copy.
//!
//! Decoding checks everything a hostile or confused peer could get wrong — magic, version,
//! dtype, rank, that the shape's byte size equals the payload, and a size limit — and returns
//! an error rather than panicking.

use crate::act::Act;
use burn::prelude::*;
use burn::tensor::DType;
use serde::{Deserialize, Serialize};

/// Identifies brigade frames ("BRGD").
pub const MAGIC: u32 = 0x4252_4744;
/// Bumped on any incompatible change of the header or of what its fields mean (2: an
/// all-reduce segment's micro-batch field is `bucket << 40 | lane << 24 | ring step`).
pub const VERSION: u16 = 2;

#[cfg(target_endian = "big")]
compile_error!("brigade's wire format is little-endian; big-endian hosts are not supported");

/// Element types that travel on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireDType {
    F32,
    F16,
    Bf16,
    I64,
}

impl WireDType {
    pub fn size(self) -> usize {
        match self {
            WireDType::F32 => 4,
            WireDType::F16 | WireDType::Bf16 => 2,
            WireDType::I64 => 8,
        }
    }

    fn burn(self) -> DType {
        match self {
            WireDType::F32 => DType::F32,
            WireDType::F16 => DType::F16,
            WireDType::Bf16 => DType::BF16,
            WireDType::I64 => DType::I64,
        }
    }

    fn from_burn(d: DType) -> Option<WireDType> {
        match d {
            DType::F32 | DType::Flex32 => Some(WireDType::F32),
            DType::F16 => Some(WireDType::F16),
            DType::BF16 => Some(WireDType::Bf16),
            DType::I64 => Some(WireDType::I64),
            _ => None,
        }
    }
}

/// What a message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A stage's output, flowing forward.
    Activation,
    /// The gradient of a stage's input, flowing backward.
    Gradient,
    /// A stage's output on validation data, flowing forward during an evaluation (its batch
    /// dimension may be short: the last validation micro-batch).
    Eval,
    /// A segment of a chunk's gradients in a ring all-reduce between replicas (`[1, n]`;
    /// `edge` is the chunk, `microbatch` the ring step).
    Reduce,
}

/// The header frame of a tensor message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub magic: u32,
    pub version: u16,
    /// Identifies the training job; frames from another run are refused.
    pub run_id: u64,
    /// 0-based optimizer step.
    pub step: u64,
    pub microbatch: u64,
    pub kind: Kind,
    /// The job plan's edge the tensor travels on (a rank receives several edges on one socket).
    #[serde(default)]
    pub edge: u32,
    /// Shape including the batch dimension.
    pub shape: Vec<u64>,
    pub dtype: WireDType,
    /// Bytes in the payload frame.
    pub payload_len: u64,
}

/// Routing fields of a message (everything in the header but the tensor's own description).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub run_id: u64,
    pub step: u64,
    pub microbatch: u64,
    pub kind: Kind,
    pub edge: u32,
}

/// Why a frame was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CodecError {
    #[error("header is not valid msgpack for a brigade frame: {0}")]
    Header(String),
    #[error("not a brigade frame (magic {0:#010x})")]
    Magic(u32),
    #[error(
        "frame version {got}, this brigade speaks version {VERSION}; run the same brigade version on every host"
    )]
    Version { got: u16 },
    #[error("tensor of rank {0}; stage tensors have rank 1 to 4")]
    Rank(usize),
    #[error(
        "shape {shape:?} of {dtype:?} needs {expected} bytes, the header says {declared} and the payload has {got}"
    )]
    Length {
        shape: Vec<u64>,
        dtype: WireDType,
        expected: u64,
        declared: u64,
        got: u64,
    },
    #[error("payload of {got} bytes exceeds the limit of {limit} bytes")]
    TooLarge { got: u64, limit: u64 },
    #[error("cannot read the tensor back from the device: {0}")]
    ReadBack(String),
    #[error("dtype {0:?} cannot be sent")]
    UnsupportedDType(String),
}

/// Encodes tensor data: (header frame, payload frame).
pub fn encode(route: Route, data: TensorData) -> Result<(Vec<u8>, Vec<u8>), CodecError> {
    let (header, payload) = encode_shared(route, data)?;
    Ok((header, payload.to_vec()))
}

/// Encodes tensor data without copying the payload: (header frame, the tensor's own bytes).
pub fn encode_shared(
    route: Route,
    data: TensorData,
) -> Result<(Vec<u8>, burn::tensor::Bytes), CodecError> {
    let shape: Vec<usize> = data.shape().to_vec();
    let dtype = data.dtype();
    let payload = data.into_bytes();
    Ok((header_for(route, dtype, &shape, payload.len())?, payload))
}

fn header_for(
    route: Route,
    dtype: DType,
    shape: &[usize],
    payload_len: usize,
) -> Result<Vec<u8>, CodecError> {
    let dtype = WireDType::from_burn(dtype)
        .ok_or_else(|| CodecError::UnsupportedDType(format!("{dtype:?}")))?;
    Ok(encode_header(&Header {
        magic: MAGIC,
        version: VERSION,
        run_id: route.run_id,
        step: route.step,
        microbatch: route.microbatch,
        kind: route.kind,
        edge: route.edge,
        shape: shape.iter().map(|&d| d as u64).collect(),
        dtype,
        payload_len: payload_len as u64,
    }))
}

/// The header of `payload_len` bytes of f32 values of `shape` sent from a buffer of the
/// sender's own (an all-reduce segment).
pub fn f32_header(
    route: Route,
    shape: &[usize],
    payload_len: usize,
) -> Result<Vec<u8>, CodecError> {
    header_for(route, DType::F32, shape, payload_len)
}

/// A tensor's bytes on their way to the wire.
pub enum Payload {
    /// The first `len` bytes of the tensor's own storage, shared with it (no copy).
    Shared(std::sync::Arc<burn::tensor::Bytes>, usize),
    /// A read-back copy (another backend, or a strided view).
    Owned(burn::tensor::Bytes),
}

impl std::ops::Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Payload::Shared(b, len) => &b[..*len],
            Payload::Owned(b) => b,
        }
    }
}

/// Encodes an activation: (header frame, payload). On the flex backend a contiguous tensor's
/// storage is shared with the payload instead of read back, so sending an activation the stage
/// keeps for its backward pass costs no copy (flex copies on write while the payload lives).
pub fn encode_act(route: Route, act: &Act) -> Result<(Vec<u8>, Payload), CodecError> {
    if let Some(frames) = encode_in_place(route, act)? {
        return Ok(frames);
    }
    encode_read_back(route, act.to_data())
}

/// [`encode_act`] when the activation's bytes can be sent where they lie (a contiguous flex
/// tensor in host memory); `None` when they must be read back first.
pub fn encode_in_place(route: Route, act: &Act) -> Result<Option<(Vec<u8>, Payload)>, CodecError> {
    if let Some(flex) = flex_primitive(act) {
        let len = flex.layout().num_elements() * flex.dtype().size();
        if flex.is_contiguous() && flex.layout().start_offset() == 0 && flex.bytes().len() >= len {
            let header = header_for(route, flex.dtype(), &act.dims(), len)?;
            return Ok(Some((header, Payload::Shared(flex.data_arc(), len))));
        }
    }
    Ok(None)
}

/// Encodes data read back from the device.
pub fn encode_read_back(route: Route, data: TensorData) -> Result<(Vec<u8>, Payload), CodecError> {
    let (header, payload) = encode_shared(route, data)?;
    Ok((header, Payload::Owned(payload)))
}

/// Reads an activation back to the host without blocking the caller's thread: a GPU copy is
/// awaited, so an async I/O task keeps serving its other links meanwhile.
pub async fn read_back(act: &Act) -> Result<TensorData, CodecError> {
    let data = match act {
        Act::Tokens(t) => t.to_data_async().await,
        Act::F2(t) => t.to_data_async().await,
        Act::F3(t) => t.to_data_async().await,
        Act::F4(t) => t.to_data_async().await,
    };
    data.map_err(|e| CodecError::ReadBack(e.to_string()))
}

/// The flex tensor behind an activation (`None` on other backends).
fn flex_primitive(act: &Act) -> Option<burn_flex::FlexTensor> {
    use burn_flex::Flex;
    match act {
        Act::Tokens(t) => t.clone().inner().try_into_primitive::<Flex>().ok(),
        Act::F2(t) => t.clone().inner().try_into_primitive::<Flex>().ok(),
        Act::F3(t) => t.clone().inner().try_into_primitive::<Flex>().ok(),
        Act::F4(t) => t.clone().inner().try_into_primitive::<Flex>().ok(),
    }
}

/// The msgpack bytes of a header.
pub fn encode_header(header: &Header) -> Vec<u8> {
    rmp_serde::to_vec_named(header).expect("a header always serialises")
}

/// Decodes and checks a header frame alone (before touching the payload).
pub fn decode_header(frame: &[u8]) -> Result<Header, CodecError> {
    let header: Header =
        rmp_serde::from_slice(frame).map_err(|e| CodecError::Header(e.to_string()))?;
    if header.magic != MAGIC {
        return Err(CodecError::Magic(header.magic));
    }
    if header.version != VERSION {
        return Err(CodecError::Version {
            got: header.version,
        });
    }
    if header.shape.is_empty() || header.shape.len() > 4 {
        return Err(CodecError::Rank(header.shape.len()));
    }
    Ok(header)
}

/// Decodes a (header, payload) pair into tensor data, refusing payloads over `limit` bytes.
pub fn decode(
    header_frame: &[u8],
    payload: Vec<u8>,
    limit: u64,
) -> Result<(Header, TensorData), CodecError> {
    decode_shared(
        header_frame,
        burn::tensor::Bytes::from_bytes_vec(payload),
        limit,
    )
}

/// [`decode`] taking the payload as burn bytes (e.g. a received frame, without copying it).
pub fn decode_shared(
    header_frame: &[u8],
    payload: burn::tensor::Bytes,
    limit: u64,
) -> Result<(Header, TensorData), CodecError> {
    let header = decode_checked(header_frame, payload.len(), limit)?;
    let data = payload_data(&header, payload)?;
    Ok((header, data))
}

/// The payload of a message whose header [`decode_checked`] passed, as tensor data.
pub fn payload_data(
    header: &Header,
    payload: burn::tensor::Bytes,
) -> Result<TensorData, CodecError> {
    let shape: Vec<usize> = header.shape.iter().map(|&d| d as usize).collect();
    TensorData::try_from_bytes(payload, shape, header.dtype.burn())
        .map_err(|e| CodecError::Header(e.to_string()))
}

/// The header of a message whose payload is `payload_len` bytes, checked against the payload
/// and `limit` (what [`decode_shared`] checks before it takes the payload).
pub fn decode_checked(
    header_frame: &[u8],
    payload_len: usize,
    limit: u64,
) -> Result<Header, CodecError> {
    let header = decode_header(header_frame)?;
    let got = payload_len as u64;
    if got > limit || header.payload_len > limit {
        return Err(CodecError::TooLarge {
            got: got.max(header.payload_len),
            limit,
        });
    }
    let expected = header
        .shape
        .iter()
        .try_fold(header.dtype.size() as u64, |acc, &d| acc.checked_mul(d))
        .unwrap_or(u64::MAX);
    if expected != got || header.payload_len != got {
        return Err(CodecError::Length {
            shape: header.shape.clone(),
            dtype: header.dtype,
            expected,
            declared: header.payload_len,
            got,
        });
    }
    Ok(header)
}

/// Turns decoded data into a stage activation on `device`, in the dtype it travelled in
/// (bf16 and f16 stay half precision: that is the training dtype of the job).
pub fn to_act(data: TensorData, device: &Device) -> Result<Act, CodecError> {
    let shape = data.shape().to_vec();
    let dtype = data.dtype();
    if dtype == DType::I64 {
        if shape.len() != 2 {
            return Err(CodecError::Rank(shape.len()));
        }
        return Ok(Act::Tokens(Tensor::from_data(data, device)));
    }
    let opts = (device, dtype);
    match shape.len() {
        2 => Ok(Act::F2(Tensor::from_data(data, opts))),
        3 => Ok(Act::F3(Tensor::from_data(data, opts))),
        4 => Ok(Act::F4(Tensor::from_data(data, opts))),
        r => Err(CodecError::Rank(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{bf16, f16};

    fn route() -> Route {
        Route {
            run_id: 7,
            step: 3,
            microbatch: 5,
            kind: Kind::Activation,
            edge: 2,
        }
    }

    fn roundtrip(data: TensorData) {
        let (h, p) = encode(route(), data.clone()).unwrap();
        let (header, back) = decode(&h, p, u64::MAX).unwrap();
        assert_eq!(header.microbatch, 5);
        assert_eq!(back.dtype(), data.dtype());
        assert_eq!(back.shape(), data.shape());
        assert_eq!(
            back.as_bytes(),
            data.as_bytes(),
            "bytes must round-trip exactly"
        );
    }

    #[test]
    fn sent_activations_share_storage_and_stay_unchanged_by_later_ops() {
        let dev = Device::flex();
        let vals: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let act = Act::from_f32(vals.clone(), &[3, 4], &dev);
        let (h, payload) = encode_act(route(), &act).unwrap();
        assert!(matches!(payload, Payload::Shared(..)), "flex shares");
        // flex mutates in place only what it owns alone: the payload keeps the sent values.
        let Act::F2(t) = act else { unreachable!() };
        let t = t.add_scalar(1.0).mul_scalar(2.0);
        assert_eq!(t.into_data().try_to_vec::<f32>().unwrap()[1], 4.0);
        let (header, back) = decode_shared(
            &h,
            burn::tensor::Bytes::from_bytes_vec(payload.to_vec()),
            1 << 20,
        )
        .unwrap();
        assert_eq!(header.shape, vec![3, 4]);
        assert_eq!(back.try_to_vec::<f32>().unwrap(), vals);
    }

    #[test]
    fn strided_activations_are_read_back_in_logical_order() {
        let dev = Device::flex();
        let t = Tensor::<2>::from_data(
            TensorData::new((0..6).map(|i| i as f32).collect::<Vec<_>>(), [2, 3]),
            &dev,
        );
        let act = Act::F2(t.transpose());
        let (h, payload) = encode_act(route(), &act).unwrap();
        assert!(matches!(payload, Payload::Owned(_)));
        let (header, back) = decode_shared(
            &h,
            burn::tensor::Bytes::from_bytes_vec(payload.to_vec()),
            1 << 20,
        )
        .unwrap();
        assert_eq!(header.shape, vec![3, 2]);
        assert_eq!(
            back.try_to_vec::<f32>().unwrap(),
            vec![0., 3., 1., 4., 2., 5.]
        );
    }

    #[test]
    fn roundtrips_every_wire_dtype_exactly() {
        let f: Vec<f32> = (0..24)
            .map(|i| (i as f32 - 11.5) * 0.37e-3)
            .chain([f32::MAX, f32::MIN_POSITIVE, -0.0])
            .collect();
        roundtrip(TensorData::new(f.clone(), vec![3, 9]));
        roundtrip(TensorData::new(
            f.iter().map(|&v| f16::from_f32(v)).collect::<Vec<_>>(),
            vec![27, 1],
        ));
        roundtrip(TensorData::new(
            f.iter().map(|&v| bf16::from_f32(v)).collect::<Vec<_>>(),
            vec![1, 3, 9],
        ));
        roundtrip(TensorData::new(
            vec![0i64, -1, i64::MAX, i64::MIN, 42, 7],
            vec![2, 3],
        ));
    }

    #[test]
    fn half_precision_activations_arrive_in_their_dtype() {
        let dev = Device::flex();
        for (data, dtype) in [
            (
                TensorData::new(vec![bf16::from_f32(1.5); 6], vec![2, 3]),
                DType::BF16,
            ),
            (
                TensorData::new(vec![f16::from_f32(-0.25); 6], vec![2, 3]),
                DType::F16,
            ),
        ] {
            let act = to_act(data.clone(), &dev).unwrap();
            assert_eq!(act.to_data().dtype(), dtype, "not widened on arrival");
            let (h, p) = encode_act(route(), &act).unwrap();
            let (header, back) = decode(&h, p.to_vec(), u64::MAX).unwrap();
            assert_eq!(header.payload_len, 12, "two bytes per element on the wire");
            assert_eq!(back.as_bytes(), data.as_bytes());
        }
    }

    #[test]
    fn corrupt_frames_are_errors() {
        let (h, p) = encode(route(), TensorData::new(vec![1.0f32; 12], vec![3, 4])).unwrap();
        assert!(matches!(
            decode(&h, p[..40].to_vec(), u64::MAX),
            Err(CodecError::Length { .. })
        ));
        assert!(matches!(
            decode(&h[..h.len() / 2], p.clone(), u64::MAX),
            Err(CodecError::Header(_))
        ));
        assert!(matches!(
            decode(&h, p.clone(), 16),
            Err(CodecError::TooLarge { .. })
        ));
        let mut bad = decode_header(&h).unwrap();
        bad.magic = 1;
        assert_eq!(
            decode(&encode_header(&bad), p.clone(), u64::MAX).unwrap_err(),
            CodecError::Magic(1)
        );
        let mut huge = decode_header(&h).unwrap();
        huge.shape = vec![u64::MAX, u64::MAX];
        assert!(matches!(
            decode(&encode_header(&huge), p, u64::MAX),
            Err(CodecError::Length { .. })
        ));
    }
}
