//! Helpers shared by the integration tests: PyTorch fixtures from `../shared/fixtures`, and the
//! tolerances used to compare against them (one place, each with its reason).
#![allow(dead_code)]

use etude::engine::cpu::{CpuBackend, CpuBuf};
use etude::engine::Xent;
use etude::engine::arena::zero_grads;
use etude::engine::{Adam, AdamParams, Backend, Dropout};
use etude::model::any::AnyModel;
use etude::model::Model;
use etude::rng::Rng;
use std::collections::HashMap;
use etude::engine::gpu::{GpuBackend, GpuBuffer};
use etude::engine::arena::Param;
use etude::engine::roll::RollOps;
use etude::model::any::{ModelConfig, Sizes};
use etude::model::roll::{build, RollConfig};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The GPU backend on the preferred adapter; with none, fails the test saying how to get one
/// (the GPU tests never skip).
pub fn open_gpu() -> etude::engine::gpu::GpuBackend {
    etude::engine::gpu::GpuBackend::new(None).unwrap_or_else(|e| {
        panic!(
            "{e}\n(the GPU tests need an adapter: on Debian/Ubuntu `apt-get install mesa-vulkan-drivers` \
             provides the software one, lavapipe)"
        )
    })
}

/// One GPU backend for the whole test binary, opened on first use ([`open_gpu`]); for the tests
/// that do not count dispatches (those hold a backend of their own behind a lock).
pub fn gpu() -> &'static GpuBackend {
    static GPU: OnceLock<GpuBackend> = OnceLock::new();
    GPU.get_or_init(open_gpu)
}

/// `data` in a new buffer on [`gpu`].
pub fn upload(data: &[f32]) -> GpuBuffer {
    let g = gpu();
    let mut b = g.alloc(data.len());
    g.write(&mut b, data);
    b
}

/// `data` in a new u32 buffer on [`gpu`] (one element at least: a binding is never empty).
pub fn upload_ids(data: &[u32]) -> GpuBuffer {
    let g = gpu();
    let mut b = g.alloc_ids(data.len().max(1));
    g.write_ids(&mut b, data);
    b
}

/// `n` values drawn uniformly from `[-scale, scale)`.
pub fn rand_vec(rng: &mut Rng, n: usize, scale: f32) -> CpuBuf {
    (0..n).map(|_| rng.uniform_range(-scale, scale)).collect()
}

/// Runs `check` on the parameter list of every model etude trains, small, on backend `b`: the
/// five token models (wavenet-gated with `heads` attention heads of width 3; 0: none) and both
/// piano-roll models (named `roll NAME`).
pub fn for_every_model<B: RollOps + 'static>(b: &B, heads: usize, mut check: impl FnMut(&str, &mut [&mut Param<B>])) {
    let sizes = Sizes { embed: Some(6), hidden: Some(12), dense: Some(10), channels: Some(5), ..Sizes::default() };
    for name in ["lstm", "lstm-seq", "wavenet", "wavenet-gated", "transformer"] {
        let sizes = match name {
            "transformer" => Sizes { width: Some(6), heads: Some(2), ff: Some(9), layers: Some(2), ..Sizes::default() },
            "wavenet-gated" => Sizes {
                embed: Some(6),
                residual: Some(5),
                skip: Some(7),
                attention: (heads > 0).then_some(heads),
                attention_dim: (heads > 0).then_some(3),
                ..Sizes::default()
            },
            "wavenet" => Sizes { hidden: None, ..sizes.clone() },
            _ => Sizes { channels: None, ..sizes.clone() },
        };
        let cfg = ModelConfig::from_name(name, 29, 16, &sizes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut m = AnyModel::new(b, &cfg, 3, 16, &mut Rng::new(5)).unwrap_or_else(|e| panic!("{name}: {e}"));
        check(name, &mut m.params_mut());
    }
    for cfg in [
        RollConfig::Lstm { embed: 5, hidden: 7, layers: 2 },
        RollConfig::WavenetGated { residual: 3, skip: 4, kernel: 2, layers: 2, stacks: 2 },
    ] {
        let mut m = build(b, &cfg, 64, &mut Rng::new(2));
        check(&format!("roll {}", cfg.name()), &mut m.params_mut());
    }
}

