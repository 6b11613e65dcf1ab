//! Piano-roll models in the training loop ([`crate::train::run_loop`]): the setup stage of a new or
//! resumed run, its batches of chunks ([`crate::train::roll`]), one step of the BCE loss, the
//! validation NLL per frame, the `metrics.csv` row and the checkpoints.
//!
//! A piano-roll checkpoint (`last`, `best`, `epoch-N.safetensors`) holds the model alone, as it
//! always has; what `--resume` needs besides (the Adam moments and step, the progress, the
//! learning-rate schedule's length and the checkpoint cadence) is kept beside them in
//! [`RESUME_STATE`], with the parameters, written at the same moments. The order of the chunks of
//! an epoch and their transpositions depend only on (seed, epoch), so a resumed run gives the
//! bytes of a run that never stopped.

use crate::data::roll::{Frame, Sequence, KEYS};
use crate::engine::arena::zero_grads;
use crate::engine::roll::RollOps;
use crate::engine::{Adam, AdamParams, Bce, Dropout};
use crate::model::roll::{RollConfig, RollModel};
use crate::model::roll_nade::{build_headed, RollHead};
use crate::model::step::Totals;
use crate::rng::Rng;
use crate::run::checkpoint::{Checkpoint, HostTensor, EXP_AVG, EXP_AVG_SQ};
use crate::run::meta::Progress;
use crate::run::metrics::{MetricsLog, ROLL_COLUMNS};
use crate::run::progress::Reporter;
use crate::run::schedule::lr_at;
use crate::train::roll::{chunks, evaluate, host_tensors, init_output_bias, make_batch_shifted, Dev, RollEval, RollMeta, RollTrainSettings, MODE};
use crate::train::run_loop::{run_epochs, Cadence, RunKind, Saved, RESUME_STATE};
use crate::train::token_kind::draw_curve;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// The value of a resume state's `mode`.
pub const STATE_MODE: &str = "pianoroll-state";

/// Where the losses stand in a piano-roll run's rows ([`ROLL_COLUMNS`]).
pub const ROLL_LOSS_COLUMNS: (usize, usize) = (1, 2);

/// What a piano-roll run's [`RESUME_STATE`] holds besides its tensors (the parameters, then the
/// Adam moments under [`EXP_AVG`] and [`EXP_AVG_SQ`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollState {
    /// Always [`STATE_MODE`].
    pub mode: String,
    /// The metadata of the run's `last.safetensors` at this moment.
    pub model: RollMeta,
    pub progress: Progress,
    /// Steps of the learning-rate schedule, fixed when the run started.
    pub schedule_steps: u64,
    /// Keep `epoch-N.safetensors` every N epochs (0 = never).
    pub checkpoint_every: usize,
    /// Where the data comes from and how it is read, as the command that started the run keeps it
    /// (for `--resume`).
    #[serde(default)]
    pub source: serde_json::Value,
}

/// A run to resume: its state and the checkpoint that holds it.
pub struct Resumed {
    pub state: RollState,
    pub checkpoint: Checkpoint,
}

/// The state of the piano-roll run in `out`, for `--resume` (an error when there is none).
pub fn read_state(out: &Path) -> Result<Resumed, String> {
    let path = out.join(RESUME_STATE);
    if !path.exists() {
        return Err(format!("--resume: {} does not exist (nothing to resume in {})", path.display(), out.display()));
    }
    let checkpoint = Checkpoint::load(&path)?;
    let state: RollState = serde_json::from_value(checkpoint.meta.clone())
        .map_err(|e| format!("{}: damaged piano-roll resume state ({e})", path.display()))?;
    if state.mode != STATE_MODE {
        return Err(format!("{}: not a piano-roll resume state", path.display()));
    }
    state.model.config.validate().map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Resumed { state, checkpoint })
}

/// How a piano-roll run starts.
pub enum RollStart {
    /// A new run of this model, head and settings, on the data of `source` (kept for `--resume`).
    New { config: RollConfig, head: RollHead, settings: RollTrainSettings, source: serde_json::Value },
    /// The run of this state, trained until `epochs` are complete.
    Resume { resumed: Box<Resumed>, epochs: usize },
}

/// The data of a piano-roll run.
pub struct RollData<'a> {
    pub train: &'a [Sequence],
    pub valid: &'a [Sequence],
    /// Quarter notes per frame.
    pub frame_quarters: f64,
    /// The data as the checkpoints name it.
    pub data: &'a str,
}

/// Where and how a piano-roll run writes.
pub struct RollOutput<'a> {
    pub out: &'a Path,
    /// Keep `epoch-N.safetensors` every N epochs (0 = never; a resumed run: `None` keeps its own).
    pub checkpoint_every: Option<usize>,
    /// Draw a progress bar (a terminal); otherwise plain lines.
    pub progress_bar: bool,
}

