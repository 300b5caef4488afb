//! The Grafana dashboard in deploy/ against the collector's live `/metrics`: every
//! metric its queries use is one the collector exposes, so a renamed metric or a typo
//! in a query shows here rather than as an empty panel on a plant.

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{
    http::{get, metrics_addr, parse_exposition},
    *,
};
use serde_json::Value;

const DASHBOARD_PATH: &str = "deploy/grafana-dashboard.json";
const DASHBOARD: &str = include_str!("../../deploy/grafana-dashboard.json");

/// PromQL's grouping modifiers: the label names in the parentheses after them are not
/// metrics either.
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The other PromQL words that look like names but are not metrics.
const KEYWORDS: [&str; 6] = ["bool", "and", "or", "unless", "offset", "inf"];

/// PromQL's aggregation operators, which may be followed by `by (...)` rather than `(`.
const AGGREGATIONS: [&str; 12] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// The metric names a PromQL expression selects: every name that is not a function
/// (followed by `(`), an aggregation, a keyword, a label (inside `{}` or a `by (...)` list), a range
/// (`[...]`), a string or a `$variable`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    // Whether the last name was a grouping keyword, whose `(...)` holds labels.
    let mut grouping = false;
    while i < chars.len() {
        let c = chars[i];
        let skip_to = |close: char, from: usize| {
            chars[from..]
                .iter()
                .position(|&x| x == close)
                .map_or(chars.len(), |p| from + p + 1)
        };
        match c {
            '"' | '\'' | '`' => i = skip_to(c, i + 1),
            '{' => i = skip_to('}', i + 1),
            '[' => i = skip_to(']', i + 1),
            '(' if grouping => {
                grouping = false;
                i = skip_to(')', i + 1);
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                let lower = word.to_ascii_lowercase();
                if GROUPING.contains(&lower.as_str()) {
                    grouping = true;
                } else if next != Some(&'(')
                    && !KEYWORDS.contains(&lower.as_str())
                    && !AGGREGATIONS.contains(&lower.as_str())
                    && lower != "nan"
                {
                    names.insert(word);
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                // A number, with its exponent or duration unit (1e3, 5m).
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    names
}

/// Every query of the dashboard: panel targets (rows' panels included) and the
/// template variables' queries, each with where it is.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    fn panels(list: &Value, out: &mut Vec<(String, String)>) {
        for p in list.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?");
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((format!("panel {title:?} {}", t["refId"]), e.to_string()));
                }
            }
            panels(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().or(v["query"].as_str());
        if let Some(q) = q {
            // label_values(metric, label): the metric is what must exist.
            let q = q
                .strip_prefix("label_values(")
                .and_then(|r| r.rsplit_once(','))
                .map_or(q, |(m, _)| m);
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

#[test]
fn metric_names_are_found_in_promql_and_nothing_else() {
    let expr = r#"histogram_quantile(0.99, sum by (le) (rate(mes_commit_seconds_bucket{instance=~"$instance"}[$__rate_interval]))) / on (instance) mes_x and count(mes_y > $silent_after) or vector(0)"#;
    assert_eq!(
        metric_names(expr),
        BTreeSet::from([
            "mes_commit_seconds_bucket".to_string(),
            "mes_x".to_string(),
            "mes_y".to_string()
        ])
    );
    assert_eq!(
        metric_names("sum(rate(mes_mesages_stored_total[5m])) * 1e3"),
        BTreeSet::from(["mes_mesages_stored_total".to_string()])
    );
}

/// The dashboard imports into Grafana: the data source is an input chosen at import,
/// and every panel and query uses it.
#[test]
fn the_dashboard_is_importable() {
    let d: Value = serde_json::from_str(DASHBOARD)
        .unwrap_or_else(|e| panic!("{DASHBOARD_PATH} is not JSON: {e}"));
    let input = &d["__inputs"][0];
    assert_eq!(
        (&input["name"], &input["type"], &input["pluginId"]),
        (
            &Value::from("DS_PROMETHEUS"),
            &Value::from("datasource"),
            &Value::from("prometheus")
        ),
        "{DASHBOARD_PATH}: __inputs must offer the Prometheus data source"
    );
    assert!(d["uid"].is_string() && d["title"].is_string() && d["schemaVersion"].is_number());
    let mut ids = BTreeSet::new();
    let mut all: Vec<&Value> = d["panels"].as_array().unwrap().iter().collect();
    while let Some(p) = all.pop() {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel {title:?}: id not unique"
        );
        assert!(p["gridPos"]["w"].is_number(), "panel {title:?}: no gridPos");
        if p["type"] != "row" {
            assert_eq!(
                p["datasource"]["uid"], "${DS_PROMETHEUS}",
                "panel {title:?} does not use the imported data source"
            );
            assert!(!p["targets"].as_array().unwrap().is_empty(), "{title:?}");
        }
        all.extend(p["panels"].as_array().into_iter().flatten());
    }
}

#[test]
fn every_metric_the_dashboard_queries_is_exposed_by_the_collector() {
    let d: Value = serde_json::from_str(DASHBOARD).unwrap();
    let db = TestDb::new("dashboard");
    // CNC003 stays silent: its series exists from the start.
    let classes = r#"[{"cnc_id":"CNC001","class_name":"CNCTypeA"},{"cnc_id":"CNC002","class_name":"CNCTypeB"},
                      {"cnc_id":"CNC003","class_name":"CNCTypeA"}]"#;
    let setup = Setup::new(&db, "dashboard", classes, &["cnc-type-a", "cnc-type-b"]);
    let collector = Collector::start(&setup);
    // Stored messages and a dead letter, so that the labelled series exist.
    let mut msgs = SAMPLES.to_vec();
    msgs.push("not json");
    setup.publish(&msgs);
    db.wait_count(
        "SELECT COUNT(*) FROM dead_letters",
        1,
        Duration::from_secs(30),
    );
    db.wait_count("SELECT COUNT(*) FROM cnc_data", 3, Duration::from_secs(30));

    let (status, text) = get(&metrics_addr(&collector), "/metrics");
    assert_eq!(status, 200);
    // Sample names as exposed: a histogram `x` is there as x_bucket, x_sum and x_count,
    // which is what PromQL selects, so `x` alone in a query would be reported.
    let exposed: BTreeSet<String> = parse_exposition(&text)
        .into_iter()
        .map(|(series, _)| series.split('{').next().unwrap().to_string())
        .collect();

    let queries = queries(&d);
    let mut used = BTreeSet::new();
    let mut missing = Vec::new();
    for (place, expr) in &queries {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{place}: no metric in {expr:?}");
        for name in names {
            if !exposed.contains(&name) {
                missing.push(format!("{place}: {name} (in {expr})"));
            }
            used.insert(name);
        }
    }
    assert!(
        missing.is_empty(),
        "{DASHBOARD_PATH} queries metrics the collector does not expose:\n{}\n\nexposed: {exposed:?}",
        missing.join("\n")
    );
    // What the dashboard is for: each of these has a panel.
    for name in [
        "mes_messages_stored_total",
        "mes_messages_received_total",
        "mes_commit_seconds_bucket",
        "mes_spool_records",
        "mes_spool_bytes",
        "mes_messages_dead_lettered_total",
        "mes_cnc_seconds_since_last_seen",
        "mes_broker_up",
        "mes_database_up",
        "mes_plugin_quarantined",
        "mes_plugin_crashes",
    ] {
        assert!(
            used.contains(name),
            "{DASHBOARD_PATH} has no query of {name}"
        );
    }
}
