//! When the device client tries again: the retry and failover schedule of a provisioning run.
//!
//! A provisioning step that fails, or gets no answer, is tried again after a delay taken from
//! a [`RetrySchedule`]: by default 10, 20, 40, 80 and 120 s ([`DEFAULT_RETRY_DELAYS`]), then
//! from 10 s again, forever, until a step succeeds. The schedule is configurable: one to
//! [`MAX_RETRY_DELAYS`] positive delays of at most [`MAX_RETRY_DELAY`] each, given in code
//! ([`RetrySchedule::new`]) or on a command line as seconds ([`RetrySchedule::parse`],
//! `"10,20,40,80,120"`).
//!
//! [`Attempts`] is the state of one provisioning run against one or more service endpoints
//! (the addresses of the provisioning service, in the order they were configured). It is
//! sans-IO: it reads no clock and opens no socket; the caller passes `now` in and gets back
//! the [`Instant`] of the next attempt, and asks [`Attempts::endpoint`] where to send it.
//!
//! The rules, precisely:
//!
//! * The run starts at endpoint 0 and at the first delay of the schedule.
//! * Each failure ([`Attempts::failed`]) waits the current delay, then moves the delay to the
//!   next one in the schedule, wrapping from the last back to the first, and moves to the next
//!   endpoint in turn, wrapping from the last back to endpoint 0 (round-robin). With the
//!   default schedule and endpoints `A`, `B`, `C`, a run that never gets through tries
//!   `A`, then `B` after 10 s, `C` after 20 s, `A` after 40 s, `B` after 80 s, `C` after 120 s,
//!   `A` after 10 s, and so on.
//! * A success ([`Attempts::succeeded`]) resets the back-off, so the next failure waits the
//!   first delay again, and keeps the current endpoint: an endpoint that answers is kept.
//! * Nothing overflows: the failure count saturates at `u64::MAX`, the positions wrap, and an
//!   `Instant` that cannot be represented is clamped (see [`Attempts::failed`]).
//!
//! Unlike plgd's device provisioning client, no random jitter is added to the delays (a
//! caller that wants it adds it to the returned instant), and the endpoint changes on every
//! failure rather than once per pass through the whole schedule.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use tern_dps::schedule::{Attempts, RetrySchedule};
//!
//! let mut attempts = Attempts::new(RetrySchedule::default(), 2);
//! let now = Instant::now();
//! assert_eq!(attempts.endpoint(), 0);
//! let next = attempts.failed(now);
//! assert_eq!(next - now, Duration::from_secs(10));
//! assert_eq!(attempts.endpoint(), 1);
//! attempts.succeeded();
//! assert_eq!(attempts.next_delay(), Duration::from_secs(10));
//! assert_eq!(attempts.endpoint(), 1);
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

/// The default retry delays: 10, 20, 40, 80 and 120 seconds.
pub const DEFAULT_RETRY_DELAYS: [Duration; 5] = [
    Duration::from_secs(10),
    Duration::from_secs(20),
    Duration::from_secs(40),
    Duration::from_secs(80),
    Duration::from_secs(120),
];

/// The most delays a [`RetrySchedule`] holds.
pub const MAX_RETRY_DELAYS: usize = 8;

/// The longest single delay a [`RetrySchedule`] accepts: one hour.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(3600);

/// The most decimal places [`RetrySchedule::parse`] accepts (nanoseconds).
const MAX_DECIMALS: usize = 9;

