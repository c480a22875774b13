//! Notifications and traces: the Alertmanager and webhook URLs, webhook secrets and event kinds,
//! the outbox file and how long deliveries are retried; the OTLP collector and what is kept.

use super::*;

/// The `notifications` section, when there is one.
pub(super) fn check_notifications(v: &mut Validator<'_>, raw: &RawConfig) -> Option<Notifications> {
    let section = raw.notifications.as_ref()?;
    let n = &section.value;
    let errors_before = v.errors.len();
    let alertmanager = n.alertmanager.as_ref().and_then(|am| {
        let url = check_url(v, &am.value.url, "notifications.alertmanager.url")?;
        let resend = am.value.resend_interval.value.0;
        if resend < Duration::from_secs(1) || resend > Duration::from_secs(3600) {
            v.error(
                &am.value.resend_interval,
                "notifications.alertmanager.resend_interval",
                "must be between 1s and 1h",
            );
        }
        Some(AlertmanagerTarget {
            url,
            resend_interval: resend,
        })
    });
    let mut webhooks = Vec::new();
    for (i, hook) in n.webhooks.iter().enumerate() {
        let path = format!("notifications.webhooks[{i}]");
        let url = check_url(v, &hook.value.url, &format!("{path}.url"));
        let secret = v.secret(
            hook.value.secret_env.as_ref(),
            hook.value.secret_file.as_ref(),
            &format!("{path}.secret"),
        );
        let mut kinds = Vec::new();
        for (k, kind) in hook.value.kinds.iter().enumerate() {
            match accord_policies::sla::engine::EventKind::from_name(&kind.value) {
                Some(parsed) => kinds.push(parsed),
                None => v.error(
                    kind,
                    format!("{path}.kinds[{k}]"),
                    format!(
                        "unknown event kind {:?}: use burn_rate_alert, backend_breach, budget_exhausted or canary_breach",
                        kind.value
                    ),
                ),
            }
        }
        if let Some(url) = url {
            webhooks.push(WebhookTarget { url, secret, kinds });
        }
    }
    if alertmanager.is_none() && webhooks.is_empty() && v.errors.len() == errors_before {
        v.error(
            section,
            "notifications",
            "set an alertmanager or at least one webhook",
        );
    }
    let max_age = n.max_age.value.0;
    if max_age < Duration::from_secs(60) || max_age > Duration::from_secs(7 * 86_400) {
        v.error(
            &n.max_age,
            "notifications.max_age",
            "must be between 1m and 7d",
        );
    }
    (v.errors.len() == errors_before).then(|| Notifications {
        alertmanager,
        webhooks,
        outbox: PathBuf::from(
            n.outbox
                .as_ref()
                .map_or("accord-outbox.db", |o| o.value.as_str()),
        ),
        max_age,
    })
}

/// The `traces` section, when there is one.
pub(super) fn check_traces(v: &mut Validator<'_>, raw: &RawConfig) -> Option<Traces> {
    use accord_policies::Class;
    let section = raw.traces.as_ref()?;
    let t = &section.value;
    let errors_before = v.errors.len();
    let endpoint = check_url(v, &t.endpoint, "traces.endpoint");
    if let Some(uri) = &endpoint
        && t.protocol == RawOtlpProtocol::Grpc
        && uri.scheme_str() == Some("https")
    {
        v.error(
            &t.endpoint,
            "traces.endpoint",
            "grpc is sent without TLS (h2c): use http:// (or protocol: http/protobuf)",
        );
    }
    let mut always_keep = Vec::new();
    let mut keep_slow = false;
    for (i, what) in t.always_keep.iter().enumerate() {
        match what.value.as_str() {
            "bad" => always_keep.push(Class::Bad),
            "throttled" => always_keep.push(Class::Throttled),
            "cancelled" => always_keep.push(Class::Cancelled),
            "rejected" => always_keep.push(Class::Rejected),
            "slow" => keep_slow = true,
            other => v.error(
                what,
                format!("traces.always_keep[{i}]"),
                format!("unknown {other:?}: use bad, throttled, cancelled, rejected or slow"),
            ),
        }
    }
    if t.service_name.trim().is_empty() {
        v.error(section, "traces.service_name", "must not be empty");
    }
    (v.errors.len() == errors_before).then(|| Traces {
        endpoint: endpoint.unwrap_or_default(),
        grpc: t.protocol == RawOtlpProtocol::Grpc,
        sample_ratio: t.sample_ratio.value.0,
        always_keep,
        keep_slow,
        service_name: t.service_name.clone(),
    })
}

/// An `http://` or `https://` URL with a host.
fn check_url(v: &mut Validator<'_>, at: &Located<String>, path: &str) -> Option<http::Uri> {
    match at.value.parse::<http::Uri>() {
        Ok(uri) if matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some() => {
            Some(uri)
        }
        _ => {
            v.error(
                at,
                path,
                format!(
                    "{:?} is not an http:// or https:// URL with a host",
                    at.value
                ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{check, config, refused};

    #[test]
    fn targets_are_urls_and_kinds_are_event_kinds() {
        let ok = check(&config(
            "notifications:\n  alertmanager: {url: \"http://127.0.0.1:9093\"}\n  webhooks:\n    - {url: \"https://hooks.example.com/accord\", kinds: [burn_rate_alert, canary_breach]}\n",
            "",
            "",
        ))
        .unwrap();
        let n = ok.notifications.unwrap();
        assert_eq!(
            n.alertmanager.unwrap().resend_interval,
            std::time::Duration::from_secs(60)
        );
        assert_eq!(n.webhooks[0].kinds.len(), 2);
        refused(
            &config("notifications:\n  webhooks: [{url: \"ftp://x\"}]\n", "", ""),
            "notifications.webhooks[0].url: \"ftp://x\" is not an http:// or https:// URL with a host",
        );
        refused(
            &config(
                "notifications:\n  webhooks: [{url: \"http://x\", kinds: [outage]}]\n",
                "",
                "",
            ),
            "notifications.webhooks[0].kinds[0]: unknown event kind \"outage\"",
        );
        refused(
            &config(
                "notifications:\n  webhooks: [{url: \"http://x\", secret_env: ACCORD_NO_SUCH_VARIABLE}]\n",
                "",
                "",
            ),
            "notifications.webhooks[0].secret_env: environment variable ACCORD_NO_SUCH_VARIABLE is not set",
        );
        refused(
            &config("notifications: {}\n", "", ""),
            "notifications: set an alertmanager or at least one webhook",
        );
    }

    #[test]
    fn traces_name_a_collector_and_what_is_always_kept() {
        let ok = check(&config(
            "traces: {endpoint: \"http://127.0.0.1:4318\"}\n",
            "",
            "",
        ))
        .unwrap();
        let traces = ok.traces.unwrap();
        assert_eq!(traces.sample_ratio, 0.01);
        assert_eq!(traces.always_keep.len(), 4);
        assert!(traces.keep_slow);
        refused(
            &config(
                "traces: {endpoint: \"http://x:4317\", always_keep: [errors]}\n",
                "",
                "",
            ),
            "traces.always_keep[0]: unknown \"errors\"",
        );
        refused(
            &config(
                "traces: {endpoint: \"https://x:4317\", protocol: grpc}\n",
                "",
                "",
            ),
            "traces.endpoint: grpc is sent without TLS (h2c)",
        );
        refused(
            &config(
                "traces: {endpoint: \"http://x\", sample_ratio: 150%}\n",
                "",
                "",
            ),
            "invalid percentage",
        );
    }
}
