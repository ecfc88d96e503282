//! Inline SVG bar charts: no script, no external file, readable without colour.

use maud::{html, Markup, PreEscaped};

/// One bar: its label (shown on hover and for screen readers), its value in 0..=1 (or
/// `None`: no data), and whether it is under the line.
pub struct Bar {
    pub label: String,
    pub value: Option<f64>,
}

/// Bars of `values` between `floor` and 1.0, with a horizontal line at `line` (the target).
pub fn bars(title: &str, bars: &[Bar], floor: f64, line: f64) -> Markup {
    const W: f64 = 720.0;
    const H: f64 = 160.0;
    let n = bars.len().max(1) as f64;
    let step = W / n;
    let y = |v: f64| -> f64 {
        let t = ((v - floor) / (1.0 - floor)).clamp(0.0, 1.0);
        H - t * H
    };
    let mut svg = String::new();
    for (i, b) in bars.iter().enumerate() {
        let x = i as f64 * step;
        match b.value {
            Some(v) => {
                let top = y(v);
                let class = if v < line { "bar under" } else { "bar" };
                svg.push_str(&format!(
                    "<rect class=\"{class}\" x=\"{:.1}\" y=\"{top:.1}\" width=\"{:.1}\" height=\"{:.1}\"><title>{}: {:.3} %</title></rect>",
                    x + step * 0.1,
                    step * 0.8,
                    (H - top).max(1.0),
                    escape(&b.label),
                    v * 100.0
                ));
            }
            None => svg.push_str(&format!(
                "<rect class=\"bar none\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"2\"><title>{}: –</title></rect>",
                x + step * 0.1,
                H - 2.0,
                step * 0.8,
                escape(&b.label)
            )),
        }
    }
    let ly = y(line);
    svg.push_str(&format!(
        "<line class=\"target\" x1=\"0\" x2=\"{W}\" y1=\"{ly:.1}\" y2=\"{ly:.1}\"/>"
    ));
    html! {
        svg class="chart" viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(title) preserveAspectRatio="none" {
            (PreEscaped(svg))
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_under_the_line_are_marked_and_missing_data_is_flat() {
        let svg = bars(
            "t",
            &[
                Bar {
                    label: "a".into(),
                    value: Some(0.999),
                },
                Bar {
                    label: "b<".into(),
                    value: Some(0.9),
                },
                Bar {
                    label: "c".into(),
                    value: None,
                },
            ],
            0.8,
            0.995,
        )
        .into_string();
        assert_eq!(svg.matches("class=\"bar under\"").count(), 1);
        assert_eq!(svg.matches("class=\"bar none\"").count(), 1);
        assert!(svg.contains("b&lt;: 90.000 %"));
    }
}
