//! Sleeps for as many milliseconds as its configuration says (`"5"`), then allows: a plugin
//! whose calls wait on a WASI timer, so the gateway calls it on a fiber. For the tests.

use std::cell::Cell;
use std::time::Duration;

use accord_policy_sdk::{Decision, Plugin, RequestHead, export_request_plugin};

thread_local! {
    static SLEEP_MS: Cell<u64> = const { Cell::new(0) };
}

struct Sleeper;

impl Plugin for Sleeper {
    fn configure(config: String) -> Result<(), String> {
        let ms = config
            .trim_matches('"')
            .parse()
            .map_err(|_| format!("not milliseconds: {config}"))?;
        SLEEP_MS.set(ms);
        Ok(())
    }

    fn on_request(_head: RequestHead) -> Decision {
        std::thread::sleep(Duration::from_millis(SLEEP_MS.get()));
        Decision::Allow
    }
}

export_request_plugin!(Sleeper);
