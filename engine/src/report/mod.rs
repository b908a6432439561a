//! `brigade report` and `train --report`: one self-contained HTML page (inline SVG and CSS, no
//! script, nothing fetched) with a run's curves, each rank's measured timeline next to the
//! simulator's prediction, bubble and memory per rank, and the plan's stage table.

pub mod charts;
mod page;
mod read;
#[cfg(test)]
mod tests;
pub mod timeline;

use crate::planning::Planned;
pub use read::{Metrics, Trace, metrics, trace};

/// What a report is made of.
pub struct Inputs<'a> {
    /// The metrics file's name (shown on the page).
    pub metrics_file: &'a str,
    pub metrics: Metrics,
    pub trace: Option<Trace>,
    /// The job's plan, explained and simulated.
    pub plan: Option<&'a Planned>,
    /// Training still runs: the page reloads itself.
    pub live: bool,
}

/// The page.
pub fn render(inputs: &Inputs) -> String {
    page::render(inputs)
}

/// Writes `html` to `out` through a temporary file, so a browser reloading it never reads half
/// a page.
pub fn write(out: &str, html: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let tmp = format!("{out}.tmp");
    std::fs::write(&tmp, html)
        .and_then(|()| std::fs::rename(&tmp, out))
        .with_context(|| format!("{out}: cannot write the report"))
}

/// HTML-escaped text.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
