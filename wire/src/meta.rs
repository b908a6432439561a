//! brigade's ZMTP READY metadata: who a connection's peer says it is. Any ZeroMQ socket can
//! send these properties (libzmq's `ZMQ_METADATA`, e.g. pyzmq's
//! `sock.setsockopt(zmq.METADATA, b"X-Brigade-Rank:0")`), so a tool can feed or tap a rank
//! on purpose (without a job secret, on loopback).

use crate::zmtp::Metadata;
use crate::zmtp::command::property;

pub const RUN: &str = "X-Brigade-Run";
pub const JOB: &str = "X-Brigade-Job";
pub const RANK: &str = "X-Brigade-Rank";

/// What a rank announces on its connections: its run id and job hash (16 hex digits) and rank.
pub fn ours(run_id: u64, job_hash: u64, rank: usize) -> Metadata {
    vec![
        (RUN.into(), format!("{run_id:016x}").into_bytes()),
        (JOB.into(), format!("{job_hash:016x}").into_bytes()),
        (RANK.into(), rank.to_string().into_bytes()),
    ]
}

/// The identity a peer claims: (run id, job hash, rank), if it sent all three — as the
/// `X-Brigade-*` properties, or, for ZeroMQ stacks that can only set a socket identity (the
/// `zeromq` crate), as `Identity` = `brigade/<run id>/<job hash>/<rank>`.
pub fn claimed(meta: &Metadata) -> Option<(u64, u64, usize)> {
    let text = |name| property(meta, name).and_then(|v| std::str::from_utf8(v).ok());
    let hex = |s: &str| u64::from_str_radix(s, 16).ok();
    let from_properties = || {
        Some((
            hex(text(RUN)?)?,
            hex(text(JOB)?)?,
            text(RANK)?.parse().ok()?,
        ))
    };
    let from_identity = || {
        let mut parts = text("Identity")?.strip_prefix("brigade/")?.split('/');
        let claim = (
            hex(parts.next()?)?,
            hex(parts.next()?)?,
            parts.next()?.parse().ok()?,
        );
        parts.next().is_none().then_some(claim)
    };
    from_properties().or_else(from_identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_round_trip_and_partial_ones_are_none() {
        assert_eq!(claimed(&ours(0xaa, 0xbb, 3)), Some((0xaa, 0xbb, 3)));
        let mut partial = ours(0xaa, 0xbb, 3);
        partial.remove(0);
        assert_eq!(claimed(&partial), None);
        let garbage: Metadata = vec![
            (RUN.into(), b"zz".to_vec()),
            (JOB.into(), b"1".to_vec()),
            (RANK.into(), b"0".to_vec()),
        ];
        assert_eq!(claimed(&garbage), None);
        let identity: Metadata = vec![(
            "Identity".into(),
            b"brigade/00000000000000aa/00000000000000bb/3".to_vec(),
        )];
        assert_eq!(claimed(&identity), Some((0xaa, 0xbb, 3)));
        let extra: Metadata = vec![("Identity".into(), b"brigade/aa/bb/3/4".to_vec())];
        assert_eq!(claimed(&extra), None);
    }
}
