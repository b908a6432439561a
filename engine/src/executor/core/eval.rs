//! Evaluation in the executor: after every `eval_every`-th step and after the last, the rank
//! runs its evaluation list — validation micro-batches forward, no backward, no update — with
//! validation activations on the same edges as training's (kind `eval`). The last chunk
//! scores each micro-batch on the device; the figures are read once, at the end.

use super::{Action, ExecError, Executor};
use crate::schedule::Instr;
use crate::trace::Span;
use brigade_stages::codec::Kind;
use brigade_stages::loss::{EvalSums, eval_sums};
use serde::{Deserialize, Serialize};

/// One evaluation's results (on the rank holding the last chunk).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EvalFigures {
    /// Mean loss over the validation samples.
    pub loss: f64,
    /// Share of correct argmax predictions (per sample, or per token for token models);
    /// none for mse.
    pub accuracy: Option<f64>,
    /// Validation samples scored.
    pub rows: u64,
}

/// The executor's evaluation program and progress.
pub(super) struct EvalState {
    list: Vec<Instr>,
    pub(super) microbatches: u64,
    every: u64,
    pub(super) running: bool,
    pc: usize,
    sums: Vec<EvalSums>,
}

impl EvalState {
    pub(super) fn new(list: Vec<Instr>, microbatches: u64, every: u64) -> Self {
        EvalState {
            list,
            microbatches,
            every,
            running: false,
            pc: 0,
            sums: Vec::new(),
        }
    }

    /// After `done` steps (of `end`): starts an evaluation if one is due.
    pub(super) fn start_if_due(&mut self, done: u64, end: u64) {
        let due = (self.every > 0 && done.is_multiple_of(self.every)) || done == end;
        if due && !self.list.is_empty() {
            self.running = true;
            self.pc = 0;
        }
    }
}

impl Executor {
    /// Runs evaluation instructions until one needs the driver or the evaluation ends.
    pub(super) fn eval_poll(&mut self) -> Result<Option<Action>, ExecError> {
        while self.eval.pc < self.eval.list.len() {
            let instr = self.eval.list[self.eval.pc];
            if let Some(action) = self.eval_run(instr)? {
                return Ok(Some(action));
            }
        }
        self.eval.running = false;
        let sums = std::mem::take(&mut self.eval.sums);
        let figures = (!sums.is_empty()).then(|| figures(sums));
        Ok(Some(Action::EvalDone {
            step: self.step,
            figures,
        }))
    }

    fn eval_run(&mut self, instr: Instr) -> Result<Option<Action>, ExecError> {
        let (step, rank) = (self.step, self.rank);
        let inconsistent = move |why| ExecError::Schedule { rank, instr, why };
        match instr {
            Instr::RecvAct { edge, mb } => {
                if let Some(wait) = self.wait_for(edge, Kind::Eval, mb as u64) {
                    return Ok(Some(wait));
                }
            }
            Instr::SendAct { edge, mb } => {
                let action = self.send(instr, edge, Kind::Eval, mb as u64)?;
                self.eval.pc += 1;
                return Ok(action);
            }
            Instr::EvalForward { chunk, mb } => {
                let (chunk, mb) = (chunk as usize, mb as u64);
                let start = self.tracer.now();
                let device = self.stage(chunk, instr)?.device().clone();
                let input = match self.edges.iter().position(|e| e.to_chunk == chunk) {
                    None => self
                        .data
                        .eval_inputs(mb, &device)
                        .map_err(|e| self.data_error(step, mb, e))?,
                    Some(edge) => self
                        .inbox
                        .remove(&(edge as u32, Kind::Eval, step, mb))
                        .ok_or_else(|| inconsistent("evaluation before its input arrived"))?,
                };
                let out = self.stage(chunk, instr)?.evaluate(mb, input)?;
                if self.edges.iter().any(|e| e.from_chunk == chunk) {
                    self.outbox.insert((chunk, Kind::Eval, mb), out);
                } else {
                    let target = self
                        .data
                        .eval_targets(mb, &device)
                        .map_err(|e| self.data_error(step, mb, e))?;
                    self.eval.sums.push(eval_sums(&out, &target));
                }
                self.tracer
                    .record(Span::new("evaluate", start, self.tracer.now(), step, mb));
            }
            _ => return Err(inconsistent("a training instruction in an evaluation list")),
        }
        self.eval.pc += 1;
        Ok(None)
    }
}

/// Reads the sums off the device once and combines them in micro-batch order.
fn figures(sums: Vec<EvalSums>) -> EvalFigures {
    let (mut loss, mut correct, mut rows, mut predictions) = (0.0, 0.0, 0, 0);
    let mut scored = true;
    for s in sums {
        loss += s
            .loss_sum
            .into_data()
            .convert::<f64>()
            .iter::<f64>()
            .sum::<f64>();
        match s.correct {
            Some(c) => correct += c.into_data().convert::<f64>().iter::<f64>().sum::<f64>(),
            None => scored = false,
        }
        rows += s.rows;
        predictions += s.predictions;
    }
    EvalFigures {
        loss: loss / rows.max(1) as f64,
        accuracy: (scored && predictions > 0).then(|| correct / predictions as f64),
        rows,
    }
}
