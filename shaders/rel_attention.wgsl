// Causal multi-head attention with a learned relative-position term over token-major rows (Music
// Transformer; issue 26): forward, backward, and the one-step decode over a ring key/value cache.
//
// Math. scale = 1/sqrt(D); for item b, head h, query i and key j <= i (distance r = i - j):
//   s[i,j]   = scale * (q_i . k_j + q_i . rel[h, i-j])
//   p[i,:]   = softmax_j s[i,:]                          (0 for j > i)
//   out_i[d] = sum_j p[i,j] v_j[d]
// Backward (dqkv WRITTEN, drel ACCUMULATED; rows time..window of drel untouched):
//   dP[i,j]  = dout_i . v_j;   dS[i,j] = scale * p[i,j] * (dP[i,j] - sum_j' p[i,j'] dP[i,j'])
//   dq_i     = sum_{j<=i} dS[i,j] (k_j + rel[h, i-j]);   dk_j = sum_{i>=j} dS[i,j] q_i
//   dv_j     = sum_{i>=j} p[i,j] dout_i;                  drel[h,r] += sum_b sum_{i>=r} dS[b,h,i,i-r] q_i
// Decode (one new position per item; len positions seen, the newest included; n = min(len, W)):
//   s[pos]   = scale * (q . kcache[b, pos % W] + q . rel[h, len-1-pos])   for pos in len-n .. len
//   out[b, h*D+d] = sum_pos softmax(s)[pos] * vcache[b, pos % W, h*D+d]
// Layout (HD = H*D; head h is columns h*D .. h*D+D of each part):
//   qkv, dqkv [B, T, 3*HD]: q_i[d] of (b, h) at (b*T + i)*3*HD + h*D + d, k at + HD, v at + 2*HD
//   out, dout [B, T, HD];  p [B, H, T, T] (row ((b*H + h)*T + i)*T, column j)
//   rel, drel [H, W, D] (W = window >= T);  decode: qkv [B, 3*HD] (only q read), kcache, vcache
//   [B, W, HD] (position pos in slot pos % W), out [B, HD]
// Tensors are `elem` (f32 or f16, prepended by the pipeline cache); the dS scratch and every sum
// are f32. The two dot products of a training score are summed apart and added, as the CPU twin
// does (its two products).
//
// One invocation per row, column or output element, looping over the other index (simple first;
// T is a window of a few hundred): 64 invocations per workgroup, flat index as grid_1d
// (wid.y * nwg.x + wid.x) * 64 + lid.x.
//   rel_fwd:     one invocation per query row (b, h, i): the row's maximum score, its sum of
//                exponentials (scores recomputed), then p written (all T columns), then out_i from
//                the stored p. Bindings 1 qkv, 2 rel, 3 out, 4 p. Dispatch grid_1d(B*H*T, 64).
//   rel_bwd_q:   one invocation per query row (b, h, i): dP into the dS scratch, its p-weighted
//                sum, dS in place, then dq_i. Bindings 1 qkv, 2 rel, 3 p, 4 dout, 5 ds (f32
//                [B, H, T, T]; only columns j <= i are written or read), 6 dqkv (q columns).
//                Dispatch grid_1d(B*H*T, 64).
//   rel_bwd_kv:  one invocation per key column (b, h, j), after rel_bwd_q: dk_j and dv_j.
//                Bindings 1 qkv, 2 p, 3 dout, 4 ds, 5 dqkv (k and v columns).
//                Dispatch grid_1d(B*H*T, 64).
//   rel_bwd_rel: one invocation per (h, r, d) with r < T, after rel_bwd_q: the sum over items and
//                rows i >= r, added to drel. Bindings 1 qkv, 2 ds, 3 drel.
//                Dispatch grid_1d(H*T*D, 64).
//   rel_decode:  one invocation per output element (b, h, d), looping over the cached positions:
//                the maximum score, the sum of exponentials, then out from the probabilities
//                (scores recomputed; each score is one sum of q.k + q.rel terms, as the CPU's).
//                Bindings 1 qkv, 2 kcache, 3 vcache, 4 rel, 5 out. Dispatch grid_1d(B*H*D, 64).

