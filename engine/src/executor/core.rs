//! The executor's core, free of I/O: it runs a rank's instruction list, consumes received
//! tensors as events and emits the actions the driver must perform — sends, waits, checkpoint
//! writes, finished steps — in the manner of raft-rs's `RawNode`/`Ready`. Batches come through
//! the [`Batches`] trait; sockets and files belong to drivers. The socket transport, the
//! in-memory test transport and the one-rank reference trainer all drive it the same way.

use crate::allreduce::Algo;
use crate::schedule::Instr;
use crate::trace::{Span, Tracer};
use brigade_stages::checkpoint::Snapshot;
use brigade_stages::codec::Kind;
use brigade_stages::{Act, Batches, Stage};
use burn::prelude::Tensor;

pub use super::error::ExecError;
pub use crate::message::{Incoming, Outgoing};
pub use clip::NormRing;
pub use eval::EvalFigures;
use eval::EvalState;
use reduce::{Buckets, Reducing};
use std::collections::{HashMap, HashSet, VecDeque};
pub use tie::TieRing;

/// One edge as an executor sees it: the chunks it joins and the ranks holding them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeRoute {
    pub from_chunk: usize,
    pub to_chunk: usize,
    pub producer: usize,
    pub consumer: usize,
    /// The tensor it carries: the output of this layer (skip connections: not always the
    /// producing chunk's last layer).
    pub tensor: usize,
}

/// What the driver must do next.
#[derive(Debug)]
pub enum Action {
    /// Hand this tensor to the transport.
    Send(Box<Outgoing>),
    /// Nothing can run until this message is delivered.
    Wait {
        edge: u32,
        kind: Kind,
        step: u64,
        microbatch: u64,
    },
    /// Sum `data` (the gradient norms or a tied gradient, on ring `chunk`) with the other
    /// members of `ring` (ranks in replica order; this rank is member `me`), then hand the
    /// sum back with [`Executor::reduced`]. Nothing runs until then.
    AllReduce {
        chunk: usize,
        ring: Vec<usize>,
        me: usize,
        data: Vec<f32>,
    },
    /// Start summing bucket `bucket` of chunk `edge`'s gradients (on the last chunk's last
    /// bucket, with its loss) with the other members of `ring` by `algo`, and poll again at
    /// once: the sum comes back through [`Executor::bucket_reduced`] while the next bucket
    /// is made.
    ReduceBucket {
        edge: u32,
        bucket: u32,
        ring: Vec<usize>,
        me: usize,
        algo: Algo,
        data: Vec<f32>,
    },
    /// Nothing can run until the buckets in flight are summed.
    AwaitReduced,
    /// Write these chunks' checkpoints (taken after `step` steps) under the checkpoint directory.
    Checkpoint { step: u64, snapshots: Vec<Snapshot> },
    /// A step finished; `loss` is the batch mean (on the rank holding the last chunk);
    /// `grad_norm` the global gradient norm, where `clip_grad_norm` computed it.
    StepDone {
        step: u64,
        loss: Option<f64>,
        grad_norm: Option<f64>,
    },
    /// An evaluation after `step` steps finished; the figures on the rank holding the last
    /// chunk.
    EvalDone {
        step: u64,
        figures: Option<EvalFigures>,
    },
    /// Every step is done.
    Finished,
}

/// What a rank runs: its instruction list for one step and the plan's edges (indexed by id).
#[derive(Debug, Clone)]
pub struct Program {
    pub rank: usize,
    pub edges: Vec<EdgeRoute>,
    pub list: Vec<Instr>,
    pub microbatches: usize,
    /// The evaluation list ([`crate::schedule::eval_schedule`]); empty: no evaluation.
    pub eval: Vec<Instr>,
    /// Validation micro-batches per evaluation.
    pub eval_microbatches: usize,
    /// Evaluate after every this many steps (0: only after the last).
    pub eval_every: u64,
    /// Data parallelism: this rank's replica's first micro-batch within each step (its
    /// micro-batches are `mb_offset ..` of the step's), the step's micro-batches over all
    /// replicas, and for each chunk it holds the ring of ranks holding that chunk.
    pub replicas: Replication,
    /// `clip_grad_norm` over several ranks: the ring summing the norm (`None`: one rank, or no
    /// clipping).
    pub norm: Option<NormRing>,
    /// `model.tie_word_embeddings`: where the two copies of the shared weight are.
    pub tie: Option<TieRing>,
}

