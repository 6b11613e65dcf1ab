//! Training and scoring in piano-roll mode (issue 14).
//!
//! **Metric** (`../shared/corpus/poly-music/SOURCE.md`, as the TCN code computes it): the model
//! predicts frame `t+1` from frames `..=t` with 88 independent sigmoids; the NLL of a frame is the
//! binary cross-entropy summed over the 88 keys (nats); the figure is the sum over every predicted
//! frame of every sequence divided by the number of predicted frames (the first frame of each
//! sequence is not predicted). Accuracy is Bay et al.'s frame-level `TP / (TP + FP + FN)` summed
//! over all predicted frames, a key predicted on when its probability exceeds 1/2.
//!
//! **Training loss** is that definition on each batch: batches hold pieces of sequences
//! (chunks of at most `window` predicted frames, consecutive chunks sharing one frame so that every
//! predicted frame of a sequence is a target exactly once), padded at the end with rows of weight 0,
//! and the gradient is the summed BCE divided by the batch's predicted frames. A chunk starts from
//! the zero state: with a window at least as long as the longest sequence (the default on JSB),
//! training sees whole sequences as the metric does.

use crate::data::roll::{Frame, Sequence, KEYS};
use crate::model::roll::{RollConfig, RollModel};
use crate::model::roll_nade::{build_headed, RollHead};
use crate::run::checkpoint::{Checkpoint, HostTensor};
use crate::engine::roll::RollOps;
use crate::engine::Bce;
use crate::rng::Rng;
use crate::run::schedule::LrSchedule;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The value of the checkpoint metadata's `mode` for piano-roll models.
pub const MODE: &str = "pianoroll";

/// One padded batch, host side.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `[batch*time, slots]` key ids of the input frames, `u32::MAX` in empty slots.
    pub ids: Vec<u32>,
    pub slots: usize,
    /// `[batch*time, 88]` targets (the next frame), 0/1.
    pub y: Vec<f32>,
    /// `[batch*time]` 1 for a predicted frame, 0 for padding.
    pub w: Vec<f32>,
    pub batch: usize,
    pub time: usize,
    /// Predicted frames (the sum of `w`).
    pub rows: usize,
}

/// Pad `items` (each at least two frames: inputs `item[..n-1]`, targets `item[1..]`) into a batch.
pub fn make_batch(items: &[&[Frame]]) -> Batch {
    make_batch_shifted(items, &[])
}

/// [`make_batch`] with item `i` moved by `shifts[i]` semitones (none when `shifts` is shorter);
/// keys moved outside the 88 are dropped.
pub fn make_batch_shifted(items: &[&[Frame]], shifts: &[i32]) -> Batch {
    let batch = items.len();
    let time = items.iter().map(|s| s.len().saturating_sub(1)).max().unwrap_or(0).max(1);
    let slots = items.iter().flat_map(|s| s.iter().map(Vec::len)).max().unwrap_or(0).max(1);
    let n = batch * time;
    let (mut ids, mut y, mut w) = (vec![u32::MAX; n * slots], vec![0.0; n * KEYS], vec![0.0; n]);
    let mut rows = 0;
    for (bi, item) in items.iter().enumerate() {
        let shift = shifts.get(bi).copied().unwrap_or(0);
        let moved = |k: u8| -> Option<usize> {
            let m = k as i32 + shift;
            (0..KEYS as i32).contains(&m).then_some(m as usize)
        };
        for t in 0..item.len().saturating_sub(1) {
            let row = bi * time + t;
            for (j, k) in item[t].iter().filter_map(|&k| moved(k)).enumerate() {
                ids[row * slots + j] = k as u32;
            }
            for k in item[t + 1].iter().filter_map(|&k| moved(k)) {
                y[row * KEYS + k] = 1.0;
            }
            w[row] = 1.0;
            rows += 1;
        }
    }
    Batch { ids, slots, y, w, batch, time, rows }
}

/// The training chunks of `seqs`: pieces of at most `window + 1` frames, consecutive pieces
/// overlapping by one frame, so that each predicted frame is a target once.
pub fn chunks(seqs: &[Sequence], window: usize) -> Vec<&[Frame]> {
    let mut out = Vec::new();
    for s in seqs {
        let mut start = 0;
        while start + 1 < s.len() {
            let end = (start + window + 1).min(s.len());
            out.push(&s[start..end]);
            start += window;
        }
    }
    out
}

/// Device buffers of one batch and the loss's outputs, grown as needed.
pub struct Dev<B: RollOps> {
    pub ids: B::Ids,
    pub y: B::Buf,
    pub w: B::Buf,
    pub dlogits: B::Buf,
    pub stats: B::Buf,
    cap_ids: usize,
    cap_rows: usize,
}

impl<B: RollOps> Dev<B> {
    pub fn new(b: &B) -> Self {
        // Room for one row: 88 targets and logit gradients (a batch of one 2-frame sequence).
        Dev { ids: b.alloc_ids(1), y: b.alloc(KEYS), w: b.alloc(1), dlogits: b.alloc(KEYS), stats: b.alloc_f32(1), cap_ids: 1, cap_rows: 1 }
    }

