//! `backends.NAME.prewarm`: pings that keep a serverless backend warm, and
//! the warmth model behind cold-aware routing.

use crate::load::{key, path_of, Cx};
use crate::locate::Seg;
use crate::raw::Text;
use crate::runtime::{BackendKind, Prewarm, PrewarmMode, Schedule, Window};
use schemars::JsonSchema;
use serde::Deserialize;
use std::time::Duration;

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPrewarm {
    pub mode: Option<String>,
    pub idle_timeout: Option<Text>,
    pub cold_start: Option<Text>,
    pub interval: Option<Text>,
    pub concurrency: Option<u64>,
    pub hold: Option<Text>,
    pub instance_concurrency: Option<u64>,
    pub min_warm: Option<u64>,
    pub pings_per_cold_start: Option<f64>,
    pub schedule: Option<RawSchedule>,
    pub daily_budget: Option<u64>,
    pub cold_header: Option<String>,
    pub ping: Option<RawPing>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    pub timezone: Option<String>,
    pub windows: Vec<String>,
}

#[derive(Debug, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RawPing {
    pub path: Option<String>,
    pub body: Option<String>,
}

/// How long each kind's platform keeps an idle instance, where it scales to
/// zero: Lambda about 10 minutes (measured; AWS does not say), Azure
/// Functions Consumption about 20, OpenWhisk's default keep-alive 10, and
/// Cloud Run's instances idle up to 15 minutes.
pub fn default_idle_timeout(kind: BackendKind) -> Option<Duration> {
    let min = |m: u64| Some(Duration::from_secs(m * 60));
    match kind {
        BackendKind::AwsLambda | BackendKind::AwsLambdaUrl | BackendKind::Openwhisk => min(10),
        BackendKind::AzureFunctions => min(20),
        BackendKind::GcpCloudRun => min(15),
        _ => None,
    }
}

const MAX_IDLE: Duration = Duration::from_secs(7 * 24 * 3600);

