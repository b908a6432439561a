//! The optimizer, learning-rate schedule and gradient clipping keys of `[train]`.

use crate::error::ConfigError;
use crate::reader::Section;
use crate::topology::{LrSchedule, Optimizer};

/// A value in [0, 1), `default` when absent.
fn unit(s: &Section, key: &str, default: f64) -> Result<f64, ConfigError> {
    let v = s.opt_f64(key)?.unwrap_or(default);
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err(s.err(
            key,
            format!("must be in [0, 1), found {v}"),
            format!("Use e.g. {default}."),
        ))
    }
}

fn positive(s: &Section, key: &str, default: f64, example: &str) -> Result<f64, ConfigError> {
    let v = s.opt_f64(key)?.unwrap_or(default);
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(s.err(
            key,
            format!("must be positive, found {v}"),
            format!("Use e.g. {example}."),
        ))
    }
}

/// `optimizer` (sgd, adam, adamw) and the keys that belong to it.
pub(super) fn optimizer(s: &Section) -> Result<Optimizer, ConfigError> {
    let name = s.choice("optimizer", "sgd", &["sgd", "adam", "adamw"])?;
    if name == "sgd" {
        for key in ["beta1", "beta2", "eps"] {
            if s.get(key).is_some() {
                return Err(s.err(
                    key,
                    "applies to optimizer = \"adam\" or \"adamw\" only",
                    "Remove it, or set optimizer = \"adam\".",
                ));
            }
        }
        return Ok(Optimizer::Sgd {
            momentum: unit(s, "momentum", 0.0)?,
            weight_decay: unit(s, "weight_decay", 0.0)?,
        });
    }
    if s.get("momentum").is_some() {
        return Err(s.err(
            "momentum",
            "applies to optimizer = \"sgd\" only",
            "Remove it, or set beta1 for Adam.",
        ));
    }
    let (beta1, beta2) = (unit(s, "beta1", 0.9)?, unit(s, "beta2", 0.999)?);
    let eps = positive(s, "eps", 1e-8, "1e-8")?;
    Ok(if name == "adam" {
        Optimizer::Adam {
            beta1,
            beta2,
            eps,
            weight_decay: unit(s, "weight_decay", 0.0)?,
        }
    } else {
        // torch.optim.AdamW's default decay.
        Optimizer::Adamw {
            beta1,
            beta2,
            eps,
            weight_decay: unit(s, "weight_decay", 0.01)?,
        }
    })
}

/// `lr_schedule` ("constant" or "cosine"), `warmup_steps`, `min_lr`.
pub(super) fn lr_schedule(s: &Section, lr: f64, steps: usize) -> Result<LrSchedule, ConfigError> {
    let warmup_steps = s.u64_or("warmup_steps", 0)?;
    if warmup_steps >= steps as u64 && warmup_steps > 0 {
        return Err(s.err(
            "warmup_steps",
            format!("{warmup_steps} is not below train.steps = {steps}"),
            "Warm up over a part of the run, e.g. a tenth of the steps.",
        ));
    }
    let warmup_steps = warmup_steps as usize;
    match s.choice("lr_schedule", "constant", &["constant", "cosine"])? {
        "cosine" => {
            let min_lr = s.opt_f64("min_lr")?.unwrap_or(0.0);
            if !(min_lr.is_finite() && (0.0..=lr).contains(&min_lr)) {
                return Err(s.err(
                    "min_lr",
                    format!("must be in [0, lr = {lr}], found {min_lr}"),
                    "Use e.g. a tenth of lr.",
                ));
            }
            Ok(LrSchedule::Cosine {
                warmup_steps,
                min_lr,
            })
        }
        _ => {
            if s.get("min_lr").is_some() {
                return Err(s.err(
                    "min_lr",
                    "applies to lr_schedule = \"cosine\" only",
                    "Remove it, or set lr_schedule = \"cosine\".",
                ));
            }
            Ok(LrSchedule::Constant { warmup_steps })
        }
    }
}

/// `clip_grad_norm = C` (absent: no clipping).
pub(super) fn clip(s: &Section) -> Result<Option<f64>, ConfigError> {
    match s.get("clip_grad_norm") {
        None => Ok(None),
        Some(_) => positive(s, "clip_grad_norm", 1.0, "1.0").map(Some),
    }
}

#[cfg(test)]
mod tests {
    use crate::topology::LrSchedule;

    /// The formula at its corners: warm-up reaches lr at step W−1, the cosine starts at
    /// lr at step W and ends near min_lr at the last step.
    #[test]
    fn cosine_with_warmup() {
        let c = LrSchedule::Cosine {
            warmup_steps: 5,
            min_lr: 1e-3,
        };
        let lr = |s| c.lr_at(1e-2, s, 20);
        assert_eq!(lr(0), 1e-2 / 5.0);
        assert!((lr(4) - 1e-2).abs() < 1e-15);
        assert!((lr(5) - 1e-2).abs() < 1e-15);
        let half = 1e-3 + (1e-2 - 1e-3) * (1.0 + (std::f64::consts::PI * 7.0 / 15.0).cos()) / 2.0;
        assert_eq!(lr(12), half);
        assert!((lr(19) - 1e-3).abs() < 1e-4 && lr(19) > 1e-3);
        let flat = LrSchedule::Constant { warmup_steps: 0 };
        assert_eq!(flat.lr_at(0.1, 7, 20), 0.1);
    }

    #[test]
    fn refuses_keys_of_other_choices() {
        let toml = |extra: &str| {
            format!(
                "[model]\ninput = [4]\nlayers = [{{ kind = \"linear\", out = 2 }}]\n[train]\nsteps = 10\n{extra}\n[[hosts]]\nname = \"h\"\naddress = \"127.0.0.1\"\ndevices = [\"cpu\"]\n"
            )
        };
        let err = |extra: &str| {
            crate::parse("t.toml", &toml(extra), &[])
                .unwrap_err()
                .to_string()
        };
        assert!(err("min_lr = 0.001").contains("train.min_lr"));
        assert!(err("warmup_steps = 10\nlr_schedule = \"cosine\"").contains("train.warmup_steps"));
        assert!(err("optimizer = \"adamw\"\nmomentum = 0.9").contains("train.momentum"));
        assert!(err("clip_grad_norm = -1").contains("train.clip_grad_norm"));
        let ok = crate::parse("t.toml", &toml("optimizer = \"adamw\"\nlr_schedule = \"cosine\"\nwarmup_steps = 2\nmin_lr = 0.001\nclip_grad_norm = 1.0"), &[]).unwrap();
        assert_eq!(ok.train.clip_grad_norm, Some(1.0));
        assert!(
            matches!(ok.train.optimizer, crate::Optimizer::Adamw { weight_decay, .. } if weight_decay == 0.01)
        );
    }
}
