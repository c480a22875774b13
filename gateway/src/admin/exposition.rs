//! The Prometheus text exposition format (version 0.0.4), or OpenMetrics 1.0 when the scraper
//! asks for it (then histograms carry exemplars: the trace id of a kept request in the
//! bucket), written one family at a time: one small writer instead of `writeln!` calls spread
//! over every series. Label values are escaped here, so no caller can produce a malformed line.

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
    openmetrics: bool,
}

/// OpenMetrics' content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// An exemplar: the trace of one request in a histogram bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct Exemplar {
    /// Its trace id (hex).
    pub trace_id: String,
    /// Its value (seconds).
    pub value: f64,
    /// When (seconds since the epoch).
    pub timestamp: f64,
}

impl Exposition {
    /// An empty page, with room for a typical one.
    pub fn new() -> Self {
        Self {
            out: String::with_capacity(16 * 1024),
            openmetrics: false,
        }
    }

    /// An empty page in OpenMetrics' format.
    pub fn openmetrics() -> Self {
        Self {
            out: String::with_capacity(16 * 1024),
            openmetrics: true,
        }
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines; its samples follow. (OpenMetrics
    /// names a counter family without its samples' `_total`.)
    pub fn family<'a>(&'a mut self, name: &'a str, kind: Kind, help: &str) -> Family<'a> {
        let family_name = match kind {
            Kind::Counter if self.openmetrics => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let _ = writeln!(
            self.out,
            "# HELP {family_name} {help}\n# TYPE {family_name} {}",
            kind.as_str()
        );
        Family {
            out: &mut self.out,
            name,
            openmetrics: self.openmetrics,
        }
    }

    /// The text.
    pub fn finish(mut self) -> String {
        if self.openmetrics {
            self.out.push_str("# EOF\n");
        }
        self.out
    }
}

/// The samples of one family.
#[derive(Debug)]
pub struct Family<'a> {
    out: &'a mut String,
    name: &'a str,
    openmetrics: bool,
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
        self.histogram_with_exemplars(labels, buckets, &[], sum, count)
    }

    /// A histogram whose buckets may carry an exemplar each (written in OpenMetrics only).
    pub fn histogram_with_exemplars(
        &mut self,
        labels: &[(&str, &str)],
        buckets: impl IntoIterator<Item = (Option<f64>, u64)>,
        exemplars: &[Option<Exemplar>],
        sum: impl Display,
        count: u64,
    ) -> &mut Self {
        for (i, (upper, n)) in buckets.into_iter().enumerate() {
            let le = upper.map_or_else(|| "+Inf".to_owned(), |u| u.to_string());
            write_sample(self.out, self.name, "_bucket", labels, Some(&le), n);
            if self.openmetrics
                && let Some(Some(exemplar)) = exemplars.get(i)
            {
                // `… 5 # {trace_id="…"} 0.067 1767225600.123`, on the bucket's line.
                self.out.pop();
                let _ = writeln!(
                    self.out,
                    " # {{trace_id=\"{}\"}} {} {:.3}",
                    escape(&exemplar.trace_id),
                    exemplar.value,
                    exemplar.timestamp
                );
            }
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
    fn openmetrics_names_counters_without_total_carries_exemplars_and_ends_with_eof() {
        let mut page = Exposition::openmetrics();
        page.family("accord_x_total", Kind::Counter, "Xs.")
            .sample(&[], 3);
        let exemplar = Exemplar {
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            value: 0.067,
            timestamp: 1_767_225_600.5,
        };
        page.family("accord_y_seconds", Kind::Histogram, "Ys.")
            .histogram_with_exemplars(
                &[],
                [(Some(0.1), 1), (None, 1)],
                &[Some(exemplar), None],
                0.067,
                1,
            );
        assert_eq!(
            page.finish(),
            "# HELP accord_x Xs.\n# TYPE accord_x counter\naccord_x_total 3\n\
             # HELP accord_y_seconds Ys.\n# TYPE accord_y_seconds histogram\n\
             accord_y_seconds_bucket{le=\"0.1\"} 1 # {trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.067 1767225600.500\n\
             accord_y_seconds_bucket{le=\"+Inf\"} 1\n\
             accord_y_seconds_sum 0.067\naccord_y_seconds_count 1\n# EOF\n"
        );
    }

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
