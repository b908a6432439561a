//! Text Gantt charts of a simulated step, for `brigade simulate` and the tables in the tests.

use super::{SimReport, Span};
use crate::Instr;

/// A text Gantt chart, one row per rank, `width` columns for the step. Forward of micro-batch i
/// is shown as its last digit, backward as a lower-case letter (a = micro-batch 0), ZB-H1's
/// weight-gradient pass W as the upper-case letter, the optimizer step as `#`, idle as `.`.
pub fn gantt(report: &SimReport, stages: usize, width: usize) -> Vec<String> {
    chart(report, stages, width, |s| s.rank)
}

/// [`gantt`] with one row per chunk instead of per rank (for ranks that hold several chunks).
pub fn gantt_by_chunk(report: &SimReport, chunks: usize, width: usize) -> Vec<String> {
    chart(report, chunks, width, |s| match s.instr {
        Instr::Forward { chunk, .. }
        | Instr::Backward { chunk, .. }
        | Instr::BackwardWeight { chunk, .. }
        | Instr::OptimizerStep { chunk } => chunk as usize,
        _ => usize::MAX,
    })
}

fn chart(
    report: &SimReport,
    rows_n: usize,
    width: usize,
    row_of: impl Fn(&Span) -> usize,
) -> Vec<String> {
    let mut rows = vec![vec!['.'; width]; rows_n];
    let scale = if report.step_ms > 0.0 {
        width as f64 / report.step_ms
    } else {
        0.0
    };
    for s in &report.spans {
        let c = match s.instr {
            Instr::Forward { mb, .. } => char::from_digit(mb % 10, 10).unwrap(),
            Instr::Backward { mb, .. } => (b'a' + (mb % 26) as u8) as char,
            Instr::BackwardWeight { mb, .. } => (b'A' + (mb % 26) as u8) as char,
            _ => '#',
        };
        // A column shows what runs at its midpoint.
        let first = ((s.start_ms * scale) - 0.5).ceil().max(0.0) as usize;
        let last = ((s.end_ms * scale) - 0.5).ceil().max(0.0) as usize;
        let Some(row) = rows.get_mut(row_of(s)) else {
            continue;
        };
        for cell in row.iter_mut().take(last.min(width)).skip(first) {
            *cell = c;
        }
    }
    rows.into_iter().map(|r| r.into_iter().collect()).collect()
}
