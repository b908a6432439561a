//! The exact partitioner against brute force on random chains and DAGs, and the baselines'
//! invariants.

use brigade_partitioner::partition::{self, GraphCuts, Problem, Split, StageSlot};
use proptest::prelude::*;

/// Every way to cut n layers into k non-empty contiguous stages.
fn all_splits(n: usize, k: usize) -> Vec<Split> {
    fn rec(start: usize, n: usize, k: usize, acc: &mut Vec<usize>, out: &mut Vec<Split>) {
        if k == 1 {
            acc.push(n);
            out.push(Split(acc.clone()));
            acc.pop();
            return;
        }
        for end in start + 1..=n - (k - 1) {
            acc.push(end);
            rec(end, n, k - 1, acc, out);
            acc.pop();
        }
    }
    let mut out = Vec::new();
    rec(0, n, k, &mut vec![0], &mut out);
    out
}

fn problem() -> impl Strategy<Value = Problem> {
    (2usize..9)
        .prop_flat_map(|n| (Just(n), 1usize..=n.min(5)))
        .prop_flat_map(|(n, k)| {
            let slot = (
                1.0f64..100.0,
                prop::option::weighted(0.5, 50u64..400),
                1u64..4,
                0.0f64..0.01,
                0.0f64..0.5,
            )
                .prop_map(|(speed, mem, live, per_byte, fixed)| StageSlot {
                    speed_gflops: speed,
                    memory_bytes: mem,
                    live_microbatches: live,
                    param_factor: 2,
                    send_next: (per_byte, fixed),
                    send_prev: (per_byte, fixed),
                    recompute: false,
                });
            (
                prop::collection::vec(0.0f64..10.0, n),
                prop::collection::vec(0u64..60, n),
                prop::collection::vec(0u64..30, n),
                prop::collection::vec(0u64..200, n + 1),
                prop::collection::vec(slot, k),
                any::<u32>(),
            )
                .prop_map(
                    |(work, param_bytes, saved_bytes, mut cut_bytes, mut slots, recompute)| {
                        cut_bytes[0] = 0;
                        *cut_bytes.last_mut().unwrap() = 0;
                        // Some stages recompute, chosen by the bits of one random word.
                        for (k, s) in slots.iter_mut().enumerate() {
                            s.recompute = (recompute >> (k % 32)) & 1 == 1;
                        }
                        Problem {
                            recompute_work: work.iter().map(|w| w / 3.0).collect(),
                            work,
                            param_bytes,
                            saved_bytes,
                            cut_bytes,
                            slots,
                            graph: None,
                            deferred: None,
                        }
                    },
                )
        })
}

/// A random DAG on top of a random problem: each layer takes the one before it and up to two
/// earlier layers' outputs (skip connections).
fn dag_problem() -> impl Strategy<Value = Problem> {
    problem().prop_flat_map(|p| {
        let n = p.layers();
        (
            Just(p),
            prop::collection::vec(0u64..300, n),
            prop::collection::vec((any::<u16>(), any::<u16>()), n),
        )
            .prop_map(move |(mut p, bytes, picks)| {
                let sources: Vec<Vec<usize>> = (0..n)
                    .map(|l| {
                        let mut s: Vec<usize> = Vec::new();
                        if l > 0 {
                            s.push(l - 1);
                            for pick in [picks[l].0, picks[l].1] {
                                // About one in three picks adds a skip from an earlier layer.
                                if l > 1 && pick % 3 == 0 {
                                    let t = pick as usize / 3 % (l - 1);
                                    if !s.contains(&t) {
                                        s.push(t);
                                    }
                                }
                            }
                        }
                        s.sort_unstable();
                        s
                    })
                    .collect();
                p.graph = Some(GraphCuts::new(bytes, sources));
                p
            })
    })
}