/// The same parameters with buffers of their own (what every model had before the arena).
pub fn standalone<B: Backend>(b: &B, params: &[&mut Param<B>]) -> Vec<Param<B>> {
    params.iter().map(|p| Param::new(b, &p.name, &p.value.shape, &p.value.to_vec(b))).collect()
}

/// `../shared` as seen from the crate root (CI lays `shared/` beside the clone).
pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join("shared")
}

/// One array of a fixture, widened to f64 (ids are exact in f64).
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Vec<f64>,
}

impl Array {
    pub fn f32(&self) -> CpuBuf {
        self.data.iter().map(|&v| v as f32).collect()
    }
    pub fn u32(&self) -> Vec<u32> {
        self.data.iter().map(|&v| v as u32).collect()
    }
}

/// A PyTorch fixture: `<name>.safetensors` arrays and the `<name>.json` description.
pub struct Fixture {
    pub name: String,
    pub arrays: HashMap<String, Array>,
    pub json: serde_json::Value,
}

impl Fixture {
    /// The Adam hyper-parameters the fixture's `adam1.*` weights were made with.
    pub fn adam_params(&self) -> AdamParams {
        let a = &self.json["adam"];
        let g = |k: &str| a[k].as_f64().unwrap_or_else(|| panic!("{}: adam.{k}", self.name)) as f32;
        AdamParams {
            lr: g("lr"),
            beta1: g("beta1"),
            beta2: g("beta2"),
            eps: g("eps"),
            weight_decay: g("weight_decay"),
            step: a["step"].as_u64().unwrap_or(1) as u32,
        }
    }

    /// Loads `../shared/fixtures/<name>.*`; fails the test with a clear message if absent.
    pub fn load(name: &str) -> Fixture {
        let dir = shared_dir().join("fixtures");
        let st_path = dir.join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&st_path).unwrap_or_else(|e| {
            panic!("cannot read fixture {} ({e}); the fixtures live in ../shared/fixtures", st_path.display())
        });
        let st = safetensors::SafeTensors::deserialize(&bytes).expect("fixture is valid safetensors");
        let mut arrays = HashMap::new();
        for (key, view) in st.tensors() {
            let raw = view.data();
            let data: Vec<f64> = match view.dtype() {
                safetensors::Dtype::F32 => {
                    raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
                }
                safetensors::Dtype::F64 => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
                safetensors::Dtype::I32 => {
                    raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect()
                }
                safetensors::Dtype::I64 => {
                    raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect()
                }
                other => panic!("fixture {name}: unexpected dtype {other:?} for {key}"),
            };
            arrays.insert(key, Array { shape: view.shape().to_vec(), data });
        }
        let json_path = dir.join(format!("{name}.json"));
        let json = serde_json::from_str(&std::fs::read_to_string(&json_path).expect("fixture json"))
            .expect("fixture json parses");
        Fixture { name: name.to_string(), arrays, json }
    }

    pub fn get(&self, key: &str) -> &Array {
        self.arrays.get(key).unwrap_or_else(|| panic!("fixture {} has no array {key}", self.name))
    }

    /// Parameter names in PyTorch's order, with shapes.
    pub fn params(&self) -> Vec<(String, Vec<usize>)> {
        self.json["params"]
            .as_array()
            .expect("params list")
            .iter()
            .map(|p| {
                let name = p["name"].as_str().unwrap().to_string();
                let shape = p["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
                (name, shape)
            })
            .collect()
    }
}

/// The loss: float32 PyTorch is within 2.1e-7 of the float64 reference (fixtures README); 1e-5
/// leaves room for a different (but correct) f32 summation order over a few hundred logits.
pub const LOSS_TOL: f64 = 1e-5;

/// Gradients, per tensor: `|g - ref| <= 1e-6 * max|ref| + 1e-3 * |ref|` — the check the fixtures
/// README gives, which float32 PyTorch passes with a wide margin. Returns the worst violation.
pub fn check_grad(name: &str, got: &[f32], reference: &[f64]) -> Result<(), String> {
    assert_eq!(got.len(), reference.len(), "{name}: length");
    let max_ref = reference.iter().fold(0.0f64, |m, &r| m.max(r.abs()));
    for (i, (&g, &r)) in got.iter().zip(reference).enumerate() {
        let tol = 1e-6 * max_ref + 1e-3 * r.abs();
        if (g as f64 - r).abs() > tol {
            return Err(format!("{name}[{i}]: got {g:e}, PyTorch {r:e} (tolerance {tol:e}, max|ref| {max_ref:e})"));
        }
    }
    Ok(())
}

