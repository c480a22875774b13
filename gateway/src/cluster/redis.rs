//! The connection to the cluster's Redis: one server (a reconnecting multiplexed connection)
//! or a Redis Cluster (slot-aware, following MOVED/ASK). Every key of a route shares one hash
//! tag, so each route's commands form one pipeline on one node.

use std::time::Duration;

use accord_adapters::Secret;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, IntoConnectionInfo, Pipeline, RedisResult, ScriptInvocation};

use crate::config::model::RedisAddress;

/// A connected (or connecting) Redis.
#[derive(Clone)]
pub enum Redis {
    /// One server.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl Redis {
    /// Connects. A single server is connected lazily (and reconnects by itself); a Redis
    /// Cluster needs one reachable node to learn its slots, so this fails while none is.
    pub async fn connect(
        address: &RedisAddress,
        password: Option<&Secret>,
        timeout: Duration,
    ) -> RedisResult<Redis> {
        let credentials = password.map(|p| match p.expose().split_once(':') {
            Some((user, password)) => (Some(user.to_owned()), password.to_owned()),
            None => (None, p.expose().to_owned()),
        });
        match address {
            RedisAddress::Single(url) => {
                let mut info = url.as_str().into_connection_info()?;
                if let Some((user, password)) = &credentials {
                    let mut settings = info.redis_settings().clone().set_password(password);
                    if let Some(user) = user {
                        settings = settings.set_username(user);
                    }
                    info = info.set_redis_settings(settings);
                }
                let client = redis::Client::open(info)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(2));
                Ok(Redis::Single(ConnectionManager::new_lazy_with_config(
                    client, config,
                )?))
            }
            RedisAddress::Cluster(nodes) => {
                let mut builder = ClusterClient::builder(nodes.iter().map(String::as_str))
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(2);
                if let Some((user, password)) = &credentials {
                    builder = builder.password(password);
                    if let Some(user) = user {
                        builder = builder.username(user);
                    }
                }
                let client = builder.build()?;
                Ok(Redis::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Runs a pipeline (all of whose keys are in one slot).
    pub async fn query<T: FromRedisValue>(&self, pipe: &Pipeline) -> RedisResult<T> {
        match self {
            Redis::Single(c) => pipe.query_async(&mut c.clone()).await,
            Redis::Cluster(c) => pipe.query_async(&mut c.clone()).await,
        }
    }

    /// Runs a Lua script (all of whose keys are in one slot).
    pub async fn invoke<T: FromRedisValue>(&self, script: &ScriptInvocation<'_>) -> RedisResult<T> {
        match self {
            Redis::Single(c) => script.invoke_async(&mut c.clone()).await,
            Redis::Cluster(c) => script.invoke_async(&mut c.clone()).await,
        }
    }

    /// The server's clock, in ms since the epoch (`TIME`).
    pub async fn time_ms(&self) -> RedisResult<i64> {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        let ((seconds, micros),): ((i64, i64),) = self.query(&pipe).await?;
        Ok(seconds * 1000 + micros / 1000)
    }
}
