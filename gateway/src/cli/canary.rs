//! `accord canary` and `accord gate`: a canary's state and timeline, and the release gate, as
//! text for people and CI logs.

use std::fmt::Write as _;

use serde_json::Value;

/// A canary report (`GET /canary/{route}`) as text: where it stands, the last comparison, and
/// the timeline.
pub fn render_canary(route: &str, report: &Value) -> String {
    let mut out = String::new();
    let steps: Vec<String> = report["steps"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|v| percent(v.as_f64().unwrap_or(0.0)))
                .collect()
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "route {route}: canary {} {} at {} of the traffic (step {} of {}: {})",
        report["backend"].as_str().unwrap_or("?"),
        report["phase"].as_str().unwrap_or("?"),
        percent(report["share"].as_f64().unwrap_or(0.0)),
        report["step"].as_u64().unwrap_or(0) + 1,
        steps.len(),
        steps.join(" → ")
    );
    let _ = writeln!(
        out,
        "judged against the {} every evaluation; {}s and {} requests per step; a breach: {}",
        report["compare"].as_str().unwrap_or("?"),
        report["step_for_seconds"],
        report["min_requests"],
        report["on_breach"].as_str().unwrap_or("?")
    );
    for c in report["last"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {}", comparison(c));
    }
    let _ = writeln!(out, "timeline:");
    for entry in report["timeline"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            "  {}  {:<12} step {} at {} (by {})",
            time(entry["at_ms"].as_i64().unwrap_or(0)),
            entry["what"].as_str().unwrap_or("?"),
            entry["step"].as_u64().unwrap_or(0) + 1,
            percent(entry["share"].as_f64().unwrap_or(0.0)),
            entry["by"].as_str().unwrap_or("?")
        );
        let judged: Vec<String> = entry["comparisons"]
            .as_array()
            .into_iter()
            .flatten()
            .map(comparison)
            .collect();
        if !judged.is_empty() {
            let _ = write!(out, ": {}", judged.join("; "));
        }
        let _ = writeln!(out);
    }
    out
}

/// One SLI's comparison: `availability: canary 5.00% bad of 100 vs limit 0.10% → breach`.
fn comparison(c: &Value) -> String {
    format!(
        "{}: canary {:.2}% bad of {} vs limit {:.2}% (baseline {:.2}% of {}) → {}",
        c["indicator"].as_str().unwrap_or("?"),
        c["canary_bad_ratio"].as_f64().unwrap_or(0.0) * 100.0,
        c["canary_requests"].as_f64().unwrap_or(0.0),
        c["limit"].as_f64().unwrap_or(0.0) * 100.0,
        c["baseline_bad_ratio"].as_f64().unwrap_or(0.0) * 100.0,
        c["baseline_requests"].as_f64().unwrap_or(0.0),
        c["verdict"].as_str().unwrap_or("?")
    )
}

/// The gate's answer as text: `allow` or `refuse`, then every reason.
pub fn render_gate(verdict: &Value) -> String {
    let mut out = String::new();
    let allow = verdict["allow"].as_bool().unwrap_or(false);
    let _ = writeln!(
        out,
        "{}: route {} (error budget left {}, floor {})",
        if allow { "allow" } else { "refuse" },
        verdict["route"].as_str().unwrap_or("?"),
        percent(verdict["budget_remaining"].as_f64().unwrap_or(0.0)),
        percent(verdict["min_budget"].as_f64().unwrap_or(0.0))
    );
    for reason in verdict["reasons"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  - {}", reason.as_str().unwrap_or("?"));
    }
    out
}

fn percent(ratio: f64) -> String {
    let value = ratio * 100.0;
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}%")
    } else {
        format!("{value:.1}%")
    }
}

fn time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canary_reads_as_where_it_stands_and_what_happened() {
        let report = serde_json::json!({
            "backend": "orders-v2", "phase": "rolled_back", "share": 0.0, "step": 1,
            "steps": [0.01, 0.05, 1.0], "step_for_seconds": 300, "min_requests": 200,
            "compare": "objective", "on_breach": "rollback", "last": [],
            "timeline": [
                {"at_ms": 0, "what": "started", "step": 0, "share": 0.01, "by": "gateway"},
                {"at_ms": 65_000, "what": "rolled_back", "step": 1, "share": 0.0, "by": "gateway",
                 "comparisons": [{"indicator": "availability", "canary_requests": 100.0,
                   "canary_bad_ratio": 0.05, "baseline_requests": 0.0, "baseline_bad_ratio": 0.0,
                   "limit": 0.001, "statistic": 0.02, "verdict": "breach"}]}
            ]
        });
        let text = render_canary("orders", &report);
        assert!(text.starts_with("route orders: canary orders-v2 rolled_back at 0% of the traffic (step 2 of 3: 1% → 5% → 100%)"), "{text}");
        assert!(text.contains("00:01:05Z  rolled_back  step 2 at 0% (by gateway): availability: canary 5.00% bad of 100 vs limit 0.10%"), "{text}");
    }

    #[test]
    fn the_gate_reads_as_allow_or_refuse_with_every_reason() {
        let verdict = serde_json::json!({"allow": false, "route": "orders", "min_budget": 0.25,
            "budget_remaining": 0.125, "reasons": ["the availability error budget has 12.5% left, below the 25.0% floor"]});
        assert_eq!(
            render_gate(&verdict),
            "refuse: route orders (error budget left 12.5%, floor 25%)\n  - the availability error budget has 12.5% left, below the 25.0% floor\n"
        );
    }
}
