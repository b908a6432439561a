//! The executor's core, free of I/O: it runs a stage's instruction list, consumes received
//! tensors as events and emits the sends and waits the driver must perform (in the manner of
//! raft-rs's `RawNode`/`Ready`). The socket transport and the in-memory test transport both
//! drive it the same way.

use crate::schedule::Instr;
use crate::trace::{Span, Tracer};
use brigade_stages::codec::Kind;
use brigade_stages::{Act, Stage, StageError, SyntheticData};

/// Which neighbour a message goes to or comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Peer {
    Prev,
    Next,
}

/// A tensor received from a neighbour (already decoded and checked against the plan's shape).
#[derive(Debug)]
pub struct Incoming {
    pub kind: Kind,
    pub step: u64,
    pub microbatch: u64,
    pub tensor: Act,
}

/// A tensor to send.
#[derive(Debug)]
pub struct Outgoing {
    pub to: Peer,
    pub kind: Kind,
    pub step: u64,
    pub microbatch: u64,
    pub tensor: Act,
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Action {
    /// Hand this tensor to the transport.
    Send(Box<Outgoing>),
    /// Nothing can run until this message is delivered.
    Wait {
        kind: Kind,
        step: u64,
        microbatch: u64,
    },
    /// A step finished; `loss` is the batch mean (last stage only).
    StepDone { step: u64, loss: Option<f64> },
    /// Every step is done.
    Finished,
}

/// A message or instruction out of step with the schedule.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExecError {
    #[error(transparent)]
    Stage(#[from] StageError),
    #[error(
        "stage {stage}: received {kind:?} for step {step}, micro-batch {microbatch}, which the schedule does not expect now (at step {current})"
    )]
    Unexpected {
        stage: usize,
        kind: Kind,
        step: u64,
        microbatch: u64,
        current: u64,
    },
    #[error("stage {stage}: cannot write a checkpoint: {why}")]
    Checkpoint { stage: usize, why: String },
    #[error("stage {stage}: received {kind:?} for step {step}, micro-batch {microbatch} twice")]
    Duplicate {
        stage: usize,
        kind: Kind,
        step: u64,
        microbatch: u64,
    },
}

/// One stage's executor.
pub struct Executor {
    stage: Stage,
    data: SyntheticData,
    stages: usize,
    microbatches: u64,
    list: Vec<Instr>,
    pc: usize,
    step: u64,
    end_step: u64,
    /// Received and not yet consumed by a forward or backward, keyed by (kind, step, micro-batch).
    inbox: std::collections::HashMap<(Kind, u64, u64), Act>,
    /// Outputs and input gradients computed and not yet sent.
    outbox: std::collections::HashMap<(Kind, u64), Act>,
    losses: Vec<f64>,
    waiting_since: Option<u64>,
    tracer: Tracer,
    checkpoints: Option<Checkpoints>,
}

/// Where a stage saves checkpoints, and how often.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    pub dir: std::path::PathBuf,
    pub every: u64,
    pub train_seed: u64,
    pub data_seed: u64,
}

impl Executor {
    /// Runs `list` (one step's instructions) from the stage's current step to `end_step`.
    pub fn new(
        stage: Stage,
        data: SyntheticData,
        stages: usize,
        microbatches: usize,
        list: Vec<Instr>,
        end_step: u64,
        tracer: Tracer,
    ) -> Self {
        let step = stage.step();
        Executor {
            stage,
            data,
            stages,
            microbatches: microbatches as u64,
            list,
            pc: 0,
            step,
            end_step,
            inbox: Default::default(),
            outbox: Default::default(),
            losses: Vec::new(),
            waiting_since: None,
            tracer,
            checkpoints: None,
        }
    }

    /// Saves a checkpoint after every `every`-th step.
    pub fn with_checkpoints(mut self, c: Checkpoints) -> Self {
        self.checkpoints = Some(c).filter(|c| c.every > 0);
        self
    }

    pub fn stage(&self) -> &Stage {
        &self.stage
    }

    pub fn into_parts(self) -> (Stage, Tracer) {
        (self.stage, self.tracer)
    }

    /// Accepts a received tensor. Messages for the next step may arrive early (a neighbour that
    /// finished its optimizer step first); anything else out of step is an error.
    pub fn deliver(&mut self, msg: Incoming) -> Result<(), ExecError> {
        let index = self.stage.index();
        let expected_kind = match msg.kind {
            Kind::Activation => index > 0,
            Kind::Gradient => index + 1 < self.stages,
        };
        let in_window =
            msg.step == self.step || (msg.step == self.step + 1 && msg.step < self.end_step);
        if !expected_kind || !in_window || msg.microbatch >= self.microbatches {
            return Err(ExecError::Unexpected {
                stage: index,
                kind: msg.kind,
                step: msg.step,
                microbatch: msg.microbatch,
                current: self.step,
            });
        }
        let key = (msg.kind, msg.step, msg.microbatch);
        if self.inbox.insert(key, msg.tensor).is_some() {
            return Err(ExecError::Duplicate {
                stage: index,
                kind: msg.kind,
                step: msg.step,
                microbatch: msg.microbatch,
            });
        }
        Ok(())
    }

