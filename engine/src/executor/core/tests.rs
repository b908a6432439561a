use super::*;
use crate::executor::build::executor;
use crate::job::load_input;
use burn::prelude::Device;

fn job(overrides: &[&str]) -> crate::job::Job {
    let path = format!(
        "{}/../topologies/quickstart.toml",
        std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
    );
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    load_input(&path, &o, None).unwrap().0
}

fn rank1() -> Executor {
    executor(&job(&[]), 1, &Device::flex(), 3, false).unwrap()
}

fn act(shape: &[usize]) -> Act {
    Act::from_f32(vec![0.0; shape.iter().product()], shape, &Device::flex())
}

#[test]
fn out_of_step_and_duplicate_messages_are_errors() {
    let mut e = rank1();
    let shape = e.stages()[0].input_shape().to_vec();
    let msg = |edge, kind, step, microbatch| Incoming {
        edge,
        kind,
        step,
        microbatch,
        tensor: act(&shape),
    };
    // The last chunk receives no gradients, nothing on an edge it does not touch, nothing two
    // steps ahead, no micro-batch 8 of 8.
    assert!(matches!(
        e.deliver(msg(0, Kind::Gradient, 0, 0)),
        Err(ExecError::Unexpected { .. })
    ));
    assert!(matches!(
        e.deliver(msg(1, Kind::Activation, 0, 0)),
        Err(ExecError::Unexpected { .. })
    ));
    assert!(matches!(
        e.deliver(msg(0, Kind::Activation, 2, 0)),
        Err(ExecError::Unexpected { .. })
    ));
    assert!(matches!(
        e.deliver(msg(0, Kind::Activation, 0, 8)),
        Err(ExecError::Unexpected { .. })
    ));
    e.deliver(msg(0, Kind::Activation, 0, 0)).unwrap();
    e.deliver(msg(0, Kind::Activation, 1, 0)).unwrap(); // the next step may arrive early
    assert!(matches!(
        e.deliver(msg(0, Kind::Activation, 0, 0)),
        Err(ExecError::Duplicate { .. })
    ));
}

#[test]
fn poll_waits_for_what_the_schedule_needs_first() {
    let mut e = rank1();
    match e.poll().unwrap() {
        Action::Wait {
            edge,
            kind,
            step,
            microbatch,
        } => assert_eq!((edge, kind, step, microbatch), (0, Kind::Activation, 0, 0)),
        other => panic!("expected a wait, got {other:?}"),
    }
}

#[test]
fn sends_go_to_the_rank_the_plan_names() {
    // Swap the ranks: rank 1 holds chunk 0, so its first action is sending edge 0's
    // activation to rank 0.
    let mut plan = job(&[]).plan;
    plan.job_hash = None;
    plan.ranks[0].chunks = vec![1];
    plan.ranks[1].chunks = vec![0];
    let swapped = plan.validate("swapped.json").unwrap();
    let mut e = executor(&swapped, 1, &Device::flex(), 1, false).unwrap();
    match e.poll().unwrap() {
        Action::Send(out) => {
            assert_eq!((out.edge, out.to, out.kind), (0, 0, Kind::Activation));
            assert_eq!((out.step, out.microbatch), (0, 0));
        }
        other => panic!("expected a send, got {other:?}"),
    }
}

#[test]
fn checkpoints_are_actions_for_the_driver() {
    // One rank holding the whole model (the reference trainer's shape).
    let job = job(&["partition.stages=1"]);
    let mut e = executor(&job, 0, &Device::flex(), 2, false)
        .unwrap()
        .with_checkpoints(CheckpointPolicy {
            every: 1,
            chunks: 1,
            train_seed: 1,
            data_seed: 2,
        });
    let mut seen = Vec::new();
    loop {
        match e.poll().unwrap() {
            Action::Checkpoint { step, snapshots } => {
                assert_eq!(snapshots.len(), 1);
                assert_eq!(snapshots[0].manifest.step, step);
                seen.push(format!("checkpoint {step}"));
            }
            Action::StepDone { step, loss, .. } => {
                assert!(loss.is_some());
                seen.push(format!("done {step}"));
            }
            Action::EvalDone { step, figures } => {
                let f = figures.expect("the rank holds the last chunk");
                assert_eq!(f.rows, 359, "the quickstart's test split");
                assert!(f.accuracy.is_some_and(|a| (0.0..=1.0).contains(&a)));
                seen.push(format!("eval {step}"));
            }
            Action::Finished => break,
            other => panic!("a single rank never sends or waits: {other:?}"),
        }
    }
    // The quickstart evaluates after its last step (and every 50).
    assert_eq!(
        seen,
        vec!["checkpoint 1", "done 0", "checkpoint 2", "done 1", "eval 2"]
    );
}
