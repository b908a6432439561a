//! Line charts as inline SVG: a few series over steps, axes with round ticks, a legend.

use super::esc;
use std::fmt::Write;

/// One line of a chart.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub points: Vec<(f64, f64)>,
}

const W: f64 = 880.0;
const H: f64 = 240.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 36.0;
/// Points drawn per series at most (a long run is thinned evenly, the last point kept).
const MAX_POINTS: usize = 2000;

/// A chart with `id`, `title` and the series (empty series are left out). `marks`: steps drawn
/// as dashed verticals (restarts).
pub fn line_chart(id: &str, title: &str, series: &[Series], marks: &[u64]) -> String {
    let pts = || {
        series
            .iter()
            .flat_map(|s| s.points.iter())
            .filter(|p| p.1.is_finite())
    };
    let (x0, x1) = bounds(pts().map(|p| p.0));
    let (y0, y1) = bounds(pts().map(|p| p.1));
    let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
    let sy = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * (H - TOP - BOTTOM);
    let mut s = format!(
        r#"<svg id="{id}" class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}"><text x="{LEFT}" y="18" class="title">{t}</text>"#,
        t = esc(title)
    );
    for (v, label) in ticks(y0, y1) {
        let y = sy(v);
        let _ = write!(
            s,
            r#"<line class="grid" x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}"/><text class="tick" x="{}" y="{:.1}" text-anchor="end">{label}</text>"#,
            W - RIGHT,
            LEFT - 6.0,
            y + 4.0
        );
    }
    for (v, label) in ticks(x0, x1) {
        let x = sx(v);
        let _ = write!(
            s,
            r#"<text class="tick" x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#,
            H - BOTTOM + 16.0
        );
    }
    let _ = write!(
        s,
        r#"<text class="tick" x="{}" y="{}" text-anchor="end">step</text>"#,
        W - RIGHT,
        H - 4.0
    );
    for &m in marks {
        let x = sx(m as f64);
        let _ = write!(
            s,
            r#"<line class="restart" x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{}"><title>restart from step {m}</title></line>"#,
            H - BOTTOM
        );
    }
    s.push_str(&lines(series, sx, sy));
    s.push_str("</svg>");
    s
}

/// The series' polylines and their legend (right-aligned at the top).
fn lines(series: &[Series], sx: impl Fn(f64) -> f64, sy: impl Fn(f64) -> f64) -> String {
    let mut s = String::new();
    let mut legend_x = W - RIGHT;
    for series in series.iter().rev().filter(|s| !s.points.is_empty()) {
        let line: Vec<String> = thin(&series.points)
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = write!(
            s,
            r#"<polyline class="series" data-series="{n}" fill="none" stroke="{c}" stroke-width="1.6" points="{}"/>"#,
            line.join(" "),
            n = esc(series.name),
            c = series.color
        );
        if series.points.len() == 1 {
            let (x, y) = series.points[0];
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                sx(x),
                sy(y),
                series.color
            );
        }
        legend_x -= 8.0 * series.name.len() as f64 + 24.0;
        let _ = write!(
            s,
            r#"<rect x="{legend_x:.1}" y="10" width="12" height="4" fill="{c}"/><text class="legend" x="{:.1}" y="16">{n}</text>"#,
            legend_x + 16.0,
            c = series.color,
            n = esc(series.name)
        );
    }
    s
}

/// The range of `values`, widened when flat; (0, 1) when empty.
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 * lo.abs().max(1e-300) {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - pad, hi + pad);
    }
    (lo, hi)
}

/// Round tick values inside [lo, hi] (about five) and their labels.
pub fn ticks(lo: f64, hi: f64) -> Vec<(f64, String)> {
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|i| {
            let v = i as f64 * step;
            (v, label(v, step))
        })
        .collect()
}

fn label(v: f64, step: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e6).contains(&a) {
        return format!("{v:.1e}");
    }
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    format!("{v:.decimals$}")
}

/// At most [`MAX_POINTS`] of `points`, evenly spaced, the last kept.
fn thin(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let stride = points.len().div_ceil(MAX_POINTS);
    let mut out: Vec<(f64, f64)> = points.iter().step_by(stride).copied().collect();
    if out.last() != points.last() {
        out.extend(points.last());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside() {
        let labels: Vec<String> = ticks(0.13, 2.4).into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["0.5", "1.0", "1.5", "2.0"]);
        let labels: Vec<String> = ticks(1.0, 40.0).into_iter().map(|t| t.1).collect();
        assert_eq!(labels, ["10", "20", "30", "40"]);
        assert_eq!(ticks(0.0, 1e-4)[1].1, "2.0e-5");
    }

    #[test]
    fn long_runs_are_thinned_keeping_the_last_point() {
        let pts: Vec<(f64, f64)> = (0..5001).map(|i| (i as f64, 0.0)).collect();
        let t = thin(&pts);
        assert!(t.len() <= MAX_POINTS + 1, "{}", t.len());
        assert_eq!(t.last(), pts.last());
    }
}
