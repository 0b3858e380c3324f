//! `raftkv bench --plot FILE`: throughput and latency over the run as one
//! self-contained SVG (two panels sharing the time axis: completed
//! operations per second, and the median and 99th-percentile latency of
//! the operations completing in each interval). A stall, a leader change
//! or a slow fsync shows as a dip or a spike where a summary line would
//! hide it. `raftkv nemesis --plot` shades each fault's span as well.

use crate::lincheck::Operation;
use std::fmt::Write;

/// One interval of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Its start, in seconds since the run began.
    pub start_s: f64,
    pub ops_per_s: f64,
    /// Latency percentiles of the calls that completed in it (0 if none).
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Buckets the completed calls of `history` (times in microseconds) into
/// intervals of `width_us` over `[0, end_us)`.
pub fn intervals(history: &[Operation], end_us: u64, width_us: u64) -> Vec<Interval> {
    let width_us = width_us.max(1);
    let count = end_us.div_ceil(width_us).max(1) as usize;
    let mut latencies: Vec<Vec<u64>> = vec![Vec::new(); count];
    for op in history {
        if let Some(ret) = op.ret {
            let bucket = ((ret / width_us) as usize).min(count - 1);
            latencies[bucket].push(ret.saturating_sub(op.call));
        }
    }
    latencies
        .into_iter()
        .enumerate()
        .map(|(i, mut l)| {
            l.sort_unstable();
            // Nearest rank: the smallest latency at least p of them do not exceed.
            let percentile = |p: f64| l.get(((l.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied();
            // The last interval may be cut short by the end of the run.
            let start_us = i as u64 * width_us;
            let covered_us = width_us.min(end_us.saturating_sub(start_us)).max(1);
            Interval {
                start_s: start_us as f64 / 1e6,
                ops_per_s: l.len() as f64 / (covered_us as f64 / 1e6),
                p50_ms: percentile(0.50).unwrap_or(0) as f64 / 1e3,
                p99_ms: percentile(0.99).unwrap_or(0) as f64 / 1e3,
            }
        })
        .collect()
}

/// A stretch of the run to shade in both panels, such as a fault from its
/// cut to its heal.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub start_s: f64,
    pub end_s: f64,
    /// Written in the band, and shown when the pointer rests on it.
    pub label: String,
}

const WIDTH: f64 = 900.0;
const PANEL: f64 = 220.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 40.0;
const GAP: f64 = 60.0;

/// The chart of `intervals`, titled `title`, with `spans` shaded, as an
/// SVG document.
pub fn svg(title: &str, intervals: &[Interval], spans: &[Span]) -> String {
    let height = TOP + 2.0 * PANEL + GAP + 40.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="{LEFT}" y="20" font-size="14">{}</text>"#, escape(title));
    let end_s = intervals.last().map_or(1.0, |i| i.start_s) + intervals.get(1).map_or(1.0, |i| i.start_s);
    let throughput: Vec<(f64, f64)> = intervals.iter().map(|i| (i.start_s, i.ops_per_s)).collect();
    panel(&mut out, TOP, "operations/s", end_s, spans, &[("completed", "#1f77b4", &throughput)]);
    let p50: Vec<(f64, f64)> = intervals.iter().map(|i| (i.start_s, i.p50_ms)).collect();
    let p99: Vec<(f64, f64)> = intervals.iter().map(|i| (i.start_s, i.p99_ms)).collect();
    let latency: &[Series<'_>] = &[("p50", "#2ca02c", &p50), ("p99", "#d62728", &p99)];
    panel(&mut out, TOP + PANEL + GAP, "latency, ms", end_s, spans, latency);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds since the start</text>"#,
        LEFT + (WIDTH - LEFT - 20.0) / 2.0,
        height - 8.0
    );
    out.push_str("</svg>\n");
    out
}

/// A line of a panel: its name, its colour, and its (seconds, value) points.
type Series<'a> = (&'a str, &'a str, &'a [(f64, f64)]);

/// One panel at `top`: axes with ticks, the spans shaded, and a polyline
/// per series.
fn panel(out: &mut String, top: f64, unit: &str, end_s: f64, spans: &[Span], series: &[Series<'_>]) {
    let right = WIDTH - 20.0;
    let max = series.iter().flat_map(|(_, _, points)| points.iter().map(|p| p.1)).fold(0.0, f64::max);
    let max_y = nice_ceiling(max);
    let x = |s: f64| LEFT + (right - LEFT) * s / end_s.max(1e-9);
    let y = |v: f64| top + PANEL - PANEL * v / max_y;
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{}" height="{PANEL}" fill="none" stroke="#999"/>"##,
        right - LEFT
    );
    for k in 0..=4 {
        let v = max_y * f64::from(k) / 4.0;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{right}" y1="{0}" y2="{0}" stroke="#eee"/><text x="{1}" y="{2}" text-anchor="end">{3}</text>"##,
            y(v),
            LEFT - 6.0,
            y(v) + 4.0,
            short(v)
        );
    }
    for k in 0..=5 {
        let s = end_s * f64::from(k) / 5.0;
        let _ =
            writeln!(out, r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#, x(s), top + PANEL + 16.0, short(s));
    }
    let _ = writeln!(
        out,
        r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        top + PANEL / 2.0,
        escape(unit)
    );
    for span in spans {
        let (from, to) = (x(span.start_s.clamp(0.0, end_s)), x(span.end_s.clamp(0.0, end_s)));
        let label = escape(&span.label);
        let _ = writeln!(
            out,
            r##"<rect x="{from:.1}" y="{top}" width="{:.1}" height="{PANEL}" fill="#f4a582" fill-opacity="0.3"><title>{label}</title></rect>"##,
            (to - from).max(0.5)
        );
        let _ = writeln!(
            out,
            r##"<text transform="translate({:.1} {}) rotate(90)" font-size="9" fill="#7f3b08">{label}</text>"##,
            from + 3.0,
            top + 4.0
        );
    }
    for (n, (name, color, points)) in series.iter().enumerate() {
        let line: Vec<String> = points.iter().map(|&(s, v)| format!("{:.1},{:.1}", x(s), y(v))).collect();
        let _ =
            writeln!(out, r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#, line.join(" "));
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" fill="{color}">{}</text>"#,
            right - 120.0 + 60.0 * n as f64,
            top + 14.0,
            escape(name)
        );
    }
}

/// The smallest 1, 2 or 5 times a power of ten at or above `v` (at least 1).
fn nice_ceiling(v: f64) -> f64 {
    let mut step = 1.0;
    loop {
        for m in [1.0, 2.0, 5.0] {
            if step * m >= v {
                return step * m;
            }
        }
        step *= 10.0;
    }
}

fn short(v: f64) -> String {
    if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_count_completions_and_their_latencies() {
        let ms = 1_000;
        let mut history = Vec::new();
        // First second: 98 calls of 2 ms, two of 50 ms; second: none;
        // third: 10 calls of 4 ms; one never answered.
        for i in 0..98 {
            history.push(Operation::put(1, "k", "v", i * 5 * ms, Some(i * 5 * ms + 2 * ms)));
        }
        history.push(Operation::put(1, "k", "v", 900 * ms, Some(950 * ms)));
        history.push(Operation::put(2, "k", "v", 900 * ms, Some(950 * ms)));
        for i in 0..10 {
            history.push(Operation::get(2, "k", "v", 2_000 * ms + i * ms, Some(2_004 * ms + i * ms)));
        }
        history.push(Operation::put(3, "k", "v", 10, None));
        let got = intervals(&history, 3_000 * ms, 1_000 * ms);
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].ops_per_s, got[0].p50_ms, got[0].p99_ms), (100.0, 2.0, 50.0));
        assert_eq!((got[1].ops_per_s, got[1].p50_ms), (0.0, 0.0), "the stall shows");
        assert_eq!((got[2].ops_per_s, got[2].p50_ms, got[2].start_s), (10.0, 4.0, 2.0));
        // A run that ends half way through an interval: its rate is over
        // the half it covers.
        let cut = intervals(&history, 2_500 * ms, 1_000 * ms);
        assert_eq!(cut[2].ops_per_s, 20.0);
    }

    #[test]
    fn the_chart_is_well_formed_and_escapes_its_title() {
        let points = intervals(&[Operation::put(1, "k", "v", 0, Some(1_500))], 2_000_000, 500_000);
        let chart = svg("bench <&> \"x\"", &points, &[]);
        assert!(chart.starts_with("<svg") && chart.ends_with("</svg>\n"));
        assert!(chart.contains("bench &lt;&amp;&gt; &quot;x&quot;"));
        assert_eq!(chart.matches("<polyline").count(), 3, "throughput, p50, p99");
        let fault = Span { start_s: 0.5, end_s: 1.0, label: "0 <isolated>".into() };
        let shaded = svg("nemesis", &points, &[fault]);
        assert_eq!(shaded.matches("<title>0 &lt;isolated&gt;</title>").count(), 2, "a band in each panel");
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7_300.0), 10_000.0);
        assert_eq!(nice_ceiling(1.5), 2.0);
    }
}