/// Why a retry schedule was refused.
///
/// Positions (`position`) count from 1, in the order the delays were given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// No delay at all.
    #[error("retry schedule is empty: give at least one delay")]
    Empty,
    /// More than [`MAX_RETRY_DELAYS`] delays.
    #[error("retry schedule has {0} delays, more than the {MAX_RETRY_DELAYS} allowed")]
    TooMany(usize),
    /// A delay of zero (it would retry in a busy loop).
    #[error("retry delay {position} is zero: every delay must be positive")]
    Zero {
        /// Which delay, from 1.
        position: usize,
    },
    /// A delay over [`MAX_RETRY_DELAY`].
    #[error(
        "retry delay {position} is {}s, over the limit of {}s",
        delay.as_secs_f64(),
        MAX_RETRY_DELAY.as_secs()
    )]
    TooLong {
        /// Which delay, from 1.
        position: usize,
        /// The delay given (saturated at `Duration::MAX` when it was parsed from text too
        /// large to represent).
        delay: Duration,
    },
    /// An empty item in a comma-separated list (`"10,,20"`, `"10,"`).
    #[error("retry delay {position} is empty (stray comma?)")]
    EmptyItem {
        /// Which delay, from 1.
        position: usize,
    },
    /// A negative number of seconds.
    #[error("retry delay {position} ({text:?}) is negative: every delay must be positive")]
    Negative {
        /// Which delay, from 1.
        position: usize,
        /// The item as given, trimmed.
        text: String,
    },
    /// An item that is not a plain decimal number of seconds (`"abc"`, `"NaN"`, `"inf"`,
    /// `"1e3"`, `"10s"`, or more than 9 decimal places).
    #[error(
        "retry delay {position} ({text:?}) is not a number of seconds \
         (write digits with an optional decimal part of at most 9 places, like 10 or 0.5)"
    )]
    Invalid {
        /// Which delay, from 1.
        position: usize,
        /// The item as given, trimmed (cut to 32 characters).
        text: String,
    },
}

/// The delays between attempts of a provisioning step: 1 to [`MAX_RETRY_DELAYS`] positive
/// delays of at most [`MAX_RETRY_DELAY`], used in order and then from the first again.
///
/// Its [`Display`](fmt::Display) form is the one [`RetrySchedule::parse`] reads
/// (`10,20,40,80,120`), so a schedule round-trips through text.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RetrySchedule {
    delays: Vec<Duration>,
}

impl RetrySchedule {
    /// A schedule of `delays`, in order.
    ///
    /// Refuses an empty list, more than [`MAX_RETRY_DELAYS`] delays, a zero delay and a delay
    /// over [`MAX_RETRY_DELAY`] (exactly one hour is allowed).
    pub fn new(delays: Vec<Duration>) -> Result<Self, ScheduleError> {
        if delays.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if delays.len() > MAX_RETRY_DELAYS {
            return Err(ScheduleError::TooMany(delays.len()));
        }
        for (i, &delay) in delays.iter().enumerate() {
            let position = i + 1;
            if delay.is_zero() {
                return Err(ScheduleError::Zero { position });
            }
            if delay > MAX_RETRY_DELAY {
                return Err(ScheduleError::TooLong { position, delay });
            }
        }
        Ok(Self { delays })
    }

    /// The delays, in order; never empty.
    pub fn delays(&self) -> &[Duration] {
        &self.delays
    }