/// A gradient that is zero in exact arithmetic (a key bias: the softmax ignores it), against the
/// fixture's rounding noise (~1e-19 in f64, ~1e-10 in float32 PyTorch): absolute, within 1e-4 of
/// the largest gradient of the weight beside it, `scale_ref` (fixtures README, "Gradients that are
/// zero in exact arithmetic"). A missing or wrong term would be of the order of that weight's.
pub fn check_zero_grad(name: &str, got: &[f32], reference: &[f64], scale_ref: &[f64]) -> Result<(), String> {
    let scale = scale_ref.iter().fold(0.0f64, |m, &r| m.max(r.abs()));
    check_abs(name, got, reference, 1e-4 * scale)
}

/// Weights after one Adam step: absolute 2e-5 (fixtures README: float32 drifts up to 1.2e-5 where
/// |g| is near eps; elsewhere the step is +-0.01 to within 1e-7).
pub const ADAM1_TOL: f64 = 2e-5;

/// Weights after one Adam step from zero moments (step 1, no weight decay), where the gradient that
/// drove the step was ours, `grad`, rather than PyTorch's `grad_ref`. The first step moves a weight
/// by `u(g) = lr * g / (|g| + eps)` (bias-corrected m = g, sqrt(v) = |g|), which near |g| ~ eps
/// turns rounding noise in g into a large change: g = 1.26e-8 with eps 1e-8 and lr 1e-2 moves the
/// step by 2.6e-5 when g changes by ~10%, a difference that `check_grad` rightly accepts (it is
/// 1e-6 of the tensor's largest gradient). So element i may differ by `tol` plus exactly what the
/// accepted gradient difference makes of the step: `|u(grad[i]) - u(grad_ref[i])|`.
pub fn check_adam1(
    name: &str,
    got: &[f32],
    reference: &[f64],
    grad: &[f32],
    grad_ref: &[f64],
    hp: &AdamParams,
    tol: f64,
) -> Result<(), String> {
    assert!(hp.step == 1 && hp.weight_decay == 0.0, "{name}: check_adam1 models the first step without decay");
    assert_eq!(got.len(), reference.len(), "{name}: length");
    assert_eq!(grad.len(), grad_ref.len(), "{name}: gradient length");
    let (lr, eps) = (hp.lr as f64, hp.eps as f64);
    let step = |g: f64| lr * g / (g.abs() + eps);
    for (i, ((&w, &r), (&g, &gr))) in got.iter().zip(reference).zip(grad.iter().zip(grad_ref)).enumerate() {
        let allowed = tol + (step(g as f64) - step(gr)).abs();
        if (w as f64 - r).abs() > allowed || !w.is_finite() {
            return Err(format!(
                "{name}[{i}]: got {w:e}, reference {r:e} (tolerance {allowed:e}: {tol:e} + the step's change from gradient {g:e} vs {gr:e})"
            ));
        }
    }
    Ok(())
}

/// One Adam step of `m` (no clipping) from the gradients it holds, checked against the fixture's
/// `adam1.*` weights with [`check_adam1`]; returns a message per failing tensor, labelled
/// `{label}adam1.{param}`.
pub fn adam1_failures<B: Backend, M: Model<B>>(b: &B, m: &mut M, f: &Fixture, label: &str, tol: f64) -> Vec<String> {
    let hp = f.adam_params();
    let grads: Vec<Vec<f32>> = m.params().iter().map(|p| p.grad.to_vec(b)).collect();
    let mut adam = Adam::new(b, m.params(), hp, 0.0);
    adam.step(b, m.params_mut());
    m.params()
        .iter()
        .zip(&grads)
        .filter_map(|(p, grad)| {
            let want = &f.get(&format!("adam1.{}", p.name)).data;
            let grad_ref = &f.get(&format!("grad.{}", p.name)).data;
            check_adam1(&format!("{label}adam1.{}", p.name), &p.value.to_vec(b), want, grad, grad_ref, &hp, tol).err()
        })
        .collect()
}

