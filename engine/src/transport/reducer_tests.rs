use super::*;

fn job(
    edge: u32,
    bucket: u32,
    step: u64,
    ring: &[usize],
    me: usize,
    algo: Algo,
    data: Vec<f32>,
) -> ReduceJob {
    ReduceJob {
        edge,
        bucket,
        step,
        ring: ring.to_vec(),
        me,
        algo,
        data,
    }
}

/// Runs one reducer per member of `ring` (ranks `ring[i]`, segments of at most `segment`
/// values), member `late_start` starting last, delivering the newest segment sent first; the
/// sums, by member.
fn run(
    (algo, segment): (Algo, usize),
    ring: &[usize],
    buffers: Vec<Vec<f32>>,
    late_start: usize,
) -> Vec<Vec<f32>> {
    let d = ring.len();
    let mut reducers: Vec<Reducer> = (0..d).map(|_| Reducer::with_segment(segment)).collect();
    let mut wire: Vec<Segment> = Vec::new();
    let mut sums: Vec<Option<Vec<f32>>> = vec![None; d];
    let mut take = |i: usize, outs: Vec<Out>, wire: &mut Vec<Segment>| {
        for o in outs {
            match o {
                // On the wire, a segment names its sender.
                Out::Send(s) => wire.push(Segment { peer: ring[i], ..s }),
                Out::Done(r) => sums[i] = Some(r.sum.into_vec()),
            }
        }
    };
    // Member `late_start` starts last: the others' segments wait for it.
    let order: Vec<usize> = (0..d)
        .filter(|&i| i != late_start)
        .chain([late_start])
        .collect();
    for &i in &order {
        let outs = reducers[i]
            .start(job(3, 1, 5, ring, i, algo, buffers[i].clone()))
            .unwrap();
        take(i, outs, &mut wire);
    }
    // Newest first: segments arrive out of order.
    while let Some(seg) = wire.pop() {
        let from = ring.iter().position(|&r| r == seg.peer).unwrap();
        let i = (from + 1) % d;
        let outs = reducers[i].arrived(seg).unwrap();
        take(i, outs, &mut wire);
    }
    assert!(reducers.iter().all(|r| r.in_flight() == 0));
    sums.into_iter().map(Option::unwrap).collect()
}

#[test]
fn every_member_ends_with_the_same_sum_whatever_the_order() {
    // Segments of 2 values: 11 values are 3 lanes of two members, 2 lanes of three.
    for (algo, segment, ring, late) in [
        (Algo::Ring, 1 << 18, vec![4, 9], 0),
        (Algo::Ring, 2, vec![4, 9], 1),
        (Algo::Direct, 2, vec![4, 9], 1),
        (Algo::Ring, 1 << 18, vec![0, 1, 2], 2),
        (Algo::Ring, 2, vec![0, 1, 2], 0),
        (Algo::Ring, 1 << 18, vec![7, 2, 5, 1], 0),
    ] {
        let d = ring.len();
        // 11 values: the ring pads to whole segments and cuts the padding off again.
        let buffers: Vec<Vec<f32>> = (0..d)
            .map(|i| (0..11).map(|v| (i * 100 + v) as f32 * 0.5).collect())
            .collect();
        let want: Vec<f32> = (0..11)
            .map(|v| (0..d).map(|i| buffers[i][v]).sum())
            .collect();
        for sum in run((algo, segment), &ring, buffers, late) {
            assert_eq!(sum, want, "{algo:?} over {ring:?}, segments of {segment}");
        }
    }
}

#[test]
fn alone_the_sum_is_the_buffer() {
    let mut r = Reducer::default();
    let outs = r
        .start(job(0, 0, 0, &[3], 0, Algo::Ring, vec![1.0, 2.0]))
        .unwrap();
    assert_eq!(
        outs,
        vec![Out::Done(Reduced {
            edge: 0,
            bucket: 0,
            step: 0,
            sum: vec![1.0, 2.0].into()
        })]
    );
}

fn seg(peer: usize, step: u64, tag: u64, values: Vec<f32>) -> Segment {
    Segment {
        peer,
        edge: 0,
        step,
        tag,
        values: values.into(),
    }
}

