//! `accord report`: the SLA report of a running gateway, read from its admin API (`GET /sla`),
//! as a table, Markdown, CSV or JSON.

use std::fmt::Write as _;

use serde_json::Value;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned columns for a terminal.
    Table,
    /// The `/sla` JSON (filtered by route).
    Json,
    /// Comma-separated values, one row per route and SLI.
    Csv,
    /// A Markdown table.
    Markdown,
}

const HEADERS: [&str; 17] = [
    "route",
    "status",
    "sli",
    "objective",
    "window",
    "attainment",
    "budget_left",
    "burn_5m",
    "burn_1h",
    "burn_6h",
    "alerts",
    "p99_ms",
    "good",
    "bad",
    "throttled",
    "rejected",
    "actions",
];

/// Renders `/sla` (`document`) for `route` (all when `None`), judging attainment, latency and
/// traffic over `window` (one of the report's windows: 5m, 30m, 1h, 2h, 6h, 1d, 3d, or the SLO
/// window).
pub fn render(
    document: &Value,
    route: Option<&str>,
    window: &str,
    format: ReportFormat,
) -> Result<String, String> {
    let routes: Vec<&Value> = document["routes"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter(|r| route.is_none_or(|id| r["route"] == id))
                .collect()
        })
        .unwrap_or_default();
    if let Some(id) = route
        && routes.is_empty()
    {
        return Err(format!("route {id:?} has no SLO on this gateway"));
    }
    if format == ReportFormat::Json {
        let mut json =
            serde_json::json!({ "generated_ms": document["generated_ms"], "routes": routes });
        if !document["cluster"].is_null() {
            json["cluster"] = document["cluster"].clone();
        }
        return Ok(format!("{json:#}\n"));
    }
    let mut rows: Vec<Row> = Vec::new();
    for r in &routes {
        rows.extend(route_rows(r, window)?);
    }
    Ok(match format {
        ReportFormat::Csv => csv(&rows),
        ReportFormat::Markdown => cluster_header(document) + &markdown(&rows),
        _ => cluster_header(document) + &table(&rows),
    })
}

/// In cluster mode, a first paragraph: the cluster's status and its replicas (the figures
/// below are the whole cluster's).
fn cluster_header(document: &Value) -> String {
    let cluster = &document["cluster"];
    if cluster.is_null() {
        return String::new();
    }
    let now = document["generated_ms"].as_i64().unwrap_or_default();
    let mut out = format!(
        "cluster {} ({}), figures for the whole cluster, as seen by replica {}:\n",
        cluster["name"].as_str().unwrap_or("?"),
        cluster["status"].as_str().unwrap_or("?"),
        cluster["replica"].as_str().unwrap_or("?"),
    );
    for replica in cluster["replicas"].as_array().into_iter().flatten() {
        let ago = (now - replica["last_sync_ms"].as_i64().unwrap_or(now)) as f64 / 1000.0;
        let _ = writeln!(
            out,
            "  {}{}: {}, last sync {ago:.1}s ago, {} requests in 5m",
            replica["replica"].as_str().unwrap_or("?"),
            if replica["this"] == true {
                " (this one)"
            } else {
                ""
            },
            replica["status"].as_str().unwrap_or("?"),
            replica["requests_5m"].as_u64().unwrap_or(0),
        );
    }
    out.push('\n');
    out
}

/// One row of the report: a route's SLI, with the cells of [`HEADERS`].
type Row = [String; 17];

