//! Piano-roll mode on the command line (issue 14): `etude train` with a `*.pianoroll.json.gz`
//! (or `--tokenizer pianoroll` on MIDI files), and `etude eval` / `etude generate` with a
//! piano-roll checkpoint. The token commands dispatch here before doing anything else.

use super::backend::{BackendArgs, Engine};
use super::eval::EvalArgs;
use super::generate::GenArgs;
use super::train::TrainArgs;
use etude::files::atomic_write;
use etude::run::checkpoint::Checkpoint;
use etude::data::corpus::load_corpus;
use etude::engine::roll::{sigmoid, RollOps};
use etude::engine::gpu::Precision;
use etude::music::midi::{read_midi, write_midi, ReadOptions, WriteOptions};
use etude::rng::Rng;
use etude::data::roll::{is_roll_path, notes_to_roll, read_roll_file, roll_to_notes, Frame, Sequence, KEYS};
use etude::model::roll::RollConfig;
use etude::model::roll_nade::RollHead;
use etude::train::roll_recipe::{default_config, default_head, default_model, default_settings_with, DataKind, NADE_HIDDEN};
use etude::train::roll::{evaluate, is_roll_checkpoint, meta_of, model_from, RollMeta};
use etude::train::roll_kind::{read_state, train_roll, RollData, RollOutput, RollStart};
use etude::train::run_loop::RESUME_STATE;
use etude::run::schedule::{self, LrSchedule};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Whether `etude train` runs in piano-roll mode: a `*.pianoroll.json(.gz)` among `--data`,
/// `--tokenizer pianoroll`, or `--resume` of a piano-roll run (its folder holds the resume state).
pub fn wants_roll(args: &TrainArgs) -> bool {
    args.data.tokenizer == "pianoroll"
        || args.data_paths.iter().any(|p| is_roll_path(p))
        || (args.resume && args.out.as_ref().is_some_and(|o| o.join(RESUME_STATE).exists()))
}

/// Options of `etude train` that piano-roll mode does not have.
const NOT_IN_ROLL_MODE: [(&str, &str); 15] = [
    ("val_targets", "--val-targets"),
    ("keep_duplicates", "--keep-duplicates"),
    ("sample_length", "--sample-length"),
    ("preset", "--preset"),
    ("stride", "--stride"),
    ("min_count", "--min-count"),
    ("velocity_bins", "--velocity-bins"),
    ("steps_per_epoch", "--steps-per-epoch"),
    ("dense", "--dense"),
    ("channels", "--channels"),
    ("attention", "--attention"),
    ("attention_dim", "--attention-dim"),
    ("width", "--width"),
    ("heads", "--heads"),
    ("ff", "--ff"),
];

/// The data of a piano-roll run: train and valid sequences, the grid, a description.
struct RollRun {
    train: Vec<Sequence>,
    valid: Vec<Sequence>,
    frame_quarters: f64,
    data: String,
    kind: DataKind,
}

/// Where a piano-roll run's data comes from and how it is read: kept in its resume state, so that
/// `--resume` reads the same sequences.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct RollSource {
    /// As given (a piano-roll file alone, or MIDI files and folders).
    paths: Vec<PathBuf>,
    /// The same, absolute (what `--resume` reads, from any directory).
    absolute: Vec<PathBuf>,
    /// `--steps-per-quarter` when given.
    steps_per_quarter: Option<u32>,
    /// MIDI files: the fraction of the pieces held out, and the seed of the split.
    val_fraction: f64,
    seed: u64,
    all_parts: bool,
    sustain: bool,
    /// The GPU precision the run trains at (kept by `--resume`, as a token run keeps its own).
    #[serde(default)]
    precision: Option<String>,
}

