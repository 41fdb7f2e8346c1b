//! Event time: windows, windowing strategies (Beam YAML's `windowing:`)
//! and watermarks.
//!
//! Times are milliseconds since the Unix epoch, as [`Record::event_time`].
//! A window is `[start, end)`. A stream's windowing strategy is static (it
//! belongs to the stream, as Beam's belongs to a PCollection): a record
//! with no explicit [`Record::window`] is in the windows its strategy
//! assigns to its event time; an aggregation puts each of its results in
//! the one window it was computed over.
//!
//! [`Record::event_time`]: crate::Record::event_time
//! [`Record::window`]: crate::Record::window

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::node::ConfigError;

/// The watermark of an input that has ended: every window can fire.
pub const END_OF_TIME: i64 = i64::MAX;
/// The watermark before anything is known.
pub const BEFORE_TIME: i64 = i64::MIN;

/// One window, `[start, end)` in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Window {
    pub start: i64,
    pub end: i64,
}

impl Window {
    /// The latest event time inside the window (Beam's `max_timestamp`):
    /// what an aggregate of the window is stamped with.
    pub fn max_timestamp(&self) -> i64 {
        self.end.saturating_sub(1)
    }

    pub fn contains(&self, t: i64) -> bool {
        self.start <= t && t < self.end
    }
}

/// How a stream's records are put into windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WindowFn {
    /// One window holding everything; it fires when the input ends.
    #[default]
    Global,
    /// Windows of `size` ms, one after another, from `offset`.
    Fixed { size: i64, offset: i64 },
    /// Windows of `size` ms starting every `period` ms; a record is in
    /// `size / period` of them.
    Sliding { size: i64, period: i64, offset: i64 },
    /// One window per burst of a key's records with gaps under `gap` ms.
    Sessions { gap: i64 },
}

impl WindowFn {
    /// The windows a record at `t` is in (sessions: its proto-window
    /// `[t, t + gap)`, merged by the aggregation); the global window is
    /// `None`.
    pub fn assign(&self, t: i64, out: &mut Vec<Window>) {
        match *self {
            WindowFn::Global => {}
            WindowFn::Fixed { size, offset } => {
                let start = t - (t - offset).rem_euclid(size);
                out.push(Window {
                    start,
                    end: start.saturating_add(size),
                });
            }
            WindowFn::Sliding {
                size,
                period,
                offset,
            } => {
                let last = t - (t - offset).rem_euclid(period);
                let mut start = last;
                while start > t - size {
                    out.push(Window {
                        start,
                        end: start.saturating_add(size),
                    });
                    start -= period;
                }
            }
            WindowFn::Sessions { gap } => out.push(Window {
                start: t,
                end: t.saturating_add(gap),
            }),
        }
    }

    pub fn is_global(&self) -> bool {
        matches!(self, WindowFn::Global)
    }

    pub fn merges(&self) -> bool {
        matches!(self, WindowFn::Sessions { .. })
    }
}

/// Early firings: a result before the watermark closes the window, every
/// `early` of processing time while the window has new input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trigger {
    pub early: Option<Duration>,
}

/// A windowing strategy: Beam YAML's `windowing:` mapping, with rill's
/// `allowed_lateness` and `trigger` beside Beam's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Windowing {
    pub window_fn: WindowFn,
    /// How long (ms of event time) after its end a window still takes late
    /// records; each one fires the window again with the updated result.
    pub allowed_lateness: i64,
    pub trigger: Trigger,
}

impl Windowing {
    pub fn global() -> Windowing {
        Windowing::default()
    }

    /// Whether results can come more than once per window (early or late
    /// panes): each output row then says which pane it is.
    pub fn has_panes(&self) -> bool {
        self.allowed_lateness > 0 || self.trigger.early.is_some()
    }
}

