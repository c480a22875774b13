//! Service-level objectives with OpenSLO v1 semantics (`Occurrences` budgeting): what counts as
//! good, the error budget over the SLO window, burn rates, and multi-window burn-rate alerts.
//!
//! * **Availability SLI**: good ÷ valid. Valid requests are the good and bad ones, client errors
//!   (good unless configured bad) and throttled requests only when configured to burn the
//!   budget. Requests a policy rejected on purpose are not valid events: they are reported
//!   apart, and shedding cannot hide failures because shed requests never count as good.
//! * **Latency SLI**: of the requests served well (class good), the share within the threshold;
//!   a request the client abandoned after waiting longer than the threshold is a bad event too.
//! * **Cancelled** requests (the client went away first) are not valid availability events
//!   unless the route classifies them `bad`: the backend had not failed, the client left.
//! * **Error budget** over the SLO window: `(1 − target) × valid` bad events are allowed.
//! * **Burn rate** over a window: the window's bad ratio ÷ `(1 − target)`; 1 spends the budget
//!   exactly over the SLO window.
//! * **Alert tier**: fires when the burn rate is at or above its factor over *both* its long and
//!   its short window (SRE workbook, chapter 5).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::meter::Aggregate;
use crate::Class;

/// The standard windows every SLI is reported over, besides the SLO window.
pub const WINDOWS: [(&str, u64); 7] = [
    ("5m", 300),
    ("30m", 1800),
    ("1h", 3600),
    ("2h", 7200),
    ("6h", 21_600),
    ("1d", 86_400),
    ("3d", 259_200),
];

/// Writes a duration the way the configuration does (`30d`, `6h`, `5m`, `90s`).
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs != 0 && secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// How a request's class counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Classification {
    /// Throttled requests (429, provider throttles) are bad events.
    pub throttled_burns_budget: bool,
    /// Client errors (4xx other than 429) are bad events.
    pub client_errors_are_bad: bool,
    /// Requests the client abandoned are bad events of the availability SLI (by default they
    /// are not valid events there; the latency SLI counts those that waited past its threshold).
    pub cancelled_are_bad: bool,
}

/// The latency objective: `target` of good requests within `threshold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyObjective {
    /// The threshold.
    pub threshold: Duration,
    /// Share of requests that must be within it (0.99 = 99%).
    pub target: f64,
}

/// The SLO window.
#[derive(Debug, Clone)]
pub enum SloWindow {
    /// The last `length`, sliding.
    Rolling(Duration),
    /// The calendar month so far, in a time zone (the budget resets on the 1st at midnight).
    CalendarMonth {
        /// IANA name, e.g. `Europe/Paris`.
        name: String,
        /// The zone.
        zone: jiff::tz::TimeZone,
    },
}

