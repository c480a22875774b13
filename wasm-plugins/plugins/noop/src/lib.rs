//! Allows every request and keeps every classification: the baseline for plugin overhead.

use accord_policy_sdk::{Decision, Plugin, RequestHead, export_request_plugin};

struct Noop;

impl Plugin for Noop {
    fn on_request(_head: RequestHead) -> Decision {
        Decision::Allow
    }
}

export_request_plugin!(Noop);