impl RollSource {
    fn of(args: &TrainArgs, explicit: &dyn Fn(&str) -> bool) -> Result<RollSource, String> {
        if let Some(first) = args.data_paths.iter().find(|p| is_roll_path(p)) {
            if args.data_paths.len() > 1 {
                return Err(format!("--data {}: a piano-roll file is the whole data set; give it alone", first.display()));
            }
            if explicit("val_fraction") {
                return Err(format!("--val-fraction: {} has its own valid split", first.display()));
            }
        }
        Ok(RollSource {
            paths: args.data_paths.clone(),
            absolute: args.data_paths.iter().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())).collect(),
            steps_per_quarter: explicit("steps_per_quarter").then_some(args.data.steps_per_quarter),
            val_fraction: args.val_fraction,
            seed: args.seed,
            all_parts: args.data.all_parts,
            sustain: args.data.sustain,
            precision: args.precision.clone(),
        })
    }
}

/// The sequences of `src`, reading `paths` (the source's own, or the same absolute).
fn load_train_data(src: &RollSource, paths: &[PathBuf]) -> Result<RollRun, String> {
    if let Some(first) = paths.iter().find(|p| is_roll_path(p)) {
        let d = read_roll_file(first)?;
        let (train, valid) = (d.split("train")?.to_vec(), d.split("valid")?.to_vec());
        let kind = DataKind::from_name(&first.to_string_lossy());
        let frame_quarters = match src.steps_per_quarter {
            Some(spq) => 1.0 / spq.max(1) as f64,
            None => kind.frame_quarters().unwrap_or(0.5),
        };
        let data = std::fs::canonicalize(first).unwrap_or_else(|_| first.to_path_buf()).display().to_string();
        return Ok(RollRun { train, valid, frame_quarters, data, kind });
    }
    // MIDI files on a grid (default 4 steps per quarter: sixteenth notes).
    let spq = src.steps_per_quarter.unwrap_or(4);
    if spq == 0 {
        return Err("--steps-per-quarter must be at least 1".into());
    }
    let corpus = load_corpus(paths, &ReadOptions { all_parts: src.all_parts, sustain: src.sustain });
    for s in &corpus.skipped {
        eprintln!("skipped {}: {}", s.name, s.cause);
    }
    let mut pieces: Vec<Sequence> =
        corpus.pieces.iter().map(|p| notes_to_roll(&p.piece.notes, spq)).filter(|r| r.len() >= 2).collect();
    if pieces.len() < 2 {
        return Err(format!("--tokenizer pianoroll: {} usable pieces, at least 2 are needed (one to validate on)", pieces.len()));
    }
    Rng::new(src.seed).shuffle(&mut pieces);
    let n_valid = ((pieces.len() as f64 * src.val_fraction).round() as usize).clamp(1, pieces.len() - 1);
    let valid = pieces.split_off(pieces.len() - n_valid);
    let names: Vec<String> = src.paths.iter().map(|p| p.display().to_string()).collect();
    Ok(RollRun {
        train: pieces,
        valid,
        frame_quarters: 1.0 / spq as f64,
        data: format!("{} (MIDI, {spq} steps per quarter)", names.join(" ")),
        kind: DataKind::Other,
    })
}