impl PartialEq for SloWindow {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Rolling(a), Self::Rolling(b)) => a == b,
            (Self::CalendarMonth { name: a, .. }, Self::CalendarMonth { name: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl SloWindow {
    /// A calendar-month window in the IANA time zone `name` (`UTC` when unsure).
    pub fn calendar_month(name: &str) -> Result<Self, String> {
        let zone = jiff::tz::TimeZone::get(name).map_err(|_| {
            format!(
                "unknown time zone {name:?}: use an IANA name such as \"UTC\" or \"Europe/Paris\""
            )
        })?;
        Ok(Self::CalendarMonth {
            name: name.to_owned(),
            zone,
        })
    }

    /// The longest the window can be: what history must be kept for (31 days for a month).
    pub fn length(&self) -> Duration {
        match self {
            Self::Rolling(length) => *length,
            Self::CalendarMonth { .. } => Duration::from_secs(31 * 86_400),
        }
    }

    /// How much of the window lies behind `now_ms`: the rolling length, or the time since the
    /// month began in the window's time zone (at least a minute).
    pub fn covered(&self, now_ms: i64) -> Duration {
        match self {
            Self::Rolling(length) => *length,
            Self::CalendarMonth { zone, .. } => {
                let (start, _) = month_of(zone, now_ms);
                Duration::from_millis((now_ms - start).max(60_000) as u64)
            }
        }
    }

    /// The whole period `now_ms` falls in: the rolling length, or the current month's length.
    pub fn period(&self, now_ms: i64) -> Duration {
        match self {
            Self::Rolling(length) => *length,
            Self::CalendarMonth { zone, .. } => {
                Duration::from_secs(month_of(zone, now_ms).1 * 86_400)
            }
        }
    }

    /// The name reports use: `30d`, or `month`.
    pub fn name(&self) -> String {
        match self {
            Self::Rolling(length) => format_duration(*length),
            Self::CalendarMonth { .. } => "month".to_owned(),
        }
    }
}

/// The start (ms since the epoch) and the length in days of the month `now_ms` falls in.
fn month_of(zone: &jiff::tz::TimeZone, now_ms: i64) -> (i64, u64) {
    let Ok(now) = jiff::Timestamp::from_millisecond(now_ms) else {
        return (now_ms, 30);
    };
    let first = now.to_zoned(zone.clone()).date().first_of_month();
    let start = first
        .to_zoned(zone.clone())
        .map(|z| z.timestamp().as_millisecond())
        .unwrap_or(now_ms);
    (start, first.days_in_month() as u64)
}

/// Who is told when an alert tier fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Someone is woken up.
    Page,
    /// A ticket is filed.
    Ticket,
}

/// A multi-window burn-rate alert.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertTier {
    /// Severity.
    pub severity: Severity,
    /// Burn-rate factor at or above which it fires.
    pub burn_rate: f64,
    /// The long window.
    pub long: Duration,
    /// The short window (confirms the burn is still happening).
    pub short: Duration,
}

impl AlertTier {
    /// The SRE workbook's multi-window, multi-burn-rate tiers, scaled to the SLO window the
    /// way Pyrra scales them: the burn-rate factors stay fixed and the windows shrink or grow
    /// with the SLO window, so each tier still guards the same share of the budget (2% of it
    /// spent in the first tier's long window, 5% in the second's, 10% in each ticket tier's).
    /// For 30 days they are the workbook's own: 14.4× over 1h/5m and 6× over 6h/30m page,
    /// 3× over 1d/2h and 1× over 3d/6h file a ticket. Windows are whole minutes (the engine's
    /// resolution): the short window is at least a minute and the long one at least a minute
    /// longer. No factor is below 1 and no long window outlasts the SLO window.
    pub fn defaults(slo_window: Duration) -> Vec<AlertTier> {
        const REFERENCE: f64 = 30.0 * 86_400.0;
        let scale = slo_window.as_secs_f64() / REFERENCE;
        let minutes = |reference_minutes: f64| (reference_minutes * scale).round().max(1.0) as u64;
        [
            (Severity::Page, 14.4, 60.0, 5.0),
            (Severity::Page, 6.0, 6.0 * 60.0, 30.0),
            (Severity::Ticket, 3.0, 24.0 * 60.0, 2.0 * 60.0),
            (Severity::Ticket, 1.0, 72.0 * 60.0, 6.0 * 60.0),
        ]
        .into_iter()
        .map(|(severity, burn_rate, long, short)| {
            let short = minutes(short);
            let long = minutes(long).max(short + 1);
            AlertTier {
                severity,
                burn_rate,
                long: Duration::from_secs(long * 60),
                short: Duration::from_secs(short * 60),
            }
        })
        .collect()
    }
}

/// A route's objectives.
#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    /// Availability target (0.999 = 99.9%).
    pub availability: Option<f64>,
    /// Latency objective.
    pub latency: Option<LatencyObjective>,
    /// The SLO window.
    pub window: SloWindow,
    /// Burn-rate alert tiers.
    pub tiers: Vec<AlertTier>,
    /// How classes count.
    pub classification: Classification,
}

/// Which SLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Indicator {
    /// Good ÷ valid requests.
    Availability,
    /// Good requests within the latency threshold ÷ good requests.
    Latency,
}

