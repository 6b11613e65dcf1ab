// Causal multi-head scaled dot-product attention (issue 13), forward and backward.
//
// Math. scale = 1/sqrt(D); for each item b, head h and query time t, over keys shift <= j <= t:
//   s[t,j]   = scale * sum_d q[d,t] * k[d,j-shift]
//   p[t,:]   = softmax_j s[t,:]              (0 outside shift..=t; a row with t < shift is all 0)
//   out[d,t] = sum_j p[t,j] * v[d,j]
// Backward (every output written, never accumulated):
//   dP[t,j]  = sum_d dout[d,t] * v[d,j];  dS[t,j] = p[t,j] * (dP[t,j] - sum_j' p[t,j'] dP[t,j'])
//   dq[d,t]  = scale * sum_j dS[t,j] * k[d,j-shift]
//   dk[d,i]  = scale * sum_{t >= i+shift} dS[t,i+shift] * q[d,t]      (0 when i + shift >= T)
//   dv[d,j]  = sum_{t >= j} p[t,j] * dout[d,t]                        (0 when j < shift)
// Layout: q, k, v, out, dout, dq, dk, dv are [B, H*D, T] row-major (channel h*D+d, time t): the
// (b, h) block starts at (b*H + h) * D*T and element (d, t) is at + d*T + t. p is [B, H, T, T]
// (row (b*H + h)*T + t, column j). Tensors are `elem` (f32 or f16, prepended by the pipeline
// cache); the dS scratch and every sum are f32.
//
// One invocation per row, looping over the other time index (simple first; T is a window of
// ~128): 64 invocations per workgroup, flat index as grid_1d (wid.y * nwg.x + wid.x) * 64 + lid.x.
//   attn_fwd:     one invocation per query row (b, h, t): the row's maximum score, its sum of
//                 exponentials (scores recomputed), then p written (all T columns), then out[:, t]
//                 from the stored p. Bindings 1 q, 2 k, 3 v, 4 out, 5 p.
//                 Dispatch grid_1d(B*H*T, 64).
//   attn_bwd_q:   one invocation per query row (b, h, t): dP into the dS scratch, its p-weighted
//                 sum, dS in place, then dq[:, t]. Bindings 1 k, 2 v, 3 p, 4 dout, 5 ds (f32
//                 [B, H, T, T]; only columns shift..=t of rows t >= shift are written or read),
//                 6 dq. Dispatch grid_1d(B*H*T, 64).
//   attn_bwd_kv:  one invocation per key/value column (b, h, i), after attn_bwd_q: dv[:, i] and
//                 dk[:, i]. Bindings 1 q, 2 p, 3 dout, 4 ds, 5 dk, 6 dv. Dispatch grid_1d(B*H*T, 64).

