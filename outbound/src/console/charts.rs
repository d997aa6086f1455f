//! Server-side SVG charts: a line chart of one series with axes, ticks, labels.
//!
//! Owns: turning points into an `<svg>` document (scaling, "nice" axis ticks,
//! escaping every text it writes).
//! Must not: read the database (the pages pass points in).
//!
//! Hand-written rather than a plotting crate: one chart type is needed, and
//! the output (a few hundred bytes of plain SVG) stays small enough to send on
//! every live refresh.

use std::fmt::Write;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 44.0;
/// Labels drawn under the x axis at most (the rest are skipped, evenly).
const MAX_X_LABELS: usize = 8;

/// One chart: `points` are (x label, value), in order.
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub points: &'a [(String, f64)],
}

/// `text` for XML text and attribute values: SVG escapes as HTML does, so the
/// one escaper serves both.
use crate::tracking::links::escape_html as escape;

/// A round step (1, 2 or 5 × 10ⁿ) giving about 4 ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / 4.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    if step < 1.0 { 1.0 } else { step }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.1}")
    }
}

impl Chart<'_> {
    /// The SVG document. `data-points` and `data-last` say what it shows (for
    /// tests and scripts: the drawing itself is not meant to be parsed).
    pub fn svg(&self) -> String {
        let max_value = self
            .points
            .iter()
            .map(|p| p.1)
            .filter(|v| v.is_finite())
            .fold(0.0f64, f64::max);
        let step = tick_step(max_value);
        let top_value = ((max_value / step).ceil() * step).max(step);
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let n = self.points.len();
        let x = |i: usize| {
            if n <= 1 {
                LEFT + plot_w / 2.0
            } else {
                LEFT + plot_w * i as f64 / (n - 1) as f64
            }
        };
        let y = |v: f64| TOP + plot_h - plot_h * (v.max(0.0) / top_value);
        let last = self.points.last().map_or(0.0, |p| p.1);
        let mut s = String::with_capacity(2048);
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
             role=\"img\" aria-label=\"{title}\" data-points=\"{n}\" data-last=\"{last}\">\
             <rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>\
             <text x=\"{LEFT}\" y=\"18\" class=\"title\" font-size=\"14\" font-weight=\"bold\" fill=\"#222\">{title}</text>",
            title = escape(self.title),
            last = number(last),
        );
        // Horizontal grid lines with their values.
        let mut v = 0.0;
        while v <= top_value + step / 2.0 {
            let yy = y(v);
            let _ = write!(
                s,
                "<line x1=\"{LEFT}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"#e3e3e3\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" fill=\"#555\">{}</text>",
                WIDTH - RIGHT,
                LEFT - 6.0,
                yy + 4.0,
                number(v)
            );
            v += step;
        }
        // Axes.
        let _ = write!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"#333\"/>\
             <line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>",
            TOP + plot_h,
            TOP + plot_h,
            WIDTH - RIGHT,
            TOP + plot_h
        );
        // X labels, evenly thinned.
        let every = n.div_ceil(MAX_X_LABELS).max(1);
        for (i, (label, _)) in self.points.iter().enumerate() {
            if i % every == 0 || i + 1 == n {
                // The ends are anchored inwards, so their labels are not clipped.
                let anchor = match i {
                    0 if n > 1 => "start",
                    _ if i + 1 == n && n > 1 => "end",
                    _ => "middle",
                };
                let _ = write!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"{anchor}\" fill=\"#555\">{}</text>",
                    x(i),
                    TOP + plot_h + 14.0,
                    escape(label)
                );
            }
        }
        // Axis titles.
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#333\">{}</text>\
             <text x=\"14\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"middle\" fill=\"#333\" \
             transform=\"rotate(-90 14 {:.1})\">{}</text>",
            LEFT + plot_w / 2.0,
            HEIGHT - 6.0,
            escape(self.x_label),
            TOP + plot_h / 2.0,
            TOP + plot_h / 2.0,
            escape(self.y_label)
        );
        if n == 0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" text-anchor=\"middle\" fill=\"#888\">no data yet</text>",
                LEFT + plot_w / 2.0,
                TOP + plot_h / 2.0
            );
        } else {
            // The area under the line, then the line and its dots.
            let mut area = format!("M{:.1},{:.1}", x(0), y(0.0));
            let mut line = String::new();
            for (i, (_, v)) in self.points.iter().enumerate() {
                let _ = write!(area, " L{:.1},{:.1}", x(i), y(*v));
                let _ = write!(
                    line,
                    "{}{:.1},{:.1}",
                    if i == 0 { "" } else { " " },
                    x(i),
                    y(*v)
                );
            }
            let _ = write!(area, " L{:.1},{:.1} Z", x(n - 1), y(0.0));
            let _ = write!(
                s,
                "<path d=\"{area}\" fill=\"#cfe3fb\"/>\
                 <polyline points=\"{line}\" fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"2\"/>"
            );
            if n <= 120 {
                for (i, (_, v)) in self.points.iter().enumerate() {
                    let _ = write!(
                        s,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"#1f6feb\"/>",
                        x(i),
                        y(*v)
                    );
                }
            }
        }
        s.push_str("</svg>");
        s
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(0.0), 1.0);
        assert_eq!(tick_step(3.0), 1.0);
        assert_eq!(tick_step(10.0), 5.0);
        assert_eq!(tick_step(100.0), 50.0);
        assert_eq!(tick_step(1234.0), 500.0);
    }

    #[test]
    fn a_chart_has_axes_labels_and_its_points() {
        let points: Vec<(String, f64)> = (0..5)
            .map(|i| (format!("12:0{i}"), f64::from(i * 10)))
            .collect();
        let svg = Chart {
            title: "Deliveries",
            x_label: "minute",
            y_label: "messages",
            points: &points,
        }
        .svg();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("data-points=\"5\"") && svg.contains("data-last=\"40\""));
        assert!(svg.contains(">12:00<") && svg.contains(">12:04<"));
        assert!(svg.contains(">messages<") && svg.contains("<polyline"));
        assert_eq!(svg.matches("<circle").count(), 5);
    }

    #[test]
    fn chart_text_is_escaped() {
        let points = vec![("<b>".to_owned(), 1.0)];
        let svg = Chart {
            title: "<script>alert(1)</script>",
            x_label: "a&b",
            y_label: "\"q\"",
            points: &points,
        }
        .svg();
        assert!(!svg.contains("<script>") && !svg.contains("<b>"));
        assert!(
            svg.contains("&lt;script&gt;")
                && svg.contains("a&amp;b")
                && svg.contains("&quot;q&quot;")
        );
    }

    #[test]
    fn an_empty_chart_says_so() {
        let svg = Chart {
            title: "t",
            x_label: "x",
            y_label: "y",
            points: &[],
        }
        .svg();
        assert!(svg.contains("no data yet") && svg.contains("data-points=\"0\""));
    }
}