pub fn check_abs(name: &str, got: &[f32], reference: &[f64], tol: f64) -> Result<(), String> {
    assert_eq!(got.len(), reference.len(), "{name}: length");
    for (i, (&g, &r)) in got.iter().zip(reference).enumerate() {
        if (g as f64 - r).abs() > tol || !g.is_finite() {
            return Err(format!("{name}[{i}]: got {g:e}, reference {r:e} (tolerance {tol:e})"));
        }
    }
    Ok(())
}

/// Central finite differences of a scalar function at `x`, in f64 around an f32 point.
/// `f` must evaluate the loss in f32 on the CPU backend; `h` = 1e-2 trades truncation error
/// (O(h^2) times the third derivative) against f32 rounding (about 1e-7 * |loss| / h).
pub fn numeric_grad(x: &mut [f32], h: f32, mut f: impl FnMut(&[f32]) -> f64) -> Vec<f64> {
    (0..x.len())
        .map(|i| {
            let orig = x[i];
            x[i] = orig + h;
            let up = f(x);
            x[i] = orig - h;
            let down = f(x);
            x[i] = orig;
            (up - down) / (2.0 * h as f64)
        })
        .collect()
}

/// Deterministic test data in [-1, 1).
pub fn random_vec(seed: u64, n: usize) -> CpuBuf {
    let mut r = etude::rng::Rng::new(seed);
    (0..n).map(|_| r.uniform_range(-1.0, 1.0)).collect()
}

/// A model on the CPU with one random batch (inputs, then one target per target row, drawn from
/// `seed + 100`), for the whole-model gradient checks.
pub struct ModelCase {
    pub b: CpuBackend,
    pub model: AnyModel<CpuBackend>,
    pub x: Vec<u32>,
    pub y: Vec<u32>,
    pub batch: usize,
}

impl ModelCase {
    pub fn new(b: CpuBackend, model: AnyModel<CpuBackend>, batch: usize, seed: u64) -> ModelCase {
        let (v, t) = (model.vocab() as u64, model.window());
        let mut rng = Rng::new(seed + 100);
        let x = (0..batch * t).map(|_| (rng.next_u64() % v) as u32).collect();
        let y = (0..model.target_rows(batch)).map(|_| (rng.next_u64() % v) as u32).collect();
        ModelCase { b, model, x, y, batch }
    }

    /// Mean cross-entropy of the current weights with dropout `d`; with `backward`, also the
    /// gradients.
    pub fn loss(&mut self, d: Option<Dropout>, backward: bool) -> f64 {
        let (b, v) = (&self.b, self.model.vocab());
        let rows = self.model.target_rows(self.batch);
        self.model.set_dropout(d);
        self.model.forward(b, &self.x, self.batch);
        let mut dlogits = CpuBuf::zeros(rows * v);
        let mut stats = CpuBuf::zeros(2 * rows);
        b.softmax_xent(&self.model.logits().buf, &self.y, &mut dlogits, &mut stats, Xent { n: rows, v, grad_scale: 1.0 / rows as f32 });
        if backward {
            zero_grads(b, self.model.params_mut());
            self.model.backward(b, &self.x, &dlogits, self.batch);
        }
        stats.iter().step_by(2).map(|&v| v as f64).sum::<f64>() / rows as f64
    }

    pub fn grads(&self) -> Vec<Vec<f32>> {
        self.model.params().iter().map(|p| p.grad.to_vec(&self.b)).collect()
    }

    /// The logits of the last forward (its target rows only).
    pub fn logits(&self) -> Vec<f32> {
        self.model.logits().to_vec(&self.b)[..self.model.target_rows(self.batch) * self.model.vocab()].to_vec()
    }

