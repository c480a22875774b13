//! Redis key names (the table in the module doc of [`super`]).

/// A route's keys, all in one Redis Cluster slot.
pub struct RouteKeys {
    /// Common prefix `accord:<c>:{<route>}`.
    pub base: String,
    /// Open events by identity.
    pub open: String,
    /// Recently closed events by identity.
    pub closed: String,
    /// The events.
    pub events: String,
}

impl RouteKeys {
    pub fn new(prefix: &str, route: &str) -> Self {
        let base = format!("{prefix}:{{{route}}}");
        Self {
            open: format!("{base}:open"),
            closed: format!("{base}:closed"),
            events: format!("{base}:events"),
            base,
        }
    }

    /// The sealed rollups of one minute.
    pub fn minute(&self, minute: i64) -> String {
        format!("{}:m:{minute}", self.base)
    }

    /// The hour rollups of one hour.
    pub fn hour(&self, hour: i64) -> String {
        format!("{}:h:{hour}", self.base)
    }

    /// Live counters.
    pub fn live(&self) -> String {
        format!("{}:live", self.base)
    }

    /// The route's canary state (JSON), shared by every replica.
    pub fn canary(&self) -> String {
        format!("{}:canary", self.base)
    }

    /// Minutes written through, per replica.
    pub fn through(&self) -> String {
        format!("{}:through", self.base)
    }
}
