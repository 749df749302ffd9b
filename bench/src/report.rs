//! Side-by-side tables of `load` results, as Markdown: one column per run (or per label, with
//! `--group`), and with `--ratio A/B` the ratio of the median of the runs labelled A to the
//! median of those labelled B (`--ratio A/B,A/C` for several pairs). A run's label is what comes before `#` in `LABEL#N=FILE`.
//!
//! Medians, not means: a run disturbed by another process on the machine is an outlier, and
//! should not move the ratio.

use std::collections::HashMap;
use std::fs;

use crate::args::Flags;

/// A metric as the tables show it.
struct Row {
    key: &'static str,
    label: &'static str,
    higher_is_better: bool,
}

const fn row(key: &'static str, label: &'static str, higher_is_better: bool) -> Row {
    Row {
        key,
        label,
        higher_is_better,
    }
}

const ROWS: &[Row] = &[
    row("echo.round_trips_per_s", "echo: round trips/s", true),
    row("echo.p50_us", "echo: p50 latency (µs)", false),
    row("echo.p99_us", "echo: p99 latency (µs)", false),
    row(
        "echo.server_cpu_us_per_op",
        "echo: server CPU µs/round trip",
        false,
    ),
    row("bulk.mb_per_s", "bulk: MB/s echoed", true),
    row("bulk.server_cpu_us_per_mb", "bulk: server CPU µs/MB", false),
    row("accept.per_s", "accept: connections/s", true),
    row(
        "accept.server_cpu_us_per_op",
        "accept: server CPU µs/connection",
        false,
    ),
    row("accept.errors", "accept: failed connections", false),
    row(
        "idle.kib_per_conn",
        "idle, never used: server KiB/conn",
        false,
    ),
    row(
        "idle_used.kib_per_conn",
        "idle after one echo: server KiB/conn",
        false,
    ),
    row("http.requests_per_s", "http: requests/s", true),
    row("http.p50_us", "http: p50 latency (µs)", false),
    row("http.p99_us", "http: p99 latency (µs)", false),
    row(
        "http.server_cpu_us_per_op",
        "http: server CPU µs/request",
        false,
    ),
    row(
        "http.response_bytes",
        "http: response bytes (head + body)",
        false,
    ),
    row("http.errors", "http: bad responses", false),
    row("rpc_shared.calls_per_s", "rpc, 1 connection: calls/s", true),
    row(
        "rpc_shared.p50_us",
        "rpc, 1 connection: p50 latency (µs)",
        false,
    ),
    row(
        "rpc_shared.p99_us",
        "rpc, 1 connection: p99 latency (µs)",
        false,
    ),
    row(
        "rpc_shared.server_cpu_us_per_op",
        "rpc, 1 connection: server CPU µs/call",
        false,
    ),
    row(
        "rpc_shared.errors",
        "rpc, 1 connection: failed calls",
        false,
    ),
    row(
        "rpc_own.calls_per_s",
        "rpc, a connection per caller: calls/s",
        true,
    ),
    row(
        "rpc_own.p50_us",
        "rpc, a connection per caller: p50 latency (µs)",
        false,
    ),
    row(
        "rpc_own.p99_us",
        "rpc, a connection per caller: p99 latency (µs)",
        false,
    ),
    row(
        "rpc_own.server_cpu_us_per_op",
        "rpc, a connection per caller: server CPU µs/call",
        false,
    ),
    row(
        "rpc_own.errors",
        "rpc, a connection per caller: failed calls",
        false,
    ),
];

/// Within this relative difference a ratio reads as a tie: runs of the same server differ by
/// about this much.
const TIE: f64 = 0.03;

/// One column: a label and the metrics of the runs under it.
struct Column {
    title: String,
    group: String,
    metrics: Vec<HashMap<String, f64>>,
}

impl Column {
    fn median(&self, key: &str) -> Option<f64> {
        median(
            self.metrics
                .iter()
                .filter_map(|m| m.get(key).copied())
                .collect(),
        )
    }
}