    /// Reads a schedule from text such as a command-line flag: delays in seconds separated by
    /// commas, `"10,20,40,80,120"` or `"0.5, 1, 2.25"`.
    ///
    /// Each item is digits with an optional decimal part (`10`, `0.5`, `2.`, `.5` — at most 9
    /// decimal places, which is nanoseconds); whitespace around items is ignored. Signs,
    /// exponents, units, `NaN`, `inf`, empty items and anything else are refused, and so is
    /// any schedule [`RetrySchedule::new`] refuses.
    pub fn parse(text: &str) -> Result<Self, ScheduleError> {
        if text.trim().is_empty() {
            return Err(ScheduleError::Empty);
        }
        // Count before parsing, so a huge list is refused without parsing each item.
        let count = text.split(',').count();
        if count > MAX_RETRY_DELAYS {
            return Err(ScheduleError::TooMany(count));
        }
        let delays = text
            .split(',')
            .enumerate()
            .map(|(i, item)| parse_seconds(i + 1, item.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(delays)
    }
}

/// One item of [`RetrySchedule::parse`]: `digits[.digits]`, at least one digit in all.
fn parse_seconds(position: usize, item: &str) -> Result<Duration, ScheduleError> {
    if item.is_empty() {
        return Err(ScheduleError::EmptyItem { position });
    }
    let invalid = || ScheduleError::Invalid {
        position,
        text: item.chars().take(32).collect(),
    };
    if item.starts_with('-') {
        return Err(ScheduleError::Negative {
            position,
            text: item.chars().take(32).collect(),
        });
    }
    let (whole, fraction) = match item.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (item, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && fraction.is_empty())
        || !all_digits(whole)
        || !all_digits(fraction)
        || fraction.len() > MAX_DECIMALS
    {
        return Err(invalid());
    }
    // Leading zeros cost nothing; digits beyond what u64 holds are far over the limit anyway.
    let secs = whole.bytes().try_fold(0u64, |acc, b| {
        acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
    });
    let Some(secs) = secs else {
        return Err(ScheduleError::TooLong {
            position,
            delay: Duration::MAX,
        });
    };
    let mut nanos = 0u32;
    for i in 0..MAX_DECIMALS {
        let digit = fraction.as_bytes().get(i).map_or(0, |b| b - b'0');
        nanos = nanos * 10 + u32::from(digit);
    }
    Ok(Duration::new(secs, nanos))
}

impl Default for RetrySchedule {
    /// [`DEFAULT_RETRY_DELAYS`]: 10, 20, 40, 80, 120 s.
    fn default() -> Self {
        Self {
            delays: DEFAULT_RETRY_DELAYS.to_vec(),
        }
    }
}

impl FromStr for RetrySchedule {
    type Err = ScheduleError;

    /// The same as [`RetrySchedule::parse`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

impl fmt::Display for RetrySchedule {
    /// Seconds separated by commas, decimals only where needed: `10,20,0.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, delay) in self.delays.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}", delay.as_secs())?;
            let nanos = delay.subsec_nanos();
            if nanos != 0 {
                let digits = format!("{nanos:09}");
                write!(f, ".{}", digits.trim_end_matches('0'))?;
            }
        }
        Ok(())
    }
}

/// The state of one provisioning run: which endpoint to try next, and how long to wait after
/// a failure. See the [module documentation](self) for the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempts {
    schedule: RetrySchedule,
    endpoints: usize,
    /// The endpoint of the next attempt, `< endpoints`.
    endpoint: usize,
    /// The position in the schedule of the next failure's delay, `< schedule.delays.len()`.
    position: usize,
    /// Consecutive failures since the start or the last success, saturating.
    failures: u64,
}

impl Attempts {
    /// A run with `schedule` over `endpoints` service endpoints (numbered from 0, in the order
    /// they were configured), starting at endpoint 0 and the first delay.
    ///
    /// `endpoints` of 0 is treated as 1: there is always an endpoint to try, and
    /// [`Attempts::endpoint`] then always returns 0.
    pub fn new(schedule: RetrySchedule, endpoints: usize) -> Self {
        Self {
            schedule,
            endpoints: endpoints.max(1),
            endpoint: 0,
            position: 0,
            failures: 0,
        }
    }

    /// The index of the endpoint to use for the next attempt, always below
    /// [`Attempts::endpoints`].
    pub fn endpoint(&self) -> usize {
        self.endpoint
    }

    /// How many endpoints the run fails over between (at least 1).
    pub fn endpoints(&self) -> usize {
        self.endpoints
    }

    /// The schedule the run follows.
    pub fn schedule(&self) -> &RetrySchedule {
        &self.schedule
    }

    /// Records an attempt that failed or got no answer, made (or given up on) at `now`, and
    /// returns when to make the next attempt: `now` plus [`Attempts::next_delay`] as it was
    /// before the call.
    ///
    /// Moves the delay to the next in the schedule (from the last back to the first) and the
    /// endpoint to the next in turn (from the last back to 0). If `now` plus the delay cannot
    /// be represented as an `Instant` (only possible for an `Instant` at the far end of the
    /// platform's range), it returns `now`.
    pub fn failed(&mut self, now: Instant) -> Instant {
        let delay = self.next_delay();
        self.position = (self.position + 1) % self.schedule.delays.len();
        self.endpoint = (self.endpoint + 1) % self.endpoints;
        self.failures = self.failures.saturating_add(1);
        now.checked_add(delay).unwrap_or(now)
    }

    /// Records a step that succeeded: the next failure waits the first delay again, and the
    /// current endpoint, which answered, is kept.
    pub fn succeeded(&mut self) {
        self.position = 0;
        self.failures = 0;
    }