/// `auto` finds a split as good as the best of every split, or fails only when none fits.
fn auto_matches_brute_force(p: &Problem) -> Result<(), TestCaseError> {
    let brute = all_splits(p.layers(), p.slots.len())
        .into_iter()
        .filter(|s| p.fits(s))
        .map(|s| p.bottleneck_ms(&s))
        .fold(f64::INFINITY, f64::min);
    match partition::auto(p) {
        Ok(split) => {
            prop_assert!(
                p.fits(&split),
                "auto returned a split that does not fit: {:?}",
                split
            );
            prop_assert_eq!(split.stages(), p.slots.len());
            prop_assert!(split.counts().iter().all(|&c| c > 0));
            let got = p.bottleneck_ms(&split);
            prop_assert!(
                (got - brute).abs() <= 1e-9 * brute.max(1.0),
                "auto {} vs brute force {}",
                got,
                brute
            );
        }
        Err(e) => prop_assert!(
            brute.is_infinite(),
            "auto failed ({}) but brute force found {}",
            e,
            brute
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// With skip connections each stage sends a tensor once however many later layers take it,
    /// and receives each earlier tensor once: still exact.
    #[test]
    fn auto_equals_brute_force_on_random_dags(p in dag_problem()) {
        auto_matches_brute_force(&p)?;
    }

    #[test]
    fn auto_equals_brute_force(p in problem()) {
        auto_matches_brute_force(&p)?;
    }

    #[test]
    fn baselines_never_leave_a_stage_empty(params in prop::collection::vec(0u64..1000, 1..40), k in 1usize..12) {
        let n = params.len();
        let k = k.min(n);
        for split in [partition::uniform(n, k), partition::parameters(&params, k).unwrap()] {
            prop_assert_eq!(split.stages(), k);
            prop_assert_eq!(split.0[0], 0);
            prop_assert_eq!(split.0[k], n);
            prop_assert!(split.counts().iter().all(|&c| c > 0), "empty stage in {:?}", split);
        }
    }

    #[test]
    fn parameters_minimises_the_largest_stage(params in prop::collection::vec(0u64..1000, 1..9), k in 1usize..5) {
        let n = params.len();
        let k = k.min(n);
        let max_stage = |s: &Split| (0..s.stages()).map(|i| params[s.range(i)].iter().sum::<u64>()).max().unwrap();
        let best = all_splits(n, k).iter().map(max_stage).min().unwrap();
        prop_assert_eq!(max_stage(&partition::parameters(&params, k).unwrap()), best);
    }
}

#[test]
fn ten_thousand_layers_onto_64_stages_is_fast_and_balanced() {
    let n = 10_000;
    let slot = StageSlot {
        speed_gflops: 10.0,
        memory_bytes: None,
        live_microbatches: 8,
        param_factor: 3,
        send_next: (1e-6, 0.01),
        send_prev: (1e-6, 0.01),
        recompute: false,
    };
    let p = Problem {
        recompute_work: vec![0.0; n],
        graph: None,
        deferred: None,
        work: (0..n).map(|i| 1.0 + (i % 7) as f64).collect(),
        param_bytes: vec![1000; n],
        saved_bytes: vec![100; n],
        cut_bytes: (0..=n)
            .map(|i| if i == 0 || i == n { 0 } else { 4096 })
            .collect(),
        slots: vec![slot; 64],
    };
    let split = partition::auto(&p).unwrap();
    let uniform = partition::uniform(n, 64);
    assert!(p.bottleneck_ms(&split) <= p.bottleneck_ms(&uniform) + 1e-9);
}

#[test]
fn recomputation_keeps_only_chunk_inputs_alive() {
    let slot = StageSlot {
        speed_gflops: 1.0,
        memory_bytes: None,
        live_microbatches: 8,
        param_factor: 2,
        send_next: (0.0, 0.0),
        send_prev: (0.0, 0.0),
        recompute: false,
    };
    let mut p = Problem {
        work: vec![1.0; 4],
        recompute_work: vec![0.5; 4],
        graph: None,
        deferred: None,
        param_bytes: vec![10; 4],
        saved_bytes: vec![100; 4],
        cut_bytes: vec![0, 50, 50, 50, 0],
        slots: vec![slot; 2],
    };
    // Layers 2..4 on stage 1: params 2·20 + 8 live × 200 saved.
    assert_eq!(p.memory_bytes(1, 2, 4), 40 + 8 * 200);
    assert_eq!(p.compute_ms(1, 2, 4), 2000.0);
    p.slots[1].recompute = true;
    // Only the input (cut 2: 50 bytes) per live micro-batch, plus one micro-batch's 200; and
    // the forward a second time.
    assert_eq!(p.memory_bytes(1, 2, 4), 40 + 8 * 50 + 200);
    assert_eq!(p.compute_ms(1, 2, 4), 3000.0);
    // Per stage: stage 0 still keeps everything.
    assert_eq!(p.memory_bytes(0, 0, 2), 40 + 8 * 200);
    p.slots[0].recompute = true;
    // A memory cap that only recomputation meets: auto now finds a split.
    for s in &mut p.slots {
        s.memory_bytes = Some(700);
    }
    assert!(partition::auto(&p).is_ok());
    p.slots[0].recompute = false;
    assert!(partition::auto(&p).is_err());
}