/// `etude train` in piano-roll mode.
pub fn train(args: TrainArgs, explicit: &dyn Fn(&str) -> bool) -> Result<(), String> {
    for (id, flag) in NOT_IN_ROLL_MODE {
        if explicit(id) || (id == "preset" && args.preset.is_some()) {
            return Err(format!("{flag} does not apply in piano-roll mode"));
        }
    }
    // Ctrl-C ends the run after its current step, with a state --resume continues from.
    etude::train::catch_interrupts();
    if args.resume {
        return resume(args, explicit);
    }
    let source = RollSource::of(&args, explicit)?;
    let run = load_train_data(&source, &source.paths)?;
    let model = if explicit("model") { args.model.as_str() } else { default_model(run.kind) };
    let model = match model {
        "lstm" | "lstm-seq" if args.kernel.is_some() => return Err("--kernel applies to --model wavenet-gated".into()),
        "lstm" | "lstm-seq" => "lstm",
        "wavenet-gated" => "wavenet-gated",
        other => return Err(format!("--model {other} has no piano-roll form (lstm or wavenet-gated)")),
    };
    let mut cfg = default_config(run.kind, model);
    match &mut cfg {
        RollConfig::Lstm { embed, hidden, layers } => {
            *embed = args.embed.unwrap_or(*embed);
            *hidden = args.hidden.unwrap_or(*hidden);
            *layers = args.layers.unwrap_or(*layers);
        }
        RollConfig::WavenetGated { residual, skip, kernel, layers, stacks } => {
            *kernel = args.kernel.unwrap_or(*kernel);
            *residual = args.residual.or(args.embed).unwrap_or(*residual);
            *skip = args.skip.unwrap_or(*skip);
            *layers = args.layers.unwrap_or(*layers);
            *stacks = args.stacks.unwrap_or(*stacks);
        }
    }
    cfg.validate()?;
    let recipe = default_head(run.kind, model);
    // --head nade, or the recipe's NADE; --nade-hidden beside a sigmoid head is an error.
    let nade = match args.head.as_deref() {
        Some(name) => name == "nade",
        None => !recipe.is_sigmoid(),
    };
    let head = if nade {
        let hidden = match recipe {
            RollHead::Nade { hidden } => hidden,
            RollHead::Sigmoid => NADE_HIDDEN,
        };
        RollHead::parse("nade", args.nade_hidden.unwrap_or(hidden))?
    } else if args.nade_hidden.is_some() {
        return Err("--nade-hidden applies to --head nade".into());
    } else {
        RollHead::Sigmoid
    };
    let mut s = default_settings_with(run.kind, model, head);
    // The options given on the command line replace the recipe's values (same names in both).
    macro_rules! given {
        ($($field:ident),*) => {
            $(if explicit(stringify!($field)) {
                s.$field = args.$field;
            })*
        };
    }
    given!(epochs, batch, window, lr, min_lr, warmup_steps, clip, dropout, weight_decay, adamw_decay, patience, seed, transpose);
    if explicit("lr_schedule") {
        s.lr_schedule = args.lr_schedule.parse::<LrSchedule>()?;
    }
    schedule::validate(s.dropout, s.adamw_decay, s.lr, s.min_lr)?;
    let out = args.out.clone().unwrap_or_else(|| super::train::default_out(&format!("roll-{model}")));
    let _lock = etude::files::RunLock::acquire(&out)?;
    if out.join("last.safetensors").exists() {
        return Err(format!("{} already holds a run; continue it with --resume, or choose another --out", out.display()));
    }
    let precision = args.precision.as_deref().map(str::parse::<Precision>).transpose()?.unwrap_or_default();
    let (frames, _) = etude::data::roll::count_frames(&run.train);
    eprintln!(
        "piano-roll {model}{}: {} parameters; {} train sequences ({frames} frames), {} valid; window {}, batch {}, {} epochs, lr {} ({}), dropout {}",
        describe_head(head),
        cfg.n_params() + head.extra_params(&cfg),
        run.train.len(),
        run.valid.len(),
        s.window,
        s.batch,
        s.epochs,
        s.lr,
        s.lr_schedule.name(),
        s.dropout
    );
    let source = serde_json::to_value(&source).map_err(|e| e.to_string())?;
    let start = RollStart::New { config: cfg, head, settings: s, source };
    train_on(&args.backend, precision, start, &run, &out, Some(args.checkpoint_every.unwrap_or(50)))
}

