//! One argument contract per op: the buffer lengths an op's sizes need, checked by one function per
//! op, named after it, which BOTH backends call before they run (the CPU at the top of each
//! operation, the GPU at the top of its `record_*` function, before anything is recorded), so a
//! kernel can trust its indices and a wrong size reads the same on either backend:
//!
//! ```text
//! lstm_fwd: buffer `h0` holds 100 elements, expected batch 4 x hidden 32 = 128
//! ```
//!
//! A buffer may be longer than its sizes need (an arena sized for batch 128 serves batch 1), never
//! shorter. Each function takes the op's sizes and the lengths of its buffers in the order the
//! [`Backend`](super::Backend) method takes them. The checks are O(1) per call (a few products and
//! comparisons; the message is only formatted on failure). What one backend alone needs stays
//! there: the GPU's element types (`check_same_elem`, `check_f32`) and kernel limits, the CPU's
//! checks of token ids against the table (data, not sizes).

use super::nade::Nade;
use super::args::{AdamStep, Bag, Bce, LayerNorm, RelAttention, RelDecode, Strided, Xent};
use super::{Attention, Conv1d, Lstm, MatMul};

/// Panics unless `len >= want`, naming the op, the buffer and how `want` is made.
#[inline]
fn need(op: &str, what: &str, len: usize, want: usize, how: impl FnOnce() -> String) {
    if len < want {
        short(op, what, len, want, &how());
    }
}

#[cold]
#[inline(never)]
fn short(op: &str, what: &str, len: usize, want: usize, how: &str) -> ! {
    panic!("{op}: buffer `{what}` holds {len} elements, expected {how} = {want}")
}

/// Panics unless `len` holds at least one value (a norm's accumulator, a clip scale).
#[inline]
fn one(op: &str, what: &str, len: usize) {
    need(op, what, len, 1, || "one value".to_string());
}

/// Panics unless `len` is at least the product of `dims` (`(name, size)` factors).
#[inline]
fn dims(op: &str, what: &str, len: usize, dims: &[(&str, usize)]) {
    let want = dims.iter().fold(1usize, |p, &(_, d)| p.saturating_mul(d));
    need(op, what, len, want, || {
        dims.iter().map(|(name, d)| format!("{name} {d}")).collect::<Vec<_>>().join(" x ")
    });
}

/// `write(dst, src)` and `write_ids(dst, src)` (`op` says which): `dst` holds the `n` values of `src`.
pub fn write(op: &'static str, n: usize, [dst]: [usize; 1]) {
    dims(op, "dst", dst, &[("values written", n)]);
}

/// `read(src, len)`: `src` holds the `len` values read.
pub fn read(len: usize, [src]: [usize; 1]) {
    dims("read", "src", src, &[("values read", len)]);
}

/// `fill(x, n)`: `x` holds `n`.
pub fn fill(n: usize, [x]: [usize; 1]) {
    dims("fill", "x", x, &[("n", n)]);
}

/// `add(x, y, n)`: both hold `n`.
pub fn add(n: usize, [x, y]: [usize; 2]) {
    dims("add", "x", x, &[("n", n)]);
    dims("add", "y", y, &[("n", n)]);
}

/// `copy_strided(src, dst, s)`: each reaches its last row.
pub fn copy_strided(s: &Strided, [src, dst]: [usize; 2]) {
    let how = |which: &str, off: usize, stride: usize| {
        format!("{which}_off {off} + (rows {} - 1) x {which}_stride {stride} + cols {}", s.rows, s.cols)
    };
    need("copy_strided", "src", src, s.src_end(), || how("src", s.src_off, s.src_stride));
    need("copy_strided", "dst", dst, s.dst_end(), || how("dst", s.dst_off, s.dst_stride));
}

/// `act_fwd(act, x, y, n)`.
pub fn act_fwd(n: usize, [x, y]: [usize; 2]) {
    dims("act_fwd", "x", x, &[("n", n)]);
    dims("act_fwd", "y", y, &[("n", n)]);
}

/// `act_bwd(act, y, dy, dx, n)`.
pub fn act_bwd(n: usize, [y, dy, dx]: [usize; 3]) {
    for (what, len) in [("y", y), ("dy", dy), ("dx", dx)] {
        dims("act_bwd", what, len, &[("n", n)]);
    }
}

