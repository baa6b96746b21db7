//! The series behind `Metrics`, held here rather than in an exporter's registry,
//! for two things the exporter could not give:
//!
//! - Series go away. A series is kept while some handle to it lives (a snapshot's
//!   route, a server's slot) or while the scrape's caller says it is live; a server
//!   removed by a reload or by discovery drops its handles with its snapshot, and
//!   the next scrape forgets it (`Locked::retain`).
//! - Histograms are buckets of atomics, filled as samples come: nothing is queued
//!   until a scrape or an upkeep, so memory does not grow with the request count
//!   (`metrics-exporter-prometheus` keeps every sample until it renders).
//!
//! The map is locked only to register a series (when a snapshot is built, or on a
//! slot's first use) and to scrape; recording is an atomic add on a handle.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use metrics::{Counter, Gauge, Histogram, HistogramFn};

/// A series' labels, in the order they are rendered.
pub type Labels = Box<[(&'static str, Box<str>)]>;

/// The value of a label, if the series has it.
pub fn label<'a>(labels: &'a [(&'static str, Box<str>)], key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| *k == key).map(|(_, v)| &**v)
}

/// One series' storage.
#[derive(Debug, Clone)]
enum Cell {
    Counter(Arc<AtomicU64>),
    /// An `f64` in bits (`metrics` implements `GaugeFn` so for `AtomicU64`).
    Gauge(Arc<AtomicU64>),
    Histogram(Arc<Buckets>),
}

impl Cell {
    /// Handles other than the store's own.
    fn held(&self) -> bool {
        let count = match self {
            Cell::Counter(a) | Cell::Gauge(a) => Arc::strong_count(a),
            Cell::Histogram(h) => Arc::strong_count(h),
        };
        count > 1
    }

    fn kind(&self) -> &'static str {
        match self {
            Cell::Counter(_) => "counter",
            Cell::Gauge(_) => "gauge",
            Cell::Histogram(_) => "histogram",
        }
    }
}

/// All series of the proxy, by name, then labels.
#[derive(Debug)]
pub struct Store {
    families: Mutex<BTreeMap<&'static str, HashMap<Labels, Cell>>>,
    /// `# HELP` text by metric name.
    help: &'static [(&'static str, &'static str)],
}

impl Store {
    pub fn new(help: &'static [(&'static str, &'static str)]) -> Store {
        Store {
            families: Mutex::new(BTreeMap::new()),
            help,
        }
    }

    fn labels(labels: &[(&'static str, &str)]) -> Labels {
        labels.iter().map(|(k, v)| (*k, Box::from(*v))).collect()
    }

    /// The series `name{labels}`, made by `new` if it does not exist yet. A name
    /// is one kind: asking for a series of another kind under it is a bug.
    fn cell(&self, name: &'static str, labels: &[(&'static str, &str)], new: fn() -> Cell) -> Cell {
        let mut families = self.lock().families;
        let family = families.entry(name).or_default();
        let key = Self::labels(labels);
        family.entry(key).or_insert_with(new).clone()
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        match self.cell(name, labels, || Cell::Counter(Arc::default())) {
            Cell::Counter(a) => Counter::from_arc(a),
            other => unreachable!("{name} is a {}", other.kind()),
        }
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        match self.cell(name, labels, || Cell::Gauge(Arc::default())) {
            Cell::Gauge(a) => Gauge::from_arc(a),
            other => unreachable!("{name} is a {}", other.kind()),
        }
    }

    /// A histogram of durations in seconds, bucketed by `super::metrics::DURATION_BUCKETS`.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        let new = || Cell::Histogram(Arc::new(Buckets::new(super::metrics::DURATION_BUCKETS)));
        match self.cell(name, labels, new) {
            Cell::Histogram(h) => Histogram::from_arc(h),
            other => unreachable!("{name} is a {}", other.kind()),
        }
    }

    /// The map, for a scrape: forget what is gone, then render.
    pub fn lock(&self) -> Locked<'_> {
        Locked {
            families: self.families.lock().unwrap_or_else(PoisonError::into_inner),
            help: self.help,
        }
    }
}

/// The store, locked: no series is registered meanwhile.
pub struct Locked<'a> {
    families: MutexGuard<'a, BTreeMap<&'static str, HashMap<Labels, Cell>>>,
    help: &'static [(&'static str, &'static str)],
}