/// `etude train --resume` of a piano-roll run: its state, model, settings and data from the
/// folder's resume state.
fn resume(args: TrainArgs, explicit: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let out = args.out.clone().ok_or("--resume: give --out, the folder of the run to continue")?;
    let _lock = etude::files::RunLock::acquire(&out)?;
    let resumed = read_state(&out)?;
    let meta = &resumed.state.model;
    let source: RollSource = serde_json::from_value(resumed.state.source.clone())
        .map_err(|e| format!("{}: damaged piano-roll resume state ({e})", out.join(RESUME_STATE).display()))?;
    // The model is the run's: options that would change it are refused.
    for (id, flag) in [("head", "--head"), ("nade_hidden", "--nade-hidden"), ("kernel", "--kernel")] {
        if explicit(id) {
            return Err(format!("{flag}: a resumed run keeps its own model (--resume)"));
        }
    }
    let mut run = load_train_data(&source, &source.absolute)?;
    run.frame_quarters = meta.frame_quarters;
    let epochs = if explicit("epochs") { args.epochs } else { meta.settings.epochs };
    eprintln!(
        "resuming the piano-roll run in {} ({}{}) after epoch {}, until epoch {epochs}",
        out.display(),
        meta.config.name(),
        describe_head(meta.head),
        resumed.state.progress.epoch
    );
    let precision = source.precision.as_deref().map(str::parse::<Precision>).transpose()?.unwrap_or_default();
    let start = RollStart::Resume { resumed: Box::new(resumed), epochs };
    train_on(&args.backend, precision, start, &run, &out, args.checkpoint_every)
}

/// " + NADE head of H", or nothing for the sigmoid head.
fn describe_head(head: RollHead) -> String {
    match head {
        RollHead::Nade { hidden } => format!(" + NADE head of {hidden}"),
        RollHead::Sigmoid => String::new(),
    }
}

/// Train on `backend` and say where the best epoch is.
fn train_on(
    backend: &BackendArgs,
    precision: Precision,
    start: RollStart,
    run: &RollRun,
    out: &Path,
    checkpoint_every: Option<usize>,
) -> Result<(), String> {
    use std::io::IsTerminal;
    let data = RollData { train: &run.train, valid: &run.valid, frame_quarters: run.frame_quarters, data: &run.data };
    let output = RollOutput { out, checkpoint_every, progress_bar: std::io::stderr().is_terminal() };
    let r = match backend.open_with_precision(precision)? {
        Engine::Cpu(b) => train_roll(&b, start, &data, &output),
        Engine::Gpu(g) => train_roll(g.as_ref(), start, &data, &output),
    }?;
    eprintln!(
        "best valid NLL {:.4} nats/frame at epoch {} of {} ({} parameters, {:.1} min); checkpoints in {}",
        r.best_valid,
        r.best_epoch,
        r.epochs_run,
        r.params,
        r.seconds / 60.0,
        out.display()
    );
    Ok(())
}

/// The piano-roll checkpoint among what a command read (`None` for a token checkpoint, or one that
/// could not be read: the token path reports that).
fn roll_checkpoint(read: &Result<Checkpoint, String>) -> Option<&Checkpoint> {
    read.as_ref().ok().filter(|c| is_roll_checkpoint(c))
}

/// `etude eval` in piano-roll mode: `Some` when the checkpoint (`read`: `--model` read once by the
/// caller) or the data is piano-roll.
pub fn eval(args: &EvalArgs, read: &Result<Checkpoint, String>) -> Option<Result<(), String>> {
    let roll_data = args.data.iter().find(|p| is_roll_path(p));
    let is_roll = read.as_ref().ok().map(is_roll_checkpoint);
    match (is_roll, roll_data) {
        (Some(true), _) => roll_checkpoint(read).map(|ck| eval_roll(args, ck)),
        (Some(false), Some(d)) => Some(Err(format!(
            "{}: a token model's checkpoint cannot score piano-roll data ({}); train a piano-roll model with --data {1}",
            args.checkpoint.display(),
            d.display()
        ))),
        (_, None) if args.split.is_some() => Some(Err("--split applies to piano-roll data (--data FILE.pianoroll.json.gz)".into())),
        _ => None,
    }
}

