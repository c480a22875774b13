//! Cluster mode: the Redis address, the replica's name and the sync interval.

use super::*;

/// The `cluster` section, when present and valid.
pub(super) fn check_cluster(v: &mut Validator<'_>, raw: &RawConfig) -> Option<Cluster> {
    let section = raw.cluster.as_ref()?;
    let cluster = &section.value;
    let errors_before = v.errors.len();
    let redis = match &cluster.redis.value {
        RawRedis::Url(url) => {
            check_redis_url(v, &cluster.redis, url, "cluster.redis");
            RedisAddress::Single(url.clone())
        }
        RawRedis::Cluster(nodes) => {
            if nodes.cluster.is_empty() {
                v.error(
                    &cluster.redis,
                    "cluster.redis.cluster",
                    "list at least one node of the Redis Cluster",
                );
            }
            for (i, url) in nodes.cluster.iter().enumerate() {
                check_redis_url(
                    v,
                    &cluster.redis,
                    url,
                    &format!("cluster.redis.cluster[{i}]"),
                );
            }
            RedisAddress::Cluster(nodes.cluster.clone())
        }
    };
    let password = v.secret(
        cluster.password_env.as_ref(),
        cluster.password_file.as_ref(),
        "cluster.password",
    );
    let replica = match &cluster.replica {
        Some(replica) => expand_env(v, replica, "cluster.replica"),
        None => Some(default_replica_name(v.env)),
    };
    if let Some(name) = &replica
        && (name.is_empty() || name.contains(['|', '@']) || name.len() > 128)
    {
        let message = format!("{name:?}: use 1 to 128 characters, without '|' or '@'");
        match &cluster.replica {
            Some(at) => v.error(at, "cluster.replica", message),
            None => v.error(section, "cluster.replica", message),
        }
    }
    let sync_interval = cluster.sync_interval.value.0;
    if sync_interval < Duration::from_millis(100) || sync_interval > Duration::from_secs(30) {
        v.error(
            &cluster.sync_interval,
            "cluster.sync_interval",
            "must be between 100ms and 30s",
        );
    }
    if v.errors.len() > errors_before {
        return None;
    }
    Some(Cluster {
        name: cluster.name.value.as_str().to_owned(),
        redis,
        password,
        replica: replica?,
        sync_interval,
    })
}

/// A Redis URL: `redis://` or `rediss://`, with a host.
fn check_redis_url<T>(v: &mut Validator<'_>, at: &Located<T>, url: &str, path: &str) {
    let Some(rest) = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
    else {
        v.error(
            at,
            path,
            format!("{url:?}: use redis://host:port[/db] or rediss://host:port[/db]"),
        );
        return;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() || host.starts_with(':') {
        v.error(at, path, format!("{url:?}: the URL has no host"));
    }
    if authority.contains('@') {
        v.error(
            at,
            path,
            format!("{url:?}: put the password in cluster.password_env or cluster.password_file, not in the URL"),
        );
    }
}

/// `${VAR}` in `text` replaced by the environment variable; an unset variable is an error.
fn expand_env(v: &mut Validator<'_>, text: &Located<String>, path: &str) -> Option<String> {
    let mut out = String::new();
    let mut rest = text.value.as_str();
    while let Some((before, after)) = rest.split_once("${") {
        out.push_str(before);
        let Some((name, tail)) = after.split_once('}') else {
            v.error(text, path, format!("{:?}: unclosed ${{", text.value));
            return None;
        };
        match v.env.var(name) {
            Some(value) if !value.is_empty() => out.push_str(&value),
            _ => {
                v.error(
                    text,
                    path,
                    format!("environment variable {name} is not set"),
                );
                return None;
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    Some(out)
}

/// `host-pid`: unique per process on a host, readable in reports.
fn default_replica_name(env: &dyn Environment) -> String {
    let host = env
        .var("HOSTNAME")
        .filter(|h| !h.is_empty())
        .or_else(|| {
            env.read_file("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "accord".to_owned());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{check, config, refused};

    fn cluster(section: &str) -> String {
        config(&format!("cluster: {section}\n"), "", "")
    }

    #[test]
    fn a_cluster_section_is_read() {
        let config = check(&cluster(
            "{name: prod-eu, redis: \"redis://127.0.0.1:6379/0\", replica: \"a-${USER_FOR_TEST}\", sync_interval: 2s}",
        ));
        // USER_FOR_TEST is not set: the error names it.
        let errors = config.err().unwrap_or_default();
        assert!(
            errors.contains("environment variable USER_FOR_TEST is not set"),
            "{errors}"
        );
        let config = check(&cluster(
            "{name: prod-eu, redis: {cluster: [\"redis://127.0.0.1:7000\"]}, replica: r1}",
        ))
        .unwrap();
        let section = config.cluster.unwrap();
        assert_eq!(section.replica, "r1");
        assert_eq!(section.sync_interval, std::time::Duration::from_secs(1));
        assert_eq!(
            section.redis,
            crate::config::model::RedisAddress::Cluster(vec!["redis://127.0.0.1:7000".into()])
        );
        let config = check(&cluster("{name: c, redis: \"redis://localhost\"}")).unwrap();
        let replica = config.cluster.unwrap().replica;
        assert!(
            replica.ends_with(&format!("-{}", std::process::id())),
            "{replica}"
        );
    }

    /// One case per rule: the section and the error expected.
    #[test]
    fn every_cluster_rule() {
        let cases = [
            (
                "{name: c, redis: \"http://127.0.0.1\"}",
                "cluster.redis: \"http://127.0.0.1\": use redis://host:port[/db]",
            ),
            (
                "{name: c, redis: \"redis://:secret@127.0.0.1\"}",
                "not in the URL",
            ),
            ("{name: c, redis: \"redis:///0\"}", "the URL has no host"),
            (
                "{name: c, redis: {cluster: []}}",
                "cluster.redis.cluster: list at least one node",
            ),
            (
                "{name: c, redis: {cluster: [\"tcp://x\"]}}",
                "cluster.redis.cluster[0]",
            ),
            (
                "{name: c, redis: \"redis://h\", sync_interval: 10ms}",
                "cluster.sync_interval: must be between 100ms and 30s",
            ),
            (
                "{name: c, redis: \"redis://h\", replica: \"a|b\"}",
                "cluster.replica: \"a|b\": use 1 to 128 characters",
            ),
            (
                "{name: c, redis: \"redis://h\", replica: \"${\"}",
                "unclosed",
            ),
            (
                "{name: c, redis: \"redis://h\", password_env: NOT_SET_ANYWHERE}",
                "cluster.password_env",
            ),
            ("{name: \"a b\", redis: \"redis://h\"}", "cluster"),
        ];
        for (section, expected) in cases {
            refused(&cluster(section), expected);
        }
    }
}
