use super::*;

/// Runs `members` machines against each other in one lane, delivering in lockstep.
fn run(buffers: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    run_with(Algo::Ring, 1, buffers)
}

/// Runs `members` machines over `lanes` lanes, delivering the sends in rounds, the lanes
/// of a round in reverse order.
fn run_with(algo: Algo, lanes: usize, buffers: Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    let d = buffers.len();
    let mut rings = Vec::new();
    let mut outbox: Vec<Vec<RingStep>> = Vec::new();
    for (i, b) in buffers.into_iter().enumerate() {
        let (r, first) = Ring::start_with(algo, d, i, b, lanes);
        rings.push(r);
        outbox.push(first);
    }
    let mut done = vec![None; d];
    while done.iter().any(Option::is_none) {
        let sends: Vec<Vec<RingStep>> = outbox.iter_mut().map(std::mem::take).collect();
        assert!(sends.iter().any(|s| !s.is_empty()), "stuck");
        for (i, s) in sends.into_iter().enumerate() {
            for step in s.into_iter().rev() {
                match step {
                    RingStep::Send { lane, step, data } => {
                        let next = (i + 1) % d;
                        match rings[next].receive(lane, step, data.into_values()).unwrap() {
                            Some(RingStep::Done(v)) => done[next] = Some(v.into_vec()),
                            Some(other) => outbox[next].push(other),
                            None => {}
                        }
                    }
                    RingStep::Done(v) => done[i] = Some(v.into_vec()),
                }
            }
        }
    }
    done.into_iter().map(Option::unwrap).collect()
}

#[test]
fn every_member_ends_with_the_sum() {
    for d in 1..=5 {
        for (n, lanes) in [(0, 1), (1, 1), (3, 1), (7, 1), (16, 1), (16, 2), (30, 3)] {
            let buffers: Vec<Vec<f32>> = (0..d)
                .map(|i| (0..n).map(|j| (i * 10 + j) as f32).collect())
                .collect();
            let want: Vec<f32> = (0..n)
                .map(|j| (0..d).map(|i| (i * 10 + j) as f32).sum())
                .collect();
            for got in run_with(Algo::Ring, lanes, buffers) {
                assert_eq!(got, want, "{d} members, {n} values, {lanes} lanes");
            }
        }
    }
}

#[test]
fn two_members_swapping_end_with_the_same_bits_as_the_ring() {
    // Values whose sums round: the swap adds a + b where the ring adds a + b or b + a.
    let a: Vec<f32> = (0..12).map(|j| 0.1 + j as f32 / 3.0).collect();
    let b: Vec<f32> = (0..12).map(|j| 1e7 - j as f32 * 0.7).collect();
    let swapped = run_with(Algo::Direct, 1, vec![a.clone(), b.clone()]);
    let ringed = run(vec![a.clone(), b.clone()]);
    let laned = run_with(Algo::Ring, 3, vec![a, b]);
    for got in swapped.iter().chain(&ringed).chain(&laned) {
        assert_eq!(
            got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            swapped[0].iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

#[test]
fn the_algorithm_fits_the_shape() {
    assert_eq!(Algo::choose(4096, 2), Algo::Direct);
    assert_eq!(Algo::choose(DIRECT_MAX_BYTES, 2), Algo::Direct);
    assert_eq!(Algo::choose(DIRECT_MAX_BYTES + 4, 2), Algo::Ring);
    assert_eq!(Algo::choose(4096, 3), Algo::Ring);
}

#[test]
fn lanes_keep_segments_within_the_limit() {
    for (algo, len, members, segment, want) in [
        (Algo::Direct, 1 << 30, 2, 4, 1),
        (Algo::Ring, 0, 2, 4, 1),
        (Algo::Ring, 8, 2, 4, 1),
        (Algo::Ring, 9, 2, 4, 2),
        (Algo::Ring, 24, 3, 4, 2),
        (Algo::Ring, 25 << 18, 2, SEGMENT_VALUES, 13),
        (Algo::Ring, usize::MAX / 2, 2, 1, MAX_LANES),
    ] {
        assert_eq!(
            algo.lanes(len, members, segment),
            want,
            "{algo:?}, {len} values, {members} members, segments of {segment}"
        );
    }
}

#[test]
fn a_swap_is_one_message_of_the_whole_buffer() {
    let (mut r, first) = Ring::start_with(Algo::Direct, 2, 1, vec![1.0, 2.0], 1);
    assert_eq!(
        first,
        vec![RingStep::Send {
            lane: 0,
            step: 0,
            data: vec![1.0, 2.0].into()
        }]
    );
    assert!(r.receive(0, 0, vec![1.0].into()).is_err());
    assert_eq!(
        r.receive(0, 0, vec![3.0, 4.0].into()),
        Ok(Some(RingStep::Done(vec![4.0, 6.0].into())))
    );
}

#[test]
fn the_schedule_of_three_members() {
    // Member 0 of 3 sends segments 0, 2 (reduce-scatter), then 1, 0 (all-gather).
    let (r, first) = Ring::start(3, 0, vec![1.0, 2.0, 3.0]);
    assert_eq!(
        first,
        RingStep::Send {
            lane: 0,
            step: 0,
            data: vec![1.0].into()
        }
    );
    assert_eq!(
        (0..4).map(|s| r.sent_segment(s)).collect::<Vec<_>>(),
        vec![0, 2, 1, 0]
    );
}

#[test]
fn each_lane_is_a_ring_of_its_own() {
    // Two lanes of 4 values over two members: lane 1 is values 4..8, member 0 sends its
    // first half first; lane 1 finishing before lane 0 leaves the buffer unfinished.
    let (mut r, first) = Ring::start_with(Algo::Ring, 2, 0, (0..8).map(|v| v as f32).collect(), 2);
    assert_eq!(
        first[1],
        RingStep::Send {
            lane: 1,
            step: 0,
            data: vec![4.0, 5.0].into()
        }
    );
    let next = r.receive(1, 0, vec![10.0, 10.0].into()).unwrap();
    assert_eq!(
        next,
        Some(RingStep::Send {
            lane: 1,
            step: 1,
            data: vec![16.0, 17.0].into()
        })
    );
    assert_eq!(r.receive(1, 1, vec![1.0, 1.0].into()), Ok(None));
    assert!(
        r.receive(1, 1, vec![1.0, 1.0].into()).is_err(),
        "lane 1 is finished"
    );
    assert!(
        r.receive(2, 0, vec![1.0, 1.0].into()).is_err(),
        "there is no lane 2"
    );
    assert_eq!(r.waiting_for(0), 0);
}

#[test]
fn wrong_steps_and_sizes_are_errors() {
    let (mut r, _) = Ring::start(2, 0, vec![1.0, 2.0]);
    assert!(r.receive(0, 1, vec![1.0].into()).is_err());
    assert!(r.receive(0, 0, vec![1.0, 2.0].into()).is_err());
    assert!(r.receive(0, 0, vec![1.0].into()).is_ok());
}
