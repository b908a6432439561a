//! Tables of (connection, event) → verdict, for the link of rank 1 receiving from rank 0.

use super::*;
use crate::transport::net::meta;

const RUN: u64 = 0xaa;
const JOB: u64 = 0xbb;
const SECRET: &[u8] = b"a job secret of thirty-two bytes!";
const OWN: [u8; 16] = [7; 16];

fn policy(secret: bool) -> LinkPolicy {
    LinkPolicy::new(LinkIdentity {
        rank: 1,
        peer: 0,
        endpoint: "ipc:///run/e0-act.ipc".into(),
        run_id: RUN,
        job_hash: JOB,
        secret: secret.then(|| SECRET.to_vec()),
        own_challenge: OWN,
    })
}

fn frame(bytes: &[u8]) -> Frame {
    Frame::from_elems(bytes.to_vec())
}

fn to_us() -> auth::Between {
    auth::Between {
        run_id: RUN,
        job_hash: JOB,
        from: 0,
        to: 1,
    }
}

/// An event of the table: what one connection delivers.
enum Ev {
    Control {
        kind: ControlKind,
        run: u64,
        job: u64,
        from: usize,
        bytes: Option<Vec<u8>>,
    },
    /// A two-frame tensor message (content irrelevant to the policy).
    Tensor,
    /// A message tagged with the peer's frame key and sequence number.
    Tagged(Box<Ev>, u64),
    Three,
    Error(ZmtpError),
    /// The ZMTP handshake finished with this READY metadata.
    Ready(Metadata),
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
        bytes: None,
    }
}

fn frames(ev: &Ev) -> Vec<Frame> {
    match ev {
        Ev::Control {
            kind,
            run,
            job,
            from,
            bytes,
        } => {
            let mut c = Control::new(*kind, *run, *job, *from);
            if let Some(b) = bytes {
                c = c.with_bytes(b);
            }
            vec![frame(&c.encode())]
        }
        Ev::Tensor => vec![frame(b"header"), frame(&[0; 16])],
        Ev::Three => vec![frame(b"a"), frame(b"b"), frame(b"c")],
        Ev::Tagged(inner, seq) => {
            let mut f = frames(inner);
            let key = to_us().frame_key(SECRET, &OWN);
            let body: Vec<&[u8]> = f.iter().map(|x| &x[..]).collect();
            let t = auth::tag(&key, *seq, &body);
            f.push(frame(&t));
            f
        }
        Ev::Error(_) | Ev::Ready(_) => unreachable!(),
    }
}

