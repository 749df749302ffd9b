//! `/metrics` read as Prometheus reads it: an admin listener's page, checked for the text
//! format's content type and parsed by a real text-format parser (prometheus-parse), and the
//! value of one sample.

use ::http::StatusCode;
use prometheus_parse::{Sample, Scrape, Value};

use super::http::Client;

/// The metrics the admin listener shows now (`GET /metrics` on `admin`'s connection), parsed.
pub async fn scrape(admin: &mut Client) -> Vec<Sample> {
    let page = admin.get("/metrics").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{:?}",
        page.header("content-type")
    );
    let text = page.text();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    Scrape::parse(lines)
        .expect("Prometheus text format")
        .samples
}

/// The sample `name` whose labels include `labels`, if the page has one.
pub fn sample<'a>(
    samples: &'a [Sample],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<&'a Sample> {
    samples.iter().find(|s| {
        s.metric == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.get(k).is_some_and(|l| l == *v))
    })
}

/// The value of the sample `name` whose labels include `labels`; 0 when there is none yet.
pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    match sample(samples, name, labels).map(|s| &s.value) {
        None => 0.0,
        Some(Value::Counter(v) | Value::Gauge(v)) => *v,
        // A histogram: how many samples, its `+Inf` bucket.
        Some(Value::Histogram(buckets)) => buckets
            .iter()
            .find(|b| b.less_than.is_infinite())
            .map_or(0.0, |b| b.count),
        Some(other) => panic!("{name} is not a counter, gauge or histogram: {other:?}"),
    }
}