impl Cx<'_> {
    pub(crate) fn prewarm(
        &mut self,
        kind: Option<BackendKind>,
        r: Option<RawPrewarm>,
        p: &[Seg],
    ) -> Prewarm {
        let given = r.is_some();
        let r = r.unwrap_or_default();
        let at = |k: &str| path_of(p, &[key(k)]);
        let mode = match r.mode.as_deref() {
            None if given => PrewarmMode::Adaptive,
            None | Some("off") => PrewarmMode::Off,
            Some("fixed") => PrewarmMode::Fixed,
            Some("adaptive") => PrewarmMode::Adaptive,
            Some(other) => {
                self.err(
                    &at("mode"),
                    format!(
                        "`{}` is not a mode: use off, fixed or adaptive",
                        crate::clip(other)
                    ),
                );
                PrewarmMode::Off
            }
        };
        let idle_timeout = match &r.idle_timeout {
            Some(t) => {
                let d = self.duration_upto(
                    Some(t),
                    Duration::from_secs(600),
                    &at("idle_timeout"),
                    MAX_IDLE,
                );
                if d < Duration::from_secs(1) {
                    self.err(&at("idle_timeout"), "must be between 1s and 7d");
                }
                Some(d)
            }
            None => kind.and_then(default_idle_timeout),
        };
        if mode != PrewarmMode::Off && idle_timeout.is_none() {
            if let Some(k) = kind {
                self.err(
                    &at("idle_timeout"),
                    format!(
                        "required: kind `{}` has no known idle timeout (how long its platform keeps an idle instance)",
                        k.as_str()
                    ),
                );
            }
        }
        let idle = idle_timeout.unwrap_or(Duration::from_secs(600));
        let cold_start = self.duration(
            r.cold_start.as_ref(),
            Duration::from_secs(10),
            &at("cold_start"),
        );
        if cold_start > Duration::from_secs(600) {
            self.err(&at("cold_start"), "must be at most 10m");
        }
        let interval = self.duration(r.interval.as_ref(), idle.mul_f64(0.9), &at("interval"));
        if r.interval.is_some() && interval >= idle {
            self.err(
                &at("interval"),
                format!(
                    "must be shorter than `idle_timeout` ({idle:?}): instances would go cold between rounds"
                ),
            );
        } else if r.interval.is_some() && interval < Duration::from_secs(1) {
            self.err(&at("interval"), "must be at least 1s");
        }
        let default_k = if mode == PrewarmMode::Adaptive { 4 } else { 1 };
        let concurrency =
            self.int_in(r.concurrency, default_k, (1, 256), &at("concurrency")) as u32;
        let min_warm = self.int_in(r.min_warm, 0, (0, 256), &at("min_warm")) as u32;
        if min_warm > concurrency {
            self.err(
                &at("min_warm"),
                format!("is more than `concurrency` ({concurrency})"),
            );
        }
        let hold = self.duration_from(
            r.hold.as_ref(),
            Duration::from_millis(75),
            &at("hold"),
            true,
        );
        if hold > Duration::from_secs(60) {
            self.err(&at("hold"), "must be at most 60s");
        }
        let instance_concurrency = self.int_in(
            r.instance_concurrency,
            1,
            (1, 10_000),
            &at("instance_concurrency"),
        ) as u32;
        let pings_per_cold_start = match r.pings_per_cold_start {
            None => 20.0,
            Some(x) if x.is_finite() && (0.01..=10_000.0).contains(&x) => x,
            Some(_) => {
                self.err(
                    &at("pings_per_cold_start"),
                    "must be between 0.01 and 10000",
                );
                20.0
            }
        };
        let daily_budget = r
            .daily_budget
            .map(|b| self.int_in(Some(b), 0, (1, 10_000_000), &at("daily_budget")) as u32);
        let cold_header =
            r.cold_header.as_deref().and_then(|h| {
                match http::HeaderName::from_bytes(h.as_bytes()) {
                    Ok(n) => Some(n),
                    Err(_) => {
                        self.err(
                            &at("cold_header"),
                            format!("`{}` is not a header name", crate::clip(h)),
                        );
                        None
                    }
                }
            });
        let ping = r.ping.unwrap_or_default();
        if let Some(path) = &ping.path {
            let pp = path_of(p, &[key("ping"), key("path")]);
            if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
                self.err(
                    &pp,
                    "must start with `/` and hold no spaces or control characters",
                );
            }
            let invoked = matches!(
                kind,
                Some(
                    BackendKind::AwsLambda
                        | BackendKind::Bedrock
                        | BackendKind::Sagemaker
                        | BackendKind::Openwhisk
                )
            );
            if invoked {
                self.err(
                    &pp,
                    "this kind's ping goes to the platform's invoke API: set `ping.body` instead",
                );
            }
        }
        if ping.body.as_ref().is_some_and(|b| b.len() > 65_536) {
            self.err(
                &path_of(p, &[key("ping"), key("body")]),
                "must be at most 64 KiB",
            );
        }
        let schedule = r.schedule.and_then(|s| self.schedule(s, &at("schedule")));
        Prewarm {
            mode,
            idle_timeout,
            cold_start,
            interval,
            concurrency,
            hold,
            instance_concurrency,
            min_warm,
            pings_per_cold_start,
            schedule,
            daily_budget,
            cold_header,
            ping_path: ping.path,
            ping_body: ping.body,
        }
    }

    fn schedule(&mut self, r: RawSchedule, p: &[Seg]) -> Option<Schedule> {
        let name = r.timezone.unwrap_or_else(|| "UTC".to_string());
        let tz = match parse_timezone(&name) {
            Ok(tz) => Some(tz),
            Err(why) => {
                self.err(&path_of(p, &[key("timezone")]), why);
                None
            }
        };
        if r.windows.is_empty() {
            self.err(
                &path_of(p, &[key("windows")]),
                "must list at least one window",
            );
        }
        let mut windows = Vec::new();
        for (i, w) in r.windows.iter().enumerate() {
            match parse_window(w) {
                Ok(w) => windows.push(w),
                Err(why) => self.err(
                    &path_of(p, &[key("windows"), Seg::Index(i)]),
                    format!("`{}`: {why}", crate::clip(w)),
                ),
            }
        }
        Some(Schedule {
            timezone_name: name,
            timezone: tz?,
            windows,
        })
    }
}