/// `gated_fwd(a, z, batch, r, t)`: `a [batch, 2r, t]`, `z [batch, r, t]`.
pub fn gated_fwd(batch: usize, r: usize, t: usize, [a, z]: [usize; 2]) {
    dims("gated_fwd", "a", a, &[("batch", batch), ("2 r", 2 * r), ("t", t)]);
    dims("gated_fwd", "z", z, &[("batch", batch), ("r", r), ("t", t)]);
}

/// `gated_bwd(a, dz, da, batch, r, t)`: `a, da [batch, 2r, t]`, `dz [batch, r, t]`.
pub fn gated_bwd(batch: usize, r: usize, t: usize, [a, dz, da]: [usize; 3]) {
    dims("gated_bwd", "a", a, &[("batch", batch), ("2 r", 2 * r), ("t", t)]);
    dims("gated_bwd", "dz", dz, &[("batch", batch), ("r", r), ("t", t)]);
    dims("gated_bwd", "da", da, &[("batch", batch), ("2 r", 2 * r), ("t", t)]);
}

/// `dropout(x, n, mask)`.
pub fn dropout(n: usize, [x]: [usize; 1]) {
    dims("dropout", "x", x, &[("n", n)]);
}

/// `transpose(x, y, batch, rows, cols)`.
pub fn transpose(batch: usize, rows: usize, cols: usize, [x, y]: [usize; 2]) {
    let d = [("batch", batch), ("rows", rows), ("cols", cols)];
    dims("transpose", "x", x, &d);
    dims("transpose", "y", y, &d);
}

/// `matmul(a, b, c, mm)`: `a [m, k]`, `b [k, n]`, `c [m, n]` (transposed or not).
pub fn matmul(mm: &MatMul, [a, b, c]: [usize; 3]) {
    dims("matmul", "a", a, &[("m", mm.m), ("k", mm.k)]);
    dims("matmul", "b", b, &[("k", mm.k), ("n", mm.n)]);
    dims("matmul", "c", c, &[("m", mm.m), ("n", mm.n)]);
}

/// `bias_add(y, bias, outer, channels, inner)`.
pub fn bias_add(outer: usize, channels: usize, inner: usize, [y, bias]: [usize; 2]) {
    dims("bias_add", "y", y, &[("outer", outer), ("channels", channels), ("inner", inner)]);
    dims("bias_add", "bias", bias, &[("channels", channels)]);
}

/// `bias_grad(dy, dbias, outer, channels, inner)`.
pub fn bias_grad(outer: usize, channels: usize, inner: usize, [dy, dbias]: [usize; 2]) {
    dims("bias_grad", "dy", dy, &[("outer", outer), ("channels", channels), ("inner", inner)]);
    dims("bias_grad", "dbias", dbias, &[("channels", channels)]);
}

/// `embedding_fwd(ids, table, out, n, e)` (the ids themselves are checked against the table's rows
/// where they are read).
pub fn embedding_fwd(n: usize, e: usize, [ids, _table, out]: [usize; 3]) {
    dims("embedding_fwd", "ids", ids, &[("n", n)]);
    dims("embedding_fwd", "out", out, &[("n", n), ("e", e)]);
}

/// `embedding_bwd(ids, dout, dtable, n, e)`.
pub fn embedding_bwd(n: usize, e: usize, [ids, dout, _dtable]: [usize; 3]) {
    dims("embedding_bwd", "ids", ids, &[("n", n)]);
    dims("embedding_bwd", "dout", dout, &[("n", n), ("e", e)]);
}

/// `softmax_xent(logits, targets, dlogits, stats, x)`: `logits, dlogits [n, v]`, `targets [n]`,
/// `stats [n, 2]`.
pub fn softmax_xent(x: &Xent, [logits, targets, dlogits, stats]: [usize; 4]) {
    const OP: &str = "softmax_xent";
    dims(OP, "logits", logits, &[("n", x.n), ("v", x.v)]);
    dims(OP, "targets", targets, &[("n", x.n)]);
    dims(OP, "dlogits", dlogits, &[("n", x.n), ("v", x.v)]);
    dims(OP, "stats", stats, &[("n", x.n), ("2", 2)]);
}