/// `windowing:` as written: Beam's keys (`type`, `size`, `period`, `gap`,
/// `offset`) and rill's (`allowed_lateness`, `trigger`). Times are seconds
/// (ints or floats, as in Beam) or durations with a unit (`60s`, `5m`).
/// [`WindowingSpec::check`] turns it into a [`Windowing`].
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WindowingSpec {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub size: Option<Secs>,
    #[serde(default)]
    pub period: Option<Secs>,
    #[serde(default)]
    pub gap: Option<Secs>,
    #[serde(default)]
    pub offset: Option<Secs>,
    #[serde(default)]
    pub allowed_lateness: Option<Secs>,
    #[serde(default)]
    pub trigger: Option<TriggerSpec>,
}

/// `trigger:` of a windowing: `{early: 10s}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TriggerSpec {
    #[serde(default)]
    pub early: Option<Secs>,
}

const WINDOW_TYPES: &[&str] = &["fixed", "sliding", "sessions", "global"];

impl WindowingSpec {
    /// The strategy, or what is wrong and at which key.
    pub fn check(&self) -> Result<Windowing, ConfigError> {
        let kind = self.kind.to_ascii_lowercase();
        let positive = |name: &str, v: Option<Secs>| -> Result<i64, ConfigError> {
            match v {
                None => Err(ConfigError::whole(format!(
                    "a `{kind}` window needs `{name}` (seconds, or a duration such as `60s`)"
                ))),
                Some(s) if s.0 <= 0 => Err(ConfigError::at(
                    name,
                    format!("`{name}` must be longer than zero, got {s}"),
                )),
                Some(s) => Ok(s.0),
            }
        };
        let not_here = |name: &str, v: &Option<Secs>| -> Result<(), ConfigError> {
            match v {
                Some(_) => Err(ConfigError::at(
                    name,
                    format!("`{name}` does not apply to a `{kind}` window"),
                )),
                None => Ok(()),
            }
        };
        let offset = self.offset.map_or(0, |s| s.0);
        let window_fn = match kind.as_str() {
            "global" => {
                not_here("size", &self.size)?;
                not_here("period", &self.period)?;
                not_here("gap", &self.gap)?;
                not_here("offset", &self.offset)?;
                WindowFn::Global
            }
            "fixed" => {
                not_here("period", &self.period)?;
                not_here("gap", &self.gap)?;
                WindowFn::Fixed {
                    size: positive("size", self.size)?,
                    offset,
                }
            }
            "sliding" => {
                not_here("gap", &self.gap)?;
                let size = positive("size", self.size)?;
                let period = positive("period", self.period)?;
                if period > size {
                    return Err(ConfigError::at(
                        "period",
                        format!(
                            "a sliding window's `period` ({}) must not be longer than its `size` ({}): records between windows would be in none",
                            Secs(period),
                            Secs(size)
                        ),
                    ));
                }
                WindowFn::Sliding {
                    size,
                    period,
                    offset,
                }
            }
            "sessions" => {
                not_here("size", &self.size)?;
                not_here("period", &self.period)?;
                not_here("offset", &self.offset)?;
                WindowFn::Sessions {
                    gap: positive("gap", self.gap)?,
                }
            }
            other => {
                return Err(ConfigError::at(
                    "type",
                    format!(
                        "unknown window type `{other}`; expected one of: {}",
                        WINDOW_TYPES.join(", ")
                    ),
                ));
            }
        };
        let allowed_lateness = match self.allowed_lateness {
            Some(s) if s.0 < 0 => {
                return Err(ConfigError::at(
                    "allowed_lateness",
                    "`allowed_lateness` must not be negative",
                ));
            }
            Some(s) => s.0,
            None => 0,
        };
        let early = match self.trigger.as_ref().and_then(|t| t.early) {
            Some(s) if s.0 <= 0 => {
                return Err(ConfigError::at_path(
                    ["trigger", "early"],
                    "`trigger.early` must be longer than zero",
                ));
            }
            Some(s) => Some(Duration::from_millis(s.0 as u64)),
            None => None,
        };
        if window_fn.is_global() && allowed_lateness > 0 {
            return Err(ConfigError::at(
                "allowed_lateness",
                "the global window closes only when its input ends: nothing can be late",
            ));
        }
        Ok(Windowing {
            window_fn,
            allowed_lateness,
            trigger: Trigger { early },
        })
    }
}

