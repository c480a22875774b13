//! `accord slo export`: every route's objective as OpenSLO v1 `SLO` documents, one per SLI, with
//! ratio indicators that query Accord's own Prometheus series, so other SLO tooling can take over
//! the same objectives.

use accord_policies::sla::objective::format_duration;

use crate::config::Config;

/// The OpenSLO documents of every route with an objective, as YAML (documents separated by
/// `---`).
pub fn export(config: &Config) -> Result<String, String> {
    let mut documents = Vec::new();
    for route in &config.routes {
        let Some(slo) = &route.slo else { continue };
        let objective = &slo.objective;
        let time_window = match &objective.window {
            accord_policies::sla::SloWindow::Rolling(length) => {
                serde_json::json!([{ "duration": format_duration(*length), "isRolling": true }])
            }
            accord_policies::sla::SloWindow::CalendarMonth { name, .. } => serde_json::json!([{
                "duration": "1M",
                "isRolling": false,
                "calendar": { "startTime": "2020-01-01 00:00:00", "timeZone": name },
            }]),
        };
        let id = &route.id;
        let total = format!("sum(rate(accord_requests_total{{route=\"{id}\"}}[{{{{.window}}}}]))");
        if let Some(target) = objective.availability {
            let good = format!(
                "sum(rate(accord_requests_total{{route=\"{id}\",class=~\"good{}\"}}[{{{{.window}}}}]))",
                if objective.classification.client_errors_are_bad {
                    ""
                } else {
                    "|client_error"
                }
            );
            documents.push(document(id, "availability", &time_window, target, serde_json::json!({
                "ratioMetric": {
                    "counter": true,
                    "good": { "metricSource": { "type": "Prometheus", "spec": { "query": good } } },
                    "total": { "metricSource": { "type": "Prometheus", "spec": { "query": total } } },
                }
            }), None));
        }
        if let Some(latency) = objective.latency {
            let seconds = latency.threshold.as_secs_f64();
            let p = format!(
                "histogram_quantile(0.99, sum(rate(accord_request_duration_seconds_bucket{{route=\"{id}\"}}[{{{{.window}}}}])) by (le))"
            );
            documents.push(document(id, "latency", &time_window, latency.target, serde_json::json!({
                "thresholdMetric": { "metricSource": { "type": "Prometheus", "spec": { "query": p } } }
            }), Some(seconds)));
        }
    }
    let mut out = String::new();
    for doc in documents {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&doc).map_err(|e| e.to_string())?);
    }
    Ok(out)
}

fn document(
    route: &str,
    sli: &str,
    time_window: &serde_json::Value,
    target: f64,
    indicator_spec: serde_json::Value,
    threshold: Option<f64>,
) -> serde_json::Value {
    let mut objective = serde_json::json!({ "displayName": sli, "target": target });
    if let Some(seconds) = threshold {
        objective["op"] = "lte".into();
        objective["value"] = seconds.into();
    }
    serde_json::json!({
        "apiVersion": "openslo/v1",
        "kind": "SLO",
        "metadata": { "name": format!("{route}-{sli}"), "displayName": format!("{route} {sli}") },
        "spec": {
            "description": format!("Accord route {route}: {sli}"),
            "service": route,
            "indicator": {
                "metadata": { "name": format!("{route}-{sli}-sli") },
                "spec": indicator_spec,
            },
            "timeWindow": time_window,
            "budgetingMethod": "Occurrences",
            "objectives": [objective],
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::config::{from_str, validate::Environment};

    struct NoEnv;
    impl Environment for NoEnv {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
        fn read_file(&self, _: &str) -> std::io::Result<String> {
            Err(std::io::ErrorKind::NotFound.into())
        }
    }

    #[test]
    fn each_sli_becomes_an_openslo_v1_slo() {
        let yaml = "listeners: [{address: \"127.0.0.1:0\"}]\nbackends:\n  app: {http: {addresses: [\"127.0.0.1:1\"]}}\nroutes:\n  - id: orders\n    match: {path: {prefix: /}}\n    backends: [{backend: app}]\n    slo:\n      availability: 99.9%\n      latency: {threshold: 300ms, target: 99%}\n      window: 7d\n  - id: plain\n    match: {path: {prefix: /p}}\n    backends: [{backend: app}]\n";
        let config = from_str(yaml, &NoEnv).unwrap();
        let text = super::export(&config).unwrap();
        let docs: Vec<&str> = text
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .collect();
        assert_eq!(docs.len(), 2, "{text}");
        let availability: serde_json::Value = serde_saphyr::from_str(docs[0]).unwrap();
        assert_eq!(availability["apiVersion"], "openslo/v1");
        assert_eq!(availability["kind"], "SLO");
        assert_eq!(availability["metadata"]["name"], "orders-availability");
        assert_eq!(availability["spec"]["budgetingMethod"], "Occurrences");
        assert_eq!(availability["spec"]["timeWindow"][0]["duration"], "7d");
        assert_eq!(availability["spec"]["timeWindow"][0]["isRolling"], true);
        assert_eq!(availability["spec"]["objectives"][0]["target"], 0.999);
        assert!(availability["spec"]["indicator"]["spec"]["ratioMetric"]["good"]["metricSource"]["spec"]["query"]
            .as_str()
            .unwrap()
            .contains("class=~\"good|client_error\""));
        let latency: serde_json::Value = serde_saphyr::from_str(docs[1]).unwrap();
        assert_eq!(latency["spec"]["objectives"][0]["op"], "lte");
        assert_eq!(latency["spec"]["objectives"][0]["value"], 0.3);
        assert_eq!(latency["spec"]["objectives"][0]["target"], 0.99);
    }

    #[test]
    fn a_calendar_month_exports_as_an_openslo_calendar_window() {
        let yaml = "listeners: [{address: \"127.0.0.1:0\"}]\nbackends:\n  app: {http: {addresses: [\"127.0.0.1:1\"]}}\nroutes:\n  - id: billing\n    match: {path: {prefix: /}}\n    backends: [{backend: app}]\n    slo: {availability: 99.5%, window: month, time_zone: Europe/Paris}\n";
        let config = from_str(yaml, &NoEnv).unwrap();
        let text = super::export(&config).unwrap();
        let doc: serde_json::Value =
            serde_saphyr::from_str(text.trim_start_matches("---\n")).unwrap();
        let window = &doc["spec"]["timeWindow"][0];
        assert_eq!(window["duration"], "1M");
        assert_eq!(window["isRolling"], false);
        assert_eq!(window["calendar"]["timeZone"], "Europe/Paris");
    }
}
