use super::*;

fn rules(ranks: usize, min_ranks: usize) -> Rules {
    Rules {
        ranks,
        min_ranks,
        rejoin_within: Duration::from_secs(10),
        within: Duration::from_secs(60),
        job_hash: "j".into(),
        run_id: "00000000000000aa".into(),
    }
}

fn join(round: u32, rank: u64, checkpoint: Option<u64>) -> Join {
    Join {
        round,
        id: format!("rank {rank}"),
        order: rank,
        ranks: 1,
        endpoints: vec![format!("tcp://127.0.0.1:{}", 7000 + rank)],
        checkpoint,
        job_hash: "j".into(),
        run_id: "00000000000000aa".into(),
    }
}

fn with(mut c: Collecting, joins: &[Join], since: Instant) -> Collecting {
    c.since = Some(since);
    for j in joins {
        c.joined.insert(j.id.clone(), j.clone());
    }
    c
}

fn later(c: &Collecting, round: &[u64]) -> Collecting {
    let mut c = c.clone();
    c.round = 1;
    c.expected = Some(round.iter().map(|r| format!("rank {r}")).collect());
    c.joined.clear();
    c
}

/// (what joined, seconds since the round began, min_ranks) → completed members / wait / fail.
#[test]
fn rounds_complete_wait_or_fail_by_table() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let first = Collecting::first();
    let second = later(&first, &[0, 1, 2]);
    type Case = (&'static str, Collecting, u64, usize, Option<Vec<u64>>);
    let cases: Vec<Case> = vec![
        (
            "round 0 waits for every rank",
            with(first.clone(), &[join(0, 0, None), join(0, 2, None)], t0),
            30,
            0,
            None,
        ),
        (
            "round 0 complete",
            with(
                first.clone(),
                &[join(0, 0, None), join(0, 1, None), join(0, 2, None)],
                t0,
            ),
            0,
            0,
            Some(vec![0, 1, 2]),
        ),
        (
            "round 0 is never elastic",
            with(first.clone(), &[join(0, 0, None), join(0, 1, None)], t0),
            20,
            1,
            None,
        ),
        (
            "round 1: every member back",
            with(
                second.clone(),
                &[join(1, 2, None), join(1, 0, None), join(1, 1, None)],
                t0,
            ),
            0,
            0,
            Some(vec![0, 1, 2]),
        ),
        (
            "round 1 waits for a missing member",
            with(second.clone(), &[join(1, 0, None), join(1, 1, None)], t0),
            30,
            0,
            None,
        ),
        (
            "elastic: before the rejoin timeout",
            with(second.clone(), &[join(1, 0, None), join(1, 1, None)], t0),
            9,
            2,
            None,
        ),
        (
            "elastic: goes on without rank 2",
            with(second.clone(), &[join(1, 0, None), join(1, 1, None)], t0),
            10,
            2,
            Some(vec![0, 1]),
        ),
        (
            "elastic: too few ranks",
            with(second.clone(), &[join(1, 0, None)], t0),
            30,
            2,
            None,
        ),
    ];
    for (name, c, secs, min, want) in cases {
        let got = c.decide(at(secs), &rules(3, min));
        match (got, want) {
            (Decision::Complete(r), Some(ids)) => {
                let got: Vec<u64> = r.members.iter().map(|m| m.order).collect();
                assert_eq!(got, ids, "{name}");
            }
            (Decision::Wait, None) => {}
            (other, want) => panic!("{name}: got {other:?}, want members {want:?}"),
        }
    }
}