struct Params {
    batch: u32,
    heads: u32,
    dim: u32,
    time: u32,    // the decode: len, the positions seen
    window: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

// rel_fwd
@group(0) @binding(1) var<storage, read> fqkv: array<elem>;
@group(0) @binding(2) var<storage, read> frel: array<elem>;
@group(0) @binding(3) var<storage, read_write> fout: array<elem>;
@group(0) @binding(4) var<storage, read_write> fp: array<elem>;
// rel_bwd_q
@group(0) @binding(1) var<storage, read> qqkv: array<elem>;
@group(0) @binding(2) var<storage, read> qrel: array<elem>;
@group(0) @binding(3) var<storage, read> qp: array<elem>;
@group(0) @binding(4) var<storage, read> qdout: array<elem>;
@group(0) @binding(5) var<storage, read_write> qds: array<f32>;
@group(0) @binding(6) var<storage, read_write> qdqkv: array<elem>;
// rel_bwd_kv
@group(0) @binding(1) var<storage, read> kqkv: array<elem>;
@group(0) @binding(2) var<storage, read> kp: array<elem>;
@group(0) @binding(3) var<storage, read> kdout: array<elem>;
@group(0) @binding(4) var<storage, read> kds: array<f32>;
@group(0) @binding(5) var<storage, read_write> kdqkv: array<elem>;
// rel_bwd_rel
@group(0) @binding(1) var<storage, read> rqkv: array<elem>;
@group(0) @binding(2) var<storage, read> rds: array<f32>;
@group(0) @binding(3) var<storage, read_write> rdrel: array<elem>;
// rel_decode
@group(0) @binding(1) var<storage, read> dqkv_row: array<elem>;
@group(0) @binding(2) var<storage, read> dkc: array<elem>;
@group(0) @binding(3) var<storage, read> dvc: array<elem>;
@group(0) @binding(4) var<storage, read> drel_t: array<elem>;
@group(0) @binding(5) var<storage, read_write> dout_row: array<elem>;

const WG: u32 = 64u;

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// Index of qkv[b, i, part, h*D + 0].
fn qkv_at(b: u32, i: u32, part: u32, h: u32) -> u32 {
    let hd = p.heads * p.dim;
    return (b * p.time + i) * 3u * hd + part * hd + h * p.dim;
}

// s[i, j] of (b, h): scale * (q_i . k_j + q_i . rel[h, i-j]).
fn score(b: u32, h: u32, i: u32, j: u32) -> f32 {
    let q = qkv_at(b, i, 0u, h);
    let k = qkv_at(b, j, 1u, h);
    let r = (h * p.window + i - j) * p.dim;
    var g = 0.0;
    var e = 0.0;
    for (var d = 0u; d < p.dim; d++) {
        let qd = f32(fqkv[q + d]);
        g += qd * f32(fqkv[k + d]);
        e += qd * f32(frel[r + d]);
    }
    return p.scale * (g + e);
}

@compute @workgroup_size(64)
fn rel_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = flat(wid, nwg, lid);
    let T = p.time;
    if row >= p.batch * p.heads * T {
        return;
    }
    let i = row % T;
    let h = (row / T) % p.heads;
    let b = row / (T * p.heads);
    let prow = row * T;
    var mx = -3.4e38;
    for (var j = 0u; j <= i; j++) {
        mx = max(mx, score(b, h, i, j));
    }
    var sum = 0.0;
    for (var j = 0u; j <= i; j++) {
        sum += exp(score(b, h, i, j) - mx);
    }
    let inv = 1.0 / sum;
    for (var j = 0u; j < T; j++) {
        var pj = 0.0;
        if j <= i {
            pj = exp(score(b, h, i, j) - mx) * inv;
        }
        fp[prow + j] = elem(pj);
    }
    let o = (b * T + i) * p.heads * p.dim + h * p.dim;
    for (var d = 0u; d < p.dim; d++) {
        var acc = 0.0;
        for (var j = 0u; j <= i; j++) {
            acc += f32(fp[prow + j]) * f32(fqkv[qkv_at(b, j, 2u, h) + d]);
        }
        fout[o + d] = elem(acc);
    }
}