/// Where a rank sits among the replicas (the default: one replica, no all-reduce).
#[derive(Debug, Clone, Default)]
pub struct Replication {
    pub replica: usize,
    pub mb_offset: u64,
    /// Micro-batches per step in all replicas together (0: this rank's own count).
    pub total_microbatches: u64,
    /// (chunk, ranks holding it in replica order).
    pub rings: Vec<(usize, Vec<usize>)>,
    /// Gradients are summed in buckets of about this many bytes (`[partition] bucket_mb`;
    /// 0: one bucket a chunk).
    pub bucket_bytes: usize,
}

/// Where and how often a rank checkpoints.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointPolicy {
    pub every: u64,
    /// Chunks in the job (written in each manifest).
    pub chunks: usize,
    pub train_seed: u64,
    pub data_seed: u64,
}

/// One rank's executor.
pub struct Executor {
    rank: usize,
    /// The chunks this rank holds, by chunk id.
    stages: HashMap<usize, Stage>,
    edges: Vec<EdgeRoute>,
    data: Box<dyn Batches>,
    microbatches: u64,
    list: Vec<Instr>,
    pc: usize,
    step: u64,
    end_step: u64,
    /// (edge, kind) this rank receives, from its list.
    receives: HashSet<(u32, Kind)>,
    /// Received and not yet consumed, keyed by (edge, kind, step, micro-batch).
    inbox: HashMap<(u32, Kind, u64, u64), Act>,
    /// Outputs and input gradients computed and not yet sent, keyed by (edge, kind, mb).
    outbox: HashMap<(u32, Kind, u64), Act>,
    /// This step's micro-batch losses, still on the device (read once, at the step's end).
    losses: Vec<(u64, Tensor<1>)>,
    waiting_since: Option<u64>,
    tracer: Tracer,
    checkpoints: Option<CheckpointPolicy>,
    pending: VecDeque<Action>,
    eval: EvalState,
    /// Data parallelism (see [`Replication`]).
    mb_offset: u64,
    total_microbatches: u64,
    rings: Vec<(usize, Vec<usize>)>,
    replica: usize,
    /// The step's loss over every replica, from the last chunk's all-reduce.
    global_loss: Option<f64>,
    reducing: Option<Reducing>,
    /// The chunks whose gradients are being summed, bucket by bucket.
    buckets: Vec<Buckets>,
    bucket_bytes: usize,
    norm: Option<NormRing>,
    tie: Option<TieRing>,
    /// This step's tied gradients are summed.
    tied: bool,
    /// This step's global gradient norm, once clipping computed it.
    grad_norm: Option<f64>,
}

impl Executor {
    /// Runs `program` with the chunks in `stages` from their current step to `end_step`.
    pub fn new(
        program: Program,
        stages: Vec<Stage>,
        data: Box<dyn Batches>,
        end_step: u64,
        tracer: Tracer,
    ) -> Self {
        let Program {
            rank,
            edges,
            list,
            microbatches,
            eval,
            eval_microbatches,
            eval_every,
            replicas,
            norm,
            tie,
        } = program;
        let step = stages.first().map_or(0, |s| s.step());
        let receives = list
            .iter()
            .filter_map(|i| match *i {
                Instr::RecvAct { edge, .. } => Some((edge, Kind::Activation)),
                Instr::RecvGrad { edge, .. } => Some((edge, Kind::Gradient)),
                _ => None,
            })
            .chain(eval.iter().filter_map(|i| match *i {
                Instr::RecvAct { edge, .. } => Some((edge, Kind::Eval)),
                _ => None,
            }))
            .collect();
        Executor {
            rank,
            stages: stages.into_iter().map(|s| (s.index(), s)).collect(),
            edges,
            data,
            microbatches: microbatches as u64,
            mb_offset: replicas.mb_offset,
            total_microbatches: if replicas.total_microbatches > 0 {
                replicas.total_microbatches
            } else {
                microbatches as u64
            },
            rings: replicas.rings.clone(),
            replica: replicas.replica,
            global_loss: None,
            grad_norm: None,
            reducing: None,
            buckets: Vec::new(),
            bucket_bytes: match replicas.bucket_bytes {
                0 => usize::MAX,
                b => b,
            },
            norm,
            tie,
            tied: false,
            list,
            pc: 0,
            step,
            end_step,
            receives,
            inbox: Default::default(),
            outbox: Default::default(),
            losses: Vec::new(),
            waiting_since: None,
            tracer,
            checkpoints: None,
            pending: VecDeque::new(),
            eval: EvalState::new(eval, eval_microbatches as u64, eval_every),
        }
    }

