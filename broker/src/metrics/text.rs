//! The Prometheus text exposition format (version 0.0.4): `# HELP`, `# TYPE`, then samples
//! with escaped label values.

use std::fmt::Write;

use super::histogram::HistogramSnapshot;

/// Builds one exposition, family by family.
#[derive(Debug, Default)]
pub struct TextWriter {
    out: String,
}

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets on restart).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

impl TextWriter {
    /// An empty exposition.
    pub fn new() -> TextWriter {
        TextWriter::default()
    }

    /// Starts a family: its help text and type.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&format_value(value));
        self.out.push('\n');
    }

    /// A family with one unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// A family with one sample per value of one label.
    pub fn by_label<'a>(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        label: &str,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) {
        self.family(name, kind, help);
        for (v, x) in values {
            self.sample(name, &[(label, v)], x);
        }
    }

    /// The samples of one histogram (after [`TextWriter::family`] with
    /// [`Kind::Histogram`]).
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramSnapshot) {
        let bucket = format!("{name}_bucket");
        for (bound, count) in &h.buckets {
            let le = format_value(*bound);
            let mut with_le: Vec<(&str, &str)> = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, *count as f64);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum_seconds);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }

    /// The exposition text.
    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Integers without a fraction, infinities as `+Inf`/`-Inf`, otherwise the shortest
/// representation that reads back to the same float.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 9.0e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_has_help_type_and_escaped_labels() {
        let mut w = TextWriter::new();
        w.family("fleet_x_total", Kind::Counter, "Things.\nMore");
        w.sample("fleet_x_total", &[("reason", "a\"b\\c\nd")], 3.0);
        assert_eq!(
            w.finish(),
            "# HELP fleet_x_total Things.\\nMore\n# TYPE fleet_x_total counter\n\
             fleet_x_total{reason=\"a\\\"b\\\\c\\nd\"} 3\n"
        );
    }

    #[test]
    fn values_are_written_as_prometheus_reads_them() {
        assert_eq!(format_value(0.995), "0.995");
        assert_eq!(format_value(12.0), "12");
        assert_eq!(format_value(-0.5), "-0.5");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
    }

    #[test]
    fn a_histogram_writes_cumulative_buckets_sum_and_count() {
        let h = HistogramSnapshot {
            buckets: vec![(0.5, 1), (f64::INFINITY, 2)],
            sum_seconds: 1.25,
            count: 2,
        };
        let mut w = TextWriter::new();
        w.histogram("fleet_lat_seconds", &[], &h);
        assert_eq!(
            w.finish(),
            "fleet_lat_seconds_bucket{le=\"0.5\"} 1\nfleet_lat_seconds_bucket{le=\"+Inf\"} 2\n\
             fleet_lat_seconds_sum 1.25\nfleet_lat_seconds_count 2\n"
        );
    }
}