/// `sum_squares(x, n, acc)`: `acc` holds one value.
pub fn sum_squares(n: usize, [x, acc]: [usize; 2]) {
    dims("sum_squares", "x", x, &[("n", n)]);
    one("sum_squares", "acc", acc);
}

/// `clip_scale(acc, max_norm, scale)`: one value each.
pub fn clip_scale([acc, scale]: [usize; 2]) {
    one("clip_scale", "acc", acc);
    one("clip_scale", "scale", scale);
}

/// `decay(p, n, factor)`.
pub fn decay(n: usize, [p]: [usize; 1]) {
    dims("decay", "p", p, &[("n", n)]);
}

/// `grad_norm_clip(g, n, max_norm, acc, scale)`.
pub fn grad_norm_clip(n: usize, [g, acc, scale]: [usize; 3]) {
    dims("grad_norm_clip", "g", g, &[("n", n)]);
    one("grad_norm_clip", "acc", acc);
    one("grad_norm_clip", "scale", scale);
}

/// `adamw(p, g, m, v, scale, step)`: `p, g, m, v` hold `step.n`, `scale` one value.
pub fn adamw(step: &AdamStep, [p, g, m, v, scale]: [usize; 5]) {
    for (what, len) in [("p", p), ("g", g), ("m", m), ("v", v)] {
        dims("adamw", what, len, &[("n", step.n)]);
    }
    one("adamw", "scale", scale);
}

