//! Tables of (connection, event) → verdict, for the link of rank 1 receiving from rank 0.

use super::*;
use crate::transport::net::meta;

const RUN: u64 = 0xaa;
const JOB: u64 = 0xbb;

fn policy() -> LinkPolicy {
    LinkPolicy::new(LinkIdentity {
        rank: 1,
        peer: 0,
        endpoint: "ipc:///run/e0-act.ipc".into(),
        run_id: RUN,
        job_hash: JOB,
    })
}

fn frame(bytes: &[u8]) -> Frame {
    Frame::from_elems(bytes.to_vec())
}

/// An event of the table: what one connection delivers.
enum Ev {
    /// The ZMTP handshake finished with this READY metadata.
    Ready(Metadata),
    /// A one-frame control message from `from` of run `run` and job `job`.
    Control {
        kind: ControlKind,
        run: u64,
        job: u64,
        from: usize,
    },
    /// A two-frame tensor message (content irrelevant to the policy).
    Tensor,
    Three,
    Error(ZmtpError),
}

/// READY metadata claiming (run, job, rank).
fn ready(run: u64, job: u64, rank: usize) -> Ev {
    Ev::Ready(meta::ours(run, job, rank, 0))
}

fn ctl(kind: ControlKind) -> Ev {
    Ev::Control {
        kind,
        run: RUN,
        job: JOB,
        from: 0,
    }
}

/// The verdicts' shapes, for tables.
#[derive(Debug, PartialEq)]
enum V {
    Nothing,
    Refuse(&'static str),
    Peer,
    Tensor,
    Done,
    Fail(&'static str),
}

fn run(p: &mut LinkPolicy, table: Vec<(u64, Ev, V)>) {
    for (i, (conn, ev, want)) in table.into_iter().enumerate() {
        let got = match ev {
            Ev::Error(e) => p.on_error(conn, e),
            Ev::Ready(m) => p.on_ready(conn, &m),
            Ev::Control {
                kind,
                run,
                job,
                from,
            } => p.on_message(
                conn,
                vec![frame(&Control::new(kind, run, job, from).encode())],
            ),
            Ev::Tensor => p.on_message(conn, vec![frame(b"header"), frame(&[0; 16])]),
            Ev::Three => p.on_message(conn, vec![frame(b"a"), frame(b"b"), frame(b"c")]),
        };
        let ok = match (&got, &want) {
            (Verdict::Nothing, V::Nothing)
            | (Verdict::Peer, V::Peer)
            | (Verdict::Tensor(..), V::Tensor)
            | (Verdict::Done, V::Done) => true,
            (Verdict::Refuse(why), V::Refuse(s)) => why.contains(s),
            (Verdict::Fail(e), V::Fail(s)) => e.to_string().contains(s),
            _ => false,
        };
        assert!(
            ok,
            "row {i} (connection {conn}): got {got:?}, want {want:?}"
        );
    }
}

#[test]
fn the_first_ready_naming_the_peer_makes_it_the_peer() {
    let mut p = policy();
    run(
        &mut p,
        vec![
            // Strangers' garbage and clean closes: refused or ignored, never fatal.
            (
                1,
                Ev::Error(ZmtpError::NotZmtp([0xff; 10])),
                V::Refuse("not a ZeroMQ peer"),
            ),
            (
                2,
                Ev::Error(ZmtpError::OldVersion(1)),
                V::Refuse("ZMTP 2.0"),
            ),
            (
                3,
                Ev::Error(ZmtpError::Auth("the box does not open".into())),
                V::Refuse("authentication failed (CURVE)"),
            ),
            (
                4,
                Ev::Error(ZmtpError::TooLarge {
                    len: 1 << 40,
                    limit: 65536,
                }),
                V::Refuse("exceeds"),
            ),
            (5, Ev::Error(ZmtpError::Closed), V::Nothing),
            // A ZeroMQ socket that does not say who it is, and what it sends.
            (
                6,
                Ev::Ready(Vec::new()),
                V::Refuse("without brigade's X-Brigade-Run"),
            ),
            (6, Ev::Tensor, V::Refuse("not the peer")),
            // The peer.
            (7, ready(RUN, JOB, 0), V::Peer),
            (7, ctl(ControlKind::Heartbeat), V::Nothing),
            (7, Ev::Tensor, V::Tensor),
            // Once there is a peer, others are strangers, whatever they claim.
            (
                8,
                ready(RUN, JOB, 0),
                V::Refuse("a second connection claims to be rank 0"),
            ),
            (9, ready(RUN, 0xcc, 0), V::Refuse("different job plan")),
            (8, Ev::Tensor, V::Refuse("not the peer")),
            (8, Ev::Three, V::Refuse("message of 3 frames")),
            (8, ctl(ControlKind::Bye), V::Refuse("not the peer")),
            (7, ctl(ControlKind::Bye), V::Done),
            // The peer closing after its bye is the end of the link, not a loss.
            (7, Ev::Error(ZmtpError::Closed), V::Done),
        ],
    );
    assert!(p.is_peer(7) && !p.is_peer(8));
}

#[test]
fn a_mis_wired_job_fails_at_once() {
    for (ev, want) in [
        (ready(RUN, 0xcc, 0), V::Fail("different job plan")),
        (
            ready(0xdd, JOB, 0),
            V::Fail("peer belongs to run 00000000000000dd"),
        ),
        (
            ready(RUN, JOB, 2),
            V::Fail("says it is rank 2, expected rank 0"),
        ),
    ] {
        run(&mut policy(), vec![(1, ev, want)]);
    }
    // Another plan is its own error: the rank turns it into bad input naming its plan file.
    assert!(matches!(
        policy().on_ready(1, &meta::ours(RUN, 0xcc, 0, 0)),
        Verdict::Fail(TransportError::OtherPlan { .. })
    ));
}

#[test]
fn the_peers_own_faults_are_fatal() {
    for (ev, want) in [
        (Ev::Three, V::Fail("bad frame from stage 0")),
        (
            Ev::Control {
                kind: ControlKind::Bye,
                run: 0xdd,
                job: JOB,
                from: 0,
            },
            V::Fail("bad frame"),
        ),
        (
            Ev::Error(ZmtpError::TooLarge { len: 9, limit: 8 }),
            V::Fail("bad frame"),
        ),
        (Ev::Error(ZmtpError::FrameCount(3)), V::Fail("bad frame")),
        (Ev::Error(ZmtpError::Closed), V::Fail("lost peer stage 0")),
    ] {
        run(
            &mut policy(),
            vec![(1, ready(RUN, JOB, 0), V::Peer), (1, ev, want)],
        );
    }
}

#[test]
fn timeouts_say_what_was_missing() {
    let p = policy();
    assert!(matches!(
        p.on_timeout(5, 60),
        TransportError::NeverConnected { secs: 60, .. }
    ));
    let mut p = policy();
    run(
        &mut p,
        vec![(
            1,
            Ev::Error(ZmtpError::Auth("x".into())),
            V::Refuse("authentication failed"),
        )],
    );
    let e = p.on_timeout(5, 60).to_string();
    assert!(
        e.contains("no authenticated peer within 60 s") && e.contains("authentication failed"),
        "{e}"
    );
    let mut p = policy();
    run(&mut p, vec![(1, ready(RUN, JOB, 0), V::Peer)]);
    let e = p.on_timeout(5, 60).to_string();
    assert!(e.contains("no message or heartbeat for 5 s"), "{e}");
}
