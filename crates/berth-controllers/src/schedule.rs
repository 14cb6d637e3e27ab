//! Cron schedules as CronJobs use them: the standard 5 fields (minute, hour, day of month,
//! month, day of week, with lists, ranges, steps and names), the `@hourly`-style macros, and
//! next-time computation in a time zone read from the system's tz database (TZif files).

use k8s_openapi::chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use std::path::Path;

/// Errors parsing a schedule or loading a time zone.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error("failed to parse schedule {0:?}: {1}")]
    Parse(String, String),
    #[error("failed to load time zone {0:?}: {1}")]
    Zone(String, String),
}

/// A parsed schedule: the allowed values of each field as bit sets.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day of month or day of week was `*`: both must match (else either may).
    day_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(s: &str, names: &[&str], offset: u32) -> Option<u32> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return u32::try_from(i).ok().map(|i| i + offset);
    }
    s.parse().ok()
}

/// Parses one field into a bit set of values in `min..=max`; returns whether it was `*`.
fn field(
    spec: &str,
    min: u32,
    max: u32,
    names: &[&str],
    offset: u32,
) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in spec.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| format!("bad step {s:?}"))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("step of zero in {part:?}"));
        }
        let (lo, hi) = if range == "*" || range == "?" {
            star = star || part.split_once('/').is_none();
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = value(a, names, offset).ok_or_else(|| format!("bad value {a:?}"))?;
            let b = value(b, names, offset).ok_or_else(|| format!("bad value {b:?}"))?;
            (a, b)
        } else {
            let a = value(range, names, offset).ok_or_else(|| format!("bad value {range:?}"))?;
            // "5/15" means from 5 to the end in steps of 15.
            (a, if part.contains('/') { max } else { a })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{part:?} is outside {min}-{max}"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl Schedule {
    /// Parses a 5-field schedule or a macro (`@yearly`, `@annually`, `@monthly`, `@weekly`,
    /// `@daily`, `@midnight`, `@hourly`).
    pub fn parse(spec: &str) -> Result<Schedule, Error> {
        let err = |m: String| Error::Parse(spec.to_string(), m);
        let expanded = match spec.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => return Err(err(format!("unknown macro {s:?}"))),
            s => s,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(err(format!("expected 5 fields, found {}", fields.len())));
        }
        let (minutes, _) = field(fields[0], 0, 59, &[], 0).map_err(err)?;
        let (hours, _) = field(fields[1], 0, 23, &[], 0).map_err(err)?;
        let (days, dom_star) = field(fields[2], 1, 31, &[], 0).map_err(err)?;
        let (months, _) = field(fields[3], 1, 12, &MONTHS, 1).map_err(err)?;
        let (mut weekdays, dow_star) = field(fields[4], 0, 7, &WEEKDAYS, 0).map_err(err)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            day_star: dom_star || dow_star,
        })
    }

    fn day_matches(&self, t: &DateTime<Utc>) -> bool {
        let dom = self.days & (1 << t.day()) != 0;
        let dow = self.weekdays & (1 << t.weekday().num_days_from_sunday()) != 0;
        if self.day_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first scheduled time strictly after `after`, in zone `zone` (wall-clock times of
    /// the zone; a time skipped by a DST change is skipped). `None` if none within 5 years.
    pub fn next_after(&self, after: DateTime<Utc>, zone: &Zone) -> Option<DateTime<Utc>> {
        let start = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        let limit = after + Duration::days(5 * 366);
        let mut t = start;
        while t <= limit {
            let local = t + Duration::seconds(zone.offset_at(t));
            if self.months & (1 << local.month()) == 0 || !self.day_matches(&local) {
                // Jump close to the next local midnight, leaving an hour for a DST change.
                let to_midnight = 24 * 60 - i64::from(local.hour() * 60 + local.minute());
                t += Duration::minutes((to_midnight - 60).max(1));
                continue;
            }
            if self.hours & (1 << local.hour()) == 0 {
                t += Duration::minutes(60 - i64::from(local.minute()));
                continue;
            }
            if self.minutes & (1 << local.minute()) == 0 {
                t += Duration::minutes(1);
                continue;
            }
            return Some(t);
        }
        None
    }

    /// The scheduled times in `(earliest, now]`: the latest and how many there were.
    pub fn missed(
        &self,
        earliest: DateTime<Utc>,
        now: DateTime<Utc>,
        zone: &Zone,
    ) -> (Option<DateTime<Utc>>, usize) {
        let (mut last, mut count) = (None, 0);
        let mut t = earliest;
        while let Some(next) = self.next_after(t, zone) {
            if next > now {
                break;
            }
            last = Some(next);
            count += 1;
            t = next;
        }
        (last, count)
    }
}

/// A time zone: UTC offsets from a TZif file's transitions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Zone {
    /// (transition time in Unix seconds, offset in seconds from then on), ascending.
    transitions: Vec<(i64, i64)>,
    /// The offset before the first transition (or always, without transitions).
    initial: i64,
}

