// The NADE output head (issue 27; src/engine/nade.rs has the math in full): for each row r (a frame)
// and its keys i = 0..k in ascending order, with v = y[r, :] (0/1) and hidden units c = 0..h:
//   a_0 = bh[r, :],  a_{i+1} = a_i + W[i, :] v_i,  h_i = sigmoid(a_i)
//   logits[r, i] = bv[r, i] + V[i, :] . h_i
//   stats[r]     = rw[r] * sum_i (max(x, 0) - x v_i + log(1 + exp(-|x|)))   (x = logits[r, i])
// backward, g_i = (sigmoid(logits[r, i]) - v_i) * rw[r] * grad_scale:
//   dbv[r, i] = g_i;  dV[i, :] += g_i h_i;  da_i = g_i V[i, :] h_i (1 - h_i)
//   dW[i, :] += v_i sum_{j > i} da_j;  dbh[r, :] = sum_i da_i
// Layout: bh, dbh [n, h]; bv, y, logits, dbv [n, k]; rw, stats [n]; W, V, dW, dV [k, h] (row i is
// key i's). Storage is `elem` (f32 or f16, prepended by the pipeline cache) except stats and the
// partials (f32); arithmetic in f32. sigmoid is 1/(1+e^-|x|) mirrored for x < 0 (no overflow).
//   nade_fwd (1 bh, 2 bv, 3 W, 4 V, 5 y, 6 rw, 7 logits, 8 stats): one workgroup of 64 per row,
//       flat workgroup index wid.y * nwg.x + wid.x (grid_groups(n)). The row's a lives in
//       workgroup memory (h <= 1024); invocation t owns units c = t, t+64, ...; per key, each sums
//       V[i, c] h_c over its units in increasing c, a fixed tree adds the 64 partial sums, and
//       invocation 0 writes the logit and adds the key's loss in key order (deterministic).
//   nade_bwd_g (1 logits, 2 y, 3 rw, 4 dbv): dbv = g, one invocation per element, grid_1d(n*k, 256).
//   nade_bwd_partial (1 bh, 2 g = dbv, 3 W, 4 V, 5 y, 6 dbh, 7 partial): the rows are cut into
//       `segments` runs of `seg_len`; invocation (c = global x, s = global y) owns unit c of run s:
//       it zeroes its columns of partial [segments, 2, k, h] (plane 0 dW, plane 1 dV), then per row
//       of its run sums a over every key upwards, and walks the keys downwards taking a back
//       (a_i = a_{i+1} - W[i, c] v_i), adding into its partial columns and writing dbh[r, c].
//       Workgroups of 64 along c; grid (ceil(h/64), segments). No invocation shares a write.
//   nade_bwd_reduce (1 partial, 2 grad): grad[idx] += sum_s partial[s, plane, idx] in increasing s,
//       one invocation per element of [k, h], grid_1d(k*h, 256); run once for dW (plane 0) and once
//       for dV (plane 1). Every sum has a fixed order: the results are deterministic.

struct Params {
    n: u32,
    k: u32,
    h: u32,
    grad_scale: f32, // backward only
    segments: u32,   // nade_bwd_partial, nade_bwd_reduce
    seg_len: u32,    // nade_bwd_partial
    plane: u32,      // nade_bwd_reduce
}

const WG: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;

fn sigm(x: f32) -> f32 {
    let e = exp(-abs(x));
    if (x >= 0.0) {
        return 1.0 / (1.0 + e);
    }
    return e / (1.0 + e);
}

// ---- forward ----

@group(0) @binding(1) var<storage, read> bh: array<elem>;
@group(0) @binding(2) var<storage, read> bv: array<elem>;
@group(0) @binding(3) var<storage, read> wt: array<elem>;
@group(0) @binding(4) var<storage, read> vt: array<elem>;
@group(0) @binding(5) var<storage, read> y: array<elem>;
@group(0) @binding(6) var<storage, read> rw: array<elem>;
@group(0) @binding(7) var<storage, read_write> logits: array<elem>;
@group(0) @binding(8) var<storage, read_write> stats: array<f32>;