#[test]
fn a_round_that_cannot_complete_names_who_is_missing() {
    let t0 = Instant::now();
    let c = with(
        later(&Collecting::first(), &[0, 1, 2]),
        &[join(1, 0, None)],
        t0,
    );
    let Decision::Fail(why) = c.decide(t0 + Duration::from_secs(60), &rules(3, 2)) else {
        panic!("should fail")
    };
    assert!(
        why.contains("missing rank 1, rank 2") && why.contains("1 ranks present, --min-ranks 2"),
        "{why}"
    );
    let c = with(Collecting::first(), &[join(0, 1, None)], t0);
    let Decision::Fail(why) = c.decide(t0 + Duration::from_secs(60), &rules(3, 0)) else {
        panic!("should fail")
    };
    assert!(
        why.contains("1 of 3 ranks joined") && why.contains("joined: rank 1"),
        "{why}"
    );
}

#[test]
fn the_round_resumes_the_oldest_step_every_member_sees_and_gets_a_new_run_id() {
    let t0 = Instant::now();
    let c = with(
        later(&Collecting::first(), &[0, 1]),
        &[join(1, 0, Some(40)), join(1, 1, Some(30))],
        t0,
    );
    let Decision::Complete(r) = c.decide(t0, &rules(2, 0)) else {
        panic!()
    };
    assert_eq!(r.resume, Some(30));
    assert_ne!(r.run_id, "00000000000000aa");
    assert_eq!(r.run_id, round_run_id("00000000000000aa", 1));
    let c = with(
        later(&Collecting::first(), &[0, 1]),
        &[join(1, 0, Some(40)), join(1, 1, None)],
        t0,
    );
    let Decision::Complete(r) = c.decide(t0, &rules(2, 0)) else {
        panic!()
    };
    assert_eq!(
        r.resume, None,
        "a member that sees no checkpoint: start over"
    );
    assert_eq!(round_run_id("00000000000000aa", 0), "00000000000000aa");
}

#[test]
fn refusals() {
    let r = rules(3, 2);
    let c = later(&Collecting::first(), &[0, 1]);
    let mut other = join(1, 0, None);
    other.job_hash = "k".into();
    assert!(c.refusal(&other, &r).unwrap().contains("another plan"));
    assert!(
        c.refusal(&join(0, 0, None), &r)
            .unwrap()
            .contains("left out of restart round 0")
    );
    assert!(
        c.refusal(&join(2, 0, None), &r)
            .unwrap()
            .contains("asks for round 2")
    );
    assert!(
        c.refusal(&join(1, 2, None), &r)
            .unwrap()
            .contains("cannot rejoin")
    );
    let c = with(c, &[join(1, 0, None)], Instant::now());
    assert!(c.refusal(&join(1, 0, None), &r).unwrap().contains("twice"));
    assert_eq!(c.refusal(&join(1, 1, None), &r), None);
}

/// Three agents over real sockets: round 0 with all, then round 1 without the third.
#[test]
fn agents_meet_round_after_round_and_go_on_without_a_lost_one() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut rules = rules(3, 2);
        rules.rejoin_within = Duration::from_millis(500);
        rules.within = Duration::from_secs(5);
        tokio::spawn(serve(listener, rules, None));
        let within = Duration::from_secs(5);
        let round = |r: u32, ranks: &[u64]| {
            let tasks: Vec<_> = ranks
                .iter()
                .map(|&k| {
                    let addr = addr.clone();
                    tokio::spawn(async move {
                        super::join(&addr, &join(r, k, Some(10)), None, within).await
                    })
                })
                .collect();
            async move {
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.unwrap().unwrap());
                }
                out
            }
        };
        let first = round(0, &[2, 0, 1]).await;
        assert!(first.iter().all(|r| r == &first[0]));
        assert_eq!(first[0].members.len(), 3);
        assert_eq!(first[0].resume, Some(10));
        let second = round(1, &[0, 1]).await;
        assert_eq!(
            second[0]
                .members
                .iter()
                .map(|m| m.order)
                .collect::<Vec<_>>(),
            [0, 1]
        );
        assert_eq!(second[0].round, 1);
        // The one left out hears why.
        let e = super::join(&addr, &join(1, 2, None), None, within)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("left out of restart round 1") || e.contains("cannot rejoin"),
            "{e}"
        );
    });
}