    /// Write `batch` into the buffers (grown first when it does not fit).
    pub fn upload(&mut self, b: &B, batch: &Batch) {
        let n = batch.batch * batch.time;
        if batch.ids.len() > self.cap_ids {
            self.cap_ids = batch.ids.len();
            self.ids = b.alloc_ids(self.cap_ids);
        }
        if n > self.cap_rows {
            self.cap_rows = n;
            self.y = b.alloc(n * KEYS);
            self.w = b.alloc(n);
            self.dlogits = b.alloc(n * KEYS);
            self.stats = b.alloc_f32(n);
        }
        b.write_ids(&mut self.ids, &batch.ids);
        b.write(&mut self.y, &batch.y);
        b.write(&mut self.w, &batch.w);
    }
}

/// NLL per frame, accuracy and counts over a split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollEval {
    /// Summed BCE of every predicted frame / predicted frames (nats).
    pub nll_per_frame: f64,
    /// Predicted frames (each sequence's first is not).
    pub frames: usize,
    /// TP / (TP + FP + FN) over all predicted frames, keys on at p > 1/2.
    pub accuracy: f64,
    pub sequences: usize,
}

/// Score `model` on whole sequences, as many per batch as fit its arena (longest first).
/// Sequences of fewer than two frames predict nothing and are counted but not run.
pub fn evaluate<B: RollOps>(b: &B, model: &mut dyn RollModel<B>, seqs: &[Sequence]) -> RollEval {
    model.set_dropout(None);
    let cap = model.capacity();
    let mut order: Vec<&Sequence> = seqs.iter().filter(|s| s.len() >= 2).collect();
    order.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut dev = Dev::new(b);
    let (mut loss, mut frames) = (0.0f64, 0usize);
    let (mut tp, mut fp, mut fn_) = (0u64, 0u64, 0u64);
    let mut i = 0;
    while i < order.len() {
        let time = order[i].len() - 1;
        assert!(time <= cap, "evaluate: a sequence of {} frames exceeds the model's arena of {cap}", time + 1);
        let count = (cap / time).max(1).min(order.len() - i);
        let items: Vec<&[Frame]> = order[i..i + count].iter().map(|s| s.as_slice()).collect();
        i += count;
        let batch = make_batch(&items);
        dev.upload(b, &batch);
        let n = batch.batch * batch.time;
        model.forward(b, &dev.ids, batch.slots, batch.batch, batch.time);
        model.loss(b, &dev.y, &dev.w, &mut dev.dlogits, &mut dev.stats, Bce { n, k: KEYS, grad_scale: 0.0 });
        let stats = b.read(&dev.stats, n);
        loss += stats.iter().map(|&v| v as f64).sum::<f64>();
        frames += batch.rows;
        let logits = b.read(model.logits(), n * KEYS);
        for row in 0..n {
            if batch.w[row] == 0.0 {
                continue;
            }
            for k in 0..KEYS {
                let (on, truth) = (logits[row * KEYS + k] > 0.0, batch.y[row * KEYS + k] > 0.5);
                match (on, truth) {
                    (true, true) => tp += 1,
                    (true, false) => fp += 1,
                    (false, true) => fn_ += 1,
                    _ => {}
                }
            }
        }
    }
    let denom = (tp + fp + fn_) as f64;
    RollEval {
        nll_per_frame: if frames == 0 { f64::NAN } else { loss / frames as f64 },
        frames,
        accuracy: if denom == 0.0 { f64::NAN } else { tp as f64 / denom },
        sequences: seqs.len(),
    }
}

/// The optimisation settings of a piano-roll run (stored in its checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollTrainSettings {
    pub epochs: usize,
    /// Chunks per step.
    pub batch: usize,
    /// Most predicted frames per chunk.
    pub window: usize,
    pub lr: f32,
    pub min_lr: f32,
    pub lr_schedule: LrSchedule,
    pub warmup_steps: u64,
    pub clip: f32,
    pub dropout: f32,
    pub weight_decay: f32,
    pub adamw_decay: f32,
    /// Stop after this many epochs without a better valid NLL (0 = never).
    pub patience: usize,
    pub seed: u64,
    /// Move every training chunk by a shift in -N..=N semitones, drawn per (seed, epoch, chunk).
    #[serde(default)]
    pub transpose: u32,
}

impl RollTrainSettings {
    /// The small run the tests build checkpoints with: one epoch of batches of 4 windows of 32
    /// frames at a constant learning rate of 1e-3, clipping at 1, no dropout, decay, early stop
    /// or transposition, seed 0.
    pub fn for_test() -> Self {
        RollTrainSettings {
            epochs: 1,
            batch: 4,
            window: 32,
            lr: 1e-3,
            min_lr: 0.0,
            lr_schedule: LrSchedule::Constant,
            warmup_steps: 0,
            clip: 1.0,
            dropout: 0.0,
            weight_decay: 0.0,
            adamw_decay: 0.0,
            patience: 0,
            seed: 0,
            transpose: 0,
        }
    }
}