impl Indicator {
    /// As reports, labels and rules name it: `availability` or `latency`.
    pub fn as_str(self) -> &'static str {
        match self {
            Indicator::Availability => "availability",
            Indicator::Latency => "latency",
        }
    }
}

/// Good and valid events of one SLI over one window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Events {
    /// Events that met the objective.
    pub good: f64,
    /// Events that count.
    pub valid: f64,
}

impl Events {
    /// Events that did not meet the objective.
    pub fn bad(&self) -> f64 {
        (self.valid - self.good).max(0.0)
    }

    /// good ÷ valid, or 1 with no events.
    pub fn ratio(&self) -> f64 {
        if self.valid > 0.0 {
            self.good / self.valid
        } else {
            1.0
        }
    }
}

impl Objective {
    /// An availability objective over a rolling window, with the default alert tiers for that
    /// window and the default classification.
    pub fn availability(target: f64, window: Duration) -> Objective {
        Objective {
            availability: Some(target),
            latency: None,
            window: SloWindow::Rolling(window),
            tiers: AlertTier::defaults(window),
            classification: Classification::default(),
        }
    }

    /// The SLIs this objective has, with their targets.
    pub fn indicators(&self) -> Vec<(Indicator, f64)> {
        let mut out = Vec::new();
        if let Some(target) = self.availability {
            out.push((Indicator::Availability, target));
        }
        if let Some(latency) = self.latency {
            out.push((Indicator::Latency, latency.target));
        }
        out
    }

    /// Good and valid events of `indicator` in an aggregate.
    pub fn events(&self, indicator: Indicator, aggregate: &Aggregate) -> Events {
        match indicator {
            Indicator::Availability => {
                let c = self.classification;
                let client = aggregate.count(Class::ClientError);
                let throttled = aggregate.count(Class::Throttled);
                let good = aggregate.count(Class::Good)
                    + if c.client_errors_are_bad { 0.0 } else { client };
                let bad = aggregate.count(Class::Bad)
                    + if c.client_errors_are_bad { client } else { 0.0 }
                    + if c.cancelled_are_bad {
                        aggregate.count(Class::Cancelled)
                    } else {
                        0.0
                    }
                    + if c.throttled_burns_budget {
                        throttled
                    } else {
                        0.0
                    };
                Events {
                    good,
                    valid: good + bad,
                }
            }
            // Served requests, plus abandoned ones whose client had already waited longer than
            // the threshold: the user did not get an answer in time.
            Indicator::Latency => Events {
                good: aggregate.within_threshold,
                valid: aggregate.count(Class::Good) + aggregate.cancelled_slow,
            },
        }
    }
}

/// The burn rate of `events` against `target`.
pub fn burn_rate(events: Events, target: f64) -> f64 {
    let allowed = 1.0 - target;
    if events.valid <= 0.0 || allowed <= 0.0 {
        return 0.0;
    }
    (events.bad() / events.valid) / allowed
}

/// The error budget of an SLI over the SLO window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Budget {
    /// Bad events the window allows: `(1 − target) × valid`.
    pub total_events: f64,
    /// Bad events so far.
    pub consumed_events: f64,
    /// `total − consumed` (negative when overspent).
    pub remaining_events: f64,
    /// Share of the budget consumed (may exceed 1).
    pub consumed_ratio: f64,
    /// Share left: `1 − consumed_ratio` (negative when overspent).
    pub remaining_ratio: f64,
}

