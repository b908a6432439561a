//! Tables of (connection, event) → verdict, for rank 1's listener, which hears from ranks 0
//! and 2.

use super::*;
use crate::meta;

const RUN: u64 = 0xaa;
const JOB: u64 = 0xbb;

fn policy() -> LinkPolicy {
    LinkPolicy::new(LinkIdentity {
        rank: 1,
        peers: vec![0, 2],
        endpoint: "ipc:///run/rank1.ipc".into(),
        run_id: RUN,
        job_hash: JOB,
    })
}

fn frame(bytes: &[u8]) -> Frame {
    Frame::from(bytes.to_vec())
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
    Ev::Ready(meta::ours(run, job, rank))
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
    Peer(usize),
    Tensor(usize),
    Done(usize),
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
            (Verdict::Nothing, V::Nothing) => true,
            (Verdict::Peer(a), V::Peer(b))
            | (Verdict::Tensor(a, ..), V::Tensor(b))
            | (Verdict::Done(a), V::Done(b)) => a == b,
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
fn each_expected_rank_gets_one_connection() {
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
            (6, Ev::Tensor, V::Refuse("not a peer")),
            // The peers.
            (7, ready(RUN, JOB, 0), V::Peer(0)),
            (7, ctl(ControlKind::Heartbeat), V::Nothing),
            (7, Ev::Tensor, V::Tensor(0)),
            (8, ready(RUN, JOB, 2), V::Peer(2)),
            (8, Ev::Tensor, V::Tensor(2)),
            // Once there are peers, others are strangers, whatever they claim.
            (
                9,
                ready(RUN, JOB, 0),
                V::Refuse("a second connection claims to be rank 0"),
            ),
            (10, ready(RUN, 0xcc, 2), V::Refuse("different job plan")),
            (10, ready(RUN, JOB, 5), V::Refuse("hears from ranks [0, 2]")),
            (9, Ev::Tensor, V::Refuse("not a peer")),
            (9, Ev::Three, V::Refuse("message of 3 frames")),
            (9, ctl(ControlKind::Bye), V::Refuse("not a peer")),
            (7, ctl(ControlKind::Bye), V::Done(0)),
            // A peer closing after its bye is the end of its part, not a loss.
            (7, Ev::Error(ZmtpError::Closed), V::Nothing),
        ],
    );
    assert_eq!(
        (p.peer_of(7), p.peer_of(8), p.peer_of(9)),
        (Some(0), Some(2), None)
    );
    assert!(p.all_connected() && !p.all_done());
    run(
        &mut p,
        vec![(
            8,
            Ev::Control {
                kind: ControlKind::Bye,
                run: RUN,
                job: JOB,
                from: 2,
            },
            V::Done(2),
        )],
    );
    assert!(p.all_done());
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
            ready(RUN, JOB, 5),
            V::Fail("rank 1 hears from ranks [0, 2]"),
        ),
    ] {
        run(&mut policy(), vec![(1, ev, want)]);
    }
    // Another plan is its own error: the rank turns it into bad input naming its plan file.
    assert!(matches!(
        policy().on_ready(1, &meta::ours(RUN, 0xcc, 0)),
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
            vec![(1, ready(RUN, JOB, 0), V::Peer(0)), (1, ev, want)],
        );
    }
}

#[test]
fn timeouts_say_what_was_missing() {
    let mut p = policy();
    run(&mut p, vec![(1, ready(RUN, JOB, 0), V::Peer(0))]);
    assert!(matches!(
        p.missing(60),
        TransportError::NeverConnected {
            peer: 2,
            secs: 60,
            ..
        }
    ));
    let e = p.silent(0, 5).to_string();
    assert!(
        e.contains("lost peer stage 0") && e.contains("no message or heartbeat for 5 s"),
        "{e}"
    );
    let mut p = policy();
    run(
        &mut p,
        vec![(
            1,
            Ev::Error(ZmtpError::Auth("x".into())),
            V::Refuse("authentication failed"),
        )],
    );
    let e = p.missing(60).to_string();
    assert!(
        e.contains("no authenticated peer within 60 s") && e.contains("authentication failed"),
        "{e}"
    );
}
