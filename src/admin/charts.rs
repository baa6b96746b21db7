//! The dashboard's charts, drawn here as inline SVG: a page without scripts
//! shows them as they were when it was served, and the page's script
//! (`status_page::SCRIPT`) redraws the same elements the same way from
//! `/status/series.json`. Three charts per series: traffic (requests, 5xx and
//! 4xx a second), latency (p99, p50) and load (in flight, the balancer's
//! estimate), each 15 minutes wide, with state changes as vertical marks.
//!
//! Lines differ by dash as well as colour, and every chart's caption states its
//! values in text, so nothing depends on seeing colour.

use std::fmt::Write as _;

use super::dashboard::{Lines, Mark};
use super::status_page::esc;

/// Columns of a chart (its viewBox width): 900 seconds at 3 a column, sharp on
/// a phone and small on the wire (a line is at most 300 points).
pub(crate) const COLUMNS: usize = 300;
/// The viewBox height; the SVG is stretched to the page's width.
pub(crate) const HEIGHT: f64 = 60.0;

/// How a column sums up its seconds: rates average, peaks (p99, in flight)
/// keep the worst.
#[derive(Debug, Clone, Copy)]
enum Agg {
    Mean,
    Max,
}

/// One line of a chart: its values a second, how they make columns, and the
/// scale it shares (0) or has alone (1).
struct Line {
    label: &'static str,
    values: Vec<f64>,
    agg: Agg,
    scale: usize,
}

/// `values` (oldest first, the newest last) as `COLUMNS` columns of the `span`
/// seconds ending with the newest, right-aligned.
fn columns(values: &[f64], span: usize, agg: Agg) -> Vec<f64> {
    let per = (span / COLUMNS).max(1);
    let pad = span.saturating_sub(values.len());
    (0..COLUMNS)
        .map(|c| {
            let seconds = (c * per..(c + 1) * per)
                .filter_map(|s| s.checked_sub(pad).and_then(|i| values.get(i)).copied());
            match agg {
                Agg::Mean => seconds.sum::<f64>() / per as f64,
                Agg::Max => seconds.fold(0.0, f64::max),
            }
        })
        .collect()
}

/// A polyline's `points`: y grows downwards, `max` at the top with a margin;
/// points inside a flat run are left out.
fn points(cols: &[f64], max: f64) -> String {
    let y = |v: f64| {
        let v = if max > 0.0 { v / max } else { 0.0 };
        ((HEIGHT - 2.0 - v * (HEIGHT - 4.0)) * 10.0).round() / 10.0
    };
    let ys: Vec<f64> = cols.iter().map(|&v| y(v)).collect();
    let mut out = String::with_capacity(cols.len() * 8);
    for (x, &v) in ys.iter().enumerate() {
        let flat = x > 0 && x + 1 < ys.len() && ys[x - 1] == v && ys[x + 1] == v;
        if !flat {
            let _ = write!(out, "{x},{v} ");
        }
    }
    out.pop();
    out
}

/// A number as the captions show it: three significant digits or so.
pub(crate) fn num(v: f64) -> String {
    if v >= 100.0 || v == 0.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn f(v: &[u32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn ms(v: &[u32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x) / 1e3).collect()
}

fn sum(a: &[u32], b: &[u32]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) + f64::from(y))
        .collect()
}

/// The three charts of one series, `key` naming it for the script.
pub(crate) fn row(h: &mut String, key: &str, l: &Lines, marks: &[Mark], span: usize) {
    let _ = write!(h, "<div class=\"row\" data-key=\"{}\">", esc(key));
    chart(
        h,
        "traffic",
        "per second",
        &[
            Line {
                label: "requests",
                values: f(&l.requests),
                agg: Agg::Mean,
                scale: 0,
            },
            Line {
                label: "5xx",
                values: sum(&l.upstream_errors, &l.proxy_errors),
                agg: Agg::Mean,
                scale: 0,
            },
            Line {
                label: "4xx",
                values: f(&l.client_errors),
                agg: Agg::Mean,
                scale: 0,
            },
        ],
        marks,
        span,
    );
    chart(
        h,
        "latency",
        "ms",
        &[
            Line {
                label: "p99",
                values: ms(&l.p99_us),
                agg: Agg::Max,
                scale: 0,
            },
            Line {
                label: "p50",
                values: ms(&l.p50_us),
                agg: Agg::Mean,
                scale: 0,
            },
        ],
        marks,
        span,
    );
    chart(
        h,
        "load",
        "now",
        &[
            Line {
                label: "in flight",
                values: f(&l.inflight),
                agg: Agg::Max,
                scale: 0,
            },
            Line {
                label: "load estimate",
                values: l.load.iter().map(|&x| f64::from(x)).collect(),
                agg: Agg::Mean,
                scale: 1,
            },
        ],
        marks,
        span,
    );
    h.push_str("</div>");
}