/// What [`train_roll`] returns.
#[derive(Clone, Debug)]
pub struct TrainSummary {
    pub best_epoch: usize,
    pub best_valid: f64,
    pub epochs_run: usize,
    pub seconds: f64,
    pub params: usize,
}

/// A piano-roll model being trained, with its chunks and validation sequences.
pub struct RollKind<'a, B: RollOps> {
    model: Box<dyn RollModel<B>>,
    adam: Adam<B>,
    dev: Dev<B>,
    items: Vec<&'a [Frame]>,
    valid: &'a [Sequence],
    settings: RollTrainSettings,
    meta: RollMeta,
    schedule_steps: u64,
    checkpoint_every: usize,
    source: serde_json::Value,
    begun: Instant,
    /// The chunks' order after the shuffles of epochs 1..=`order_epoch`.
    order: Vec<usize>,
    order_epoch: usize,
    /// The epoch's generator (its shuffle, then each chunk's transposition).
    shuffle: Rng,
    next_group: usize,
    loss: f64,
    rows: usize,
    last_loss: f64,
    lr: f32,
    scored: Option<(RollEval, f64, f64)>,
}

impl<'a, B: RollOps> RollKind<'a, B> {
    /// The chunks of epoch `epoch` in order, and its generator after the shuffle.
    fn shuffle_for(&mut self, epoch: usize) {
        if self.order.len() != self.items.len() || self.order_epoch + 1 != epoch {
            self.order = (0..self.items.len()).collect();
            self.order_epoch = 0;
        }
        while self.order_epoch < epoch {
            self.order_epoch += 1;
            self.shuffle = Rng::new(self.settings.seed ^ (self.order_epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            self.shuffle.shuffle(&mut self.order);
        }
    }

    /// The transpositions of the chunks of the next group (drawn from the epoch's generator).
    fn next_shifts(&mut self, n: usize) -> Vec<i32> {
        let t = self.settings.transpose;
        let span = 2 * t as usize + 1;
        (0..n).map(|_| self.shuffle.below(span) as i32 - t as i32).collect()
    }

    fn state(&self, b: &B, progress: &Progress) -> Result<Checkpoint, String> {
        let mut tensors = host_tensors(b, self.model.as_ref());
        let names: Vec<(String, Vec<usize>)> = self.model.params().iter().map(|p| (p.name.clone(), p.value.shape.clone())).collect();
        for (prefix, moments) in [(EXP_AVG, &self.adam.m), (EXP_AVG_SQ, &self.adam.v)] {
            for ((name, shape), m) in names.iter().zip(moments) {
                tensors.push(HostTensor { name: format!("{prefix}{name}"), shape: shape.clone(), data: m.to_vec(b) });
            }
        }
        let state = RollState {
            mode: STATE_MODE.into(),
            model: self.meta.clone(),
            progress: progress.clone(),
            schedule_steps: self.schedule_steps,
            checkpoint_every: self.checkpoint_every,
            source: self.source.clone(),
        };
        Ok(Checkpoint { meta: serde_json::to_value(&state).map_err(|e| e.to_string())?, tensors })
    }
}

impl<'a, B: RollOps> RunKind<B> for RollKind<'a, B> {
    fn steps_per_epoch(&self) -> u64 {
        self.items.len().div_ceil(self.settings.batch) as u64
    }

    fn start_epoch(&mut self, _b: &B, epoch: usize, skip: u64) {
        self.shuffle_for(epoch);
        self.next_group = 0;
        (self.loss, self.rows) = (0.0, 0);
        // The groups taken before an interruption draw their transpositions again.
        for _ in 0..skip {
            let n = self.order.chunks(self.settings.batch).nth(self.next_group).map_or(0, <[usize]>::len);
            self.next_shifts(n);
            self.next_group += 1;
        }
    }

    fn step(&mut self, b: &B, step: u64) -> bool {
        let s = &self.settings;
        let Some(group) = self.order.chunks(s.batch).nth(self.next_group) else { return false };
        self.next_group += 1;
        let picked: Vec<&[Frame]> = group.iter().map(|&i| self.items[i]).collect();
        let shifts = self.next_shifts(picked.len());
        let s = &self.settings;
        let batch = make_batch_shifted(&picked, &shifts);
        let n = batch.batch * batch.time;
        self.dev.upload(b, &batch);
        self.lr = lr_at(s.lr_schedule, s.lr, s.min_lr, s.warmup_steps, self.schedule_steps, step);
        self.adam.hp.lr = self.lr;
        let dev = &mut self.dev;
        let model = self.model.as_mut();
        zero_grads(b, model.params_mut());
        model.set_dropout((s.dropout > 0.0).then_some(Dropout { p: s.dropout, seed: s.seed, step }));
        model.forward(b, &dev.ids, batch.slots, batch.batch, batch.time);
        model.loss(b, &dev.y, &dev.w, &mut dev.dlogits, &mut dev.stats, Bce { n, k: KEYS, grad_scale: 1.0 / batch.rows as f32 });
        model.backward(b, &dev.ids, batch.slots, &dev.dlogits, batch.batch, batch.time);
        self.adam.step(b, model.params_mut());
        let st = b.read(&dev.stats, n);
        let sum = st.iter().map(|&v| v as f64).sum::<f64>();
        self.loss += sum;
        self.rows += batch.rows;
        self.last_loss = sum / batch.rows.max(1) as f64;
        true
    }

    fn last_loss(&mut self, _b: &B) -> f64 {
        self.last_loss
    }

    fn take_totals(&mut self, _b: &B) -> Totals {
        self.model.set_dropout(None);
        let t = Totals { loss_sum: self.loss, correct: 0.0, rows: self.rows };
        (self.loss, self.rows) = (0.0, 0);
        t
    }

    fn validate(&mut self, b: &B, _epoch: usize, train: &Totals, _seconds: f64, _reporter: &Reporter) -> Result<Option<f64>, String> {
        let v = evaluate(b, self.model.as_mut(), self.valid);
        let secs = self.begun.elapsed().as_secs_f64();
        let nll = v.nll_per_frame;
        self.scored = Some((v, train.loss(), secs));
        Ok(Some(nll))
    }

    fn epoch_row(&mut self, progress: &Progress, best: bool) -> (Vec<String>, Vec<String>) {
        let (v, train_nll, secs) = self.scored.take().expect("validate comes first");
        let (epoch, lr) = (progress.epoch, self.lr);
        self.meta.epoch = epoch;
        self.meta.valid_nll = Some(v.nll_per_frame);
        let line = format!(
            "epoch {epoch}/{}  train {train_nll:.4}  valid {:.4} nats/frame  accuracy {:.3}  lr {lr:.2e}  {secs:.0} s{}",
            self.settings.epochs,
            v.nll_per_frame,
            v.accuracy,
            if best { "  (best)" } else { "" }
        );
        let fields = [epoch.to_string(), train_nll.to_string(), v.nll_per_frame.to_string(), v.accuracy.to_string(), lr.to_string(), format!("{secs:.1}")];
        (fields.to_vec(), vec![line])
    }

    fn checkpoint(&mut self, b: &B, progress: &Progress, _epoch: usize) -> Result<Saved, String> {
        let meta = serde_json::to_value(&self.meta).map_err(|e| e.to_string())?;
        let model = Checkpoint { meta, tensors: host_tensors(b, self.model.as_ref()) };
        Ok(Saved { model, state: Some(self.state(b, progress)?) })
    }

    fn diverged(&self, epoch: usize, what: &str) -> String {
        format!("training diverged at epoch {epoch} ({what}): lower --lr or keep --clip")
    }

    fn draw(&self, out: &Path, meta: &serde_json::Value, log: &MetricsLog) -> Result<(), String> {
        draw_curve(out, meta, log, ROLL_LOSS_COLUMNS)
    }
}

/// Train a piano-roll model (new, or resumed from its state) on `data.train`, choosing the best
/// epoch on `data.valid` (its NLL per frame), writing `best.safetensors`, `last.safetensors`,
/// `epoch-N.safetensors`, [`RESUME_STATE`], `metrics.csv`, `loss.png` and `report.html` into
/// `output.out`.
pub fn train_roll<B: RollOps + 'static>(b: &B, start: RollStart, data: &RollData, output: &RollOutput) -> Result<TrainSummary, String> {
    let begun = Instant::now();
    let out = output.out;
    let (state, checkpoint, epochs, is_resumed) = match start {
        RollStart::New { config, head, settings, source } => {
            let model = RollMeta {
                mode: MODE.into(),
                params: config.n_params() + head.extra_params(&config),
                config,
                settings,
                frame_quarters: data.frame_quarters,
                data: data.data.to_string(),
                epoch: 0,
                valid_nll: None,
                head,
            };
            let epochs = model.settings.epochs;
            let state =
                RollState { mode: STATE_MODE.into(), model, progress: Progress::default(), schedule_steps: 0, checkpoint_every: 0, source };
            (state, None, epochs, false)
        }
        RollStart::Resume { resumed, epochs } => (resumed.state, Some(resumed.checkpoint), epochs, true),
    };
    let mut meta = state.model;
    meta.settings.epochs = epochs;
    let s = meta.settings.clone();
    let items = chunks(data.train, s.window);
    if items.is_empty() {
        return Err(format!("{}: no training sequence has two frames", data.data));
    }
    // The epochs are chosen by their validation NLL: without a predicted validation frame it is
    // NaN, and no epoch would ever be the best.
    if !data.valid.iter().any(|v| v.len() >= 2) {
        return Err(format!(
            "{}: no validation sequence has two frames ({} sequences): nothing to choose the best epoch on",
            data.data,
            data.valid.len()
        ));
    }
    let longest_valid = data.valid.iter().map(|v| v.len().saturating_sub(1)).max().unwrap_or(1);
    let capacity = (s.batch * s.window).max(longest_valid).max(1);
    let mut model = build_headed(b, &meta.config, meta.head, capacity, &mut Rng::new(s.seed));
    let hp = AdamParams { lr: s.lr, weight_decay: s.weight_decay, ..AdamParams::default() };
    let steps_per_epoch = items.len().div_ceil(s.batch) as u64;
    let mut progress = state.progress;
    let schedule_steps;
    let adam = if let Some(checkpoint) = &checkpoint {
        let origin = out.join(RESUME_STATE).display().to_string();
        restore(b, model.as_mut(), checkpoint, &origin)?;
        let mut adam = Adam::new(b, model.params(), hp, s.clip);
        let params: Vec<String> = model.params().iter().map(|p| p.name.clone()).collect();
        crate::run::restore_adam(b, &params, &mut adam, checkpoint, &origin)?;
        adam.step = u32::try_from(progress.step).map_err(|_| "step count too large".to_string())?;
        schedule_steps = state.schedule_steps;
        adam
    } else {
        init_output_bias(b, model.as_mut(), data.train);
        // Fixed when the run starts, so that a resumed run follows the same curve.
        schedule_steps = steps_per_epoch * s.epochs as u64;
        Adam::new(b, model.params(), hp, s.clip)
    };
    let mut adam = adam;
    adam.decoupled_decay = s.adamw_decay;
    let checkpoint_every = output.checkpoint_every.unwrap_or(state.checkpoint_every);
    if is_resumed {
        crate::files::check_writable(out)?;
    }
    crate::files::remove_stale_temps(out);
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let metrics_path = out.join("metrics.csv");
    let mut log =
        if is_resumed { MetricsLog::continued(&metrics_path, &ROLL_COLUMNS, progress.epoch)? } else { MetricsLog::new(&metrics_path, &ROLL_COLUMNS) };
    let params = meta.params;
    let mut kind = RollKind {
        model,
        adam,
        dev: Dev::new(b),
        items,
        valid: data.valid,
        settings: s.clone(),
        meta,
        schedule_steps,
        checkpoint_every,
        source: state.source,
        begun,
        order: Vec::new(),
        order_epoch: 0,
        shuffle: Rng::new(s.seed),
        next_group: 0,
        loss: 0.0,
        rows: 0,
        last_loss: f64::NAN,
        lr: s.lr,
        scored: None,
    };
    let reporter = Reporter::new(output.progress_bar);
    let cadence = Cadence { out, epochs, checkpoint_every, patience: s.patience, begun };
    run_epochs(b, &mut kind, &cadence, &mut progress, &mut log, &reporter)?;
    Ok(TrainSummary {
        best_epoch: best_epoch(&log, progress.best_val_loss),
        best_valid: progress.best_val_loss,
        epochs_run: progress.epoch,
        seconds: begun.elapsed().as_secs_f64(),
        params,
    })
}

/// The first epoch of `log` whose validation NLL is `best` (0 when none is).
fn best_epoch(log: &MetricsLog, best: f64) -> usize {
    log.losses(ROLL_LOSS_COLUMNS).iter().find(|r| r.2 == best).map_or(0, |r| r.0 as usize)
}

/// The tensor `name` of `ck`, of `shape`.
fn tensor<'c>(ck: &'c Checkpoint, name: &str, shape: &[usize], origin: &str) -> Result<&'c HostTensor, String> {
    let t = ck.tensor(name).ok_or_else(|| format!("{origin}: no tensor {name} to resume from"))?;
    if t.shape != shape {
        return Err(format!("{origin}: {name} has shape {:?}, the model {shape:?}", t.shape));
    }
    if t.data.iter().any(|v| !v.is_finite()) {
        return Err(format!("{origin}: damaged state ({name} holds non-finite values)"));
    }
    Ok(t)
}

/// Set `model`'s parameters from the tensors of `ck` of the same names.
fn restore<B: RollOps>(b: &B, model: &mut dyn RollModel<B>, ck: &Checkpoint, origin: &str) -> Result<(), String> {
    for p in model.params_mut() {
        let t = tensor(ck, &p.name, &p.value.shape, origin)?;
        p.value.set(b, &t.data);
    }
    Ok(())
}