fn conv_x(c: &Conv1d) -> [(&'static str, usize); 3] {
    [("batch", c.batch), ("cin", c.cin), ("time", c.time)]
}
fn conv_y(c: &Conv1d) -> [(&'static str, usize); 3] {
    [("batch", c.batch), ("cout", c.cout), ("time", c.time)]
}
fn conv_w(c: &Conv1d) -> [(&'static str, usize); 3] {
    [("cout", c.cout), ("cin", c.cin), ("k", c.k)]
}

/// `conv1d_fwd(x, w, bias, y, c)`.
pub fn conv1d_fwd(c: &Conv1d, [x, w, bias, y]: [usize; 4]) {
    const OP: &str = "conv1d_fwd";
    dims(OP, "x", x, &conv_x(c));
    dims(OP, "w", w, &conv_w(c));
    dims(OP, "bias", bias, &[("cout", c.cout)]);
    dims(OP, "y", y, &conv_y(c));
}

/// `conv1d_bwd_input(dy, w, dx, c, accumulate)`.
pub fn conv1d_bwd_input(c: &Conv1d, [dy, w, dx]: [usize; 3]) {
    const OP: &str = "conv1d_bwd_input";
    dims(OP, "dy", dy, &conv_y(c));
    dims(OP, "w", w, &conv_w(c));
    dims(OP, "dx", dx, &conv_x(c));
}

/// `conv1d_bwd_weight(x, dy, dw, dbias, c)`.
pub fn conv1d_bwd_weight(c: &Conv1d, [x, dy, dw, dbias]: [usize; 4]) {
    const OP: &str = "conv1d_bwd_weight";
    dims(OP, "x", x, &conv_x(c));
    dims(OP, "dy", dy, &conv_y(c));
    dims(OP, "dw", dw, &conv_w(c));
    dims(OP, "dbias", dbias, &[("cout", c.cout)]);
}

fn attn_qkv(a: &Attention) -> [(&'static str, usize); 4] {
    [("batch", a.batch), ("heads", a.heads), ("dim", a.dim), ("time", a.time)]
}
fn attn_p(a: &Attention) -> [(&'static str, usize); 4] {
    [("batch", a.batch), ("heads", a.heads), ("time", a.time), ("time", a.time)]
}

/// `attention_fwd(q, k, v, out, p, a)`.
pub fn attention_fwd(a: &Attention, [q, k, v, out, p]: [usize; 5]) {
    for (what, len) in [("q", q), ("k", k), ("v", v), ("out", out)] {
        dims("attention_fwd", what, len, &attn_qkv(a));
    }
    dims("attention_fwd", "p", p, &attn_p(a));
}

/// `attention_bwd(q, k, v, p, dout, dq, dk, dv, a)`.
pub fn attention_bwd(a: &Attention, [q, k, v, p, dout, dq, dk, dv]: [usize; 8]) {
    for (what, len) in [("q", q), ("k", k), ("v", v)] {
        dims("attention_bwd", what, len, &attn_qkv(a));
    }
    dims("attention_bwd", "p", p, &attn_p(a));
    for (what, len) in [("dout", dout), ("dq", dq), ("dk", dk), ("dv", dv)] {
        dims("attention_bwd", what, len, &attn_qkv(a));
    }
}

fn lstm_seq(l: &Lstm) -> [(&'static str, usize); 3] {
    [("batch", l.batch), ("time", l.time), ("hidden", l.hidden)]
}
fn lstm_gates(l: &Lstm) -> [(&'static str, usize); 3] {
    [("batch", l.batch), ("time", l.time), ("4 hidden", 4 * l.hidden)]
}
fn lstm_state(l: &Lstm) -> [(&'static str, usize); 2] {
    [("batch", l.batch), ("hidden", l.hidden)]
}
fn lstm_w(l: &Lstm) -> [(&'static str, usize); 2] {
    [("4 hidden", 4 * l.hidden), ("hidden", l.hidden)]
}

/// The buffers both LSTM passes read: `w_hh`, the initial state and what the forward writes.
fn lstm_weights_and_state(op: &str, l: &Lstm, [w_hh, h0, c0, hs, cs, gates]: [usize; 6]) {
    dims(op, "w_hh", w_hh, &lstm_w(l));
    dims(op, "h0", h0, &lstm_state(l));
    dims(op, "c0", c0, &lstm_state(l));
    dims(op, "hs", hs, &lstm_seq(l));
    dims(op, "cs", cs, &lstm_seq(l));
    dims(op, "gates", gates, &lstm_gates(l));
}

/// `lstm_fwd(xw, w_hh, h0, c0, hs, cs, gates, l)`.
pub fn lstm_fwd(l: &Lstm, [xw, w_hh, h0, c0, hs, cs, gates]: [usize; 7]) {
    dims("lstm_fwd", "xw", xw, &lstm_gates(l));
    lstm_weights_and_state("lstm_fwd", l, [w_hh, h0, c0, hs, cs, gates]);
}

/// `lstm_bwd(w_hh, h0, c0, hs, cs, gates, dhs, dxw, dw_hh, l)`.
pub fn lstm_bwd(l: &Lstm, [w_hh, h0, c0, hs, cs, gates, dhs, dxw, dw_hh]: [usize; 9]) {
    const OP: &str = "lstm_bwd";
    lstm_weights_and_state(OP, l, [w_hh, h0, c0, hs, cs, gates]);
    dims(OP, "dhs", dhs, &lstm_seq(l));
    dims(OP, "dxw", dxw, &lstm_gates(l));
    dims(OP, "dw_hh", dw_hh, &lstm_w(l));
}

/// `bce_logits(logits, y, w, dlogits, stats, bce)`: `logits, y, dlogits [n, k]`, `w, stats [n]`.
pub fn bce_logits(b: &Bce, [logits, y, w, dlogits, stats]: [usize; 5]) {
    const OP: &str = "bce_logits";
    let nk = [("n", b.n), ("k", b.k)];
    dims(OP, "logits", logits, &nk);
    dims(OP, "y", y, &nk);
    dims(OP, "w", w, &[("n", b.n)]);
    dims(OP, "dlogits", dlogits, &nk);
    dims(OP, "stats", stats, &[("n", b.n)]);
}

/// `bag_fwd(ids, table, out, bag)`: `ids [n, slots]`, `out [n, e]` (ids past the table's rows
/// are empty slots).
pub fn bag_fwd(b: &Bag, [ids, _table, out]: [usize; 3]) {
    dims("bag_fwd", "ids", ids, &[("n", b.n), ("slots", b.slots)]);
    dims("bag_fwd", "out", out, &[("n", b.n), ("e", b.e)]);
}

/// `bag_bwd(ids, dout, dtable, bag, rows)`: `ids [n, slots]`, `dout [n, e]`, `dtable [rows, e]`.
pub fn bag_bwd(b: &Bag, rows: usize, [ids, dout, dtable]: [usize; 3]) {
    dims("bag_bwd", "ids", ids, &[("n", b.n), ("slots", b.slots)]);
    dims("bag_bwd", "dout", dout, &[("n", b.n), ("e", b.e)]);
    dims("bag_bwd", "dtable", dtable, &[("rows", rows), ("e", b.e)]);
}

/// `nade_fwd(x, logits, stats, nade)`: `bh [n, h]`, `bv, y, logits [n, k]`, `W, V [k, h]`, `rw,
/// stats [n]`; `h` at most [`NADE_MAX_HIDDEN`](super::nade::NADE_MAX_HIDDEN).
pub fn nade_fwd(d: &Nade, [bh, bv, w, v, y, rw]: [usize; 6], [logits, stats]: [usize; 2]) {
    const OP: &str = "nade_fwd";
    nade_inputs(OP, d, [bh, bv, w, v, y, rw]);
    dims(OP, "logits", logits, &[("n", d.n), ("k", d.k)]);
    dims(OP, "stats", stats, &[("n", d.n)]);
}

/// `nade_bwd(x, logits, grads, nade)`: the forward's shapes, `dbh [n, h]`, `dbv [n, k]`, `dW, dV
/// [k, h]`.
pub fn nade_bwd(d: &Nade, inputs: [usize; 6], logits: usize, [dbh, dbv, dw, dv]: [usize; 4]) {
    const OP: &str = "nade_bwd";
    nade_inputs(OP, d, inputs);
    let (n, k, h) = ([("n", d.n)], [("k", d.k)], [("h", d.h)]);
    dims(OP, "logits", logits, &[n[0], k[0]]);
    dims(OP, "dbh", dbh, &[n[0], h[0]]);
    dims(OP, "dbv", dbv, &[n[0], k[0]]);
    dims(OP, "dw", dw, &[k[0], h[0]]);
    dims(OP, "dv", dv, &[k[0], h[0]]);
}

fn nade_inputs(op: &str, d: &Nade, [bh, bv, w, v, y, rw]: [usize; 6]) {
    assert!(
        d.h <= super::nade::NADE_MAX_HIDDEN,
        "{op}: {} hidden units, at most {} fit the kernel",
        d.h,
        super::nade::NADE_MAX_HIDDEN
    );
    let (n, k, h) = (("n", d.n), ("k", d.k), ("h", d.h));
    dims(op, "bh", bh, &[n, h]);
    dims(op, "bv", bv, &[n, k]);
    dims(op, "w", w, &[k, h]);
    dims(op, "v", v, &[k, h]);
    dims(op, "y", y, &[n, k]);
    dims(op, "rw", rw, &[n]);
}

/// `layer_norm_fwd(x, weight, bias, y, stats, ln)`: `x, y [rows, width]`, `weight, bias [width]`,
/// `stats [rows, 2]`.
pub fn layer_norm_fwd(ln: &LayerNorm, [x, w, b, y, stats]: [usize; 5]) {
    const OP: &str = "layer_norm_fwd";
    let rw = [("rows", ln.rows), ("width", ln.width)];
    dims(OP, "x", x, &rw);
    dims(OP, "weight", w, &[("width", ln.width)]);
    dims(OP, "bias", b, &[("width", ln.width)]);
    dims(OP, "y", y, &rw);
    dims(OP, "stats", stats, &[("rows", ln.rows), ("mean and rstd", 2)]);
}

/// `layer_norm_bwd(x, weight, stats, dy, dx, dweight, dbias, ln)`.
pub fn layer_norm_bwd(ln: &LayerNorm, [x, w, stats, dy, dx, dw, db]: [usize; 7]) {
    const OP: &str = "layer_norm_bwd";
    let rw = [("rows", ln.rows), ("width", ln.width)];
    dims(OP, "x", x, &rw);
    dims(OP, "weight", w, &[("width", ln.width)]);
    dims(OP, "stats", stats, &[("rows", ln.rows), ("mean and rstd", 2)]);
    dims(OP, "dy", dy, &rw);
    dims(OP, "dx", dx, &rw);
    dims(OP, "dweight", dw, &[("width", ln.width)]);
    dims(OP, "dbias", db, &[("width", ln.width)]);
}

/// `gelu_fwd(x, y, n)` and `gelu_bwd(x, dy, dx, n)` (`op` says which): every buffer holds `n`.
pub fn gelu(op: &'static str, n: usize, lens: &[usize]) {
    for (i, &len) in lens.iter().enumerate() {
        dims(op, ["x", "dy or y", "dx"][i.min(2)], len, &[("n", n)]);
    }
}

fn rel_sizes(op: &str, a: &RelAttention) {
    assert!(a.time <= a.window, "{op}: time {} is longer than the relative table's window {}", a.time, a.window);
}

/// `rel_attention_fwd(qkv, rel, out, p, a)`.
pub fn rel_attention_fwd(a: &RelAttention, [qkv, rel, out, p]: [usize; 4]) {
    const OP: &str = "rel_attention_fwd";
    rel_sizes(OP, a);
    dims(OP, "qkv", qkv, &[("batch", a.batch), ("time", a.time), ("3 heads x dim", 3 * a.width())]);
    dims(OP, "rel", rel, &[("heads", a.heads), ("window", a.window), ("dim", a.dim)]);
    dims(OP, "out", out, &[("batch", a.batch), ("time", a.time), ("heads x dim", a.width())]);
    dims(OP, "p", p, &[("batch", a.batch), ("heads", a.heads), ("time", a.time), ("time", a.time)]);
}

/// `rel_attention_bwd(qkv, rel, p, dout, dqkv, drel, a)`.
pub fn rel_attention_bwd(a: &RelAttention, [qkv, rel, p, dout, dqkv, drel]: [usize; 6]) {
    const OP: &str = "rel_attention_bwd";
    rel_sizes(OP, a);
    let three = [("batch", a.batch), ("time", a.time), ("3 heads x dim", 3 * a.width())];
    let table = [("heads", a.heads), ("window", a.window), ("dim", a.dim)];
    dims(OP, "qkv", qkv, &three);
    dims(OP, "rel", rel, &table);
    dims(OP, "p", p, &[("batch", a.batch), ("heads", a.heads), ("time", a.time), ("time", a.time)]);
    dims(OP, "dout", dout, &[("batch", a.batch), ("time", a.time), ("heads x dim", a.width())]);
    dims(OP, "dqkv", dqkv, &three);
    dims(OP, "drel", drel, &table);
}

/// `rel_attention_decode(qkv, kcache, vcache, rel, out, a)`.
pub fn rel_attention_decode(a: &RelDecode, [qkv, kc, vc, rel, out]: [usize; 5]) {
    const OP: &str = "rel_attention_decode";
    assert!(a.len >= 1 && a.window >= 1, "{OP}: len {} and window {} must be at least 1", a.len, a.window);
    dims(OP, "qkv", qkv, &[("batch", a.batch), ("3 heads x dim", 3 * a.width())]);
    let cache = [("batch", a.batch), ("window", a.window), ("heads x dim", a.width())];
    dims(OP, "kcache", kc, &cache);
    dims(OP, "vcache", vc, &cache);
    dims(OP, "rel", rel, &[("heads", a.heads), ("window", a.window), ("dim", a.dim)]);
    dims(OP, "out", out, &[("batch", a.batch), ("heads x dim", a.width())]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
        let err = std::panic::catch_unwind(f).expect_err("a short buffer must panic");
        err.downcast_ref::<String>().cloned().unwrap_or_default()
    }

    #[test]
    fn a_short_buffer_names_the_op_the_buffer_and_the_sizes() {
        let l = Lstm { batch: 4, time: 3, hidden: 32 };
        let lens = [4 * 3 * 128, 128 * 32, 100, 128, 4 * 3 * 32, 4 * 3 * 32, 4 * 3 * 128];
        assert_eq!(
            message(|| lstm_fwd(&l, lens)),
            "lstm_fwd: buffer `h0` holds 100 elements, expected batch 4 x hidden 32 = 128"
        );
        let s = Strided::block(3, 5).from(2, 10).to(0, 5).adding();
        copy_strided(&s, [27, 15]); // exactly enough
        copy_strided(&Strided::block(0, 5).from(99, 99), [0, 0]); // an empty block needs nothing
        assert_eq!(
            message(|| copy_strided(&s, [26, 15])),
            "copy_strided: buffer `src` holds 26 elements, expected src_off 2 + (rows 3 - 1) x src_stride 10 + cols 5 = 27"
        );
        assert_eq!(message(|| clip_scale([1, 0])), "clip_scale: buffer `scale` holds 0 elements, expected one value = 1");
        // Longer than needed is fine (an arena sized for a bigger batch).
        lstm_fwd(&l, lens.map(|n| n + 1000).map(|n| n.max(128)));
    }
}
