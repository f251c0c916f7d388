//! Sparklines and charts as inline SVG, drawn on the server.
//!
//! No chart library and no JavaScript: a chart is a few `<path>` elements
//! whose coordinates are integers computed here. The series is first reduced
//! to a fixed number of columns (mean per column), so a card costs the same
//! bytes whether the node samples every second or every minute; that is what
//! keeps the cluster page of 200 nodes under its size budget.
//!
//! A [`Chart`] renders itself (`Display`) and templates insert it unescaped:
//! that is safe because nothing but numbers and the static strings of this
//! file ever go into it (no node or workload name; those are escaped by the
//! templates around the chart).

use std::fmt::{self, Write as _};

use crate::series::{Metric, Point};

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// CSS class (static: `cpu`, `mem`, ...).
    pub class: &'static str,
    /// The path's `d` attribute.
    pub d: String,
}

/// A chart: a few lines over the same time axis.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Chart {
    /// Width in px.
    pub width: u32,
    /// Height in px.
    pub height: u32,
    /// The lines.
    pub lines: Vec<Line>,
    /// Draw a frame and the top value (large charts).
    pub framed: Option<&'static str>,
    /// A static accessible name.
    pub title: &'static str,
}

/// What to draw: which metric, with which class, on which scale.
#[derive(Debug, Clone, Copy)]
pub struct LineSpec {
    /// The metric.
    pub metric: Metric,
    /// Its CSS class.
    pub class: &'static str,
    /// The value drawn at the top of the chart.
    pub max: f32,
}

/// Reduces `points` (oldest first, all within `[end - range, end]`) to
/// `columns` means of `metric`; NaN where a column has no value.
pub fn columns(points: &[Point], metric: Metric, end_ms: i64, range_ms: i64, n: usize) -> Vec<f32> {
    let mut sum = vec![0f32; n];
    let mut cnt = vec![0u32; n];
    let from = end_ms - range_ms;
    for p in points {
        let v = p.get(metric);
        if !v.is_finite() || p.at_ms < from {
            continue;
        }
        let i = (((p.at_ms - from) as f64 / range_ms.max(1) as f64) * n as f64) as usize;
        let i = i.min(n - 1);
        sum[i] += v;
        cnt[i] += 1;
    }
    sum.iter()
        .zip(&cnt)
        .map(|(s, c)| if *c == 0 { f32::NAN } else { s / *c as f32 })
        .collect()
}

/// The `d` of a path through `values` scaled to `0..=max` over `width` x
/// `height`; gaps (NaN) break the line.
pub fn path(values: &[f32], max: f32, width: u32, height: u32) -> String {
    let n = values.len().max(2);
    let step = width as f32 / (n - 1) as f32;
    let mut d = String::with_capacity(values.len() * 6);
    let mut prev: Option<(i32, i32)> = None;
    let h = height as f32 - 1.0;
    for (i, v) in values.iter().enumerate() {
        if !v.is_finite() {
            prev = None;
            continue;
        }
        let x = (i as f32 * step).round() as i32;
        let y = (h - (v.clamp(0.0, max) / max.max(f32::MIN_POSITIVE)) * (h - 1.0)).round() as i32;
        match prev {
            None => {
                let _ = write!(d, "M{x} {y}");
            }
            Some((px, py)) => {
                let (dx, dy) = (x - px, y - py);
                if dy < 0 {
                    let _ = write!(d, "l{dx}{dy}");
                } else {
                    let _ = write!(d, "l{dx} {dy}");
                }
            }
        }
        prev = Some((x, y));
    }
    // A single point still shows as a dot-sized line.
    if d.starts_with('M') && !d.contains('l') {
        d.push_str("h1");
    }
    d
}

/// A chart of `specs` over the last `range_ms` of `points`.
#[allow(clippy::too_many_arguments)]
pub fn chart(
    points: &[Point],
    specs: &[LineSpec],
    end_ms: i64,
    range_ms: i64,
    n: usize,
    width: u32,
    height: u32,
) -> Chart {
    let lines = specs
        .iter()
        .filter_map(|s| {
            let cols = columns(points, s.metric, end_ms, range_ms, n);
            let d = path(&cols, s.max, width, height);
            (!d.is_empty()).then_some(Line { class: s.class, d })
        })
        .collect();
    Chart {
        width,
        height,
        lines,
        framed: None,
        title: "",
    }
}

impl fmt::Display for Chart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img""#,
            w = self.width,
            h = self.height
        )?;
        if !self.title.is_empty() {
            write!(f, r#" aria-label="{}""#, self.title)?;
        }
        f.write_str(">")?;
        if let Some(top) = self.framed {
            write!(
                f,
                r#"<rect class="frame" x="0" y="0" width="{}" height="{}"/><text x="3" y="11">{}</text>"#,
                self.width, self.height, top
            )?;
        }
        if self.lines.is_empty() {
            write!(
                f,
                r#"<text class="none" x="3" y="{}">no data</text>"#,
                self.height / 2 + 4
            )?;
        }
        for l in &self.lines {
            write!(f, r#"<path class="{}" d="{}"/>"#, l.class, l.d)?;
        }
        f.write_str("</svg>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(at_ms: i64, cpu: f32) -> Point {
        Point {
            at_ms,
            cpu,
            mem: f32::NAN,
            load: f32::NAN,
            psi_cpu: f32::NAN,
            psi_mem: f32::NAN,
            psi_io: f32::NAN,
        }
    }

    #[test]
    fn reduces_to_columns_and_draws_integers() {
        let pts: Vec<_> = (0..100)
            .map(|i| p(i * 1000, (i % 10) as f32 * 10.0))
            .collect();
        let cols = columns(&pts, Metric::Cpu, 100_000, 100_000, 10);
        assert_eq!(cols.len(), 10);
        assert!(cols.iter().all(|c| (*c - 45.0).abs() < 1.0));
        let d = path(&cols, 100.0, 90, 20);
        assert!(d.starts_with("M0 "));
        assert!(
            d.chars().all(|c| c.is_ascii_digit() || " Mlh-".contains(c)),
            "{d}"
        );
        let svg = chart(
            &pts,
            &[LineSpec {
                metric: Metric::Cpu,
                class: "cpu",
                max: 100.0,
            }],
            99_000,
            100_000,
            10,
            90,
            20,
        )
        .to_string();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn gaps_break_the_line_and_empty_says_so() {
        let d = path(&[10.0, f32::NAN, 20.0, 30.0], 100.0, 30, 20);
        assert_eq!(d.matches('M').count(), 2);
        let empty = chart(
            &[],
            &[LineSpec {
                metric: Metric::Mem,
                class: "mem",
                max: 100.0,
            }],
            0,
            1000,
            10,
            90,
            20,
        );
        assert!(empty.to_string().contains("no data"));
    }
}