/// `UTC`, an IANA name (`Europe/Berlin`, from the system's time-zone
/// database), or a fixed offset (`+02:00`).
fn parse_timezone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    if name.eq_ignore_ascii_case("utc") || name == "Z" {
        return Ok(jiff::tz::TimeZone::UTC);
    }
    if let Some(rest) = name.strip_prefix(['+', '-']) {
        let sign = if name.starts_with('-') { -1 } else { 1 };
        let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
        let (h, m): (i32, i32) = match (h.parse(), m.parse()) {
            (Ok(h), Ok(m)) if h <= 14 && m < 60 => (h, m),
            _ => return Err(format!("`{name}` is not an offset like +02:00")),
        };
        let off = jiff::tz::Offset::from_seconds(sign * (h * 3600 + m * 60))
            .map_err(|e| e.to_string())?;
        return Ok(jiff::tz::TimeZone::fixed(off));
    }
    jiff::tz::TimeZone::get(name).map_err(|_| {
        format!("`{}` is not a known time zone (an IANA name such as Europe/Berlin, UTC, or an offset such as +02:00)", crate::clip(name))
    })
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// `mon-fri 08:00-18:00`, `sat,sun 10:00-14:00`, `daily 22:00-06:00`.
pub fn parse_window(s: &str) -> Result<Window, String> {
    let (days, times) = s
        .trim()
        .split_once(' ')
        .ok_or("write it as `DAYS HH:MM-HH:MM`, e.g. `mon-fri 08:00-18:00`")?;
    let day = |d: &str| {
        DAYS.iter()
            .position(|x| d.eq_ignore_ascii_case(x))
            .ok_or_else(|| format!("`{d}` is not a day (mon … sun)"))
    };
    let mut mask = 0u8;
    for part in days.split(',') {
        match part.trim().to_ascii_lowercase().as_str() {
            "daily" => mask |= 0x7f,
            "weekdays" => mask |= 0x1f,
            "weekends" => mask |= 0x60,
            part => match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    let mut i = a;
                    loop {
                        mask |= 1 << i;
                        if i == b {
                            break;
                        }
                        i = (i + 1) % 7;
                    }
                }
                None => mask |= 1 << day(part)?,
            },
        }
    }
    let (from, to) = times
        .trim()
        .split_once('-')
        .ok_or("the times are `HH:MM-HH:MM`")?;
    let minute = |t: &str| -> Result<u16, String> {
        let (h, m) = t
            .split_once(':')
            .ok_or_else(|| format!("`{t}` is not HH:MM"))?;
        match (h.parse::<u16>(), m.parse::<u16>()) {
            (Ok(24), Ok(0)) => Ok(24 * 60),
            (Ok(h), Ok(m)) if h < 24 && m < 60 => Ok(h * 60 + m),
            _ => Err(format!("`{t}` is not a time of day (00:00 to 24:00)")),
        }
    };
    let (from_min, to_min) = (minute(from.trim())?, minute(to.trim())?);
    if from_min == to_min || from_min == 24 * 60 {
        return Err("the window is empty".into());
    }
    Ok(Window {
        days: mask,
        from_min,
        to_min,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load_str;

    #[test]
    fn windows_parse() {
        let w = parse_window("mon-fri 08:00-18:00").unwrap();
        assert_eq!((w.days, w.from_min, w.to_min), (0x1f, 480, 1080));
        let w = parse_window("fri-mon 22:00-06:00").unwrap();
        assert_eq!(w.days, 0b111_0001);
        assert_eq!(parse_window("weekends 00:00-24:00").unwrap().days, 0x60);
        assert!(parse_window("mon 8-18").is_err());
        assert!(parse_window("someday 08:00-09:00").is_err());
        assert!(parse_window("mon 09:00-09:00").is_err());
    }

    #[test]
    fn schedule_in_a_time_zone_across_midnight() {
        let s = Schedule {
            timezone_name: "+02:00".into(),
            timezone: parse_timezone("+02:00").unwrap(),
            windows: vec![parse_window("mon 22:00-02:00").unwrap()],
        };
        // Monday 2026-01-05 20:30 UTC is 22:30 at +02:00.
        let monday = 1_767_571_200_000u64;
        let h = 3_600_000;
        assert!(s.contains(monday + 20 * h + 1_800_000));
        assert!(!s.contains(monday + 19 * h + 1_800_000));
        // Tuesday 01:30 local (the window's tail) is in, 02:30 is not.
        assert!(s.contains(monday + 23 * h + 1_800_000));
        assert!(!s.contains(monday + 24 * h + 1_800_000));
        assert_eq!(s.next_change(monday), Some(monday + 20 * h));
    }

    #[test]
    fn absurd_prewarm_hedge_and_hold_values_are_errors() {
        let errs = load_str(
            "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  a: { kind: aws_lambda, region: us-east-1, function: f, prewarm: { idle_timeout: 0s, concurrency: 100000, daily_budget: 0, pings_per_cold_start: -1, schedule: { windows: [] }, cold_start: 1h, hold: 5m, cold_header: \"bad header\", min_warm: 999 } }\nroutes:\n  r: { match: { path: /v1/chat/completions, models: [m] }, targets: [ { backend: a } ], hedge: { after: 2m }, hold: { timeout: 1h, max_queued: 0 } }\n",
            "b.yaml",
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        for want in [
            "backends.a.prewarm.idle_timeout: must be greater than zero",
            "backends.a.prewarm.cold_start: must be at most 10m",
            "backends.a.prewarm.concurrency: must be between 1 and 256",
            "backends.a.prewarm.min_warm: must be between 0 and 256",
            "backends.a.prewarm.hold: must be at most 60s",
            "backends.a.prewarm.pings_per_cold_start: must be between 0.01 and 10000",
            "backends.a.prewarm.daily_budget: must be between 1 and 10000000",
            "backends.a.prewarm.cold_header: `bad header` is not a header name",
            "backends.a.prewarm.schedule.windows: must list at least one window",
            "routes.r.hedge.after: must be at most 60s",
            "routes.r.hold.timeout: must be at most 10m",
            "routes.r.hold.max_queued: must be between 1 and 100000",
        ] {
            assert!(errs.contains(want), "missing {want:?} in {errs}");
        }
    }

    #[test]
    fn bad_prewarm_settings_say_where_and_why() {
        let errs = load_str(
            "listen: 127.0.0.1:1\nadmin: { listen: 127.0.0.1:2 }\nbackends:\n  a: { kind: openai, url: http://a/v1, prewarm: { mode: adaptive } }\n  b: { kind: aws_lambda, region: us-east-1, function: f, prewarm: { mode: sometimes, interval: 11m, hold: 2m, schedule: { timezone: Mars/Olympus, windows: [\"mon 8-9\"] }, ping: { path: /warm } } }\nroutes:\n  r: { match: { path: /v1/chat/completions, models: [m] }, targets: [ { backend: a } ] }\n",
            "b.yaml",
            &|_| None,
        )
        .unwrap_err()
        .to_string();
        for want in [
            "backends.a.prewarm.idle_timeout: required: kind `openai` has no known idle timeout",
            "backends.b.prewarm.mode: `sometimes` is not a mode",
            "backends.b.prewarm.interval: must be shorter than `idle_timeout`",
            "backends.b.prewarm.hold: must be at most 60s",
            "backends.b.prewarm.schedule.timezone: `Mars/Olympus` is not a known time zone",
            "backends.b.prewarm.schedule.windows[0]: `mon 8-9`",
            "backends.b.prewarm.ping.path: this kind's ping goes to the platform's invoke API",
        ] {
            assert!(errs.contains(want), "missing {want:?} in {errs}");
        }
    }
}