/// The sequences `etude eval` scores: a split of a piano-roll file, or MIDI files on the
/// checkpoint's grid.
fn eval_sequences(args: &EvalArgs, meta: &RollMeta) -> Result<(Vec<Sequence>, String), String> {
    let split = args.split.as_deref().unwrap_or("valid");
    let data: Vec<PathBuf> = if args.data.is_empty() { vec![PathBuf::from(&meta.data)] } else { args.data.clone() };
    if let Some(p) = data.iter().find(|p| is_roll_path(p)) {
        if data.len() > 1 {
            return Err(format!("--data {}: a piano-roll file is scored alone", p.display()));
        }
        let d = read_roll_file(p)?;
        return Ok((d.split(split)?.to_vec(), format!("{} [{split}]", p.display())));
    }
    if args.data.is_empty() {
        return Err(format!("{}: trained on MIDI files; give --data", args.checkpoint.display()));
    }
    if args.split.is_some() {
        return Err("--split applies to piano-roll data (--data FILE.pianoroll.json.gz), not MIDI files".into());
    }
    let spq = (1.0 / meta.frame_quarters).round().max(1.0) as u32;
    let corpus = load_corpus(&data, &ReadOptions::default());
    for s in &corpus.skipped {
        eprintln!("skipped {}: {}", s.name, s.cause);
    }
    if corpus.pieces.is_empty() {
        return Err("--data: no usable MIDI file".into());
    }
    let seqs = corpus.pieces.iter().map(|p| notes_to_roll(&p.piece.notes, spq)).collect();
    Ok((seqs, format!("{} MIDI files at {spq} steps per quarter", corpus.pieces.len())))
}

fn eval_roll(args: &EvalArgs, ck: &Checkpoint) -> Result<(), String> {
    if args.max_windows > 0 || args.dump_windows.is_some() || args.val_targets.is_some() {
        return Err("--max-windows, --val-targets and --dump-windows apply to token checkpoints; a piano-roll eval scores every frame".into());
    }
    let meta = meta_of(ck, &args.checkpoint)?;
    let (seqs, what) = eval_sequences(args, &meta)?;
    let longest = seqs.iter().map(|s| s.len().saturating_sub(1)).max().unwrap_or(1).max(1);
    let cap = (args.batch.max(1) * 160).max(longest);
    let origin = args.checkpoint.display().to_string();
    let report = match args.backend.open()? {
        Engine::Cpu(b) => {
            let mut m = model_from(&b, &meta, ck, cap, &origin)?;
            evaluate(&b, m.as_mut(), &seqs)
        }
        Engine::Gpu(g) => {
            let mut m = model_from(g.as_ref(), &meta, ck, cap, &origin)?;
            evaluate(g.as_ref(), m.as_mut(), &seqs)
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&report).map_err(|e| e.to_string())?);
    } else {
        println!(
            "piano-roll {}{} on {what}: NLL {:.4} nats/frame over {} predicted frames of {} sequences, accuracy {:.4}",
            meta.config.name(),
            describe_head(meta.head),
            report.nll_per_frame,
            report.frames,
            report.sequences,
            report.accuracy
        );
    }
    Ok(())
}

/// `etude generate` from a piano-roll checkpoint (`None` for a token checkpoint); `read`: `--model`
/// read once by the caller.
pub fn generate(args: &GenArgs, read: &Result<Checkpoint, String>) -> Option<Result<(), String>> {
    match roll_checkpoint(read) {
        Some(ck) => Some(generate_roll(args, ck)),
        _ if args.max_keys > 0 || args.frame_quarters.is_some() => {
            Some(Err("--max-keys and --frame-quarters apply to piano-roll checkpoints".into()))
        }
        _ => None,
    }
}