/// What a piano-roll checkpoint's `etude` metadata holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollMeta {
    /// Always [`MODE`].
    pub mode: String,
    pub config: RollConfig,
    pub settings: RollTrainSettings,
    /// Quarter notes per frame of the training data (the MIDI written by generate).
    pub frame_quarters: f64,
    /// The training data (a file, or MIDI folders with their grid).
    pub data: String,
    pub epoch: usize,
    pub valid_nll: Option<f64>,
    pub params: usize,
    /// The output head (issue 27); absent in a sigmoid model's metadata (older checkpoints load
    /// as sigmoid, and a sigmoid run writes the bytes it wrote before the head existed).
    #[serde(default, skip_serializing_if = "RollHead::is_sigmoid")]
    pub head: RollHead,
}

/// The model's parameters as checkpoint tensors.
pub fn host_tensors<B: RollOps>(b: &B, model: &dyn RollModel<B>) -> Vec<HostTensor> {
    model
        .params()
        .iter()
        .map(|p| HostTensor { name: p.name.clone(), shape: p.value.shape.clone(), data: p.value.to_vec(b) })
        .collect()
}

/// Write a checkpoint atomically.
pub fn save<B: RollOps>(b: &B, model: &dyn RollModel<B>, meta: &RollMeta, path: &Path) -> Result<(), String> {
    let meta = serde_json::to_value(meta).map_err(|e| e.to_string())?;
    Checkpoint { meta, tensors: host_tensors(b, model) }.save(path)
}

/// Whether a checkpoint's metadata says piano-roll mode.
pub fn is_roll_checkpoint(ck: &Checkpoint) -> bool {
    ck.meta.get("mode").and_then(|m| m.as_str()) == Some(MODE)
}

/// A piano-roll checkpoint, checked: its metadata, and exactly the model's tensors, all finite.
pub fn load(path: &Path) -> Result<(RollMeta, Checkpoint), String> {
    let ck = Checkpoint::load(path)?;
    let meta = meta_of(&ck, path)?;
    Ok((meta, ck))
}

/// [`load`]'s checks on a checkpoint already read from `path`: its metadata, when it holds a
/// piano-roll model fit to use.
pub fn meta_of(ck: &Checkpoint, path: &Path) -> Result<RollMeta, String> {
    if !is_roll_checkpoint(ck) {
        return Err(format!("{}: a token model's checkpoint, not a piano-roll one (give it MIDI files, not a .pianoroll.json.gz)", path.display()));
    }
    let meta: RollMeta = serde_json::from_value(ck.meta.clone())
        .map_err(|e| format!("{}: damaged piano-roll checkpoint metadata ({e})", path.display()))?;
    meta.config.validate().map_err(|e| format!("{}: {e}", path.display()))?;
    if let Some(t) = ck.tensors.iter().find(|t| t.data.iter().any(|v| !v.is_finite())) {
        return Err(format!("{}: damaged checkpoint ({} holds non-finite values)", path.display(), t.name));
    }
    Ok(meta)
}

/// A model built from a checkpoint, with an arena of `capacity` frames.
pub fn model_from<B: RollOps + 'static>(
    b: &B,
    meta: &RollMeta,
    ck: &Checkpoint,
    capacity: usize,
    origin: &str,
) -> Result<Box<dyn RollModel<B>>, String> {
    let mut model = build_headed(b, &meta.config, meta.head, capacity, &mut Rng::new(0));
    if ck.tensors.len() != model.params().len() {
        return Err(format!("{origin}: {} tensors, the model has {} parameters", ck.tensors.len(), model.params().len()));
    }
    for p in model.params_mut() {
        let t = ck.tensor(&p.name).ok_or_else(|| format!("{origin}: no tensor {}", p.name))?;
        if t.shape != p.value.shape {
            return Err(format!("{origin}: {} has shape {:?}, the model {:?}", p.name, t.shape, p.value.shape));
        }
        p.value.set(b, &t.data);
    }
    Ok(model)
}

/// Start the output bias (the last parameter of either model) at each key's log-odds on the
/// training frames (add-one smoothing): the model begins as the independent-Bernoulli baseline
/// instead of at 88 ln 2 nats per frame, and the first epochs are not spent learning the bias.
pub fn init_output_bias<B: RollOps>(b: &B, model: &mut dyn RollModel<B>, train: &[Sequence]) {
    let mut count = [0usize; KEYS];
    let mut frames = 0usize;
    for f in train.iter().flatten() {
        frames += 1;
        for &k in f {
            count[k as usize] += 1;
        }
    }
    let bias: Vec<f32> = count
        .iter()
        .map(|&c| {
            let p = (c as f64 + 1.0) / (frames as f64 + 2.0);
            (p / (1.0 - p)).ln() as f32
        })
        .collect();
    let last = model.params_mut().pop().expect("a model has parameters");
    assert_eq!(last.value.len(), KEYS, "the last parameter is the output bias");
    last.value.set(b, &bias);
}