impl Locked<'_> {
    /// Forgets the series nobody holds a handle to and `live` does not claim:
    /// what a removed server, route or upstream left. A series someone still holds
    /// (an old snapshot, a request in flight) stays until it is let go.
    pub fn retain(&mut self, live: impl Fn(&[(&'static str, Box<str>)]) -> bool) {
        for family in self.families.values_mut() {
            family.retain(|labels, cell| cell.held() || live(labels));
        }
        self.families.retain(|_, family| !family.is_empty());
    }

    /// Series in this store.
    pub fn len(&self) -> usize {
        self.families.values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The Prometheus text exposition of the series that have something to say:
    /// gauges always, counters once above zero, histograms once they have a
    /// sample. A series made ahead of traffic shows only when traffic comes.
    pub fn render(&self, out: &mut String) {
        for (name, family) in self.families.iter() {
            let mut series: Vec<_> = family
                .iter()
                .filter(|(_, cell)| match cell {
                    Cell::Counter(a) => a.load(Ordering::Relaxed) > 0,
                    Cell::Gauge(_) => true,
                    Cell::Histogram(h) => h.count() > 0,
                })
                .collect();
            let Some(kind) = series.first().map(|(_, cell)| cell.kind()) else {
                continue;
            };
            // Stable output: scrapes diff cleanly and tests read them easily.
            series.sort_unstable_by(|a, b| a.0.cmp(b.0));
            if let Some((_, help)) = self.help.iter().find(|(n, _)| n == name) {
                let _ = writeln!(out, "# HELP {name} {help}");
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, cell) in series {
                match cell {
                    Cell::Counter(a) => {
                        sample(out, name, "", labels, None, a.load(Ordering::Relaxed))
                    }
                    Cell::Gauge(a) => {
                        let v = f64::from_bits(a.load(Ordering::Relaxed));
                        sample(out, name, "", labels, None, v);
                    }
                    Cell::Histogram(h) => h.render(out, name, labels),
                }
            }
        }
    }
}

/// One sample line: `name{labels,extra} value`.
fn sample(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&'static str, Box<str>)],
    extra: Option<(&str, &str)>,
    value: impl std::fmt::Display,
) {
    out.push_str(name);
    out.push_str(suffix);
    let mut pairs = labels
        .iter()
        .map(|(k, v)| (*k, &**v))
        .chain(extra)
        .peekable();
    if pairs.peek().is_some() {
        out.push('{');
        for (i, (k, v)) in pairs.enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"");
            escape_label(out, v);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// Label values escape backslash, double quote and newline (the text format's rule).
pub fn escape_label(out: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A histogram of durations: a count per bucket and the sum, all atomics, so a
/// sample costs two adds and no memory.
#[derive(Debug)]
pub struct Buckets {
    /// Upper bounds, ascending; the last count is the `+Inf` bucket.
    bounds: &'static [f64],
    counts: Box<[AtomicU64]>,
    /// In nanoseconds: an integer add where an `f64` would need a compare-and-swap
    /// loop; a `u64` of nanoseconds lasts 584 years of summed request time.
    sum_nanos: AtomicU64,
}

impl Buckets {
    pub fn new(bounds: &'static [f64]) -> Buckets {
        Buckets {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Samples so far.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// `_bucket` lines (cumulative, as the format wants), `_sum` and `_count`. Read
    /// while samples come, the lines may disagree by the samples of that instant,
    /// as in every lock-free client library.
    fn render(&self, out: &mut String, name: &str, labels: &[(&'static str, Box<str>)]) {
        let mut total = 0;
        for (i, count) in self.counts.iter().enumerate() {
            total += count.load(Ordering::Relaxed);
            let le = match self.bounds.get(i) {
                Some(b) => b.to_string(),
                None => "+Inf".to_owned(),
            };
            sample(out, name, "_bucket", labels, Some(("le", &le)), total);
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        sample(out, name, "_sum", labels, None, sum);
        sample(out, name, "_count", labels, None, total);
    }
}

impl HistogramFn for Buckets {
    /// `value` in seconds; a negative or NaN one counts as 0.
    fn record(&self, value: f64) {
        let value = if value.is_nan() { 0.0 } else { value.max(0.0) };
        // The first bucket whose bound is at least the value (`le` is inclusive).
        let i = self.bounds.partition_point(|b| *b < value);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add((value * 1e9) as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELP: &[(&str, &str)] = &[("c_total", "A counter.")];

    #[test]
    fn label_values_are_escaped() {
        let mut s = String::new();
        escape_label(&mut s, "a\"b\\c\nd");
        assert_eq!(s, "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn buckets_are_cumulative_and_inclusive() {
        let h = Buckets::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 2.0, f64::NAN] {
            h.record(v);
        }
        let mut out = String::new();
        h.render(&mut out, "h", &[]);
        assert_eq!(
            out,
            "h_bucket{le=\"0.1\"} 3\nh_bucket{le=\"1\"} 4\nh_bucket{le=\"+Inf\"} 5\n\
             h_sum 2.65\nh_count 5\n"
        );
    }

    #[test]
    fn untouched_series_are_not_rendered_and_released_ones_are_forgotten() {
        let store = Store::new(HELP);
        let used = store.counter("c_total", &[("server", "a")]);
        let idle = store.counter("c_total", &[("server", "b")]);
        let _h = store.histogram("h_seconds", &[]);
        used.increment(2);
        let mut out = String::new();
        store.lock().render(&mut out);
        assert_eq!(
            out,
            "# HELP c_total A counter.\n# TYPE c_total counter\nc_total{server=\"a\"} 2\n"
        );
        // Both handles let go; `live` claims only "a" (still configured).
        drop((used, idle));
        let mut locked = store.lock();
        locked.retain(|l| label(l, "server") == Some("a"));
        assert_eq!(locked.len(), 2, "a (live) and the held histogram remain");
        drop(locked);
        // The same series again: the count carried while it was kept.
        store.counter("c_total", &[("server", "a")]).increment(1);
        let mut out = String::new();
        store.lock().render(&mut out);
        assert!(out.contains("c_total{server=\"a\"} 3\n"), "{out}");
        assert!(!out.contains("server=\"b\""), "{out}");
    }
}
