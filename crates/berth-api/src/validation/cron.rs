//! The cron schedule syntax upstream accepts (`robfig/cron/v3` `ParseStandard`), with its
//! error texts: five fields or a `@descriptor`, an optional `TZ=`/`CRON_TZ=` prefix.

struct Bounds {
    min: u64,
    max: u64,
    names: &'static [&'static str],
}

const MONTHS: &[&str] = &[
    "", "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

const FIELDS: [Bounds; 5] = [
    Bounds {
        min: 0,
        max: 59,
        names: &[],
    },
    Bounds {
        min: 0,
        max: 23,
        names: &[],
    },
    Bounds {
        min: 1,
        max: 31,
        names: &[],
    },
    Bounds {
        min: 1,
        max: 12,
        names: MONTHS,
    },
    Bounds {
        min: 0,
        max: 6,
        names: DAYS,
    },
];

/// Checks a standard cron spec; `Err` is robfig/cron's error text.
pub fn parse_standard(spec: &str) -> Result<(), String> {
    let mut spec = spec.trim_start();
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        let (tz, rest) = spec.split_once(' ').unwrap_or((spec, ""));
        let name = tz.split_once('=').map(|(_, n)| n).unwrap_or_default();
        if name.is_empty() {
            return Err(format!(
                "provided bad location {name}: unknown time zone {name}"
            ));
        }
        spec = rest.trim_start();
    }
    if spec.is_empty() {
        return Err("empty spec string".into());
    }
    if let Some(descriptor) = spec.strip_prefix('@') {
        return match descriptor {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            d if d.starts_with("every ") => {
                let dur = d.trim_start_matches("every ").trim();
                if go_duration_ok(dur) {
                    Ok(())
                } else {
                    Err(format!(
                        "failed to parse duration {spec}: time: invalid duration \"{dur}\""
                    ))
                }
            }
            _ => Err(format!("unrecognized descriptor: {spec}")),
        };
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: [{}]",
            fields.len(),
            fields.join(" ")
        ));
    }
    for (field, bounds) in fields.iter().zip(FIELDS.iter()) {
        for expr in field.split(',').filter(|e| !e.is_empty()) {
            range(expr, bounds)?;
        }
    }
    Ok(())
}

fn range(expr: &str, r: &Bounds) -> Result<(), String> {
    let range_and_step: Vec<&str> = expr.split('/').collect();
    let low_high: Vec<&str> = range_and_step[0].split('-').collect();
    let single = low_high.len() == 1;
    let (start, mut end) = if low_high[0] == "*" || low_high[0] == "?" {
        (r.min, r.max)
    } else {
        let start = int_or_name(low_high[0], r.names)?;
        let end = match low_high.len() {
            1 => start,
            2 => int_or_name(low_high[1], r.names)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end)
    };
    let step = match range_and_step.len() {
        1 => 1,
        2 => {
            let step = must_parse_int(range_and_step[1])?;
            if single {
                end = r.max;
            }
            step
        }
        _ => return Err(format!("too many slashes: {expr}")),
    };
    if start < r.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            r.min
        ));
    }
    if end > r.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            r.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    if step == 0 {
        return Err(format!("step of range should be a positive number: {expr}"));
    }
    Ok(())
}

fn int_or_name(expr: &str, names: &[&str]) -> Result<u64, String> {
    let lower = expr.to_lowercase();
    if let Some(i) = names.iter().position(|n| !n.is_empty() && *n == lower) {
        return Ok(i as u64);
    }
    must_parse_int(expr)
}

fn must_parse_int(expr: &str) -> Result<u64, String> {
    match expr.parse::<i64>() {
        Ok(n) if n < 0 => Err(format!("negative number ({n}) not allowed: {expr}")),
        Ok(n) => Ok(n.unsigned_abs()),
        Err(_) => Err(format!(
            "failed to parse int from {expr}: strconv.Atoi: parsing \"{expr}\": invalid syntax"
        )),
    }
}

/// Whether `s` is a Go `time.Duration` string such as `1h30m` or `90s`.
fn go_duration_ok(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return false;
        }
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        if !matches!(
            &rest[..unit_len],
            "ns" | "us" | "µs" | "ms" | "s" | "m" | "h"
        ) {
            return false;
        }
        rest = &rest[unit_len..];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::parse_standard;

    #[test]
    fn schedules() {
        for ok in [
            "* * * * *",
            "*/5 * * * *",
            "0 0 1 jan mon",
            "0 9-17/2 * * 1-5",
            "@hourly",
            "@every 1h30m",
            "TZ=UTC 0 * * * *",
            "0 0 ? * *",
        ] {
            assert_eq!(parse_standard(ok), Ok(()), "{ok}");
        }
        assert_eq!(
            parse_standard("foo").err().unwrap_or_default(),
            "expected exactly 5 fields, found 1: [foo]"
        );
        assert_eq!(
            parse_standard("70 * * * *").err().unwrap_or_default(),
            "end of range (70) above maximum (59): 70"
        );
        assert_eq!(
            parse_standard("* * 0 * *").err().unwrap_or_default(),
            "beginning of range (0) below minimum (1): 0"
        );
        assert_eq!(
            parse_standard("x * * * *").err().unwrap_or_default(),
            "failed to parse int from x: strconv.Atoi: parsing \"x\": invalid syntax"
        );
        assert_eq!(
            parse_standard("@often").err().unwrap_or_default(),
            "unrecognized descriptor: @often"
        );
        assert!(parse_standard("5-1 * * * *").is_err());
        assert!(parse_standard("*/0 * * * *").is_err());
        assert!(parse_standard("@every xyz").is_err());
    }
}
