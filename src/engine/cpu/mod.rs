//! The CPU backend: the reference every shader is tested against, and the engine on machines
//! without a GPU.
//!
//! Each operation is written the plain way first; matrix products go through `matrixmultiply`'s
//! sgemm (which takes arbitrary strides, so transposes and shifted conv views cost nothing), and
//! loops that are large enough to be worth it are split across the cores with rayon. Work runs at
//! once, so `flush` has nothing to do.

/// Defines `fn $name(args)` running `$body` compiled three times: for AVX-512 (with AVX2 and
/// FMA), for AVX2 + FMA, and for the baseline target, picked at run time from what the CPU offers
/// (`is_x86_feature_detected!`, a cached flag). The body is the same portable Rust, so the results
/// are the same on every path (Rust never fuses `a * b + c` by itself); only the vector width of
/// the loops the compiler makes from it changes. For the element-wise passes over `[B*T, V]`
/// rows, which the baseline's 128-bit SSE2 code left compute-bound.
macro_rules! multiversion {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn portable($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                fn wide($($arg: $ty),*) {
                    portable($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    portable($($arg),*)
                }
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") && has!("fma") {
                    // SAFETY: the features `wide` is compiled for were detected just above.
                    return unsafe { wide($($arg),*) };
                }
                if has!("avx2") && has!("fma") {
                    // SAFETY: as above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

mod attention;
mod bias;
pub mod buf;
mod conv;
mod dropout;
mod elementwise;
mod embedding;
pub mod fastmath;
mod layer_norm;
mod lstm;
mod matmul;
mod nade;
mod optim;
mod rel_attention;
mod roll;
mod softmax_xent;

use super::{
    contract, Act, AdamStep, Attention, Backend, Conv1d, DropMask, LayerNorm, Lstm, LstmSaved, LstmSeqs, MatMul, Qkv, RelAttention, RelDecode,
    Strided, Xent,
};

pub use buf::CpuBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Below this many elements an element-wise loop stays on one thread. Handing work to a pool
/// thread that has gone to sleep costs tens of microseconds, more than a pass over 128K values
/// (batch-1 generation's `[128, 4H]` bias adds ran faster on one thread).
const PAR_MIN: usize = 1 << 17;

#[derive(Debug, Default)]
pub struct CpuBackend {
    /// [`Backend::set_rows_alone`]: how many asked for it (on while above 0).
    rows_alone: AtomicUsize,
    /// The LSTMs' packed `W_hh`, under the stamp of the weights they were packed from
    /// ([`CpuBuf::stamp`]) and the panel width: each is packed once per weight update, not on
    /// every forward (generation's one-token steps packed `[H, 4H]` per token).
    packs: Mutex<Vec<(PackKey, Arc<Vec<f32>>)>>,
    /// How many times a `W_hh` was packed ([`CpuBackend::packs_made`]).
    packs_made: AtomicUsize,
}

/// The stamp of a `W_hh` and a panel width.
type PackKey = ((u64, usize, usize, u64), usize);

/// Packed `W_hh` kept at most (the layers of a few LSTMs; the oldest goes first).
const PACKS_KEPT: usize = 16;

impl CpuBackend {
    pub fn new() -> Self {
        CpuBackend::default()
    }

    /// How many times this backend has packed an LSTM's `W_hh` (once per weight update and
    /// panel width; what shows that generation never repacks).
    pub fn packs_made(&self) -> usize {
        self.packs_made.load(Ordering::Relaxed)
    }
}

impl Clone for CpuBackend {
    fn clone(&self) -> Self {
        CpuBackend { rows_alone: AtomicUsize::new(self.rows_alone.load(Ordering::Relaxed)), ..CpuBackend::default() }
    }
}

impl Backend for CpuBackend {
    type Buf = CpuBuf;
    type Ids = Vec<u32>;

    fn name(&self) -> String {
        format!("cpu ({} threads)", rayon::current_num_threads())
    }

    fn alloc(&self, len: usize) -> CpuBuf {
        CpuBuf::zeros(len)
    }

    unsafe fn view(&self, buf: &CpuBuf, offset: usize, len: usize) -> Option<CpuBuf> {
        assert!(offset.is_multiple_of(self.view_align()), "cpu view: offset {offset} is not a multiple of {}", self.view_align());
        // SAFETY: `Backend::view`'s contract is `CpuBuf::view`'s.
        Some(unsafe { buf.view(offset, len) })
    }

    fn view_align(&self) -> usize {
        // One cache line: every tensor of an arena starts on its own (`buf::ALIGN` bytes).
        buf::ALIGN / 4
    }

    fn alloc_ids(&self, len: usize) -> Vec<u32> {
        vec![0; len]
    }

    fn write(&self, dst: &mut CpuBuf, src: &[f32]) {
        contract::write("write", src.len(), [dst.len()]);
        dst[..src.len()].copy_from_slice(src);
    }

    fn write_ids(&self, dst: &mut Vec<u32>, src: &[u32]) {
        contract::write("write_ids", src.len(), [dst.len()]);
        dst[..src.len()].copy_from_slice(src);
    }

    fn read(&self, src: &CpuBuf, len: usize) -> Vec<f32> {
        contract::read(len, [src.len()]);
        src[..len].to_vec()
    }

    fn flush(&self) {}

    fn fill(&self, x: &mut CpuBuf, n: usize, value: f32) {
        contract::fill(n, [x.len()]);
        elementwise::fill(x, n, value)
    }

    fn add(&self, x: &CpuBuf, y: &mut CpuBuf, n: usize) {
        contract::add(n, [x.len(), y.len()]);
        elementwise::add(x, y, n)
    }

    fn copy_strided(&self, src: &CpuBuf, dst: &mut CpuBuf, st: Strided) {
        contract::copy_strided(&st, [src.len(), dst.len()]);
        elementwise::copy_strided(src, dst, st)
    }

    fn act_fwd(&self, act: Act, x: &CpuBuf, y: &mut CpuBuf, n: usize) {
        contract::act_fwd(n, [x.len(), y.len()]);
        elementwise::act_fwd(act, x, y, n)
    }

    fn act_bwd(&self, act: Act, y: &CpuBuf, dy: &CpuBuf, dx: &mut CpuBuf, n: usize) {
        contract::act_bwd(n, [y.len(), dy.len(), dx.len()]);
        elementwise::act_bwd(act, y, dy, dx, n)
    }

    fn gated_fwd(&self, a: &CpuBuf, z: &mut CpuBuf, batch: usize, r: usize, t: usize) {
        contract::gated_fwd(batch, r, t, [a.len(), z.len()]);
        elementwise::gated_fwd(a, z, batch, r, t)
    }

    fn gated_bwd(&self, a: &CpuBuf, dz: &CpuBuf, da: &mut CpuBuf, batch: usize, r: usize, t: usize) {
        contract::gated_bwd(batch, r, t, [a.len(), dz.len(), da.len()]);
        elementwise::gated_bwd(a, dz, da, batch, r, t)
    }

    fn dropout(&self, x: &mut CpuBuf, n: usize, mask: DropMask) {
        contract::dropout(n, [x.len()]);
        dropout::dropout(x, n, mask)
    }

    fn transpose(&self, x: &CpuBuf, y: &mut CpuBuf, batch: usize, rows: usize, cols: usize) {
        contract::transpose(batch, rows, cols, [x.len(), y.len()]);
        elementwise::transpose(x, y, batch, rows, cols)
    }

    fn matmul(&self, a: &CpuBuf, b: &CpuBuf, c: &mut CpuBuf, mm: MatMul) {
        contract::matmul(&mm, [a.len(), b.len(), c.len()]);
        matmul::matmul(a, b, c, mm, self.rows_alone.load(Ordering::Relaxed) > 0)
    }

    fn set_rows_alone(&self, on: bool) {
        if on {
            self.rows_alone.fetch_add(1, Ordering::Relaxed);
        } else {
            // Never below 0: an unmatched `false` leaves the mode off.
            let _ = self.rows_alone.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    fn bias_add(&self, y: &mut CpuBuf, bias: &CpuBuf, outer: usize, channels: usize, inner: usize) {
        contract::bias_add(outer, channels, inner, [y.len(), bias.len()]);
        bias::bias_add(y, bias, outer, channels, inner)
    }

    fn bias_grad(&self, dy: &CpuBuf, dbias: &mut CpuBuf, outer: usize, channels: usize, inner: usize) {
        contract::bias_grad(outer, channels, inner, [dy.len(), dbias.len()]);
        bias::bias_grad(dy, dbias, outer, channels, inner)
    }

    fn embedding_fwd(&self, ids: &Vec<u32>, table: &CpuBuf, out: &mut CpuBuf, n: usize, e: usize) {
        contract::embedding_fwd(n, e, [ids.len(), table.len(), out.len()]);
        embedding::embedding_fwd(ids, table, out, n, e)
    }

    fn embedding_bwd(&self, ids: &Vec<u32>, dout: &CpuBuf, dtable: &mut CpuBuf, n: usize, e: usize) {
        contract::embedding_bwd(n, e, [ids.len(), dout.len(), dtable.len()]);
        embedding::embedding_bwd(ids, dout, dtable, n, e)
    }

    fn softmax_xent(&self, logits: &CpuBuf, targets: &Vec<u32>, dlogits: &mut CpuBuf, stats: &mut CpuBuf, x: Xent) {
        contract::softmax_xent(&x, [logits.len(), targets.len(), dlogits.len(), stats.len()]);
        softmax_xent::softmax_xent(logits, targets, dlogits, stats, x)
    }

    fn sum_squares(&self, x: &CpuBuf, n: usize, acc: &mut CpuBuf) {
        contract::sum_squares(n, [x.len(), acc.len()]);
        optim::sum_squares(x, n, acc)
    }

    fn clip_scale(&self, acc: &CpuBuf, max_norm: f32, scale: &mut CpuBuf) {
        contract::clip_scale([acc.len(), scale.len()]);
        optim::clip_scale(acc, max_norm, scale)
    }

    fn grad_norm_clip(&self, g: &CpuBuf, n: usize, max_norm: f32, acc: &mut CpuBuf, scale: &mut CpuBuf) {
        contract::grad_norm_clip(n, [g.len(), acc.len(), scale.len()]);
        acc[0] = 0.0;
        self.sum_squares(g, n, acc);
        self.clip_scale(acc, max_norm, scale);
    }

    fn adamw(&self, p: &mut CpuBuf, g: &CpuBuf, m: &mut CpuBuf, v: &mut CpuBuf, scale: &CpuBuf, step: AdamStep) {
        contract::adamw(&step, [p.len(), g.len(), m.len(), v.len(), scale.len()]);
        optim::adamw(p, g, m, v, scale, step)
    }

    fn decay(&self, p: &mut CpuBuf, n: usize, factor: f32) {
        contract::decay(n, [p.len()]);
        optim::decay(p, n, factor)
    }

    fn conv1d_fwd(&self, x: &CpuBuf, w: &CpuBuf, bias: &CpuBuf, y: &mut CpuBuf, c: Conv1d) {
        contract::conv1d_fwd(&c, [x.len(), w.len(), bias.len(), y.len()]);
        conv::forward(x, w, bias, y, c)
    }

    fn conv1d_bwd_input(&self, dy: &CpuBuf, w: &CpuBuf, dx: &mut CpuBuf, c: Conv1d, accumulate: bool) {
        contract::conv1d_bwd_input(&c, [dy.len(), w.len(), dx.len()]);
        conv::backward_input(dy, w, dx, c, accumulate)
    }

    fn conv1d_bwd_weight(&self, x: &CpuBuf, dy: &CpuBuf, dw: &mut CpuBuf, dbias: &mut CpuBuf, c: Conv1d) {
        contract::conv1d_bwd_weight(&c, [x.len(), dy.len(), dw.len(), dbias.len()]);
        conv::backward_weight(x, dy, dw, dbias, c)
    }

    fn attention_fwd(
        &self,
        q: &CpuBuf,
        k: &CpuBuf,
        v: &CpuBuf,
        out: &mut CpuBuf,
        p: &mut CpuBuf,
        a: Attention,
    ) {
        contract::attention_fwd(&a, [q.len(), k.len(), v.len(), out.len(), p.len()]);
        attention::forward(q, k, v, out, p, a)
    }

    fn attention_bwd(&self, qkv: Qkv<&CpuBuf>, p: &CpuBuf, dout: &CpuBuf, grads: Qkv<&mut CpuBuf>, a: Attention) {
        let (Qkv { q, k, v }, Qkv { q: dq, k: dk, v: dv }) = (qkv, grads);
        contract::attention_bwd(&a, [q.len(), k.len(), v.len(), p.len(), dout.len(), dq.len(), dk.len(), dv.len()]);
        let grads = Qkv { q: &mut dq[..], k: &mut dk[..], v: &mut dv[..] };
        attention::backward(Qkv { q: &q[..], k: &k[..], v: &v[..] }, p, dout, grads, a)
    }

    fn layer_norm_fwd(&self, x: &CpuBuf, weight: &CpuBuf, bias: &CpuBuf, y: &mut CpuBuf, stats: &mut CpuBuf, ln: LayerNorm) {
        contract::layer_norm_fwd(&ln, [x.len(), weight.len(), bias.len(), y.len(), stats.len()]);
        layer_norm::forward(x, weight, bias, y, stats, ln)
    }

    fn layer_norm_bwd(
        &self,
        x: &CpuBuf,
        weight: &CpuBuf,
        stats: &CpuBuf,
        dy: &CpuBuf,
        dx: &mut CpuBuf,
        dweight: &mut CpuBuf,
        dbias: &mut CpuBuf,
        ln: LayerNorm,
    ) {
        contract::layer_norm_bwd(&ln, [x.len(), weight.len(), stats.len(), dy.len(), dx.len(), dweight.len(), dbias.len()]);
        layer_norm::backward(x, weight, stats, dy, dx, dweight, dbias, ln)
    }

    fn gelu_fwd(&self, x: &CpuBuf, y: &mut CpuBuf, n: usize) {
        contract::gelu("gelu_fwd", n, &[x.len(), y.len()]);
        elementwise::gelu_fwd(x, y, n)
    }

    fn gelu_bwd(&self, x: &CpuBuf, dy: &CpuBuf, dx: &mut CpuBuf, n: usize) {
        contract::gelu("gelu_bwd", n, &[x.len(), dy.len(), dx.len()]);
        elementwise::gelu_bwd(x, dy, dx, n)
    }

    fn rel_attention_fwd(&self, qkv: &CpuBuf, rel: &CpuBuf, out: &mut CpuBuf, p: &mut CpuBuf, a: RelAttention) {
        contract::rel_attention_fwd(&a, [qkv.len(), rel.len(), out.len(), p.len()]);
        rel_attention::forward(qkv, rel, out, p, a)
    }

    fn rel_attention_bwd(&self, qkv: &CpuBuf, rel: &CpuBuf, p: &CpuBuf, dout: &CpuBuf, dqkv: &mut CpuBuf, drel: &mut CpuBuf, a: RelAttention) {
        contract::rel_attention_bwd(&a, [qkv.len(), rel.len(), p.len(), dout.len(), dqkv.len(), drel.len()]);
        rel_attention::backward(qkv, rel, p, dout, dqkv, drel, a)
    }

    fn rel_attention_decode(&self, qkv: &CpuBuf, kcache: &CpuBuf, vcache: &CpuBuf, rel: &CpuBuf, out: &mut CpuBuf, a: RelDecode) {
        contract::rel_attention_decode(&a, [qkv.len(), kcache.len(), vcache.len(), rel.len(), out.len()]);
        rel_attention::decode(qkv, kcache, vcache, rel, out, a)
    }

    fn lstm_fwd(&self, xw: &CpuBuf, w_hh: &CpuBuf, h0: &CpuBuf, c0: &CpuBuf, out: LstmSeqs<&mut CpuBuf>, l: Lstm) {
        let LstmSeqs { hs, cs, gates } = out;
        contract::lstm_fwd(&l, [xw.len(), w_hh.len(), h0.len(), c0.len(), hs.len(), cs.len(), gates.len()]);
        let packed = |nr: usize| {
            let key = (w_hh.stamp(), nr);
            let mut packs = self.packs.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, p)) = packs.iter().find(|(k, _)| *k == key) {
                return p.clone();
            }
            // Older packs of the same weights are stale now.
            packs.retain(|((k, _), _)| (k.0, k.1, k.2) != (key.0 .0, key.0 .1, key.0 .2));
            let p = Arc::new(lstm::pack_w_hh(w_hh, l.hidden, nr));
            self.packs_made.fetch_add(1, Ordering::Relaxed);
            if packs.len() >= PACKS_KEPT {
                packs.remove(0);
            }
            packs.push((key, p.clone()));
            p
        };
        lstm::forward_packed(xw, &packed, h0, c0, LstmSeqs { hs: &mut hs[..], cs: &mut cs[..], gates: &mut gates[..] }, l)
    }

    fn lstm_bwd(&self, w_hh: &CpuBuf, saved: LstmSaved<'_, CpuBuf>, dhs: &CpuBuf, dxw: &mut CpuBuf, dw_hh: &mut CpuBuf, l: Lstm) {
        let LstmSaved { h0, c0, seqs: LstmSeqs { hs, cs, gates } } = saved;
        let lens = [w_hh.len(), h0.len(), c0.len(), hs.len(), cs.len(), gates.len(), dhs.len(), dxw.len(), dw_hh.len()];
        contract::lstm_bwd(&l, lens);
        let saved = LstmSaved { h0: &h0[..], c0: &c0[..], seqs: LstmSeqs { hs: &hs[..], cs: &cs[..], gates: &gates[..] } };
        lstm::backward(w_hh, saved, dhs, dxw, dw_hh, l)
    }
}