impl Zone {
    /// UTC.
    pub fn utc() -> Zone {
        Zone::default()
    }

    /// Loads `name` (e.g. `Europe/Berlin`) from /usr/share/zoneinfo; `None` or `UTC` is UTC.
    pub fn load(name: Option<&str>) -> Result<Zone, Error> {
        let Some(name) = name.filter(|n| !matches!(*n, "" | "UTC" | "Etc/UTC")) else {
            return Ok(Zone::utc());
        };
        let err = |m: String| Error::Zone(name.to_string(), m);
        if name.starts_with('/') || name.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(err("not a time zone name".into()));
        }
        let data = std::fs::read(Path::new("/usr/share/zoneinfo").join(name))
            .map_err(|e| err(e.to_string()))?;
        Zone::from_tzif(&data).ok_or_else(|| err("not a TZif file".into()))
    }

    /// Parses the 64-bit (version 2+) or 32-bit data of a TZif file.
    pub fn from_tzif(data: &[u8]) -> Option<Zone> {
        if data.get(..4)? != b"TZif" {
            return None;
        }
        let counts = |at: usize| -> Option<[usize; 6]> {
            let mut c = [0usize; 6];
            for (i, v) in c.iter_mut().enumerate() {
                let b = data.get(at + 20 + i * 4..at + 24 + i * 4)?;
                *v = u32::from_be_bytes(b.try_into().ok()?) as usize;
            }
            Some(c)
        };
        let [isutc, isstd, leap, timecnt, typecnt, charcnt] = counts(0)?;
        let v1_len = timecnt * 5 + typecnt * 6 + charcnt + leap * 8 + isstd + isutc;
        let (base, size) = if data[4] >= b'2' {
            (44 + v1_len, 8)
        } else {
            (0, 4)
        };
        let [_, _, _, timecnt, typecnt, _] = counts(base)?;
        let times_at = base + 44;
        let idx_at = times_at + timecnt * size;
        let types_at = idx_at + timecnt;
        let offset_of = |ty: usize| -> Option<i64> {
            let b = data.get(types_at + ty * 6..types_at + ty * 6 + 4)?;
            Some(i64::from(i32::from_be_bytes(b.try_into().ok()?)))
        };
        let mut transitions = Vec::with_capacity(timecnt);
        for i in 0..timecnt {
            let raw = data.get(times_at + i * size..times_at + (i + 1) * size)?;
            let at = if size == 8 {
                i64::from_be_bytes(raw.try_into().ok()?)
            } else {
                i64::from(i32::from_be_bytes(raw.try_into().ok()?))
            };
            let ty = usize::from(*data.get(idx_at + i)?);
            if ty >= typecnt {
                return None;
            }
            transitions.push((at, offset_of(ty)?));
        }
        Some(Zone {
            transitions,
            initial: if typecnt > 0 { offset_of(0)? } else { 0 },
        })
    }

    /// The zone's offset from UTC in seconds at `t`.
    pub fn offset_at(&self, t: DateTime<Utc>) -> i64 {
        let s = t.timestamp();
        match self.transitions.partition_point(|(at, _)| *at <= s) {
            0 => self.initial,
            i => self.transitions[i - 1].1,
        }
    }

    /// `t` as RFC 3339 in the zone.
    pub fn rfc3339(&self, t: DateTime<Utc>) -> String {
        let offset = i32::try_from(self.offset_at(t)).unwrap_or(0);
        match k8s_openapi::chrono::FixedOffset::east_opt(offset) {
            Some(z) => z.from_utc_datetime(&t.naive_utc()).to_rfc3339(),
            None => t.to_rfc3339(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn next(spec: &str, after: &str, zone: &Zone) -> Option<String> {
        Schedule::parse(spec)
            .ok()?
            .next_after(at(after), zone)
            .map(|t| t.to_rfc3339())
    }

    #[test]
    fn parses_fields_and_macros() {
        let utc = Zone::utc();
        assert_eq!(
            next("*/1 * * * *", "2026-01-01T10:00:30Z", &utc).as_deref(),
            Some("2026-01-01T10:01:00+00:00")
        );
        assert_eq!(
            next("*/15 * * * *", "2026-01-01T10:16:00Z", &utc).as_deref(),
            Some("2026-01-01T10:30:00+00:00")
        );
        assert_eq!(
            next("5 4 * * sun", "2026-01-01T00:00:00Z", &utc).as_deref(),
            Some("2026-01-04T04:05:00+00:00")
        );
        assert_eq!(
            next("0 0 1 JAN-MAR *", "2026-04-01T00:00:00Z", &utc).as_deref(),
            Some("2027-01-01T00:00:00+00:00")
        );
        assert_eq!(
            next("@hourly", "2026-01-01T10:00:00Z", &utc).as_deref(),
            Some("2026-01-01T11:00:00+00:00")
        );
        assert_eq!(
            next("@weekly", "2026-01-01T10:00:00Z", &utc).as_deref(),
            Some("2026-01-04T00:00:00+00:00")
        );
        // Day of month OR day of week when neither is '*': the 13th or a Friday.
        assert_eq!(
            next("0 0 13 * 5", "2026-01-01T00:00:00Z", &utc).as_deref(),
            Some("2026-01-02T00:00:00+00:00")
        );
        assert_eq!(next("0 0 30 2 *", "2026-01-01T00:00:00Z", &utc), None);
        for bad in [
            "* * * *",
            "60 * * * *",
            "* * * * 8",
            "@every 5m",
            "*/0 * * * *",
            "a * * * *",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schedules_in_a_time_zone() {
        let Ok(berlin) = Zone::load(Some("Europe/Berlin")) else {
            return; // no tz database on this machine
        };
        // 09:00 in Berlin is 08:00 UTC in winter, 07:00 UTC in summer.
        assert_eq!(
            next("0 9 * * *", "2026-01-10T12:00:00Z", &berlin).as_deref(),
            Some("2026-01-11T08:00:00+00:00")
        );
        assert_eq!(
            next("0 9 * * *", "2026-07-10T12:00:00Z", &berlin).as_deref(),
            Some("2026-07-11T07:00:00+00:00")
        );
        // 02:30 does not exist on 2026-03-29 in Berlin: that day is skipped.
        assert_eq!(
            next("30 2 * * *", "2026-03-28T12:00:00Z", &berlin).as_deref(),
            Some("2026-03-30T00:30:00+00:00")
        );
        assert_eq!(
            berlin.rfc3339(at("2026-07-11T07:00:00Z")),
            "2026-07-11T09:00:00+02:00"
        );
        assert!(Zone::load(Some("Nowhere/Nothing")).is_err());
        assert!(Zone::load(Some("../etc/passwd")).is_err());
    }

    #[test]
    fn counts_missed_start_times() {
        let s = Schedule::parse("*/1 * * * *").ok();
        let (last, count) = s
            .map(|s| {
                s.missed(
                    at("2026-01-01T00:00:00Z"),
                    at("2026-01-01T03:00:30Z"),
                    &Zone::utc(),
                )
            })
            .unwrap_or_default();
        assert_eq!(count, 180);
        assert_eq!(last, Some(at("2026-01-01T03:00:00Z")));
    }
}