    /// Consecutive failures since the run started or last succeeded (saturating at
    /// `u64::MAX`).
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// How long the next failure will wait before the attempt after it: always one of the
    /// schedule's delays.
    pub fn next_delay(&self) -> Duration {
        self.schedule.delays[self.position]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_sequence_wraps_forever() {
        let mut attempts = Attempts::new(RetrySchedule::default(), 1);
        let start = Instant::now();
        let mut now = start;
        let expected = [10, 20, 40, 80, 120, 10, 20, 40, 80, 120, 10, 20];
        for (i, &want) in expected.iter().enumerate() {
            assert_eq!(attempts.next_delay(), secs(want));
            let next = attempts.failed(now);
            assert_eq!(next - now, secs(want), "failure {}", i + 1);
            assert_eq!(attempts.endpoint(), 0);
            assert_eq!(attempts.failures(), i as u64 + 1);
            now = next;
        }
        assert_eq!(now - start, secs(2 * 270 + 30));
    }

    #[test]
    fn success_resets_back_off_and_keeps_endpoint() {
        let mut attempts = Attempts::new(RetrySchedule::default(), 3);
        let now = Instant::now();
        attempts.failed(now);
        attempts.failed(now);
        attempts.failed(now);
        assert_eq!(attempts.next_delay(), secs(80));
        assert_eq!(attempts.endpoint(), 0);
        attempts.failed(now);
        assert_eq!(attempts.endpoint(), 1);
        attempts.succeeded();
        assert_eq!(attempts.failures(), 0);
        assert_eq!(attempts.next_delay(), secs(10));
        assert_eq!(attempts.endpoint(), 1);
        assert_eq!(attempts.failed(now) - now, secs(10));
        assert_eq!(attempts.failed(now) - now, secs(20));
        assert_eq!(attempts.endpoint(), 0);
    }

    #[test]
    fn fails_over_across_three_endpoints_in_turn() {
        let mut attempts = Attempts::new(RetrySchedule::default(), 3);
        let mut now = Instant::now();
        let mut seen = vec![attempts.endpoint()];
        let mut waits = Vec::new();
        for _ in 0..7 {
            let next = attempts.failed(now);
            waits.push((next - now).as_secs());
            seen.push(attempts.endpoint());
            now = next;
        }
        assert_eq!(seen, [0, 1, 2, 0, 1, 2, 0, 1]);
        assert_eq!(waits, [10, 20, 40, 80, 120, 10, 20]);
    }

    #[test]
    fn zero_endpoints_is_one() {
        let mut attempts = Attempts::new(RetrySchedule::default(), 0);
        assert_eq!(attempts.endpoints(), 1);
        attempts.failed(Instant::now());
        assert_eq!(attempts.endpoint(), 0);
    }

    #[test]
    fn schedule_of_one_value() {
        let schedule = RetrySchedule::new(vec![Duration::from_millis(500)]).unwrap();
        let mut attempts = Attempts::new(schedule, 2);
        let now = Instant::now();
        for i in 0..5 {
            assert_eq!(attempts.failed(now) - now, Duration::from_millis(500));
            assert_eq!(attempts.endpoint(), (i + 1) % 2);
        }
    }

    #[test]
    fn schedule_of_eight_values() {
        let delays: Vec<_> = (1..=8).map(secs).collect();
        let schedule = RetrySchedule::new(delays).unwrap();
        let mut attempts = Attempts::new(schedule, 1);
        let now = Instant::now();
        let waits: Vec<_> = (0..10)
            .map(|_| (attempts.failed(now) - now).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 3, 4, 5, 6, 7, 8, 1, 2]);
    }

    #[test]
    fn new_refuses_bad_schedules() {
        assert_eq!(RetrySchedule::new(vec![]), Err(ScheduleError::Empty));
        assert_eq!(
            RetrySchedule::new(vec![secs(1); 9]),
            Err(ScheduleError::TooMany(9))
        );
        assert_eq!(
            RetrySchedule::new(vec![secs(1), Duration::ZERO]),
            Err(ScheduleError::Zero { position: 2 })
        );
        assert_eq!(
            RetrySchedule::new(vec![secs(3601)]),
            Err(ScheduleError::TooLong {
                position: 1,
                delay: secs(3601)
            })
        );
        assert!(RetrySchedule::new(vec![MAX_RETRY_DELAY; MAX_RETRY_DELAYS]).is_ok());
        assert!(RetrySchedule::new(vec![Duration::from_nanos(1)]).is_ok());
        assert_eq!(RetrySchedule::default().delays(), &DEFAULT_RETRY_DELAYS);
    }