/// A segment two steps ahead or behind, one that comes twice, one from a rank that is not the
/// previous member, or one of the wrong length is refused, naming the peer and the reason.
#[test]
fn bad_segments_are_refused_naming_the_peer() {
    let started = || {
        let mut r = Reducer::default();
        r.start(job(0, 0, 4, &[1, 2], 1, Algo::Direct, vec![1.0; 4]))
            .unwrap();
        r
    };
    let cases: Vec<(Segment, &str)> = vec![
        (
            seg(1, 6, tag(0, 0, 0), vec![0.0; 4]),
            "reductions are at step 4",
        ),
        (
            seg(1, 3, tag(0, 0, 0), vec![0.0; 4]),
            "reductions are at step 4",
        ),
        (
            seg(5, 4, tag(0, 0, 0), vec![0.0; 4]),
            "sums rank 1's segments",
        ),
        (seg(1, 4, tag(0, 0, 0), vec![0.0; 3]), "segment of 3 values"),
    ];
    for (s, why) in cases {
        let peer = s.peer;
        let err = started().arrived(s).unwrap_err();
        assert_eq!(err.peer, peer);
        assert!(err.to_string().contains(why), "{err}");
        assert!(err.to_string().contains(&format!("rank {peer}'s")), "{err}");
    }
    // The next step's may come early, once.
    let mut r = started();
    assert!(
        r.arrived(seg(1, 5, tag(0, 0, 0), vec![0.0; 4]))
            .unwrap()
            .is_empty()
    );
    let err = r
        .arrived(seg(1, 5, tag(0, 0, 0), vec![0.0; 4]))
        .unwrap_err();
    assert!(err.to_string().contains("came twice"), "{err}");
}

#[test]
fn a_segment_of_a_lane_the_reduction_lacks_is_refused() {
    let mut r = Reducer::with_segment(2);
    // 8 values over two members in segments of 2: lanes 0 and 1.
    let outs = r
        .start(job(0, 3, 4, &[1, 2], 1, Algo::Ring, vec![1.0; 8]))
        .unwrap();
    assert_eq!(outs.len(), 2, "one first segment a lane");
    assert!(r.arrived(seg(1, 4, tag(3, 1, 0), vec![0.0; 2])).is_ok());
    let err = r
        .arrived(seg(1, 4, tag(3, 2, 0), vec![0.0; 2]))
        .unwrap_err();
    assert!(err.to_string().contains("has 2 lane(s)"), "{err}");
    assert!(err.to_string().contains("lane 2"), "{err}");
    // Two members: ring steps 0 and 1; lane 1 has taken step 0.
    let err = r
        .arrived(seg(1, 4, tag(3, 0, 2), vec![0.0; 2]))
        .unwrap_err();
    assert!(err.to_string().contains("has 2 ring step(s)"), "{err}");
    let err = r
        .arrived(seg(1, 4, tag(3, 1, 0), vec![0.0; 2]))
        .unwrap_err();
    assert!(
        err.to_string().contains("taken ring step 0 already"),
        "{err}"
    );
}

#[test]
fn an_early_segment_the_reduction_can_never_take_is_refused_when_it_starts() {
    for (tag, why) in [
        (tag(3, 2, 0), "has 2 lane(s)"),
        (tag(3, 0, 5), "has 2 ring step(s)"),
    ] {
        let mut r = Reducer::with_segment(2);
        assert!(r.arrived(seg(1, 4, tag, vec![0.0; 2])).unwrap().is_empty());
        let err = r
            .start(job(0, 3, 4, &[1, 2], 1, Algo::Ring, vec![1.0; 8]))
            .unwrap_err();
        assert_eq!(err.peer, 1);
        assert!(err.to_string().contains(why), "{err}");
    }
}

#[test]
fn tags_carry_bucket_lane_and_ring_step() {
    for (b, l, s) in [
        (0, 0, 0),
        (1, 2, 3),
        ((1 << 24) - 1, (1 << 16) - 1, (1 << 24) - 1),
    ] {
        assert_eq!(untag(tag(b, l, s)), (b, l, s));
    }
}

#[test]
fn segments_of_finished_or_unreachable_steps_are_out_of_reach() {
    for (step, current, ok) in [
        (4, 4, true),
        (5, 4, true),
        (3, 4, false),
        (6, 4, false),
        (0, 0, true),
        (1, 0, true),
        (2, 0, false),
    ] {
        assert_eq!(
            in_reach(step, current),
            ok,
            "segment of step {step} at step {current}"
        );
    }
}