@compute @workgroup_size(64)
fn rel_bwd_q(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = flat(wid, nwg, lid);
    let T = p.time;
    if row >= p.batch * p.heads * T {
        return;
    }
    let i = row % T;
    let h = (row / T) % p.heads;
    let b = row / (T * p.heads);
    let prow = row * T;
    let o = (b * T + i) * p.heads * p.dim + h * p.dim;
    // dP[i, j] into the scratch, and sum_j p dP.
    var dot = 0.0;
    for (var j = 0u; j <= i; j++) {
        let v = qkv_at(b, j, 2u, h);
        var g = 0.0;
        for (var d = 0u; d < p.dim; d++) {
            g += f32(qdout[o + d]) * f32(qqkv[v + d]);
        }
        qds[prow + j] = g;
        dot += g * f32(qp[prow + j]);
    }
    for (var j = 0u; j <= i; j++) {
        qds[prow + j] = p.scale * f32(qp[prow + j]) * (qds[prow + j] - dot);
    }
    // dq_i = sum_j dS[i,j] k_j + sum_j dS[i,j] rel[h, i-j].
    let q = qkv_at(b, i, 0u, h);
    for (var d = 0u; d < p.dim; d++) {
        var gk = 0.0;
        var gr = 0.0;
        for (var j = 0u; j <= i; j++) {
            let s = qds[prow + j];
            gk += s * f32(qqkv[qkv_at(b, j, 1u, h) + d]);
            gr += s * f32(qrel[(h * p.window + i - j) * p.dim + d]);
        }
        qdqkv[q + d] = elem(gk + gr);
    }
}

@compute @workgroup_size(64)
fn rel_bwd_kv(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let col = flat(wid, nwg, lid);
    let T = p.time;
    if col >= p.batch * p.heads * T {
        return;
    }
    let j = col % T;
    let h = (col / T) % p.heads;
    let b = col / (T * p.heads);
    let pblk = (col - j) * T;
    let hd = p.heads * p.dim;
    let k = qkv_at(b, j, 1u, h);
    let v = qkv_at(b, j, 2u, h);
    for (var d = 0u; d < p.dim; d++) {
        var dk = 0.0;
        var dv = 0.0;
        for (var i = j; i < T; i++) {
            dk += kds[pblk + i * T + j] * f32(kqkv[qkv_at(b, i, 0u, h) + d]);
            dv += f32(kp[pblk + i * T + j]) * f32(kdout[(b * T + i) * hd + h * p.dim + d]);
        }
        kdqkv[k + d] = elem(dk);
        kdqkv[v + d] = elem(dv);
    }
}

@compute @workgroup_size(64)
fn rel_bwd_rel(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat(wid, nwg, lid);
    let T = p.time;
    if idx >= p.heads * T * p.dim {
        return;
    }
    let d = idx % p.dim;
    let r = (idx / p.dim) % T;
    let h = idx / (p.dim * T);
    // Each item's sum apart, the items' sums added in order (the CPU twin's order).
    var acc = 0.0;
    for (var b = 0u; b < p.batch; b++) {
        let pblk = (b * p.heads + h) * T * T;
        var part = 0.0;
        for (var i = r; i < T; i++) {
            part += rds[pblk + i * T + i - r] * f32(rqkv[qkv_at(b, i, 0u, h) + d]);
        }
        acc += part;
    }
    let at = (h * p.window + r) * p.dim + d;
    rdrel[at] = elem(f32(rdrel[at]) + acc);
}

// s[pos] of the decode (b, h): scale * (q . kcache[b, pos % W] + q . rel[h, len-1-pos]).
fn decode_score(b: u32, h: u32, pos: u32) -> f32 {
    let hd = p.heads * p.dim;
    let q = b * 3u * hd + h * p.dim;
    let k = (b * p.window + pos % p.window) * hd + h * p.dim;
    let r = (h * p.window + p.time - 1u - pos) * p.dim;
    var acc = 0.0;
    for (var d = 0u; d < p.dim; d++) {
        let qd = f32(dqkv_row[q + d]);
        acc += qd * f32(dkc[k + d]) + qd * f32(drel_t[r + d]);
    }
    return p.scale * acc;
}

@compute @workgroup_size(64)
fn rel_decode(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = flat(wid, nwg, lid);
    let hd = p.heads * p.dim;
    if idx >= p.batch * hd {
        return;
    }
    let d = idx % p.dim;
    let h = (idx / p.dim) % p.heads;
    let b = idx / hd;
    let len = p.time;
    let first = len - min(len, p.window);
    var mx = -3.4e38;
    for (var pos = first; pos < len; pos++) {
        mx = max(mx, decode_score(b, h, pos));
    }
    var sum = 0.0;
    for (var pos = first; pos < len; pos++) {
        sum += exp(decode_score(b, h, pos) - mx);
    }
    let inv = 1.0 / sum;
    var acc = 0.0;
    for (var pos = first; pos < len; pos++) {
        let pv = exp(decode_score(b, h, pos) - mx) * inv;
        acc += pv * f32(dvc[(b * p.window + pos % p.window) * hd + h * p.dim + d]);
    }
    dout_row[idx] = elem(acc);
}