    /// Every parameter's gradient with dropout `d` (up to 12 evenly spaced entries of each tensor)
    /// against central differences of the loss with the same mask: h = 1e-3 on the f32 forward
    /// (small, so that few ReLU kinks fall inside a step), loss in f64, tolerance 3e-4 + 3e-2
    /// relative (f32 rounding of the loss over 2h, ReLUs and the LSTM's fast tanh make it coarser
    /// than the single ops' check); a missing path, mask or scale is off by O(|g|). Panics naming
    /// `label`, the parameter and the entry; returns the analytic gradients and the entries checked.
    pub fn check_gradients(&mut self, d: Option<Dropout>, label: &str) -> (Vec<Vec<f32>>, usize) {
        self.loss(d, true);
        let analytic = self.grads();
        let mut checked = 0;
        for (pi, g) in analytic.iter().enumerate() {
            let pname = self.model.params()[pi].name.clone();
            let mut values = self.model.params()[pi].value.to_vec(&self.b);
            let (n, k) = (values.len(), 12.min(values.len()));
            for i in (0..k).map(|j| j * n / k) {
                let orig = values[i];
                let mut at = |v: f32, c: &mut ModelCase| {
                    values[i] = v;
                    c.model.params_mut()[pi].value.set(&c.b, &values);
                    c.loss(d, false)
                };
                let h = 1e-3;
                let numeric = (at(orig + h, self) - at(orig - h, self)) / (2.0 * h as f64);
                at(orig, self);
                let tol = 3e-4 + 3e-2 * numeric.abs();
                assert!(
                    (g[i] as f64 - numeric).abs() <= tol,
                    "{label}: {pname}[{i}]: analytic {} numeric {numeric} (tolerance {tol:e})",
                    g[i]
                );
                checked += 1;
            }
        }
        (analytic, checked)
    }
}

/// The metadata of a checkpoint for a model made in a test (not trained on any corpus):
/// `notechord` tokens over `vocab`, windows of `window`, default settings otherwise.
pub fn test_meta(version: &str, model: etude::model::any::ModelConfig, vocab: etude::music::tokens::Vocab, window: usize) -> etude::run::Meta {
    etude::run::Meta {
        etude_version: version.into(),
        model,
        data: etude::run::DataSpec {
            paths: Vec::new(),
            read: etude::music::midi::ReadOptions::default(),
            tokenizer: "notechord".into(),
            tokenizer_options: etude::music::tokens::TokenizerOptions::default(),
            data: etude::data::prepare::DataConfig { window, ..Default::default() },
        },
        vocab,
        optim: etude::run::OptimConfig::default(),
        progress: etude::run::Progress::default(),
        valid_pieces: Vec::new(),
        rng: Rng::new(0),
        run: Default::default(),
        copy: None,
    }
}

/// A loss and every parameter's gradient on the GPU against the CPU's (the same weights and
/// batch): the loss within 1e-4 relative, each gradient within 1e-3 of its tensor's largest
/// magnitude (at least 1e-3). `what` names the model.
pub fn assert_gpu_matches_cpu<G: Backend>(what: &str, losses: (f64, f64), c: &CpuBackend, cpu: &[&Param<CpuBackend>], g: &G, gpu: &[&Param<G>]) {
    let (lc, lg) = losses;
    assert!((lc - lg).abs() <= 1e-4 * lc.abs(), "{what}: loss cpu {lc} gpu {lg}");
    for (pc, pg) in cpu.iter().zip(gpu) {
        let (a, b) = (pc.grad.to_vec(c), pg.grad.to_vec(g));
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-3);
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= 1e-3 * scale, "{what} {}[{i}]: cpu {x} gpu {y}", pc.name);
        }
    }
}

/// Tiny piano-roll configurations, one per sequence model (the LSTM and the gated conv model).
pub fn tiny_roll_configs() -> Vec<RollConfig> {
    vec![
        RollConfig::Lstm { embed: 5, hidden: 4, layers: 2 },
        RollConfig::WavenetGated { residual: 3, skip: 4, kernel: 2, layers: 2, stacks: 1 },
    ]
}

/// Sequences of the given lengths of random frames (up to four distinct keys anywhere on the 88).
pub fn random_frames(rng: &mut Rng, lens: &[usize]) -> Vec<Vec<etude::data::roll::Frame>> {
    lens.iter()
        .map(|&n| {
            (0..n)
                .map(|_| {
                    let mut f: etude::data::roll::Frame = (0..rng.below(5)).map(|_| rng.below(etude::data::roll::KEYS) as u8).collect();
                    f.sort_unstable();
                    f.dedup();
                    f
                })
                .collect()
        })
        .collect()
}