/// A time span in a config, kept in ms: seconds as an int or a float
/// (Beam's unit), or a duration with a unit (`500ms`, `60s`, `5m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Secs(pub i64);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 % 1000 == 0 {
            write!(f, "{}s", self.0 / 1000)
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Secs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("seconds (`60`, `0.5`) or a duration with a unit (`60s`, `5m`)")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
                v.checked_mul(1000)
                    .map(Secs)
                    .ok_or_else(|| E::custom(format!("`{v}` seconds is out of range")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
                i64::try_from(v)
                    .map_err(|_| E::custom(format!("`{v}` seconds is out of range")))
                    .and_then(|v| self.visit_i64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Secs, E> {
                let ms = (v * 1000.0).round();
                if !ms.is_finite() || ms.abs() > 9.0e15 {
                    return Err(E::custom(format!("`{v}` seconds is out of range")));
                }
                Ok(Secs(ms as i64))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Secs, E> {
                if let Ok(n) = s.trim().parse::<f64>() {
                    return self.visit_f64(n);
                }
                let d = crate::units::parse_duration(s).map_err(E::custom)?;
                i64::try_from(d.as_millis())
                    .map(Secs)
                    .map_err(|_| E::custom(format!("`{s}` is out of range")))
            }
        }
        d.deserialize_any(V)
    }
}

/// `options.watermark` (and a source's own `watermark:`): how far behind
/// the highest event time seen a source's watermark stays, and how long an
/// input may be silent before it stops holding its consumers' watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatermarkSpec {
    #[serde(default = "default_ooo")]
    pub max_out_of_orderness: Secs,
    #[serde(default = "default_idle")]
    pub idle_timeout: Secs,
}

fn default_ooo() -> Secs {
    Secs(0)
}
fn default_idle() -> Secs {
    Secs(30_000)
}

impl Default for WatermarkSpec {
    fn default() -> Self {
        WatermarkSpec {
            max_out_of_orderness: default_ooo(),
            idle_timeout: default_idle(),
        }
    }
}

impl WatermarkSpec {
    /// The watermark of a source whose highest event time so far is `max`.
    pub fn behind(&self, max: i64) -> i64 {
        if max == BEFORE_TIME {
            BEFORE_TIME
        } else {
            max.saturating_sub(self.max_out_of_orderness.0)
        }
    }
}

/// Formats ms since the epoch as Beam prints a timestamp in a row
/// (`2024-01-01T00:00:00Z`, with `.123` when there are milliseconds).
pub fn format_time(ms: i64) -> String {
    match ms {
        END_OF_TIME => return "+inf".to_owned(),
        BEFORE_TIME => return "-inf".to_owned(),
        _ => {}
    }
    let (secs, milli) = (ms.div_euclid(1000), ms.rem_euclid(1000));
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // days since 1970-01-01 to a civil date (H. Hinnant's algorithm)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (sod / 3600, sod % 3600 / 60, sod % 60);
    if milli == 0 {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
    } else {
        format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
    }
}

