//! Regularisation and schedule settings of a run (issue 13): dropout, AdamW's decoupled weight
//! decay, the learning-rate schedule and early stopping. They are stored in every checkpoint (in
//! the optimizer settings, fields that default to "off" so that older checkpoints load), and every
//! one is a pure function of the step or of the stored progress, so `--resume` continues exactly.

use serde::{Deserialize, Serialize};

/// The learning-rate schedule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// `--lr` at every step (after the warm-up, if any).
    #[default]
    Constant,
    /// After the warm-up, half a cosine from `--lr` down to `--min-lr` at the run's last step.
    Cosine,
}

impl LrSchedule {
    pub const NAMES: [&'static str; 2] = ["constant", "cosine"];

    pub fn name(self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine => "cosine",
        }
    }
}

impl std::str::FromStr for LrSchedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" => Ok(LrSchedule::Constant),
            "cosine" => Ok(LrSchedule::Cosine),
            _ => Err(format!("--lr-schedule: unknown schedule {s:?} (expected constant or cosine)")),
        }
    }
}

/// The learning rate of (1-based) step `step`:
///
/// * warm-up, `step <= warmup`: `lr * step / warmup`, a straight line up to `lr`;
/// * then `constant`: `lr`; `cosine`: `min_lr + (lr - min_lr) (1 + cos(pi q)) / 2` with
///   `q = (step - warmup) / (total - warmup)` clamped to [0, 1], so the rate reaches `min_lr` at
///   step `total` and stays there (a run resumed past its planned length keeps the floor).
///
/// Computed in f64 on the host and handed to the optimizer as f32 every step.
pub fn lr_at(schedule: LrSchedule, lr: f32, min_lr: f32, warmup: u64, total: u64, step: u64) -> f32 {
    let (base, floor) = (lr as f64, min_lr as f64);
    if warmup > 0 && step <= warmup {
        return (base * step as f64 / warmup as f64) as f32;
    }
    match schedule {
        LrSchedule::Constant => lr,
        LrSchedule::Cosine => {
            let span = total.saturating_sub(warmup).max(1) as f64;
            let q = ((step.saturating_sub(warmup)) as f64 / span).clamp(0.0, 1.0);
            (floor + (base - floor) * 0.5 * (1.0 + (std::f64::consts::PI * q).cos())) as f32
        }
    }
}

/// Check the regularisation and schedule options, naming the option at fault.
pub fn validate(dropout: f32, adamw_decay: f32, lr: f32, min_lr: f32) -> Result<(), String> {
    if !(0.0..1.0).contains(&dropout) {
        return Err(format!("--dropout must be in [0, 1), not {dropout}"));
    }
    if !(adamw_decay >= 0.0 && adamw_decay.is_finite()) {
        return Err(format!("--adamw-decay must be a non-negative number, not {adamw_decay}"));
    }
    if adamw_decay * lr >= 1.0 {
        return Err(format!("--adamw-decay {adamw_decay} times --lr {lr} must be below 1 (it would flip or zero every weight)"));
    }
    if !(min_lr >= 0.0 && min_lr.is_finite()) {
        return Err(format!("--min-lr must be a non-negative number, not {min_lr}"));
    }
    if min_lr > lr {
        return Err(format!("--min-lr {min_lr} is above --lr {lr}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_the_floor() {
        let s = LrSchedule::Cosine;
        let at = |step| lr_at(s, 1.0, 0.1, 10, 110, step);
        assert_eq!(at(1), 0.1);
        assert_eq!(at(5), 0.5);
        assert_eq!(at(10), 1.0);
        assert!((at(60) - 0.55).abs() < 1e-6, "half way: the mean of lr and min_lr, got {}", at(60));
        assert!((at(110) - 0.1).abs() < 1e-7);
        assert!((at(500) - 0.1).abs() < 1e-7, "past the end the floor stays");
        let mut prev = f32::INFINITY;
        for step in 10..=110 {
            assert!(at(step) <= prev, "not decreasing at {step}");
            prev = at(step);
        }
    }

    #[test]
    fn constant_with_and_without_warmup() {
        assert_eq!(lr_at(LrSchedule::Constant, 0.002, 0.0, 0, 100, 1), 0.002);
        assert_eq!(lr_at(LrSchedule::Constant, 0.002, 0.0, 0, 100, 1000), 0.002);
        assert_eq!(lr_at(LrSchedule::Constant, 0.002, 0.0, 4, 100, 2), 0.001);
        assert_eq!(lr_at(LrSchedule::Constant, 0.002, 0.0, 4, 100, 5), 0.002);
    }

    #[test]
    fn nonsense_values_name_their_option() {
        for (args, flag) in [
            ((1.0, 0.0, 1e-3, 0.0), "--dropout"),
            ((-0.1, 0.0, 1e-3, 0.0), "--dropout"),
            ((f32::NAN, 0.0, 1e-3, 0.0), "--dropout"),
            ((0.1, -1.0, 1e-3, 0.0), "--adamw-decay"),
            ((0.1, 2000.0, 1e-3, 0.0), "--adamw-decay"),
            ((0.1, 0.0, 1e-3, -1.0), "--min-lr"),
            ((0.1, 0.0, 1e-3, 1e-2), "--min-lr"),
        ] {
            let e = validate(args.0, args.1, args.2, args.3).unwrap_err();
            assert!(e.starts_with(flag) && !e.contains('\n'), "{e}");
        }
        assert!(validate(0.0, 0.0, 1e-3, 0.0).is_ok());
        assert!(validate(0.5, 0.01, 1e-3, 1e-5).is_ok());
        assert!("linear".parse::<LrSchedule>().unwrap_err().contains("--lr-schedule"));
        assert_eq!("cosine".parse::<LrSchedule>(), Ok(LrSchedule::Cosine));
    }
}