struct Params {
    batch: u32,
    heads: u32,
    dim: u32,
    time: u32,
    shift: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

// attn_fwd
@group(0) @binding(1) var<storage, read> fq: array<elem>;
@group(0) @binding(2) var<storage, read> fk: array<elem>;
@group(0) @binding(3) var<storage, read> fv: array<elem>;
@group(0) @binding(4) var<storage, read_write> fout: array<elem>;
@group(0) @binding(5) var<storage, read_write> fp: array<elem>;
// attn_bwd_q
@group(0) @binding(1) var<storage, read> qk: array<elem>;
@group(0) @binding(2) var<storage, read> qv: array<elem>;
@group(0) @binding(3) var<storage, read> qp: array<elem>;
@group(0) @binding(4) var<storage, read> qdout: array<elem>;
@group(0) @binding(5) var<storage, read_write> qds: array<f32>;
@group(0) @binding(6) var<storage, read_write> qdq: array<elem>;
// attn_bwd_kv
@group(0) @binding(1) var<storage, read> kq: array<elem>;
@group(0) @binding(2) var<storage, read> kp: array<elem>;
@group(0) @binding(3) var<storage, read> kdout: array<elem>;
@group(0) @binding(4) var<storage, read> kds: array<f32>;
@group(0) @binding(5) var<storage, read_write> kdk: array<elem>;
@group(0) @binding(6) var<storage, read_write> kdv: array<elem>;

const WG: u32 = 64u;

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// q_t . k_(j-shift) in block `base`, times scale.
fn score(base: u32, t: u32, j: u32) -> f32 {
    let T = p.time;
    let kt = j - p.shift;
    var acc = 0.0;
    for (var d = 0u; d < p.dim; d++) {
        acc += f32(fq[base + d * T + t]) * f32(fk[base + d * T + kt]);
    }
    return acc * p.scale;
}

@compute @workgroup_size(64)
fn attn_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = flat(wid, nwg, lid);
    let T = p.time;
    if row >= p.batch * p.heads * T {
        return;
    }
    let blk = row / T;
    let t = row % T;
    let base = blk * p.dim * T;
    let prow = row * T;
    if t < p.shift {
        for (var j = 0u; j < T; j++) {
            fp[prow + j] = elem(0.0);
        }
        for (var d = 0u; d < p.dim; d++) {
            fout[base + d * T + t] = elem(0.0);
        }
        return;
    }
    var mx = -3.4e38;
    for (var j = p.shift; j <= t; j++) {
        mx = max(mx, score(base, t, j));
    }
    var sum = 0.0;
    for (var j = p.shift; j <= t; j++) {
        sum += exp(score(base, t, j) - mx);
    }
    let inv = 1.0 / sum;
    for (var j = 0u; j < T; j++) {
        var pj = 0.0;
        if j >= p.shift && j <= t {
            pj = exp(score(base, t, j) - mx) * inv;
        }
        fp[prow + j] = elem(pj);
    }
    for (var d = 0u; d < p.dim; d++) {
        var acc = 0.0;
        for (var j = p.shift; j <= t; j++) {
            acc += f32(fp[prow + j]) * f32(fv[base + d * T + j]);
        }
        fout[base + d * T + t] = elem(acc);
    }
}

@compute @workgroup_size(64)
fn attn_bwd_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = flat(wid, nwg, lid);
    let T = p.time;
    if row >= p.batch * p.heads * T {
        return;
    }
    let blk = row / T;
    let t = row % T;
    let base = blk * p.dim * T;
    let prow = row * T;
    if t < p.shift {
        for (var d = 0u; d < p.dim; d++) {
            qdq[base + d * T + t] = elem(0.0);
        }
        return;
    }
    // dP[t, j] into the scratch, and sum_j p dP.
    var dot = 0.0;
    for (var j = p.shift; j <= t; j++) {
        var g = 0.0;
        for (var d = 0u; d < p.dim; d++) {
            g += f32(qdout[base + d * T + t]) * f32(qv[base + d * T + j]);
        }
        qds[prow + j] = g;
        dot += f32(qp[prow + j]) * g;
    }
    for (var j = p.shift; j <= t; j++) {
        qds[prow + j] = f32(qp[prow + j]) * (qds[prow + j] - dot);
    }
    for (var d = 0u; d < p.dim; d++) {
        var acc = 0.0;
        for (var j = p.shift; j <= t; j++) {
            acc += qds[prow + j] * f32(qk[base + d * T + j - p.shift]);
        }
        qdq[base + d * T + t] = elem(acc * p.scale);
    }
}

@compute @workgroup_size(64)
fn attn_bwd_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let col = flat(wid, nwg, lid);
    let T = p.time;
    if col >= p.batch * p.heads * T {
        return;
    }
    let blk = col / T;
    let i = col % T;
    let base = blk * p.dim * T;
    let pblk = blk * T * T;
    // dv[:, i]: value i is read by rows t >= i when i >= shift.
    for (var d = 0u; d < p.dim; d++) {
        var acc = 0.0;
        if i >= p.shift {
            for (var t = i; t < T; t++) {
                acc += f32(kp[pblk + t * T + i]) * f32(kdout[base + d * T + t]);
            }
        }
        kdv[base + d * T + i] = elem(acc);
    }
    // dk[:, i]: key i is column j = i + shift of rows t >= j.
    let j = i + p.shift;
    for (var d = 0u; d < p.dim; d++) {
        var acc = 0.0;
        for (var t = j; t < T; t++) {
            acc += kds[pblk + t * T + j] * f32(kq[base + d * T + t]);
        }
        kdk[base + d * T + i] = elem(acc * p.scale);
    }
}
