//! The numeric ranges of the options, checked once, by clap, as the command line is parsed
//! (`#[arg(value_parser = ...)]`): every command that takes the option refuses the same values
//! with the same words. `main.rs` prints a refused value as one line naming the option, the rule
//! and the value (`error: --lr must be a positive number, not 0`) and exits with status 1, as
//! every other refusal does.

use std::fmt::Display;
use std::str::FromStr;

fn number<T: FromStr>(s: &str) -> Result<T, String>
where
    T::Err: Display,
{
    s.trim().parse::<T>().map_err(|e| format!("must be a number ({e})"))
}

/// An integer of at least 1 (sizes and counts).
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match number::<usize>(s)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

macro_rules! positive {
    ($t:ty, $name:ident, $why:literal, $doc:literal) => {
        #[doc = $doc]
        pub fn $name(s: &str) -> Result<$t, String> {
            let v = number::<$t>(s)?;
            if v > 0.0 && v.is_finite() {
                Ok(v)
            } else {
                Err($why.into())
            }
        }
    };
}

positive!(f32, positive_number, "must be a positive number", "A finite number above 0: the learning rate.");
positive!(f32, positive_f32, "must be positive", "A finite number above 0: the temperature.");
positive!(f64, positive_f64, "must be positive", "A finite number above 0: tempi and lengths in seconds.");

/// A finite number of at least 0 (clipping, weight decay).
pub fn non_negative_f32(s: &str) -> Result<f32, String> {
    let v = number::<f32>(s)?;
    if v >= 0.0 && v.is_finite() {
        Ok(v)
    } else {
        Err("must be a number >= 0".into())
    }
}

/// A fraction in [0, 1) (the share of pieces held out).
pub fn fraction(s: &str) -> Result<f64, String> {
    let v = number::<f64>(s)?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be in [0, 1)".into())
    }
}

/// A probability mass in (0, 1] (nucleus sampling's `--top-p`).
pub fn probability(s: &str) -> Result<f32, String> {
    let v = number::<f32>(s)?;
    if v > 0.0 && v <= 1.0 {
        Ok(v)
    } else {
        Err("must be in (0, 1]".into())
    }
}

/// A value one of the parsers above refused, as one line: `--lr must be a positive number, not 0`.
/// `None` for every other kind of command-line error (clap reports those itself).
pub fn refused_value(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::ValueValidation {
        return None;
    }
    let text = |k| match e.get(k) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        _ => None,
    };
    let arg = text(ContextKind::InvalidArg)?;
    let flag = arg.split_whitespace().next().unwrap_or(&arg).to_string();
    let value = text(ContextKind::InvalidValue).unwrap_or_default();
    let why = std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_else(|| "is out of range".into());
    Some(format!("{flag} {why}, not {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_take_their_values_and_refuse_the_rest() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert_eq!(at_least_one("0"), Err("must be at least 1".into()));
        assert!(at_least_one("x").unwrap_err().starts_with("must be a number"));
        assert_eq!(positive_number("2e-3"), Ok(2e-3));
        for bad in ["0", "-1", "nan", "inf"] {
            assert_eq!(positive_number(bad), Err("must be a positive number".into()), "{bad}");
            assert_eq!(positive_f32(bad), Err("must be positive".into()), "{bad}");
            assert_eq!(positive_f64(bad), Err("must be positive".into()), "{bad}");
        }
        assert_eq!(non_negative_f32("0"), Ok(0.0));
        for bad in ["-1", "nan", "inf"] {
            assert_eq!(non_negative_f32(bad), Err("must be a number >= 0".into()), "{bad}");
        }
        assert_eq!(fraction("0"), Ok(0.0));
        assert_eq!(fraction("1"), Err("must be in [0, 1)".into()));
        assert_eq!(probability("1"), Ok(1.0));
        assert_eq!(probability("0"), Err("must be in (0, 1]".into()));
    }
}
