//! Kubernetes resource quantities (`500m`, `1.5`, `128Mi`, `1e3`) as the integers the
//! scheduler adds up: millicores for cpu, plain units (bytes, counts) for everything else,
//! rounded up as upstream's `MilliValue`/`Value` do.

/// A quantity's value times `scale` (1000 for millis, 1 for plain values), rounded up.
/// `None` when the text is not a quantity.
pub fn parse_scaled(text: &str, scale: i128) -> Option<i64> {
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    let (negative, s) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let number_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(number_end);
    if number.is_empty() || number == "." {
        return None;
    }
    let (int_part, frac_part) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if frac_part.contains('.') {
        return None;
    }
    // value = mantissa / 10^frac_digits * num / den
    let mut mantissa: i128 = 0;
    for c in int_part.chars().chain(frac_part.chars()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(i128::from(c as u8 - b'0'))?;
    }
    let mut den: i128 = 10i128.checked_pow(u32::try_from(frac_part.len()).ok()?)?;
    let mut num: i128 = 1;
    let binary = |p: u32| 1i128 << (10 * p);
    match suffix {
        "" => {}
        "n" => den = den.checked_mul(1_000_000_000)?,
        "u" => den = den.checked_mul(1_000_000)?,
        "m" => den = den.checked_mul(1_000)?,
        "k" => num = 1_000,
        "M" => num = 1_000_000,
        "G" => num = 1_000_000_000,
        "T" => num = 1_000_000_000_000,
        "P" => num = 1_000_000_000_000_000,
        "E" => num = 1_000_000_000_000_000_000,
        "Ki" => num = binary(1),
        "Mi" => num = binary(2),
        "Gi" => num = binary(3),
        "Ti" => num = binary(4),
        "Pi" => num = binary(5),
        "Ei" => num = binary(6),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().ok()?;
            if e.unsigned_abs() > 30 {
                return None;
            }
            if e >= 0 {
                num = 10i128.pow(e.unsigned_abs());
            } else {
                den = den.checked_mul(10i128.pow(e.unsigned_abs()))?;
            }
        }
        _ => return None,
    }
    let top = mantissa.checked_mul(num)?.checked_mul(scale)?;
    let mut value = top / den + i128::from(top % den != 0);
    if negative {
        value = -(top / den);
    }
    i64::try_from(value).ok()
}

/// Millicores of a cpu quantity.
pub fn milli(text: &str) -> Option<i64> {
    parse_scaled(text, 1000)
}

/// Plain units (bytes, counts) of a quantity.
pub fn value(text: &str) -> Option<i64> {
    parse_scaled(text, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(milli("1"), Some(1000));
        assert_eq!(milli("500m"), Some(500));
        assert_eq!(milli("0.1"), Some(100));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("100u"), Some(1));
        assert_eq!(milli("2k"), Some(2_000_000));
        assert_eq!(milli("1e-3"), Some(1));
        assert_eq!(milli("abc"), None);
        assert_eq!(milli(""), None);
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(value("128Mi"), Some(128 << 20));
        assert_eq!(value("1Gi"), Some(1 << 30));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("1.5Gi"), Some(3 << 29));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("110"), Some(110));
        assert_eq!(value("500m"), Some(1));
        assert_eq!(value("12Xi"), None);
    }
}
