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

/// A straight mark across a chart: a cut-off (horizontal) or an event on
/// the time axis (vertical), in px.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// CSS class (static: `cutoff`, `migration in`, `migration out`,
    /// `crossing`).
    pub class: &'static str,
    /// A word written at the top of a vertical mark (static: `in`, `out`,
    /// `p↑`), so the mark says what it is without the legend; empty for
    /// none.
    pub label: &'static str,
    /// From x.
    pub x1: i32,
    /// From y.
    pub y1: i32,
    /// To x.
    pub x2: i32,
    /// To y.
    pub y2: i32,
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
    /// Cut-offs and event marks, drawn under the lines.
    pub rules: Vec<Rule>,
    /// The labelled time axis drawn under the plot, if any.
    pub axis: Option<Axis>,
}

/// A time axis under a chart: without one a person cannot tell when a bump
/// happened, nor read a mark's moment against the clock.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Axis {
    /// Ticks: x in px and the label (`HH:MM` UTC, or `MM-DD HH:MM` on a
    /// range longer than a day; digits and separators only).
    pub ticks: Vec<(i32, String)>,
}

/// Height of the band under the plot holding the axis labels, px.
pub const AXIS_HEIGHT: u32 = 14;

/// Tick spacings an axis may use, ms: the smallest giving at most
/// [`MAX_TICKS`] ticks is chosen, so labels never overlap on a 720 px chart.
const TICK_STEPS_MS: [i64; 12] = [
    60_000,
    2 * 60_000,
    5 * 60_000,
    10 * 60_000,
    15 * 60_000,
    30 * 60_000,
    3_600_000,
    2 * 3_600_000,
    3 * 3_600_000,
    6 * 3_600_000,
    12 * 3_600_000,
    24 * 3_600_000,
];

/// At most this many ticks on an axis.
const MAX_TICKS: i64 = 8;

/// Narrowest spacing of two ticks, px: an `HH:MM` label at 9 px is about
/// 27 px wide and the labels at the edges are anchored inward, so at 40 px
/// a sparkline's first two labels touched (seen in the Chromium
/// screenshot). A 120 px sparkline takes two ticks, a 720 px chart
/// [`MAX_TICKS`].
const MIN_TICK_SPACING_PX: u32 = 60;

impl Axis {
    /// Ticks at round times (UTC) within `[end_ms - range_ms, end_ms]` on a
    /// chart `width` px wide, as many as fit without their labels meeting.
    pub fn time(end_ms: i64, range_ms: i64, width: u32) -> Self {
        let range = range_ms.max(1);
        let from = end_ms - range;
        let fit = MAX_TICKS.min(i64::from(width / MIN_TICK_SPACING_PX)).max(1);
        let step = TICK_STEPS_MS
            .iter()
            .copied()
            .find(|s| range / s <= fit)
            .unwrap_or(TICK_STEPS_MS[TICK_STEPS_MS.len() - 1]);
        let format = if step >= 24 * 3_600_000 {
            "%m-%d"
        } else {
            "%H:%M"
        };
        let first = from + (step - from.rem_euclid(step)) % step;
        let ticks = (0..)
            .map(|i| first + i * step)
            .take_while(|t| *t <= end_ms)
            .filter_map(|t| {
                let label = chrono::DateTime::from_timestamp_millis(t)?
                    .format(format)
                    .to_string();
                Some((x_of(t, from, range, width), label))
            })
            .collect();
        Self { ticks }
    }
}

/// The x of time `at_ms` on a chart `width` wide showing `range_ms` from `from_ms`.
fn x_of(at_ms: i64, from_ms: i64, range_ms: i64, width: u32) -> i32 {
    (((at_ms - from_ms) as f64 / range_ms as f64) * f64::from(width)).round() as i32
}

impl Chart {
    /// Adds the time axis of `[end_ms - range_ms, end_ms]` under the chart,
    /// when it draws anything (an empty chart's "no data" has no time to
    /// read). Sparklines take it too: a bump is read against the clock on
    /// the cluster page as on the node page.
    pub fn with_time_axis(mut self, end_ms: i64, range_ms: i64) -> Self {
        if !self.lines.is_empty() {
            self.axis = Some(Axis::time(end_ms, range_ms, self.width));
        }
        self
    }

    /// Marks the time `at_ms` with a vertical rule of `class` labelled
    /// `label` at its top, when it lies within the chart's
    /// `[end_ms - range_ms, end_ms]`.
    pub fn mark_time(
        &mut self,
        (class, label): (&'static str, &'static str),
        at_ms: i64,
        end_ms: i64,
        range_ms: i64,
    ) {
        let from = end_ms - range_ms;
        if at_ms < from || at_ms > end_ms || range_ms <= 0 {
            return;
        }
        let x = x_of(at_ms, from, range_ms, self.width);
        self.rules.push(Rule {
            class,
            label,
            x1: x,
            y1: 0,
            x2: x,
            y2: self.height as i32,
        });
    }