    #[test]
    fn error_messages_name_the_problem() {
        let msg = |text: &str| RetrySchedule::parse(text).unwrap_err().to_string();
        assert_eq!(msg(""), "retry schedule is empty: give at least one delay");
        assert_eq!(
            msg("1,2,3,4,5,6,7,8,9"),
            "retry schedule has 9 delays, more than the 8 allowed"
        );
        assert_eq!(
            msg("10,0"),
            "retry delay 2 is zero: every delay must be positive"
        );
        assert_eq!(
            msg("3600.5"),
            "retry delay 1 is 3600.5s, over the limit of 3600s"
        );
        assert_eq!(msg("10,,20"), "retry delay 2 is empty (stray comma?)");
        assert_eq!(
            msg("-5"),
            "retry delay 1 (\"-5\") is negative: every delay must be positive"
        );
        assert!(msg("10,abc").starts_with("retry delay 2 (\"abc\") is not a number of seconds"));
    }

    #[test]
    fn parse_table() {
        let ok: &[(&str, &[Duration])] = &[
            ("10,20,40,80,120", &DEFAULT_RETRY_DELAYS),
            (" 10 , 20,\t40 ,80 ,120\n", &DEFAULT_RETRY_DELAYS),
            ("0.5", &[Duration::from_millis(500)]),
            (
                "1.25,2",
                &[Duration::from_millis(1250), Duration::from_secs(2)],
            ),
            (".5", &[Duration::from_millis(500)]),
            ("2.", &[Duration::from_secs(2)]),
            ("007", &[Duration::from_secs(7)]),
            ("0.000000001", &[Duration::from_nanos(1)]),
            ("3600", &[MAX_RETRY_DELAY]),
            ("3600.000000000", &[MAX_RETRY_DELAY]),
            (
                "1,2,3,4,5,6,7,8",
                &[
                    secs(1),
                    secs(2),
                    secs(3),
                    secs(4),
                    secs(5),
                    secs(6),
                    secs(7),
                    secs(8),
                ],
            ),
        ];
        for (text, want) in ok {
            let schedule = RetrySchedule::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(schedule.delays(), *want, "{text:?}");
            let via_from_str: RetrySchedule = text.parse().unwrap();
            assert_eq!(via_from_str, schedule);
        }

        use ScheduleError as E;
        let invalid = |position: usize, text: &str| E::Invalid {
            position,
            text: text.into(),
        };
        let bad: &[(&str, ScheduleError)] = &[
            ("", E::Empty),
            ("   ", E::Empty),
            (",", E::EmptyItem { position: 1 }),
            ("10,", E::EmptyItem { position: 2 }),
            ("10,,20", E::EmptyItem { position: 2 }),
            ("10, ,20", E::EmptyItem { position: 2 }),
            ("0", E::Zero { position: 1 }),
            ("0.0", E::Zero { position: 1 }),
            ("10,0.000", E::Zero { position: 2 }),
            (
                "-1",
                E::Negative {
                    position: 1,
                    text: "-1".into(),
                },
            ),
            (
                "10,-0.5",
                E::Negative {
                    position: 2,
                    text: "-0.5".into(),
                },
            ),
            ("+1", invalid(1, "+1")),
            ("NaN", invalid(1, "NaN")),
            ("nan", invalid(1, "nan")),
            ("inf", invalid(1, "inf")),
            (
                "-inf",
                E::Negative {
                    position: 1,
                    text: "-inf".into(),
                },
            ),
            ("infinity", invalid(1, "infinity")),
            ("1e3", invalid(1, "1e3")),
            ("10s", invalid(1, "10s")),
            ("abc", invalid(1, "abc")),
            (".", invalid(1, ".")),
            ("1.2.3", invalid(1, "1.2.3")),
            ("1 0", invalid(1, "1 0")),
            ("10;20", invalid(1, "10;20")),
            ("٣", invalid(1, "٣")),
            ("0.0000000001", invalid(1, "0.0000000001")),
            (
                "3601",
                E::TooLong {
                    position: 1,
                    delay: secs(3601),
                },
            ),
            (
                "99999999999999999999999",
                E::TooLong {
                    position: 1,
                    delay: Duration::MAX,
                },
            ),
            ("1,2,3,4,5,6,7,8,9", E::TooMany(9)),
            ("x,x,x,x,x,x,x,x,x", E::TooMany(9)),
        ];
        for (text, want) in bad {
            assert_eq!(RetrySchedule::parse(text).as_ref(), Err(want), "{text:?}");
        }
    }