/// The prime: a MIDI file on the checkpoint's grid, or the first frames of a sequence of a
/// piano-roll file (chosen by the seed); none: one silent frame.
fn prime_frames(args: &GenArgs, spq: u32) -> Result<Sequence, String> {
    let Some(p) = &args.prime else { return Ok(vec![Vec::new()]) };
    if is_roll_path(p) {
        let d = read_roll_file(p)?;
        let seqs: Vec<&Sequence> = ["train", "valid", "test"].iter().filter_map(|s| d.split(s).ok()).flatten().collect();
        if seqs.is_empty() {
            return Err(format!("{}: no sequence to prime from", p.display()));
        }
        let s = seqs[Rng::new(args.seed).below(seqs.len())];
        return Ok(s[..s.len().min(16)].to_vec());
    }
    let bytes = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let piece = read_midi(&bytes, &ReadOptions::default()).map_err(|e| format!("{}: {e}", p.display()))?;
    let roll = notes_to_roll(&piece.notes, spq);
    if roll.is_empty() {
        return Err(format!("{}: no notes in A0..C8 to prime from", p.display()));
    }
    Ok(roll)
}

/// Draw one frame from the logits of the last row: each key on with probability
/// `sigmoid(x / temperature)`, at most `max_keys` (the most probable of those drawn).
pub fn sample_frame(logits: &[f32], temperature: f32, max_keys: usize, rng: &mut Rng) -> Frame {
    let mut on: Vec<(f32, u8)> = logits
        .iter()
        .enumerate()
        .filter_map(|(k, &x)| {
            let p = sigmoid(x / temperature);
            (rng.uniform() < p as f64).then_some((p, k as u8))
        })
        .collect();
    if max_keys > 0 && on.len() > max_keys {
        on.sort_by(|a, b| b.0.total_cmp(&a.0));
        on.truncate(max_keys);
    }
    let mut f: Frame = on.into_iter().map(|(_, k)| k).collect();
    f.sort_unstable();
    f
}

fn generate_roll(args: &GenArgs, ck: &Checkpoint) -> Result<(), String> {
    etude::music::midi::check_tempo(args.tempo)?;
    if args.seconds.is_some() || args.greedy || args.top_k > 0 || args.wav || args.sliding_window || args.incremental {
        return Err(
            "--seconds, --greedy, --top-k, --wav, --sliding-window and --incremental apply to token checkpoints; a piano-roll model draws --length frames"
                .into(),
        );
    }
    let meta = meta_of(ck, &args.checkpoint)?;
    let fq = args.frame_quarters.unwrap_or(meta.frame_quarters);
    if !(fq > 0.0 && fq.is_finite()) {
        return Err(format!("--frame-quarters must be positive, not {fq}"));
    }
    let outs = outputs(args);
    let inputs: Vec<(&Path, &str)> = std::iter::once((args.checkpoint.as_path(), "the checkpoint --model reads"))
        .chain(args.prime.as_deref().map(|p| (p, "the --prime file")))
        .collect();
    for p in &outs {
        etude::files::check_output(p, "--out", args.force, &inputs)?;
    }
    let spq = (1.0 / meta.frame_quarters).round().max(1.0) as u32;
    let prime = prime_frames(args, spq)?;
    let context = meta.config.receptive_field().unwrap_or(usize::MAX);
    let cap = (prime.len() + args.length).min(context).max(1);
    let origin = args.checkpoint.display().to_string();
    let pieces = match args.backend.open()? {
        Engine::Cpu(b) => draw_all(&b, &meta, ck, cap, &origin, &prime, args)?,
        Engine::Gpu(g) => draw_all(g.as_ref(), &meta, ck, cap, &origin, &prime, args)?,
    };
    for (roll, path) in pieces.iter().zip(&outs) {
        let notes = roll_to_notes(roll, fq, 80);
        let opts = WriteOptions { bpm: args.tempo, ..WriteOptions::default() };
        let bytes = write_midi(&notes, &opts);
        atomic_write(path, &bytes)?;
        println!("wrote {} ({} frames, {} notes)", path.display(), roll.len(), etude::generate::written_notes(&bytes).len());
    }
    Ok(())
}