/// `report [--title T] [--ratio A/B[,A/C...]] [--only PREFIX] [--group true] LABEL#N=FILE...`
pub(crate) fn main(args: impl Iterator<Item = String>) -> Result<(), String> {
    let flags = Flags::parse(args, &["title", "ratio", "only", "group"])?;
    let only: String = flags.get("only", String::new())?;
    let grouped: bool = flags.get("group", false)?;
    let ratios: String = flags.get("ratio", String::new())?;
    let ratios = ratios
        .split(',')
        .filter(|r| !r.is_empty())
        .map(|text| {
            let (a, b) = text
                .split_once('/')
                .ok_or_else(|| format!("`--ratio {text}`: expected LABEL/LABEL"))?;
            Ok((a.to_owned(), b.to_owned()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut columns: Vec<Column> = Vec::new();
    for word in flags.words() {
        let (title, path) = word
            .split_once('=')
            .ok_or_else(|| format!("`{word}`: expected LABEL=FILE"))?;
        let metrics = read_metrics(path)?;
        let group = title.split('#').next().unwrap_or(title).to_owned();
        match columns.iter_mut().find(|c| grouped && c.group == group) {
            Some(column) => column.metrics.push(metrics),
            None => columns.push(Column {
                title: if grouped {
                    group.clone()
                } else {
                    title.to_owned()
                },
                group,
                metrics: vec![metrics],
            }),
        }
    }
    if columns.is_empty() {
        return Err("no runs given (LABEL=FILE...)".to_owned());
    }
    let title: String = flags.get("title", String::new())?;
    if !title.is_empty() {
        println!("{title}\n");
    }
    print!("{}", table(&columns, &only, &ratios));
    Ok(())
}

fn read_metrics(path: &str) -> Result<HashMap<String, f64>, String> {
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut metrics = HashMap::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let parsed = line
            .split_once(' ')
            .and_then(|(k, v)| Some((k.to_owned(), v.trim().parse::<f64>().ok()?)));
        let (key, value) =
            parsed.ok_or_else(|| format!("{path}:{}: expected `metric value`", n + 1))?;
        metrics.insert(key, value);
    }
    Ok(metrics)
}

fn table(columns: &[Column], only: &str, ratios: &[(String, String)]) -> String {
    let mut header = vec!["metric".to_owned()];
    header.extend(columns.iter().map(|c| c.title.clone()));
    for (a, b) in ratios {
        header.push(format!("{a}/{b} (medians)"));
        header.push(format!("{a}/{b} (best runs)"));
    }
    let mut lines = vec![header];
    for row in ROWS.iter().filter(|r| r.key.starts_with(only)) {
        let values: Vec<Option<f64>> = columns.iter().map(|c| c.median(row.key)).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        let mut line = vec![row.label.to_owned()];
        line.extend(values.iter().map(|v| v.map_or("-".to_owned(), number)));
        for (a, b) in ratios {
            line.push(ratio_cell(columns, row, a, b, median));
            let best = |values: Vec<f64>| best(values, row.higher_is_better);
            line.push(ratio_cell(columns, row, a, b, best));
        }
        lines.push(line);
    }
    render(&lines)
}

/// The ratio of group `a`'s summary (median, or best run) to group `b`'s, with a word on which
/// is better.
fn ratio_cell(
    columns: &[Column],
    row: &Row,
    a: &str,
    b: &str,
    summary: impl Fn(Vec<f64>) -> Option<f64>,
) -> String {
    let group_median = |group: &str| {
        summary(
            columns
                .iter()
                .filter(|c| c.group == group)
                .flat_map(|c| c.metrics.iter().filter_map(|m| m.get(row.key).copied()))
                .collect(),
        )
    };
    match (group_median(a), group_median(b)) {
        (Some(x), Some(y)) if y != 0.0 => {
            let r = x / y;
            let verdict = if (r - 1.0).abs() <= TIE {
                "tie".to_owned()
            } else if (r > 1.0) == row.higher_is_better {
                format!("{a} better")
            } else {
                format!("{a} worse")
            };
            format!("{r:.2} ({verdict})")
        }
        _ => "-".to_owned(),
    }
}

/// The best value: the highest, or the lowest where lower is better. On a machine whose runs
/// sometimes all come out slower (a noisy neighbour, a slow mode of the VM), the best run is
/// what the server can do.
fn best(values: Vec<f64>, higher_is_better: bool) -> Option<f64> {
    let pick = if higher_is_better { f64::max } else { f64::min };
    values.into_iter().reduce(pick)
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Three significant figures or so, never in exponent form.
fn number(v: f64) -> String {
    let magnitude = v.abs();
    if magnitude >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if magnitude >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A Markdown table with its columns padded to line up in a terminal too.
fn render(lines: &[Vec<String>]) -> String {
    let widths: Vec<usize> = (0..lines[0].len())
        .map(|i| {
            lines
                .iter()
                .map(|l| l[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let pad = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
            .collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let mut out = pad(&lines[0]);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&pad(&rule));
    for line in &lines[1..] {
        out.push_str(&pad(line));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_about_three_figures() {
        assert_eq!(number(123456.7), "123457");
        assert_eq!(number(42.25), "42.2");
        assert_eq!(number(1.234), "1.23");
        assert_eq!(number(0.0), "0");
    }

    #[test]
    fn medians_ignore_one_outlier() {
        assert_eq!(median(vec![3.0, 100.0, 4.0]), Some(4.0));
        assert_eq!(median(vec![1.0, 3.0]), Some(2.0));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn ratios_say_which_side_is_better() {
        let run = |label: &str, v: f64| Column {
            title: label.to_owned(),
            group: label.to_owned(),
            metrics: vec![HashMap::from([("echo.p50_us".to_owned(), v)])],
        };
        let columns = [run("atoll", 50.0), run("tokio", 100.0)];
        let latency = &ROWS[1];
        assert_eq!(
            ratio_cell(&columns, latency, "atoll", "tokio", median),
            "0.50 (atoll better)"
        );
        assert_eq!(
            ratio_cell(&columns, latency, "tokio", "atoll", median),
            "2.00 (tokio worse)"
        );
    }

    #[test]
    fn the_best_run_is_the_highest_rate_or_the_lowest_cost() {
        assert_eq!(best(vec![3.0, 9.0, 4.0], true), Some(9.0));
        assert_eq!(best(vec![3.0, 9.0, 4.0], false), Some(3.0));
        assert_eq!(best(vec![], true), None);
    }
}