var<workgroup> acts: array<f32, 1024>;
var<workgroup> red: array<f32, 64>;

@compute @workgroup_size(64)
fn nade_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.n) { return; }
    let k = p.k;
    let h = p.h;
    let t = lid.x;
    for (var c = t; c < h; c += WG) {
        acts[c] = f32(bh[row * h + c]);
    }
    var sum = 0.0;
    for (var i = 0u; i < k; i++) {
        let vi = f32(y[row * k + i]);
        var part = 0.0;
        for (var c = t; c < h; c += WG) {
            part += f32(vt[i * h + c]) * sigm(acts[c]);
        }
        red[t] = part;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s >>= 1u) {
            if (t < s) {
                red[t] += red[t + s];
            }
            workgroupBarrier();
        }
        if (t == 0u) {
            let x = f32(bv[row * k + i]) + red[0];
            logits[row * k + i] = elem(x);
            sum += max(x, 0.0) - x * vi + log(1.0 + exp(-abs(x)));
        }
        // red[0] is read before the next key writes red.
        workgroupBarrier();
        for (var c = t; c < h; c += WG) {
            acts[c] += f32(wt[i * h + c]) * vi;
        }
    }
    if (t == 0u) {
        stats[row] = f32(rw[row]) * sum;
    }
}

// ---- backward: g ----

@group(0) @binding(1) var<storage, read> lg_in: array<elem>;
@group(0) @binding(2) var<storage, read> y_g: array<elem>;
@group(0) @binding(3) var<storage, read> rw_g: array<elem>;
@group(0) @binding(4) var<storage, read_write> dbv: array<elem>;

@compute @workgroup_size(256)
fn nade_bwd_g(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (idx >= p.n * p.k) { return; }
    let r = idx / p.k;
    let scale = f32(rw_g[r]) * p.grad_scale;
    dbv[idx] = elem((sigm(f32(lg_in[idx])) - f32(y_g[idx])) * scale);
}

// ---- backward: partial dW, dV and dbh ----

@group(0) @binding(2) var<storage, read> g_in: array<elem>;
@group(0) @binding(6) var<storage, read_write> dbh: array<elem>;
@group(0) @binding(7) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(64)
fn nade_bwd_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let s = gid.y;
    let k = p.k;
    let h = p.h;
    if (c >= h || s >= p.segments) { return; }
    let plane = k * h;
    let base = s * 2u * plane + c;
    for (var i = 0u; i < k; i++) {
        partial[base + i * h] = 0.0;
        partial[base + plane + i * h] = 0.0;
    }
    let start = s * p.seg_len;
    let end = min(p.n, start + p.seg_len);
    for (var r = start; r < end; r++) {
        var a = f32(bh[r * h + c]);
        for (var i = 0u; i < k; i++) {
            let vi = f32(y[r * k + i]);
            if (vi != 0.0) {
                a += vi * f32(wt[i * h + c]);
            }
        }
        var acc = 0.0;
        for (var ii = k; ii > 0u; ii--) {
            let i = ii - 1u;
            let vi = f32(y[r * k + i]);
            let o = base + i * h;
            if (vi != 0.0) {
                a += -vi * f32(wt[i * h + c]);
                partial[o] += vi * acc;
            }
            let hc = sigm(a);
            let gi = f32(g_in[r * k + i]);
            partial[o + plane] += gi * hc;
            acc += gi * f32(vt[i * h + c]) * hc * (1.0 - hc);
        }
        dbh[r * h + c] = elem(acc);
    }
}

// ---- backward: reduce the partials ----

@group(0) @binding(1) var<storage, read> partial_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<elem>;

@compute @workgroup_size(256)
fn nade_bwd_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                   @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    let plane = p.k * p.h;
    if (idx >= plane) { return; }
    var sum = 0.0;
    for (var s = 0u; s < p.segments; s++) {
        sum += partial_in[(s * 2u + p.plane) * plane + idx];
    }
    grad[idx] = elem(f32(grad[idx]) + sum);
}