    #[test]
    fn display_round_trips() {
        assert_eq!(RetrySchedule::default().to_string(), "10,20,40,80,120");
        let schedule = RetrySchedule::new(vec![
            Duration::from_millis(500),
            Duration::from_nanos(1),
            Duration::new(3, 10),
        ])
        .unwrap();
        assert_eq!(schedule.to_string(), "0.5,0.000000001,3.00000001");
        assert_eq!(RetrySchedule::parse(&schedule.to_string()), Ok(schedule));
    }

    #[test]
    fn no_overflow_at_the_limits() {
        let mut attempts = Attempts::new(RetrySchedule::default(), usize::MAX);
        attempts.failures = u64::MAX - 1;
        attempts.endpoint = usize::MAX - 1;
        let now = Instant::now();
        attempts.failed(now);
        assert_eq!(attempts.failures(), u64::MAX);
        assert_eq!(attempts.endpoint(), 0);
        attempts.failed(now);
        assert_eq!(attempts.failures(), u64::MAX);
        assert_eq!(attempts.endpoint(), 1);
        attempts.succeeded();
        assert_eq!(attempts.failures(), 0);
    }

    fn delay() -> impl Strategy<Value = Duration> {
        (1u64..=MAX_RETRY_DELAY.as_nanos() as u64).prop_map(Duration::from_nanos)
    }

    proptest! {
        #[test]
        fn attempts_stay_in_bounds(
            delays in prop::collection::vec(delay(), 1..=MAX_RETRY_DELAYS),
            endpoints in 0usize..6,
            // true = a failure, false = a success.
            events in prop::collection::vec(any::<bool>(), 0..200),
        ) {
            let schedule = RetrySchedule::new(delays.clone()).unwrap();
            let mut attempts = Attempts::new(schedule, endpoints);
            let bound = endpoints.max(1);
            let mut now = Instant::now();
            let mut consecutive = 0u64;
            let mut position = 0usize;
            for failed in events {
                prop_assert!(attempts.endpoint() < bound);
                prop_assert!(delays.contains(&attempts.next_delay()));
                if failed {
                    let before = attempts.endpoint();
                    let next = attempts.failed(now);
                    prop_assert_eq!(next - now, delays[position]);
                    prop_assert_eq!(attempts.endpoint(), (before + 1) % bound);
                    position = (position + 1) % delays.len();
                    consecutive += 1;
                    now = next;
                } else {
                    let before = attempts.endpoint();
                    attempts.succeeded();
                    prop_assert_eq!(attempts.endpoint(), before);
                    prop_assert_eq!(attempts.next_delay(), delays[0]);
                    position = 0;
                    consecutive = 0;
                }
                prop_assert_eq!(attempts.failures(), consecutive);
                prop_assert!(attempts.endpoint() < bound);
                prop_assert!(delays.contains(&attempts.next_delay()));
            }
        }

        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let _ = RetrySchedule::parse(&text);
        }

        #[test]
        fn parse_never_panics_on_likely_text(text in "[0-9., \\-+eEnaif]{0,40}") {
            if let Ok(schedule) = RetrySchedule::parse(&text) {
                prop_assert!(!schedule.delays().is_empty());
                prop_assert!(schedule.delays().len() <= MAX_RETRY_DELAYS);
                prop_assert!(schedule.delays().iter().all(|d| !d.is_zero() && *d <= MAX_RETRY_DELAY));
            }
        }

        #[test]
        fn display_parse_round_trip(delays in prop::collection::vec(delay(), 1..=MAX_RETRY_DELAYS)) {
            let schedule = RetrySchedule::new(delays).unwrap();
            prop_assert_eq!(RetrySchedule::parse(&schedule.to_string()), Ok(schedule));
        }
    }
}