/// The verdicts' shapes, for tables.
#[derive(Debug, PartialEq)]
enum V {
    Nothing,
    Refuse(&'static str),
    Peer,
    Challenge,
    Tensor,
    Done,
    Fail(&'static str),
}

fn run(p: &mut LinkPolicy, table: Vec<(u64, Ev, V)>) {
    for (i, (conn, ev, want)) in table.into_iter().enumerate() {
        let got = match ev {
            Ev::Error(e) => p.on_error(conn, e),
            Ev::Ready(m) => p.on_ready(conn, &m),
            ev => p.on_message(conn, frames(&ev)),
        };
        let ok = match (&got, &want) {
            (Verdict::Nothing, V::Nothing)
            | (Verdict::Peer, V::Peer)
            | (Verdict::Challenge(_), V::Challenge)
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
fn without_a_secret_the_first_ready_naming_the_peer_makes_it_the_peer() {
    let mut p = policy(false);
    run(
        &mut p,
        vec![
            // A stranger's garbage and clean close: refused or ignored, never fatal.
            (
                1,
                Ev::Error(ZmtpError::NotZmtp([0xff; 10])),
                V::Refuse("not a ZeroMQ peer"),
            ),
            (
                6,
                Ev::Error(ZmtpError::OldVersion(1)),
                V::Refuse("ZMTP 2.0"),
            ),
            // A ZeroMQ socket that does not say who it is.
            (
                7,
                Ev::Ready(Vec::new()),
                V::Refuse("without brigade's X-Brigade-Run"),
            ),
            (
                2,
                Ev::Error(ZmtpError::TooLarge {
                    len: 1 << 40,
                    limit: 65536,
                }),
                V::Refuse("exceeds"),
            ),
            (3, Ev::Error(ZmtpError::Closed), V::Nothing),
            (4, ready(RUN, JOB, 0), V::Peer),
            // A brigade hello from the peer changes nothing.
            (4, ctl(ControlKind::Hello), V::Nothing),
            (4, ctl(ControlKind::Heartbeat), V::Nothing),
            (4, Ev::Tensor, V::Tensor),
            // Once there is a peer, others are strangers.
            (
                5,
                ready(RUN, JOB, 0),
                V::Refuse("a second connection claims to be rank 0"),
            ),
            (
                5,
                ctl(ControlKind::Hello),
                V::Refuse("a second connection claims to be rank 0"),
            ),
            (5, Ev::Tensor, V::Refuse("has not authenticated")),
            (5, Ev::Three, V::Refuse("message of 3 frames")),
            (5, ctl(ControlKind::Bye), V::Nothing),
            (4, ctl(ControlKind::Bye), V::Done),
            // The peer closing after its bye is the end of the link, not a loss.
            (4, Ev::Error(ZmtpError::Closed), V::Done),
        ],
    );
    assert!(p.is_peer(4) && !p.is_peer(5));
}

#[test]
fn without_a_secret_a_mis_wired_job_fails_at_once() {
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
        (
            Ev::Control {
                kind: ControlKind::Hello,
                run: RUN,
                job: 0xcc,
                from: 0,
                bytes: None,
            },
            V::Fail("different job plan"),
        ),
        (Ev::Tensor, V::Fail("tensor before the hello handshake")),
    ] {
        run(&mut policy(false), vec![(1, ev, want)]);
    }
    // Another plan is its own error: the rank turns it into bad input naming its plan file.
    let mut p = policy(false);
    assert!(matches!(
        p.on_ready(1, &meta::ours(RUN, 0xcc, 0, 0)),
        Verdict::Fail(TransportError::OtherPlan { .. })
    ));
}

#[test]
fn the_peers_own_faults_are_fatal() {
    for (ev, want) in [
        (Ev::Three, V::Fail("bad frame from stage 0")),
        (
            Ev::Error(ZmtpError::TooLarge { len: 9, limit: 8 }),
            V::Fail("bad frame"),
        ),
        (Ev::Error(ZmtpError::FrameCount(9)), V::Fail("bad frame")),
        (Ev::Error(ZmtpError::Closed), V::Fail("lost peer stage 0")),
    ] {
        run(
            &mut policy(false),
            vec![(1, ready(RUN, JOB, 0), V::Peer), (1, ev, want)],
        );
    }
}

#[test]
fn under_a_secret_the_peer_signs_its_hello_answers_and_tags() {
    let signed_hello = |challenge: [u8; 16]| {
        let mut b = challenge.to_vec();
        b.extend(to_us().sign_hello(SECRET, &challenge));
        Ev::Control {
            kind: ControlKind::Hello,
            run: RUN,
            job: JOB,
            from: 0,
            bytes: Some(b),
        }
    };
    let auth = |answer: Vec<u8>| Ev::Control {
        kind: ControlKind::Auth,
        run: RUN,
        job: JOB,
        from: 0,
        bytes: Some(answer),
    };
    let mut p = policy(true);
    run(
        &mut p,
        vec![
            // A stranger who knows the job but not the secret: its READY metadata proves nothing.
            (1, ready(RUN, JOB, 0), V::Nothing),
            (1, ready(RUN, 0xcc, 0), V::Refuse("different job plan")),
            (1, ctl(ControlKind::Hello), V::Refuse("hello is not signed")),
            (1, Ev::Tensor, V::Refuse("has not authenticated")),
            (
                1,
                auth(vec![0; 32]),
                V::Refuse("does not have this job's secret"),
            ),
            // Another job's hello is only refused: with a secret nobody unauthenticated can end the job.
            (
                1,
                Ev::Control {
                    kind: ControlKind::Hello,
                    run: RUN,
                    job: 0xcc,
                    from: 0,
                    bytes: None,
                },
                V::Refuse("different job plan"),
            ),
            // The real peer.
            (2, ready(RUN, JOB, 0), V::Nothing),
            (2, signed_hello([3; 16]), V::Challenge),
            (
                2,
                auth(to_us().answer(SECRET, &[1; 16]).to_vec()),
                V::Refuse("does not have"),
            ),
            (2, auth(to_us().answer(SECRET, &OWN).to_vec()), V::Peer),
            // From now on every message must carry the next tag.
            (2, Ev::Tensor, V::Refuse("bad or missing message tag")),
            (2, Ev::Tagged(Box::new(Ev::Tensor), 0), V::Tensor),
            (
                2,
                Ev::Tagged(Box::new(Ev::Tensor), 0),
                V::Refuse("replayed"),
            ),
            (
                2,
                Ev::Tagged(Box::new(ctl(ControlKind::Heartbeat)), 1),
                V::Nothing,
            ),
            (2, Ev::Tagged(Box::new(ctl(ControlKind::Bye)), 2), V::Done),
        ],
    );
    let e = p.on_timeout(5, 60);
    assert!(
        e.to_string().contains("no message or heartbeat for 5 s"),
        "{e}"
    );
}

#[test]
fn timeouts_say_what_was_missing() {
    let p = policy(true);
    assert!(matches!(
        p.on_timeout(5, 60),
        TransportError::NeverConnected { secs: 60, .. }
    ));
    let mut p = policy(true);
    run(
        &mut p,
        vec![(1, ctl(ControlKind::Hello), V::Refuse("hello is not signed"))],
    );
    assert!(!p.is_peer(1));
    let e = p.on_timeout(5, 60).to_string();
    assert!(
        e.contains("no authenticated peer within 60 s") && e.contains("hello is not signed"),
        "{e}"
    );
}
