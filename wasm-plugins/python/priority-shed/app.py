"""priority-shed: an Accord SLA policy plugin in Python.

While the route burns its error budget fast over both a long and a short window (the
multi-window rule, so the plugin never locks itself out: its refusals are not valid events,
and the short window empties once traffic stops failing), requests whose priority header is
not critical are refused with 503 and Retry-After. One refusal in every `probe_every` is let
through so the windows keep seeing fresh traffic. The priority is passed on to the backend
as `x-accord-priority`, and refusals are counted per priority in the plugin's state.

Configuration (JSON, all optional; the defaults are shown):

    {"header": "x-priority", "critical": ["critical"], "factor": 14.4, "long": "1h",
     "short": "5m", "min_valid": 10, "probe_every": 20, "retry_after_seconds": 30}

Built with componentize-py from the WIT alone (see wasm-plugins/README.md):

    componentize-py -d ../../wit -w policy componentize app -o priority_shed.wasm
"""

import json

import wit_world
from wit_world.imports import request, response, sla, state, telemetry, types
from componentize_py_types import Err

DEFAULTS = {
    "header": "x-priority",
    "critical": ["critical"],
    "factor": 14.4,
    "long": "1h",
    "short": "5m",
    "min_valid": 10,
    "probe_every": 20,
    "retry_after_seconds": 30,
}
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")

# The instance's state: componentize-py may make a new `WitWorld` object for each call, so
# what lives as long as the instance is kept at module level.
CONFIG = dict(DEFAULTS)
REFUSED = [0]


def burn_rate(route, window):
    """The worst indicator's burn rate over `window`."""
    rates = [rate for i in route.indicators for (w, rate) in i.burn_rates if w == window]
    return max(rates, default=0.0)


def valid_events(route, window):
    return next((w.valid for w in route.windows if w.window == window), 0.0)


def burning(route, config) -> bool:
    """Both windows at or above the factor, with enough valid events in the short one."""
    if valid_events(route, config["short"]) < config["min_valid"]:
        return False
    return (
        burn_rate(route, config["long"]) >= config["factor"]
        and burn_rate(route, config["short"]) >= config["factor"]
    )


class WitWorld(wit_world.WitWorld):
    def configure(self, config: str) -> None:
        given = json.loads(config) if config.strip() else {}
        if not isinstance(given, dict):
            raise Err("the configuration must be a JSON object")
        unknown = sorted(set(given) - set(DEFAULTS))
        if unknown:
            raise Err(f"unknown field {unknown[0]!r}, expected one of {', '.join(DEFAULTS)}")
        config = {**DEFAULTS, **given}
        for key in ("long", "short"):
            if config[key] not in WINDOWS:
                raise Err(f"{key}: {config[key]!r} is not a window ({', '.join(WINDOWS)})")
        if not isinstance(config["factor"], (int, float)) or config["factor"] <= 0:
            raise Err("factor: must be a number above 0")
        CONFIG.clear()
        CONFIG.update(config)
        REFUSED[0] = 0

    def on_request(self, head: types.RequestHead) -> types.Decision:
        config = CONFIG
        priority = (request.header(config["header"]) or "standard").lower()
        request.set_header("x-accord-priority", priority)
        if priority in config["critical"]:
            return types.Decision_Allow()
        route = sla.route()
        if route is None or not burning(route, config):
            return types.Decision_Allow()
        REFUSED[0] += 1
        if REFUSED[0] % max(1, config["probe_every"]) == 0:
            telemetry.annotate("priority_shed", "probe")
            return types.Decision_Allow()
        shed = state.incr(f"shed:{priority}", 1, 3_600_000)
        telemetry.counter(f"shed_{priority}", 1)
        return types.Decision_Reject(
            types.Rejection(
                status=503,
                reason=f"the route is burning its error budget: {priority} traffic is shed "
                f"({shed} refused in the last hour)",
                headers=[],
                retry_after_seconds=config["retry_after_seconds"],
            )
        )

    def on_response(self, head: types.ResponseHead) -> types.Verdict:
        if head.status == 503 and response.header("retry-after") is None:
            response.set_header("retry-after", str(CONFIG["retry_after_seconds"]))
        return types.Verdict_Keep()