    /// Asks for a checkpoint after every `every`-th step.
    pub fn with_checkpoints(mut self, c: CheckpointPolicy) -> Self {
        self.checkpoints = Some(c).filter(|c| c.every > 0);
        self
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The steps completed so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The chunks this rank holds, in chunk order.
    pub fn stages(&self) -> Vec<&Stage> {
        let mut v: Vec<&Stage> = self.stages.values().collect();
        v.sort_by_key(|s| s.index());
        v
    }

    pub fn into_parts(self) -> (Vec<Stage>, Tracer) {
        let mut v: Vec<Stage> = self.stages.into_values().collect();
        v.sort_by_key(|s| s.index());
        (v, self.tracer)
    }

    /// Accepts a received tensor. Messages for the next step may arrive early (a neighbour that
    /// finished its optimizer step first); anything else out of step is an error.
    pub fn deliver(&mut self, msg: Incoming) -> Result<(), ExecError> {
        // An evaluation runs after its step (even the last), so its messages may come from
        // one step ahead; training messages for a step past the last cannot.
        let (in_window, microbatches) = match msg.kind {
            Kind::Eval => (
                msg.step == self.step || msg.step == self.step + 1,
                self.eval.microbatches,
            ),
            _ => (
                msg.step == self.step || (msg.step == self.step + 1 && msg.step < self.end_step),
                self.microbatches,
            ),
        };
        if !self.receives.contains(&(msg.edge, msg.kind))
            || !in_window
            || msg.microbatch >= microbatches
        {
            return Err(ExecError::Unexpected {
                rank: self.rank,
                edge: msg.edge,
                kind: msg.kind,
                step: msg.step,
                microbatch: msg.microbatch,
                current: self.step,
            });
        }
        let key = (msg.edge, msg.kind, msg.step, msg.microbatch);
        if self.inbox.insert(key, msg.tensor).is_some() {
            return Err(ExecError::Duplicate {
                rank: self.rank,
                edge: msg.edge,
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
            if let Some(a) = self.pending.pop_front() {
                return Ok(a);
            }
            if self.eval.running {
                if let Some(action) = self.eval_poll()? {
                    return Ok(action);
                }
                continue;
            }
            if self.step >= self.end_step {
                return Ok(Action::Finished);
            }
            if self.pc == self.list.len() {
                self.end_step_()?;
                continue;
            }
            let instr = self.list[self.pc];
            if let Some(action) = self.run(instr)? {
                return Ok(action);
            }
        }
    }

    /// Runs one instruction; returns the action it needs, if any (then the instruction is
    /// either done, or — for a wait — run again on the next poll).
    fn run(&mut self, instr: Instr) -> Result<Option<Action>, ExecError> {
        let (step, rank) = (self.step, self.rank);
        let inconsistent = move |why| ExecError::Schedule { rank, instr, why };
        match instr {
            Instr::RecvAct { edge, mb } | Instr::RecvGrad { edge, mb } => {
                let kind = if matches!(instr, Instr::RecvAct { .. }) {
                    Kind::Activation
                } else {
                    Kind::Gradient
                };
                if let Some(wait) = self.wait_for(edge, kind, mb as u64) {
                    return Ok(Some(wait));
                }
            }
            Instr::Forward { chunk, mb } => {
                let (chunk, mb) = (chunk as usize, mb as u64);
                let start = self.tracer.now();
                let inputs = self.gather(chunk, Kind::Activation, mb, instr)?;
                let global = mb + self.mb_offset;
                let out = self.stage_mut(chunk, instr)?.forward_many(global, inputs)?;
                self.tracer
                    .record(Span::new("forward", start, self.tracer.now(), step, mb));
                self.stash(chunk, Kind::Activation, mb, out);
            }
            Instr::Backward { chunk, mb } => self.backward(instr, chunk as usize, mb as u64)?,
            Instr::SendAct { edge, mb } | Instr::SendGrad { edge, mb } => {
                let kind = if matches!(instr, Instr::SendAct { .. }) {
                    Kind::Activation
                } else {
                    Kind::Gradient
                };
                let action = self.send(instr, edge, kind, mb as u64)?;
                self.pc += 1;
                return Ok(action);
            }
            Instr::BackwardWeight { chunk, mb } => {
                let start = self.tracer.now();
                let global = mb as u64 + self.mb_offset;
                self.stage_mut(chunk as usize, instr)?
                    .backward_weight(global)?;
                self.tracer.record(Span::new(
                    "backward_weight",
                    start,
                    self.tracer.now(),
                    step,
                    mb as u64,
                ));
            }
            Instr::EvalForward { .. } => {
                return Err(inconsistent("an evaluation instruction in a training list"));
            }
            // Moves on by itself once every bucket is handed over.
            Instr::AllReduce { chunk } => return self.all_reduce(instr, chunk as usize),
            Instr::OptimizerStep { chunk } => {
                if let Some(wait) = self.settle_buckets(instr)? {
                    return Ok(Some(wait));
                }
                if let Some(reduce) = self.tie_once()? {
                    return Ok(Some(reduce));
                }
                if let Some(reduce) = self.clip_once()? {
                    return Ok(Some(reduce));
                }
                let start = self.tracer.now();
                self.stage_mut(chunk as usize, instr)?.optimizer_step()?;
                self.tracer
                    .record(Span::new("optimizer", start, self.tracer.now(), step, 0));
            }
        }
        self.pc += 1;
        Ok(None)
    }

    /// Runs `Backward` of micro-batch `mb` on `chunk`: from the loss on the last chunk, else
    /// from the received output gradients; queues the input gradients to send.
    fn backward(&mut self, instr: Instr, chunk: usize, mb: u64) -> Result<(), ExecError> {
        let (step, rank) = (self.step, self.rank);
        let inconsistent = move |why| ExecError::Schedule { rank, instr, why };
        let start = self.tracer.now();
        let grad_in = match self.edges.iter().position(|e| e.from_chunk == chunk) {
            None => {
                let device = self.stage(chunk, instr)?.device().clone();
                let target = self
                    .data
                    .targets(step, mb + self.mb_offset, &device)
                    .map_err(|e| self.data_error(step, mb, e))?;
                let global = mb + self.mb_offset;
                let (loss, g) = self
                    .stage_mut(chunk, instr)?
                    .backward_loss_deferred(global, &target)?;
                self.losses.push((mb, loss));
                g
            }
            Some(_) => {
                let grads = self.output_grads(chunk, mb, instr)?;
                let global = mb + self.mb_offset;
                self.stage_mut(chunk, instr)?.backward_many(global, grads)?
            }
        };
        self.tracer
            .record(Span::new("backward", start, self.tracer.now(), step, mb));
        let received: Vec<usize> = self
            .stage(chunk, instr)?
            .input_tensors()
            .iter()
            .copied()
            .filter(|&t| t != brigade_stages::MODEL_INPUT)
            .collect();
        for (t, g) in received.into_iter().zip(grad_in) {
            let edge = self
                .in_edge(chunk, t)
                .ok_or_else(|| inconsistent("no edge brings one of the chunk's inputs"))?;
            self.outbox.insert((edge, Kind::Gradient, mb), g);
        }
        Ok(())
    }

    /// A wait for (edge, kind, this step, mb), unless it has arrived.
    fn wait_for(&mut self, edge: u32, kind: Kind, mb: u64) -> Option<Action> {
        let step = self.step;
        if !self.inbox.contains_key(&(edge, kind, step, mb)) {
            self.waiting_since.get_or_insert_with(|| self.tracer.now());
            return Some(Action::Wait {
                edge,
                kind,
                step,
                microbatch: mb,
            });
        }
        if let Some(start) = self.waiting_since.take() {
            self.tracer
                .record(Span::new("recv", start, self.tracer.now(), step, mb));
        }
        None
    }

    /// Sends the computed `kind` tensor of micro-batch `mb` along `edge` (activations and
    /// validation activations to the consumer, gradients to the producer); `None` when the
    /// other end is a chunk of this rank.
    fn send(
        &mut self,
        instr: Instr,
        edge: u32,
        kind: Kind,
        mb: u64,
    ) -> Result<Option<Action>, ExecError> {
        let (step, rank) = (self.step, self.rank);
        let inconsistent = move |why| ExecError::Schedule { rank, instr, why };
        let e = *self
            .edges
            .get(edge as usize)
            .ok_or_else(|| inconsistent("no such edge"))?;
        let to = match kind {
            Kind::Gradient => e.producer,
            Kind::Activation | Kind::Eval => e.consumer,
            Kind::Reduce => return Err(inconsistent("a ring segment is the driver's to send")),
        };
        let tensor = self
            .outbox
            .remove(&(edge, kind, mb))
            .ok_or_else(|| inconsistent("send before its tensor was computed"))?;
        if to == self.rank {
            // Between two chunks of this rank (interleaved 1F1B on one rank): no message, the
            // tensor waits in the inbox for its receive.
            self.inbox.insert((edge, kind, step, mb), tensor);
            return Ok(None);
        }
        Ok(Some(Action::Send(Box::new(Outgoing {
            edge,
            to,
            kind,
            step,
            microbatch: mb,
            // Without autodiff: the I/O thread reads and drops it, and autodiff's bookkeeping
            // stays on this thread.
            tensor: tensor.inner(),
        }))))
    }

    /// The end of the list: the step is done.
    fn end_step_(&mut self) -> Result<(), ExecError> {
        let step = self.step;
        self.pc = 0;
        self.step += 1;
        if let Some(c) = self.checkpoints
            && self.step.is_multiple_of(c.every)
        {
            let start = self.tracer.now();
            let snapshots = self
                .stages()
                .into_iter()
                .map(|s| {
                    brigade_stages::checkpoint::snapshot(s, c.chunks, c.train_seed, c.data_seed)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ExecError::Checkpoint {
                    rank: self.rank,
                    why: e.to_string(),
                })?;
            self.tracer
                .record(Span::new("checkpoint", start, self.tracer.now(), step, 0));
            self.pending.push_back(Action::Checkpoint {
                step: self.step,
                snapshots,
            });
        }
        let loss = match self.global_loss.take() {
            Some(l) => Some(l),
            None => (!self.losses.is_empty()).then(|| self.loss_sum() / self.microbatches as f64),
        };
        self.losses.clear();
        let grad_norm = self.grad_norm.take();
        self.tied = false;
        self.pending.push_back(Action::StepDone {
            step,
            loss,
            grad_norm,
        });
        self.eval.start_if_due(self.step, self.end_step);
        Ok(())
    }

    /// The edge bringing tensor `t` into `chunk`.
    fn in_edge(&self, chunk: usize, t: usize) -> Option<u32> {
        self.edges
            .iter()
            .position(|e| e.to_chunk == chunk && e.tensor == t)
            .map(|e| e as u32)
    }

    /// What `chunk` takes for micro-batch `mb`, in its input order: the data for the model's
    /// input (training or validation, by `kind`), received tensors for the rest.
    fn gather(
        &mut self,
        chunk: usize,
        kind: Kind,
        mb: u64,
        instr: Instr,
    ) -> Result<Vec<brigade_stages::Act>, ExecError> {
        let (step, rank) = (self.step, self.rank);
        let stage = self.stage(chunk, instr)?;
        let (tensors, device) = (stage.input_tensors().to_vec(), stage.device().clone());
        let mut inputs = Vec::with_capacity(tensors.len());
        for t in tensors {
            if t == brigade_stages::MODEL_INPUT {
                let start = self.tracer.now();
                let input = match kind {
                    Kind::Eval => self.data.eval_inputs(mb, &device),
                    _ => self.data.inputs(step, mb + self.mb_offset, &device),
                }
                .map_err(|e| self.data_error(step, mb, e))?;
                // Time taken by the data (waiting for the reader thread, building the tensor),
                // inside the forward span.
                if kind != Kind::Eval {
                    self.tracer
                        .record(Span::new("data", start, self.tracer.now(), step, mb));
                }
                inputs.push(input);
                continue;
            }
            let edge = self.in_edge(chunk, t).ok_or(ExecError::Schedule {
                rank,
                instr,
                why: "no edge brings one of the chunk's inputs",
            })?;
            let input = self
                .inbox
                .remove(&(edge, kind, step, mb))
                .ok_or(ExecError::Schedule {
                    rank,
                    instr,
                    why: "forward before its input arrived",
                })?;
            inputs.push(input);
        }
        Ok(inputs)
    }

    /// Keeps `chunk`'s outputs of micro-batch `mb` for their sends: each on every edge that
    /// carries it (a tensor taken by several later chunks goes to each once).
    fn stash(&mut self, chunk: usize, kind: Kind, mb: u64, outputs: Vec<brigade_stages::Act>) {
        let Some(stage) = self.stages.get(&chunk) else {
            return;
        };
        let tensors = stage.output_tensors().to_vec();
        for (t, out) in tensors.into_iter().zip(outputs) {
            for (e, _) in self
                .edges
                .iter()
                .enumerate()
                .filter(|(_, e)| e.from_chunk == chunk && e.tensor == t)
            {
                self.outbox.insert((e as u32, kind, mb), out.clone());
            }
        }
    }

    /// The gradients of `chunk`'s outputs of micro-batch `mb`, in its output order: a tensor
    /// sent to several chunks gets the sum of their gradients (in edge order).
    fn output_grads(
        &mut self,
        chunk: usize,
        mb: u64,
        instr: Instr,
    ) -> Result<Vec<brigade_stages::Act>, ExecError> {
        let (step, rank) = (self.step, self.rank);
        let tensors = self.stage(chunk, instr)?.output_tensors().to_vec();
        let mut grads = Vec::with_capacity(tensors.len());
        for t in tensors {
            let edges: Vec<u32> = (0..self.edges.len() as u32)
                .filter(|&e| {
                    let r = &self.edges[e as usize];
                    r.from_chunk == chunk && r.tensor == t
                })
                .collect();
            // Later consumers first, each added in front (`g + sum`): the order and association
            // one process's backward uses (its later layers are deeper).
            let mut sum: Option<brigade_stages::Act> = None;
            for e in edges.into_iter().rev() {
                let g = self.inbox.remove(&(e, Kind::Gradient, step, mb)).ok_or(
                    ExecError::Schedule {
                        rank,
                        instr,
                        why: "backward before its gradient arrived",
                    },
                )?;
                sum = Some(match sum {
                    None => g,
                    Some(s) => g + s,
                });
            }
            grads.push(sum.ok_or(ExecError::Schedule {
                rank,
                instr,
                why: "no edge carries one of the chunk's outputs",
            })?);
        }
        Ok(grads)
    }

    fn stage(&self, chunk: usize, instr: Instr) -> Result<&Stage, ExecError> {
        self.stages.get(&chunk).ok_or(ExecError::Schedule {
            rank: self.rank,
            instr,
            why: "this rank does not hold the chunk",
        })
    }

    fn stage_mut(&mut self, chunk: usize, instr: Instr) -> Result<&mut Stage, ExecError> {
        let rank = self.rank;
        self.stages.get_mut(&chunk).ok_or(ExecError::Schedule {
            rank,
            instr,
            why: "this rank does not hold the chunk",
        })
    }

    fn data_error(&self, step: u64, mb: u64, e: brigade_stages::DataError) -> ExecError {
        ExecError::Data {
            rank: self.rank,
            step,
            microbatch: mb,
            why: e.to_string(),
        }
    }
}

mod clip;
mod eval;
mod reduce;
#[cfg(test)]
mod tests;
mod tie;
