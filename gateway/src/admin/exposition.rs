//! The Prometheus text exposition format (version 0.0.4), written one family at a time: one
//! small writer instead of `writeln!` calls spread over every series. Label values are escaped
//! here, so no caller can produce a malformed line.

use std::fmt::{Display, Write as _};

/// A family's metric type.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, a sum and a count.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// A page of metric families being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// An empty page, with room for a typical one.
    pub fn new() -> Self {
        Self {
            out: String::with_capacity(16 * 1024),
        }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines; its samples follow.
    pub fn family<'a>(&'a mut self, name: &'a str, kind: Kind, help: &str) -> Family<'a> {
        let _ = writeln!(
            self.out,
            "# HELP {name} {help}\n# TYPE {name} {}",
            kind.as_str()
        );
        Family {
            out: &mut self.out,
            name,
        }
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The samples of one family.
#[derive(Debug)]
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
}

impl Family<'_> {
    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Display) -> &mut Self {
        write_sample(self.out, self.name, "", labels, None, value);
        self
    }

    /// One histogram: its cumulative `(upper bound, count)` buckets (`None` is `+Inf`), sum
    /// and count.
    pub fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        buckets: impl IntoIterator<Item = (Option<f64>, u64)>,
        sum: impl Display,
        count: u64,
    ) -> &mut Self {
        for (upper, n) in buckets {
            let le = upper.map_or_else(|| "+Inf".to_owned(), |u| u.to_string());
            write_sample(self.out, self.name, "_bucket", labels, Some(&le), n);
        }
        write_sample(self.out, self.name, "_sum", labels, None, sum);
        write_sample(self.out, self.name, "_count", labels, None, count);
        self
    }
}

fn write_sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    le: Option<&str>,
    value: impl Display,
) {
    out.push_str(name);
    out.push_str(suffix);
    let le = le.map(|le| ("le", le));
    let mut all = labels.iter().copied().chain(le).peekable();
    if all.peek().is_some() {
        out.push('{');
        for (i, (key, value)) in all.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape(value));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value with backslash, quote and newline escaped.
pub fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if value.contains(['\\', '"', '\n']) {
        value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
            .into()
    } else {
        value.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_histograms_are_written_in_the_text_format() {
        let mut page = Exposition::new();
        page.family("accord_x_total", Kind::Counter, "Xs.")
            .sample(&[], 3)
            .sample(&[("route", "a\"b\n"), ("class", "good")], 1.5);
        page.family("accord_y_seconds", Kind::Histogram, "Ys.")
            .histogram(&[("route", "r")], [(Some(0.5), 1), (None, 2)], 0.75, 2);
        assert_eq!(
            page.finish(),
            "# HELP accord_x_total Xs.\n# TYPE accord_x_total counter\naccord_x_total 3\n\
             accord_x_total{route=\"a\\\"b\\n\",class=\"good\"} 1.5\n\
             # HELP accord_y_seconds Ys.\n# TYPE accord_y_seconds histogram\n\
             accord_y_seconds_bucket{route=\"r\",le=\"0.5\"} 1\n\
             accord_y_seconds_bucket{route=\"r\",le=\"+Inf\"} 2\n\
             accord_y_seconds_sum{route=\"r\"} 0.75\naccord_y_seconds_count{route=\"r\"} 2\n"
        );
    }
}
