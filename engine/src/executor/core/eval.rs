//! Evaluation in the executor: after every `eval_every`-th step and after the last, the rank
//! runs its evaluation list — validation micro-batches forward, no backward, no update — with
//! validation activations on the same edges as training's (kind `eval`). The last chunk
//! scores each micro-batch on the device; the figures are read once, at the end.

use super::{Action, ExecError, Executor};
use crate::schedule::Instr;
use crate::trace::Span;
use brigade_stages::codec::Kind;
pub use brigade_stages::loss::EvalFigures;
use brigade_stages::loss::{EvalSums, eval_sums};

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
        let figures = (!sums.is_empty()).then(|| EvalFigures::of(sums));
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
                let inputs = self.gather(chunk, Kind::Eval, mb, instr)?;
                let mut out = self.stage(chunk, instr)?.evaluate_many(mb, inputs)?;
                if self.edges.iter().any(|e| e.from_chunk == chunk) {
                    self.stash(chunk, Kind::Eval, mb, out);
                } else {
                    let out = out.swap_remove(0);
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