fn chart(h: &mut String, kind: &str, unit: &str, lines: &[Line], marks: &[Mark], span: usize) {
    let cols: Vec<Vec<f64>> = lines
        .iter()
        .map(|l| columns(&l.values, span, l.agg))
        .collect();
    let max = |scale: usize| {
        lines
            .iter()
            .zip(&cols)
            .filter(|(l, _)| l.scale == scale)
            .flat_map(|(_, c)| c.iter().copied())
            .fold(0.0, f64::max)
    };
    let _ = write!(
        h,
        "<figure class=\"chart\" data-chart=\"{kind}\"><figcaption><b>{kind}</b> ({unit})"
    );
    for (i, l) in lines.iter().enumerate() {
        let last = l.values.last().copied().unwrap_or(0.0);
        let _ = write!(
            h,
            " <span class=\"k l{i}\">{}</span> <span class=\"v{i}\">{}</span>",
            l.label,
            num(last)
        );
    }
    let _ = write!(
        h,
        " <span class=\"muted\">top <span class=\"top\">{}</span></span></figcaption>\
         <svg viewBox=\"0 0 {COLUMNS} {HEIGHT}\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"{kind}, last 15 minutes\"><g class=\"marks\">",
        num(max(0))
    );
    marks_svg(h, marks, span);
    h.push_str("</g>");
    for (i, (l, c)) in lines.iter().zip(&cols).enumerate() {
        let _ = write!(
            h,
            "<polyline class=\"l{i}\" vector-effect=\"non-scaling-stroke\" points=\"{}\"/>",
            points(c, max(l.scale))
        );
    }
    h.push_str(
        "</svg><div class=\"ax\"><span>−15 min</span><span>−10</span><span>−5</span><span>now</span></div></figure>",
    );
}

/// The state changes inside the window, as vertical lines with their reason.
fn marks_svg(h: &mut String, marks: &[Mark], span: usize) {
    let per = (span / COLUMNS).max(1) as u64;
    for m in marks.iter().filter(|m| m.ago < span as u64) {
        let x = COLUMNS as u64 - m.ago / per;
        let _ = write!(
            h,
            "<line class=\"m {}\" x1=\"{x}\" x2=\"{x}\" y1=\"0\" y2=\"{HEIGHT}\" \
             vector-effect=\"non-scaling-stroke\"><title>{} {}: {}</title></line>",
            mark_class(m.what),
            esc(&m.at),
            m.what,
            esc(&m.detail)
        );
    }
}

/// Marks are red for a server going out, green for coming back, grey otherwise.
pub(crate) fn mark_class(what: &str) -> &'static str {
    match what {
        "down" | "ejected" | "removed" | "drained" => "bad",
        "up" | "restored" | "ramped" | "added" | "discovered" | "undrained" => "good",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_right_aligned_and_aggregated() {
        let v: Vec<f64> = (0..6).map(f64::from).collect();
        let mean = columns(&v, 900, Agg::Mean);
        assert_eq!(mean.len(), COLUMNS);
        assert_eq!(mean[COLUMNS - 1], (3.0 + 4.0 + 5.0) / 3.0);
        assert_eq!(mean[COLUMNS - 2], (0.0 + 1.0 + 2.0) / 3.0);
        assert_eq!(mean[0], 0.0);
        let max = columns(&v, 900, Agg::Max);
        assert_eq!(max[COLUMNS - 1], 5.0);
    }

    #[test]
    fn flat_runs_keep_their_ends_only() {
        let cols = [0.0, 0.0, 0.0, 1.0, 1.0];
        assert_eq!(points(&cols, 1.0), "0,58 2,58 3,2 4,2");
    }
}