    /// Runs instructions until one needs the driver.
    pub fn poll(&mut self) -> Result<Action, ExecError> {
        loop {
            if self.step >= self.end_step {
                return Ok(Action::Finished);
            }
            let instr = self.list[self.pc];
            let step = self.step;
            match instr {
                Instr::RecvAct(mb) | Instr::RecvGrad(mb) => {
                    let kind = if matches!(instr, Instr::RecvAct(_)) {
                        Kind::Activation
                    } else {
                        Kind::Gradient
                    };
                    let mb = mb as u64;
                    if !self.inbox.contains_key(&(kind, step, mb)) {
                        self.waiting_since.get_or_insert_with(|| self.tracer.now());
                        return Ok(Action::Wait {
                            kind,
                            step,
                            microbatch: mb,
                        });
                    }
                    if let Some(start) = self.waiting_since.take() {
                        self.tracer
                            .record(Span::new("recv", start, self.tracer.now(), step, mb));
                    }
                }
                Instr::Forward(mb) => {
                    let mb = mb as u64;
                    let start = self.tracer.now();
                    let input = if self.stage.index() == 0 {
                        self.data.inputs(step, mb, self.stage.device())
                    } else {
                        self.inbox
                            .remove(&(Kind::Activation, step, mb))
                            .expect("the schedule receives before it runs forward")
                    };
                    let out = self.stage.forward(mb, input)?;
                    self.tracer
                        .record(Span::new("forward", start, self.tracer.now(), step, mb));
                    if !self.stage.is_last() {
                        self.outbox.insert((Kind::Activation, mb), out);
                    }
                }
                Instr::Backward(mb) => {
                    let mb = mb as u64;
                    let start = self.tracer.now();
                    let grad_in = if self.stage.is_last() {
                        let target = self.data.targets(step, mb, self.stage.device());
                        let (loss, g) = self.stage.backward_loss(mb, &target)?;
                        self.losses.push(loss as f64);
                        g
                    } else {
                        let g = self
                            .inbox
                            .remove(&(Kind::Gradient, step, mb))
                            .expect("the schedule receives before it runs backward");
                        self.stage.backward(mb, g)?
                    };
                    self.tracer
                        .record(Span::new("backward", start, self.tracer.now(), step, mb));
                    if let Some(g) = grad_in {
                        self.outbox.insert((Kind::Gradient, mb), g);
                    }
                }
                Instr::SendAct(mb) | Instr::SendGrad(mb) => {
                    let (kind, to) = if matches!(instr, Instr::SendAct(_)) {
                        (Kind::Activation, Peer::Next)
                    } else {
                        (Kind::Gradient, Peer::Prev)
                    };
                    let mb = mb as u64;
                    let tensor = self
                        .outbox
                        .remove(&(kind, mb))
                        .expect("the schedule computes before it sends");
                    self.pc += 1;
                    return Ok(Action::Send(Box::new(Outgoing {
                        to,
                        kind,
                        step,
                        microbatch: mb,
                        tensor,
                    })));
                }
                Instr::OptimizerStep => {
                    let start = self.tracer.now();
                    self.stage.optimizer_step()?;
                    self.tracer
                        .record(Span::new("optimizer", start, self.tracer.now(), step, 0));
                    if let Some(c) = &self.checkpoints
                        && self.stage.step().is_multiple_of(c.every)
                    {
                        let start = self.tracer.now();
                        brigade_stages::checkpoint::save(
                            &self.stage,
                            &c.dir,
                            self.stages,
                            c.train_seed,
                            c.data_seed,
                        )
                        .map_err(|e| ExecError::Checkpoint {
                            stage: self.stage.index(),
                            why: e.to_string(),
                        })?;
                        self.tracer.record(Span::new(
                            "checkpoint",
                            start,
                            self.tracer.now(),
                            step,
                            0,
                        ));
                    }
                    self.pc = 0;
                    self.step += 1;
                    let loss = (!self.losses.is_empty())
                        .then(|| self.losses.drain(..).sum::<f64>() / self.microbatches as f64);
                    return Ok(Action::StepDone { step, loss });
                }
            }
            self.pc += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::build::executor;
    use crate::planning::make_plan;
    use burn::prelude::Device;

    fn stage1() -> Executor {
        let path = format!(
            "{}/../topologies/quickstart.toml",
            std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")
        );
        let p = make_plan(brigade_partitioner::load(&path, &[]).unwrap(), None).unwrap();
        executor(&p.topo, &p.plan, 1, &Device::flex(), 3, false)
    }

    fn act(shape: &[usize]) -> Act {
        Act::from_f32(vec![0.0; shape.iter().product()], shape, &Device::flex())
    }

    #[test]
    fn out_of_step_and_duplicate_messages_are_errors() {
        let mut e = stage1();
        let shape = e.stage().input_shape().to_vec();
        let msg = |kind, step, microbatch| Incoming {
            kind,
            step,
            microbatch,
            tensor: act(&shape),
        };
        // The last stage receives no gradients, nothing two steps ahead, no micro-batch 8 of 8.
        assert!(matches!(
            e.deliver(msg(Kind::Gradient, 0, 0)),
            Err(ExecError::Unexpected { .. })
        ));
        assert!(matches!(
            e.deliver(msg(Kind::Activation, 2, 0)),
            Err(ExecError::Unexpected { .. })
        ));
        assert!(matches!(
            e.deliver(msg(Kind::Activation, 0, 8)),
            Err(ExecError::Unexpected { .. })
        ));
        e.deliver(msg(Kind::Activation, 0, 0)).unwrap();
        e.deliver(msg(Kind::Activation, 1, 0)).unwrap(); // the next step may arrive early
        assert!(matches!(
            e.deliver(msg(Kind::Activation, 0, 0)),
            Err(ExecError::Duplicate { .. })
        ));
    }

    #[test]
    fn poll_waits_for_what_the_schedule_needs_first() {
        let mut e = stage1();
        match e.poll().unwrap() {
            Action::Wait {
                kind,
                step,
                microbatch,
            } => assert_eq!((kind, step, microbatch), (Kind::Activation, 0, 0)),
            other => panic!("expected a wait, got {other:?}"),
        }
    }
}