fn outputs(args: &GenArgs) -> Vec<PathBuf> {
    if args.count <= 1 {
        return vec![args.out.clone()];
    }
    let stem = args.out.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "generated".into());
    let ext = args.out.extension().map(|s| s.to_string_lossy().to_string()).unwrap_or_else(|| "mid".into());
    (1..=args.count).map(|i| args.out.with_file_name(format!("{stem}-{i}.{ext}"))).collect()
}

/// `--count` pieces of `--length` frames each after the prime (kept with --include-prime),
/// composed together in batches of up to [`etude::generate::BATCH`]: every step reruns the model
/// once over the last `cap` frames of all the pieces of a batch (one item each). Piece `i` draws
/// from its own stream ([`etude::generate::piece_seed`]), and each row of every product is computed alone
/// ([`etude::engine::Backend::set_rows_alone`]), so each piece is the one its seed draws alone
/// (bit for bit on the CPU).
fn draw_all<B: RollOps + 'static>(
    b: &B,
    meta: &RollMeta,
    ck: &Checkpoint,
    cap: usize,
    origin: &str,
    prime: &[Frame],
    args: &GenArgs,
) -> Result<Vec<Sequence>, String> {
    let count = args.count.max(1);
    let batch = count.min(etude::generate::BATCH);
    let mut model = model_from(b, meta, ck, batch * cap, origin)?;
    let mut ids = b.alloc_ids(batch * cap * KEYS);
    let mut pieces = Vec::new();
    b.set_rows_alone(true);
    for first in (0..count).step_by(batch) {
        let n = batch.min(count - first);
        let mut rngs: Vec<Rng> = (first..first + n).map(|i| Rng::new(etude::generate::piece_seed(args.seed, i))).collect();
        let mut hists: Vec<Sequence> = vec![prime.to_vec(); n];
        for _ in 0..args.length {
            // The model reruns over the last `cap` frames (its receptive field, or all of them);
            // the pieces' histories have one length.
            let len = hists[0].len().min(cap);
            let ctxs: Vec<&[Frame]> = hists.iter().map(|h| &h[h.len() - len..]).collect();
            let slots = ctxs.iter().flat_map(|c| c.iter().map(Vec::len)).max().unwrap_or(0).max(1);
            let mut host = vec![u32::MAX; n * len * slots];
            for (item, ctx) in ctxs.iter().enumerate() {
                for (t, f) in ctx.iter().enumerate() {
                    for (j, &k) in f.iter().enumerate() {
                        host[(item * len + t) * slots + j] = k as u32;
                    }
                }
            }
            b.write_ids(&mut ids, &host);
            model.forward(b, &ids, slots, n, len);
            // Each piece's last row; a joint head's frames read back once for the whole batch.
            let rows: Vec<usize> = (0..n).map(|item| item * len + len - 1).collect();
            match model.joint_frames(b, &rows) {
                Some(joints) => {
                    for ((hist, rng), joint) in hists.iter_mut().zip(&mut rngs).zip(joints) {
                        hist.push(joint.sample(args.temperature, args.max_keys, rng));
                    }
                }
                None => {
                    let all = b.read(model.logits(), n * len * KEYS);
                    for ((hist, rng), row) in hists.iter_mut().zip(&mut rngs).zip(rows) {
                        hist.push(sample_frame(&all[row * KEYS..(row + 1) * KEYS], args.temperature, args.max_keys, rng));
                    }
                }
            }
        }
        let skip = if args.include_prime || args.prime.is_none() { usize::from(args.prime.is_none()) } else { prime.len() };
        pieces.extend(hists.into_iter().map(|h| h[skip..].to_vec()));
    }
    b.set_rows_alone(false);
    Ok(pieces)
}