    /// Draws the level `value` (on the scale `0..=max`, as [`path`] does)
    /// as a horizontal rule of `class`.
    pub fn mark_level(&mut self, class: &'static str, value: f32, max: f32) {
        let y = y_of(value, max, self.height);
        self.rules.push(Rule {
            class,
            label: "",
            x1: 0,
            y1: y,
            x2: self.width as i32,
            y2: y,
        });
    }
}

/// The y of `v` on the scale `0..=max` in a chart `height` tall.
fn y_of(v: f32, max: f32, height: u32) -> i32 {
    let h = height as f32 - 1.0;
    (h - (v.clamp(0.0, max) / max.max(f32::MIN_POSITIVE)) * (h - 1.0)).round() as i32
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
    path_bridging(values, max, width, height, 0)
}

/// As [`path`], but a run of up to `bridge` empty columns is crossed by the
/// line: a node sampling every 10 s leaves most of 240 columns over 15
/// minutes empty, and only a real silence should break its line.
pub fn path_bridging(values: &[f32], max: f32, width: u32, height: u32, bridge: usize) -> String {
    let n = values.len().max(2);
    let step = width as f32 / (n - 1) as f32;
    let mut d = String::with_capacity(values.len() * 6);
    let mut prev: Option<(i32, i32)> = None;
    let mut gap = 0usize;
    for (i, v) in values.iter().enumerate() {
        if !v.is_finite() {
            gap += 1;
            continue;
        }
        let x = (i as f32 * step).round() as i32;
        let y = y_of(*v, max, height);
        match prev.filter(|_| gap <= bridge) {
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
        gap = 0;
    }
    // A single point still shows as a dot-sized line.
    if d.starts_with('M') && !d.contains('l') {
        d.push_str("h1");
    }
    d
}

/// How many empty columns a line over `points` may cross: three of the
/// series' usual sample intervals (the median gap), so a missed sample or
/// two does not cut the line but a node that went silent does.
fn bridge_columns(points: &[Point], range_ms: i64, n: usize) -> usize {
    let mut gaps: Vec<i64> = points.windows(2).map(|w| w[1].at_ms - w[0].at_ms).collect();
    if gaps.is_empty() {
        return 0;
    }
    let mid = gaps.len() / 2;
    let usual = *gaps.select_nth_unstable(mid).1;
    let column_ms = (range_ms / n.max(1) as i64).max(1);
    usize::try_from((3 * usual) / column_ms).unwrap_or(0)
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
    let bridge = bridge_columns(points, range_ms, n);
    let lines = specs
        .iter()
        .filter_map(|s| {
            let cols = columns(points, s.metric, end_ms, range_ms, n);
            let d = path_bridging(&cols, s.max, width, height, bridge);
            (!d.is_empty()).then_some(Line { class: s.class, d })
        })
        .collect();
    Chart {
        width,
        height,
        lines,
        framed: None,
        title: "",
        rules: Vec::new(),
        axis: None,
    }
}

impl fmt::Display for Chart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let band = if self.axis.is_some() { AXIS_HEIGHT } else { 0 };
        write!(
            f,
            r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img""#,
            w = self.width,
            h = self.height + band
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
        // A label near an earlier one goes a line lower, so marks close in
        // time stay readable.
        let mut placed: Vec<(i32, i32)> = Vec::new();
        for r in &self.rules {
            write!(
                f,
                r#"<line class="{}" x1="{}" y1="{}" x2="{}" y2="{}"/>"#,
                r.class, r.x1, r.y1, r.x2, r.y2
            )?;
            if !r.label.is_empty() {
                let mut y = r.y1 + 22;
                while placed
                    .iter()
                    .any(|(px, py)| (r.x1 - px).abs() < 24 && *py == y)
                {
                    y += 11;
                }
                placed.push((r.x1, y));
                write!(
                    f,
                    r#"<text class="mark" x="{}" y="{y}">{}</text>"#,
                    r.x1 + 2,
                    r.label
                )?;
            }
        }
        for l in &self.lines {
            write!(f, r#"<path class="{}" d="{}"/>"#, l.class, l.d)?;
        }
        if let Some(axis) = &self.axis {
            self.fmt_axis(f, axis)?;
        }
        f.write_str("</svg>")
    }
}

impl Chart {
    /// The axis band: a baseline, a tick and a label per tick (the last
    /// label right-aligned so it stays inside the chart).
    fn fmt_axis(&self, f: &mut fmt::Formatter<'_>, axis: &Axis) -> fmt::Result {
        let (w, h) = (self.width, self.height);
        write!(
            f,
            r#"<g class="axis"><line x1="0" y1="{h}" x2="{w}" y2="{h}"/>"#
        )?;
        for (x, label) in &axis.ticks {
            let anchor = if *x > w as i32 - 30 {
                "end"
            } else if *x < 30 {
                "start"
            } else {
                "middle"
            };
            write!(
                f,
                r#"<line x1="{x}" y1="{h}" x2="{x}" y2="{}"/><text class="tick" x="{x}" y="{}" text-anchor="{anchor}">{label}</text>"#,
                h + 3,
                h + AXIS_HEIGHT - 2
            )?;
        }
        f.write_str("</g>")
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
    fn rules_mark_levels_and_times_inside_the_range() {
        let mut c = Chart {
            width: 100,
            height: 21,
            ..Chart::default()
        };
        c.mark_level("cutoff", 0.5, 1.0);
        c.mark_time(("migration", ""), 5_000, 10_000, 10_000);
        c.mark_time(("migration", ""), -1, 10_000, 10_000);
        c.mark_time(("migration", ""), 10_001, 10_000, 10_000);
        assert_eq!(c.rules.len(), 2, "outside the range: not drawn");
        // Half way up, as a path through 0.5 would be.
        assert_eq!(c.rules[0].y1, y_of(0.5, 1.0, 21));
        assert_eq!(
            path(&[0.5, 0.5], 1.0, 100, 21),
            format!("M0 {}l100 0", c.rules[0].y1)
        );
        assert_eq!((c.rules[1].x1, c.rules[1].y2), (50, 21));
        let svg = c.to_string();
        let y = c.rules[0].y1;
        assert!(
            svg.contains(&format!(
                r#"<line class="cutoff" x1="0" y1="{y}" x2="100" y2="{y}"/>"#
            )),
            "{svg}"
        );
        assert!(svg.contains(r#"<line class="migration" x1="50""#), "{svg}");
    }

    #[test]
    fn sparse_samples_draw_one_line_and_a_silence_breaks_it() {
        // A sample every 10 s over 15 minutes in 240 columns of 3.75 s.
        let mut pts: Vec<_> = (0..60).map(|i| p(i * 10_000, 50.0)).collect();
        // Then five minutes of silence, then 30 more samples.
        pts.extend((0..30).map(|i| p(900_000 + i * 10_000, 60.0)));
        let spec = LineSpec {
            metric: Metric::Cpu,
            class: "cpu",
            max: 100.0,
        };
        let c = chart(&pts, &[spec], 1_190_000, 1_200_000, 240, 720, 120);
        assert_eq!(c.lines[0].d.matches('M').count(), 2, "{}", c.lines[0].d);
        assert_eq!(bridge_columns(&pts, 1_200_000, 240), 6);
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

    #[test]
    fn an_axis_ticks_round_times_inside_the_range_and_grows_the_chart() {
        // 2013-08-01 10:03:30 UTC, a quarter of an hour shown.
        let end = 1_375_351_410_000;
        let axis = Axis::time(end, 15 * 60_000, 720);
        let labels: Vec<&str> = axis.ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(
            labels,
            ["09:50", "09:52", "09:54", "09:56", "09:58", "10:00", "10:02"]
        );
        // 09:50 is 90 s of the 15 minutes in.
        assert_eq!(axis.ticks[0].0, 72);
        assert!(axis.ticks.windows(2).all(|t| t[0].0 < t[1].0));
        let day = Axis::time(end, 7 * 24 * 3_600_000, 720);
        assert!(day.ticks.len() <= 8 && day.ticks[0].1.contains('-'));
        let c = Chart {
            width: 720,
            height: 120,
            axis: Some(axis),
            ..Chart::default()
        };
        let svg = c.to_string();
        assert!(svg.contains(r#"viewBox="0 0 720 134""#), "{svg}");
        assert!(svg.contains(r#"<text class="tick" x="72""#), "{svg}");
        assert!(svg.contains(">10:02</text>"), "{svg}");
    }

    #[test]
    fn a_sparkline_gets_as_many_ticks_as_fit_and_none_without_data() {
        // 2013-08-01 10:03:30 UTC, a quarter of an hour on 120 px.
        let end = 1_375_351_410_000;
        let axis = Axis::time(end, 15 * 60_000, 120);
        let labels: Vec<&str> = axis.ticks.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["09:50", "10:00"]);
        assert!(axis
            .ticks
            .windows(2)
            .all(|t| t[1].0 - t[0].0 >= MIN_TICK_SPACING_PX as i32));
        let spec = LineSpec {
            metric: Metric::Cpu,
            class: "cpu",
            max: 100.0,
        };
        let pts: Vec<_> = (0..90).map(|i| p(end - i * 10_000, 50.0)).rev().collect();
        let drawn =
            chart(&pts, &[spec], end, 15 * 60_000, 24, 120, 28).with_time_axis(end, 15 * 60_000);
        assert_eq!(drawn.axis, Some(axis));
        assert!(drawn.to_string().contains(r#"viewBox="0 0 120 42""#));
        let empty =
            chart(&[], &[spec], end, 15 * 60_000, 24, 120, 28).with_time_axis(end, 15 * 60_000);
        assert_eq!(empty.axis, None);
    }
}