/// The budget of `events` (over the SLO window) against `target`.
pub fn budget(events: Events, target: f64) -> Budget {
    let total = (1.0 - target) * events.valid;
    let consumed = events.bad();
    let consumed_ratio = if total > 0.0 {
        consumed / total
    } else if consumed > 0.0 {
        f64::INFINITY
    } else {
        0.0
    };
    Budget {
        total_events: total,
        consumed_events: consumed,
        remaining_events: total - consumed,
        consumed_ratio,
        remaining_ratio: 1.0 - consumed_ratio,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aggregate(good: f64, bad: f64, throttled: f64, client: f64) -> Aggregate {
        let mut a = Aggregate::default();
        a.by_class[Class::Good.index()] = good;
        a.by_class[Class::Bad.index()] = bad;
        a.by_class[Class::Throttled.index()] = throttled;
        a.by_class[Class::ClientError.index()] = client;
        a
    }

    fn objective() -> Objective {
        Objective::availability(0.999, Duration::from_secs(30 * 86_400))
    }

    #[test]
    fn a_calendar_month_covers_the_month_so_far_in_its_time_zone() {
        // 2026-03-10T12:00:00Z.
        let now = 1_773_144_000_000;
        let utc = SloWindow::calendar_month("UTC").unwrap();
        assert_eq!(utc.covered(now), Duration::from_secs((9 * 24 + 12) * 3600));
        assert_eq!(utc.period(now), Duration::from_secs(31 * 86_400));
        // Paris is UTC+1 in early March: its month began an hour earlier, in UTC terms.
        let paris = SloWindow::calendar_month("Europe/Paris").unwrap();
        assert_eq!(
            paris.covered(now),
            Duration::from_secs((9 * 24 + 13) * 3600)
        );
        assert_eq!(paris.name(), "month");
        assert!(
            SloWindow::calendar_month("Mars/Olympus_Mons")
                .unwrap_err()
                .contains("unknown time zone")
        );
        // February 2026 has 28 days.
        assert_eq!(
            utc.period(1_771_416_000_000),
            Duration::from_secs(28 * 86_400)
        );
    }

    /// `(severity, factor, long minutes, short minutes)` of a tier.
    type Tier = (Severity, f64, u64, u64);

    /// Each default tier of `window`.
    fn tiers_of(window: Duration) -> Vec<Tier> {
        AlertTier::defaults(window)
            .iter()
            .map(|t| {
                (
                    t.severity,
                    t.burn_rate,
                    t.long.as_secs() / 60,
                    t.short.as_secs() / 60,
                )
            })
            .collect()
    }

    /// Hand-computed: each reference window (1h/5m, 6h/30m, 1d/2h, 3d/6h at 30 days) times
    /// `window ÷ 30d`, rounded to whole minutes, short ≥ 1m, long ≥ short + 1m.
    #[test]
    fn the_default_tiers_scale_their_windows_with_the_slo_window_and_keep_their_factors() {
        use Severity::{Page, Ticket};
        let day = 86_400;
        let table: [(u64, [Tier; 4]); 5] = [
            // 30 days: the SRE workbook's set.
            (
                30 * day,
                [
                    (Page, 14.4, 60, 5),
                    (Page, 6.0, 360, 30),
                    (Ticket, 3.0, 1440, 120),
                    (Ticket, 1.0, 4320, 360),
                ],
            ),
            // 28 days: × 28/30 (60 → 56, 5 → 4.67 → 5, 360 → 336, 30 → 28, …).
            (
                28 * day,
                [
                    (Page, 14.4, 56, 5),
                    (Page, 6.0, 336, 28),
                    (Ticket, 3.0, 1344, 112),
                    (Ticket, 1.0, 4032, 336),
                ],
            ),
            // 7 days: × 7/30 (60 → 14, 5 → 1.17 → 1, 360 → 84, 30 → 7, 1440 → 336, …).
            (
                7 * day,
                [
                    (Page, 14.4, 14, 1),
                    (Page, 6.0, 84, 7),
                    (Ticket, 3.0, 336, 28),
                    (Ticket, 1.0, 1008, 84),
                ],
            ),
            // 1 day: × 1/30 (60 → 2, 5 → 0.17 → 1, 360 → 12, 30 → 1, 1440 → 48, 120 → 4, …).
            (
                day,
                [
                    (Page, 14.4, 2, 1),
                    (Page, 6.0, 12, 1),
                    (Ticket, 3.0, 48, 4),
                    (Ticket, 1.0, 144, 12),
                ],
            ),
            // 1 hour: × 1/720: every short window is the 1-minute floor, long windows at least
            // a minute longer (60 → 0.08 → 2, 360 → 0.5 → 2, 1440 → 2, 4320 → 6).
            (
                3600,
                [
                    (Page, 14.4, 2, 1),
                    (Page, 6.0, 2, 1),
                    (Ticket, 3.0, 2, 1),
                    (Ticket, 1.0, 6, 1),
                ],
            ),
        ];
        for (window, expected) in table {
            let window = Duration::from_secs(window);
            assert_eq!(tiers_of(window), expected.to_vec(), "window {window:?}");
            for tier in AlertTier::defaults(window) {
                assert!(tier.burn_rate >= 1.0);
                assert!(tier.long <= window && tier.short < tier.long);
            }
        }
    }

    /// The reproduction: a 1-day objective burning at 2× (2% errors against 99%) must
    /// not page: only the tiers at or below 2× could fire, and those are the ticket tiers at
    /// 1× (over 2h24m/12m). Before, every tier had a factor below 1 and all four fired.
    #[test]
    fn a_burn_of_two_on_a_one_day_objective_fires_only_tiers_at_or_below_two() {
        let firing: Vec<(Severity, f64)> = AlertTier::defaults(Duration::from_secs(86_400))
            .into_iter()
            .filter(|t| 2.0 >= t.burn_rate)
            .map(|t| (t.severity, t.burn_rate))
            .collect();
        assert_eq!(firing, vec![(Severity::Ticket, 1.0)]);
    }

    #[test]
    fn a_999_slo_burns_at_14_4_with_a_1_44_percent_error_rate() {
        let o = objective();
        let events = o.events(Indicator::Availability, &aggregate(9856.0, 144.0, 0.0, 0.0));
        assert!((burn_rate(events, 0.999) - 14.4).abs() < 1e-9);
        let below = o.events(Indicator::Availability, &aggregate(9857.0, 143.0, 0.0, 0.0));
        assert!(burn_rate(below, 0.999) < 14.4);
    }

    #[test]
    fn throttles_and_client_errors_count_as_configured() {
        let mut o = objective();
        let a = aggregate(900.0, 10.0, 50.0, 40.0);
        let default = o.events(Indicator::Availability, &a);
        assert_eq!(
            default,
            Events {
                good: 940.0,
                valid: 950.0
            },
            "throttles excluded, 4xx good"
        );
        o.classification = Classification {
            throttled_burns_budget: true,
            client_errors_are_bad: true,
            cancelled_are_bad: false,
        };
        let strict = o.events(Indicator::Availability, &a);
        assert_eq!(
            strict,
            Events {
                good: 900.0,
                valid: 1000.0
            }
        );
    }

    #[test]
    fn the_budget_is_a_share_of_valid_events() {
        // 1,000,000 requests at 99.9%: 1,000 bad allowed; 250 spent.
        let b = budget(
            Events {
                good: 999_750.0,
                valid: 1_000_000.0,
            },
            0.999,
        );
        assert!((b.total_events - 1000.0).abs() < 1e-6);
        assert_eq!(b.consumed_events, 250.0);
        assert!((b.remaining_events - 750.0).abs() < 1e-6);
        assert!((b.remaining_ratio - 0.75).abs() < 1e-9);
        let overspent = budget(
            Events {
                good: 997_000.0,
                valid: 1_000_000.0,
            },
            0.999,
        );
        assert!(
            (overspent.remaining_ratio + 2.0).abs() < 1e-9,
            "{}",
            overspent.remaining_ratio
        );
        let empty = budget(
            Events {
                good: 0.0,
                valid: 0.0,
            },
            0.999,
        );
        assert_eq!(empty.remaining_ratio, 1.0);
    }

    #[test]
    fn the_latency_sli_judges_good_requests_against_the_threshold() {
        let o = Objective {
            latency: Some(LatencyObjective {
                threshold: Duration::from_millis(300),
                target: 0.99,
            }),
            ..objective()
        };
        let mut a = aggregate(1000.0, 100.0, 0.0, 0.0);
        a.within_threshold = 980.0;
        let events = o.events(Indicator::Latency, &a);
        assert_eq!(
            events,
            Events {
                good: 980.0,
                valid: 1000.0
            }
        );
        assert!((burn_rate(events, 0.99) - 2.0).abs() < 1e-9);
    }
}
