//! A transport's [`Reducer`] run on the rank's compute thread: the transport feeds it the
//! segments it receives whenever the driver asks for what arrived, and sends what it asks.
//!
//! Why the compute thread (issue 28, measured on two cores, docs/performance.md): the driver
//! waits on the transport whenever nothing else can run, so a segment is summed as soon as
//! the rank is idle; the same reducer on the I/O thread stopped every link's reading and
//! writing for each sum (a 2 × 1 step 160 → 173 ms), and on a thread of its own it was one
//! more thread for two cores (a 2 × 2 step 259 → 276 ms).

use super::reducer::{Out, Reducer, Segment, SegmentError};
use super::{TransportError, bad_segment};
use crate::message::{Arrived, Incoming, ReduceJob, Reduced};
use crate::trace::{Span, TraceEvent, Tracer};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// What reaches a rank: a neighbour's tensor, or a ring segment (its `peer`: the sender).
pub(crate) enum Delivery {
    Message(Box<Incoming>),
    Segment(Segment),
}

pub(crate) struct InlineReducer {
    stage: usize,
    reducer: Reducer,
    /// Finished reductions not yet handed over.
    done: VecDeque<Reduced>,
    tracer: Tracer,
}

impl InlineReducer {
    /// Rank `stage`'s reducer; `trace`: record a `reduce` span (compute thread) for each job
    /// started and each segment taken (`mb` the bucket, `peer` the sender or this rank).
    pub(crate) fn new(stage: usize, trace: bool) -> InlineReducer {
        InlineReducer {
            stage,
            reducer: Reducer::default(),
            done: VecDeque::new(),
            tracer: Tracer::new(stage, 0, trace),
        }
    }

    /// Starts `job`, sending its first segment through `send`.
    pub(crate) fn start(
        &mut self,
        job: ReduceJob,
        send: impl FnMut(Segment) -> Result<(), TransportError>,
    ) -> Result<(), TransportError> {
        let (start, edge, step) = (self.tracer.now(), job.edge, job.step);
        let bucket = u64::from(job.bucket);
        let outs = self.reducer.start(job);
        self.carry(outs, send)?;
        let span = Span::new("reduce", start, self.tracer.now(), step, bucket);
        self.tracer.record(span.on(edge, self.stage));
        Ok(())
    }

    /// Takes a peer's segment, sending what follows through `send`.
    pub(crate) fn arrived(
        &mut self,
        seg: Segment,
        send: impl FnMut(Segment) -> Result<(), TransportError>,
    ) -> Result<(), TransportError> {
        let start = self.tracer.now();
        let bucket = u64::from(super::reducer::untag(seg.tag).0);
        let span = Span::new("reduce", start, start, seg.step, bucket).on(seg.edge, seg.peer);
        let outs = self.reducer.arrived(seg);
        self.carry(outs, send)?;
        self.tracer.record(Span {
            end: self.tracer.now(),
            ..span
        });
        Ok(())
    }

    /// [`super::Transport::recv`]: the next message or finished reduction, taking the
    /// segments `next` brings meanwhile (`next(wait)`: what arrives within `wait`).
    pub(crate) fn recv(
        &mut self,
        timeout: Duration,
        mut next: impl FnMut(Duration) -> Result<Option<Delivery>, TransportError>,
        mut send: impl FnMut(Segment) -> Result<(), TransportError>,
    ) -> Result<Option<Arrived>, TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(r) = self.done.pop_front() {
                return Ok(Some(Arrived::Reduced(r)));
            }
            match next(deadline.saturating_duration_since(Instant::now()))? {
                None => return Ok(None),
                Some(Delivery::Message(m)) => return Ok(Some(Arrived::Message(m))),
                Some(Delivery::Segment(seg)) => self.arrived(seg, &mut send)?,
            }
        }
    }

    pub(crate) fn take_trace(&mut self) -> Vec<TraceEvent> {
        std::mem::replace(&mut self.tracer, Tracer::new(self.stage, 0, false)).into_events()
    }

    fn carry(
        &mut self,
        outs: Result<Vec<Out>, SegmentError>,
        mut send: impl FnMut(Segment) -> Result<(), TransportError>,
    ) -> Result<(), TransportError> {
        for out in outs.map_err(|e| bad_segment(self.stage, e))? {
            match out {
                Out::Send(seg) => send(seg)?,
                Out::Done(r) => self.done.push_back(r),
            }
        }
        Ok(())
    }
}