/// Reads a timestamp: an RFC 3339 / ISO 8601 date-time
/// (`2024-03-01T12:00:00Z`, `2024-03-01 12:00:00.250+01:00`; no zone means
/// UTC) or a date (`2024-03-01`), as ms since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let num = |t: &str| -> Option<i64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (date, rest) = s.split_at(s.find(['T', 't', ' ']).unwrap_or(s.len()));
    let mut d = date.splitn(3, '-');
    let (y, m, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return None;
    }
    // days from 1970-01-01 (H. Hinnant's algorithm)
    let yy = if m <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let mut ms = days * 86_400_000;
    let rest = rest.get(1..).unwrap_or("");
    if rest.is_empty() {
        return Some(ms);
    }
    let (clock, zone) = match rest.find(['Z', 'z', '+', '-']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut t = hms.split(':');
    let (h, mi) = (num(t.next()?)?, num(t.next()?)?);
    let sec = match t.next() {
        Some(x) => num(x)?,
        None => 0,
    };
    if h > 23 || mi > 59 || sec > 60 || t.next().is_some() {
        return None;
    }
    ms += ((h * 60 + mi) * 60 + sec) * 1000;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(3).collect();
        num(frac)?;
        ms += num(&format!("{digits:0<3}"))?;
    }
    match zone {
        "" | "Z" | "z" => {}
        z => {
            let sign = if z.starts_with('-') { 1 } else { -1 };
            let (zh, zm) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
            ms += sign * (num(zh)? * 60 + num(zm)?) * 60_000;
        }
    }
    Some(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<Windowing, ConfigError> {
        crate::yaml::parse(yaml)
            .unwrap()
            .deserialize::<WindowingSpec>()
            .map_err(|e| ConfigError::whole(e.msg))?
            .check()
    }

    #[test]
    fn beam_seconds_and_durations() {
        assert_eq!(
            spec("{type: fixed, size: 60}").unwrap().window_fn,
            WindowFn::Fixed {
                size: 60_000,
                offset: 0
            }
        );
        assert_eq!(
            spec("{type: sliding, size: 5m, period: 0.5}")
                .unwrap()
                .window_fn,
            WindowFn::Sliding {
                size: 300_000,
                period: 500,
                offset: 0
            }
        );
        assert_eq!(
            spec("{type: sessions, gap: '30s'}").unwrap().window_fn,
            WindowFn::Sessions { gap: 30_000 }
        );
        let w =
            spec("{type: fixed, size: 1, allowed_lateness: 10s, trigger: {early: 2s}}").unwrap();
        assert_eq!(w.allowed_lateness, 10_000);
        assert_eq!(w.trigger.early, Some(Duration::from_secs(2)));
        assert!(w.has_panes());
    }

    #[test]
    fn bad_windowing_names_its_key() {
        let e = spec("{type: fixed, size: 0}").unwrap_err();
        assert_eq!(e.path, ["size"]);
        let e = spec("{type: sliding, size: 10, period: 20}").unwrap_err();
        assert_eq!(e.path, ["period"], "{e}");
        let e = spec("{type: fixed, size: 10, gap: 5}").unwrap_err();
        assert_eq!(e.path, ["gap"]);
        let e = spec("{type: tumbling, size: 10}").unwrap_err();
        assert!(e.message.contains("fixed, sliding"), "{e}");
        let e = spec("{type: global, allowed_lateness: 5}").unwrap_err();
        assert_eq!(e.path, ["allowed_lateness"]);
        assert!(
            spec("{type: fixed}")
                .unwrap_err()
                .message
                .contains("needs `size`")
        );
    }

    #[test]
    fn assignment() {
        let mut out = Vec::new();
        WindowFn::Fixed {
            size: 10,
            offset: 0,
        }
        .assign(-3, &mut out);
        assert_eq!(out, [Window { start: -10, end: 0 }]);
        out.clear();
        WindowFn::Sliding {
            size: 10,
            period: 5,
            offset: 0,
        }
        .assign(12, &mut out);
        assert_eq!(
            out,
            [Window { start: 10, end: 20 }, Window { start: 5, end: 15 }]
        );
        out.clear();
        WindowFn::Global.assign(5, &mut out);
        assert!(out.is_empty());
        assert_eq!(format_time(60_000), "1970-01-01T00:01:00Z");
        assert_eq!(format_time(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(format_time(1_709_251_199_000), "2024-02-29T23:59:59Z");
        assert_eq!(format_time(-1), "1969-12-31T23:59:59.999Z");
        for ms in [0, 1_709_251_199_000, -86_400_000 * 365, 951_782_400_123] {
            assert_eq!(
                parse_time(&format_time(ms)),
                Some(ms),
                "{}",
                format_time(ms)
            );
        }
        assert_eq!(parse_time("2024-03-01"), Some(1_709_251_200_000));
        assert_eq!(
            parse_time("2024-03-01 01:00:00+01:00"),
            Some(1_709_251_200_000)
        );
        assert_eq!(
            parse_time("2024-03-01T00:00:00.25Z"),
            Some(1_709_251_200_250)
        );
        for bad in [
            "",
            "yesterday",
            "2024-13-01",
            "2024-03-01T25:00",
            "2024-03-01Tx",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