/// The rows of one route of `/sla`, one per SLI, judged over `window`.
fn route_rows(r: &Value, window: &str) -> Result<Vec<Row>, String> {
    let mut rows = Vec::new();
    let traffic = r["windows"]
        .as_array()
        .and_then(|w| w.iter().find(|w| w["window"] == window))
        .ok_or_else(|| {
            format!("unknown window {window:?}: use 5m, 30m, 1h, 2h, 6h, 1d, 3d or the SLO window")
        })?;
    let count = |class: &str| {
        format!(
            "{}",
            traffic["requests"][class].as_f64().unwrap_or(0.0).round()
        )
    };
    let p99 = traffic["latency_ms"]["p99"]
        .as_f64()
        .map_or("-".to_owned(), |v| format!("{v:.1}"));
    let actions = &r["actions"];
    let actions = format!(
        "rerouted {} shed {} rejected {}",
        actions["rerouted"], actions["shed"], actions["rejected"]
    );
    for indicator in r["indicators"].as_array().into_iter().flatten() {
        let name = indicator["indicator"].as_str().unwrap_or("?");
        let target = indicator["target"].as_f64().unwrap_or(0.0);
        let objective = match name {
            "latency" => format!(
                "{} < {}ms",
                percent(target),
                r["objective"]["latency"]["threshold_ms"]
                    .as_f64()
                    .unwrap_or(0.0)
            ),
            _ => percent(target),
        };
        let by_window = |key: &str, w: &str| {
            indicator[key]
                .as_array()
                .and_then(|list| list.iter().find(|v| v["window"] == w))
                .and_then(|v| v["value"].as_f64())
        };
        let firing: Vec<String> = indicator["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["firing"] == true)
            .map(|a| {
                format!(
                    "{} {}x",
                    a["severity"].as_str().unwrap_or("?"),
                    a["burn_rate"]
                )
            })
            .collect();
        rows.push([
            r["route"].as_str().unwrap_or("?").to_owned(),
            r["status"].as_str().unwrap_or("?").to_owned(),
            name.to_owned(),
            format!(
                "{objective} / {}",
                r["objective"]["window"].as_str().unwrap_or("?")
            ),
            window.to_owned(),
            by_window("attainment_by_window", window).map_or("-".to_owned(), percent),
            indicator["budget"]["remaining_ratio"]
                .as_f64()
                .map_or("-".to_owned(), percent),
            burn(by_window("burn_rates", "5m")),
            burn(by_window("burn_rates", "1h")),
            burn(by_window("burn_rates", "6h")),
            if firing.is_empty() {
                "-".to_owned()
            } else {
                firing.join(", ")
            },
            p99.clone(),
            count("good"),
            count("bad"),
            count("throttled"),
            count("rejected"),
            actions.clone(),
        ]);
    }
    Ok(rows)
}

fn csv(rows: &[Row]) -> String {
    let mut out = HEADERS.join(",") + "\n";
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| csv_cell(c)).collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

fn markdown(rows: &[Row]) -> String {
    let mut out = format!(
        "| {} |\n|{}\n",
        HEADERS.join(" | "),
        " --- |".repeat(HEADERS.len())
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// Columns padded to their widest cell.
fn table(rows: &[Row]) -> String {
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_owned() + "\n"
    };
    let mut out = line(
        HEADERS
            .iter()
            .map(|h| h.to_uppercase())
            .collect::<Vec<_>>()
            .iter()
            .map(String::as_str)
            .collect(),
    );
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    if rows.is_empty() {
        out.push_str("(no route has an SLO)\n");
    }
    out
}

fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if (p - p.round()).abs() < 1e-9 {
        format!("{p:.0}%")
    } else {
        format!("{}%", format!("{p:.3}").trim_end_matches('0'))
    }
}

fn burn(value: Option<f64>) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.2}"))
}

fn csv_cell(cell: &str) -> String {
    if cell.contains([',', '"', '\n']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Value {
        serde_json::json!({
            "generated_ms": 1,
            "routes": [{
                "route": "orders", "status": "paging",
                "objective": { "availability": 0.999, "latency": null, "window": "30d" },
                "indicators": [{
                    "indicator": "availability", "target": 0.999,
                    "budget": { "remaining_ratio": 0.25 },
                    "burn_rates": [{ "window": "5m", "value": 20.0 }, { "window": "1h", "value": 15.5 }, { "window": "6h", "value": 3.0 }],
                    "attainment_by_window": [{ "window": "1h", "value": 0.9845 }],
                    "alerts": [{ "severity": "page", "burn_rate": 14.4, "firing": true }, { "severity": "ticket", "burn_rate": 3.0, "firing": false }]
                }],
                "windows": [{ "window": "1h", "requests": { "good": 9845.0, "bad": 155.0, "throttled": 3.0, "rejected": 0.0 }, "latency_ms": { "p99": 212.4 } }],
                "actions": { "rerouted": 40, "shed": 2, "rejected": 0 }
            }]
        })
    }

    #[test]
    fn the_table_shows_objective_attainment_budget_burns_alerts_and_traffic() {
        let table = render(&document(), None, "1h", ReportFormat::Table).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ROUTE"));
        for expected in [
            "orders",
            "paging",
            "99.9% / 30d",
            "98.45%",
            "25%",
            "20.00",
            "15.50",
            "page 14.4x",
            "212.4",
            "9845",
            "155",
            "rerouted 40 shed 2",
        ] {
            assert!(
                lines[1].contains(expected),
                "{expected:?} missing from {:?}",
                lines[1]
            );
        }
    }

    #[test]
    fn markdown_csv_and_json_carry_the_same_row() {
        let md = render(&document(), None, "1h", ReportFormat::Markdown).unwrap();
        assert!(
            md.lines()
                .nth(2)
                .unwrap()
                .starts_with("| orders | paging | availability |")
        );
        let csv = render(&document(), Some("orders"), "1h", ReportFormat::Csv).unwrap();
        assert!(
            csv.lines()
                .nth(1)
                .unwrap()
                .starts_with("orders,paging,availability,99.9% / 30d,1h,98.45%,25%")
        );
        let json = render(&document(), Some("orders"), "1h", ReportFormat::Json).unwrap();
        assert!(json.contains("\"route\": \"orders\""));
        assert!(
            render(&document(), Some("nope"), "1h", ReportFormat::Table)
                .unwrap_err()
                .contains("no SLO")
        );
        assert!(
            render(&document(), None, "2w", ReportFormat::Table)
                .unwrap_err()
                .contains("unknown window")
        );
    }
}
