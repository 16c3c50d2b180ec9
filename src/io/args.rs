//! Value parsers for command-line arguments with documented limits, shared by the `noether`
//! command line and `noether-play`: plain functions from the argument's text to its value or
//! a message (clap takes them as `value_parser`s), so a value outside its limits is refused
//! before any work is done.

/// A parser for a whole number in `lo..=hi`.
pub fn count_in(lo: usize, hi: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |s: &str| {
        let v: usize = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a whole number"))?;
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(format!("{v} is outside {lo}..={hi}"))
        }
    }
}

/// A parser for a finite number in `lo..=hi` (`lo` excluded when `open_low`).
pub fn number_in(lo: f64, hi: f64, open_low: bool) -> impl Fn(&str) -> Result<f64, String> + Clone {
    move |s: &str| {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a number"))?;
        let above = if open_low { v > lo } else { v >= lo };
        if v.is_finite() && above && v <= hi {
            Ok(v)
        } else {
            let open = if open_low { "(" } else { "[" };
            Err(format!("{v} is outside {open}{lo}, {hi}]"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_enforced_with_a_message() {
        let count = count_in(1, 10);
        assert_eq!(count(" 7 "), Ok(7));
        assert_eq!(count("11"), Err("11 is outside 1..=10".into()));
        assert!(count("x").unwrap_err().contains("not a whole number"));
        let closed = number_in(0.0, 2.0, false);
        assert_eq!(closed("0"), Ok(0.0));
        assert!(closed("NaN").is_err() && closed("inf").is_err() && closed("2.5").is_err());
        let open = number_in(0.0, 2.0, true);
        assert_eq!(open("0"), Err("0 is outside (0, 2]".into()));
        assert_eq!(open("2"), Ok(2.0));
    }
}
