// The LSTM recurrence of one layer (PyTorch semantics, gate blocks i, f, g, o) and its
// backpropagation through time. The input projection xw = x W_ih^T + b_ih + b_hh of every step
// was done beforehand as one matrix product, so what is left is sequential in time and independent
// across batch rows.
//
// Math, per batch row b and step t (h_{-1} = h0[b], c_{-1} = c0[b]):
//   a   = xw[b, t] + W_hh h_{t-1}                      [4H]
//   i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)
//   c_t = f c_{t-1} + i g                 h_t = o tanh(c_t)
// Backward, t = T-1 .. 0, with dh = dhs[b, t] + W_hh^T da_{t+1} and dc carried as dc_{t+1} f_{t+1}:
//   dc += dh o (1 - tanh^2 c_t)
//   da_i = dc g i (1-i)   da_f = dc c_{t-1} f (1-f)   da_g = dc i (1-g^2)   da_o = dh tanh(c_t) o (1-o)
//   dW_hh += sum_{b,t} da[b,t]^T h_{t-1}[b]            (the host: lstm_hprev, then a matrix product)
//
// Layout (row-major, batch-major): xw, gates, dxw [batch, time, 4H]; hs, cs, dhs [batch, time, H];
// h0, c0 [batch, H]; w_hh, dw_hh [4H, H]. `gates` holds the ACTIVATED gates. Tensors are `elem` (f32
// or f16, prepended by the pipeline cache), lstm_pack's packed W_hh f32; state and sums f32.
//
// Dispatch shapes:
//   lstm_fwd, lstm_bwd: ONE dispatch for the whole sequence. One workgroup of 256 invocations per
//     batch row (flat workgroup index wid.y * nwg.x + wid.x, see grid_groups), looping over time
//     inside the shader; h, c and the step's gates live in workgroup memory, with a
//     workgroupBarrier between the phases of a step. Forward phase 1: invocation k computes gate
//     rows k and k+256 (then k+512 and k+768, ...) together, dot products of h (workgroup memory)
//     with W_hh^T, which the host packs first (lstm_pack, transposed: [H4, 4 H4], f32) so that
//     neighbouring invocations read neighbouring words; phase 2: invocation k updates hidden units
//     k, k+256, ... . Backward phase 2 (dh = W_hh^T da) reads W_hh as stored (neighbouring units are
//     neighbouring words); when 2H <= 256 two invocations share a unit, each summing half of the
//     4H gates, and the next step adds the two halves. The inner loops take eight terms per trip
//     into two accumulators, so that a GPU has several loads in flight per invocation (a loop of
//     one dependent load per trip is latency-bound on real GPUs). H <= MAX_H.
//   lstm_hprev: Hprev [B*T, H], row (b, t) = hs[b, t-1], or h0[b] at t = 0, for the host's
//     dW_hh product; one invocation per element (flat index as in grid_1d).
//
// tanh is written as (1 - e^{-2|x|}) / (1 + e^{-2|x|}) with the sign of x: it never overflows to
// NaN for large |x| (some drivers build tanh from exp(x) and exp(-x)); it differs from a libm tanh
// by ~1e-7 absolute.

struct Params {
    batch: u32,
    time: u32,
    hidden: u32,
    transposed: u32, // lstm_pack: 1 packs W_hh^T
}

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;
const MAX_H: u32 = 512u;

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

fn tanh_safe(x: f32) -> f32 {
    let e = exp(-2.0 * abs(x));
    return sign(x) * (1.0 - e) / (1.0 + e);
}

// Gate row g of 4H (blocks i, f, g, o): tanh for the cell candidate, sigmoid for the others.
fn gate_act(g: u32, h: u32, a: f32) -> f32 {
    if (g >= 2u * h && g < 3u * h) { return tanh_safe(a); }
    return sigmoid(a);
}

var<workgroup> h_s: array<f32, MAX_H>;        // fwd: h_{t-1};  bwd: dh from step t+1
var<workgroup> c_s: array<f32, MAX_H>;        // fwd: c_{t-1};  bwd: dc from step t+1
var<workgroup> g_s: array<f32, 2048>;         // fwd: activated gates; bwd: their gradient [4 * MAX_H]
var<workgroup> dh2_s: array<f32, MAX_H>;      // bwd: the second half's share of dh (0 with one half)

// ---- forward -------------------------------------------------------------------------------
@group(0) @binding(1) var<storage, read> f_xw: array<elem>;
@group(0) @binding(2) var<storage, read> f_wt: array<f32>;   // lstm_pack, transposed: [H4, 4 H4]
@group(0) @binding(3) var<storage, read> f_h0: array<elem>;
@group(0) @binding(4) var<storage, read> f_c0: array<elem>;
@group(0) @binding(5) var<storage, read_write> f_hs: array<elem>;
@group(0) @binding(6) var<storage, read_write> f_cs: array<elem>;
@group(0) @binding(7) var<storage, read_write> f_gates: array<elem>;

@compute @workgroup_size(256)
fn lstm_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let b = wid.y * nwg.x + wid.x;
    let time = p.time;
    let h = p.hidden;
    let g4 = 4u * h;
    let h4 = (h + 3u) & ~3u;
    let w4 = 4u * h4; // row length of the packed W_hh^T
    if (b >= p.batch) {
        return;
    }
    for (var j = li; j < h; j += WG) {
        h_s[j] = f32(f_h0[b * h + j]);
        c_s[j] = f32(f_c0[b * h + j]);
    }
    workgroupBarrier();
    for (var t = 0u; t < time; t++) {
        let row = (b * time + t) * g4;
        // Phase 1: the gates, a = xw + W_hh h_{t-1}, activated; rows g and g2 = g + WG together
        // (when g2 is past the end, its sum is computed on row g again and dropped).
        for (var g = li; g < g4; g += 2u * WG) {
            let g2 = select(g, g + WG, g + WG < g4);
            let col = (g / h) * h4 + g % h;
            let col2 = (g2 / h) * h4 + g2 % h;
            var a0 = 0.0;
            var a1 = 0.0;
            var b0 = 0.0;
            var b1 = 0.0;
            var j = 0u;
            while (j + 8u <= h) {
                let r = j * w4;
                let h0 = h_s[j];
                let h1 = h_s[j + 1u];
                let h2 = h_s[j + 2u];
                let h3 = h_s[j + 3u];
                let h4_ = h_s[j + 4u];
                let h5 = h_s[j + 5u];
                let h6 = h_s[j + 6u];
                let h7 = h_s[j + 7u];
                a0 = fma(f_wt[r + col], h0, a0);
                b0 = fma(f_wt[r + col2], h0, b0);
                a1 = fma(f_wt[r + w4 + col], h1, a1);
                b1 = fma(f_wt[r + w4 + col2], h1, b1);
                a0 = fma(f_wt[r + 2u * w4 + col], h2, a0);
                b0 = fma(f_wt[r + 2u * w4 + col2], h2, b0);
                a1 = fma(f_wt[r + 3u * w4 + col], h3, a1);
                b1 = fma(f_wt[r + 3u * w4 + col2], h3, b1);
                a0 = fma(f_wt[r + 4u * w4 + col], h4_, a0);
                b0 = fma(f_wt[r + 4u * w4 + col2], h4_, b0);
                a1 = fma(f_wt[r + 5u * w4 + col], h5, a1);
                b1 = fma(f_wt[r + 5u * w4 + col2], h5, b1);
                a0 = fma(f_wt[r + 6u * w4 + col], h6, a0);
                b0 = fma(f_wt[r + 6u * w4 + col2], h6, b0);
                a1 = fma(f_wt[r + 7u * w4 + col], h7, a1);
                b1 = fma(f_wt[r + 7u * w4 + col2], h7, b1);
                j += 8u;
            }
            while (j < h) {
                a0 = fma(f_wt[j * w4 + col], h_s[j], a0);
                b0 = fma(f_wt[j * w4 + col2], h_s[j], b0);
                j += 1u;
            }
            let act = gate_act(g, h, f32(f_xw[row + g]) + (a0 + a1));
            g_s[g] = act;
            f_gates[row + g] = elem(act);
            if (g2 != g) {
                let act2 = gate_act(g2, h, f32(f_xw[row + g2]) + (b0 + b1));
                g_s[g2] = act2;
                f_gates[row + g2] = elem(act2);
            }
        }
        workgroupBarrier();
        // Phase 2: the cell and hidden state.
        let srow = (b * time + t) * h;
        for (var j = li; j < h; j += WG) {
            let c = g_s[h + j] * c_s[j] + g_s[j] * g_s[2u * h + j];
            let hv = g_s[3u * h + j] * tanh_safe(c);
            c_s[j] = c;
            h_s[j] = hv;
            f_cs[srow + j] = elem(c);
            f_hs[srow + j] = elem(hv);
        }
        workgroupBarrier();
    }
}

// ---- backward through time -----------------------------------------------------------------
@group(0) @binding(1) var<storage, read> b_whh: array<elem>;
@group(0) @binding(2) var<storage, read> b_c0: array<elem>;
@group(0) @binding(3) var<storage, read> b_cs: array<elem>;
@group(0) @binding(4) var<storage, read> b_gates: array<elem>;
@group(0) @binding(5) var<storage, read> b_dhs: array<elem>;
@group(0) @binding(6) var<storage, read_write> b_dxw: array<elem>;

@compute @workgroup_size(256)
fn lstm_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let b = wid.y * nwg.x + wid.x;
    let time = p.time;
    let h = p.hidden;
    let g4 = 4u * h;
    if (b >= p.batch) {
        return;
    }
    // Two invocations per unit in phase 2 when they fit: halves = 2, each sums 2H of the 4H gates.
    var halves = 1u;
    if (2u * h <= WG) { halves = 2u; }
    let span = g4 / halves;
    for (var j = li; j < h; j += WG) {
        h_s[j] = 0.0;
        c_s[j] = 0.0;
        dh2_s[j] = 0.0;
    }
    workgroupBarrier();
    for (var s = 0u; s < time; s++) {
        let t = time - 1u - s;
        let row = (b * time + t) * g4;
        let srow = (b * time + t) * h;
        // Phase 1: the gates' gradient, unit by unit (each invocation owns the same units as in
        // phase 2, so h_s / c_s entries are only ever touched by their owner between barriers).
        for (var j = li; j < h; j += WG) {
            let i = f32(b_gates[row + j]);
            let f = f32(b_gates[row + h + j]);
            let g = f32(b_gates[row + 2u * h + j]);
            let o = f32(b_gates[row + 3u * h + j]);
            let c = f32(b_cs[srow + j]);
            var cprev: f32;
            if (t > 0u) { cprev = f32(b_cs[srow - h + j]); } else { cprev = f32(b_c0[b * h + j]); }
            let tc = tanh_safe(c);
            let dh = f32(b_dhs[srow + j]) + (h_s[j] + dh2_s[j]);
            let dc = c_s[j] + dh * o * (1.0 - tc * tc);
            let da_i = dc * g * i * (1.0 - i);
            let da_f = dc * cprev * f * (1.0 - f);
            let da_g = dc * i * (1.0 - g * g);
            let da_o = dh * tc * o * (1.0 - o);
            g_s[j] = da_i;
            g_s[h + j] = da_f;
            g_s[2u * h + j] = da_g;
            g_s[3u * h + j] = da_o;
            b_dxw[row + j] = elem(da_i);
            b_dxw[row + h + j] = elem(da_f);
            b_dxw[row + 2u * h + j] = elem(da_g);
            b_dxw[row + 3u * h + j] = elem(da_o);
            c_s[j] = dc * f;
        }
        workgroupBarrier();
        // Phase 2: dh_{t-1} = W_hh^T da_t (adjacent invocations read adjacent W_hh columns).
        if (t > 0u) {
            for (var e = li; e < halves * h; e += WG) {
                let j = e % h;
                let g0 = (e / h) * span;
                let g1 = g0 + span;
                var acc0 = 0.0;
                var acc1 = 0.0;
                var g = g0;
                while (g + 8u <= g1) {
                    acc0 = fma(f32(b_whh[g * h + j]), g_s[g], acc0);
                    acc1 = fma(f32(b_whh[(g + 1u) * h + j]), g_s[g + 1u], acc1);
                    acc0 = fma(f32(b_whh[(g + 2u) * h + j]), g_s[g + 2u], acc0);
                    acc1 = fma(f32(b_whh[(g + 3u) * h + j]), g_s[g + 3u], acc1);
                    acc0 = fma(f32(b_whh[(g + 4u) * h + j]), g_s[g + 4u], acc0);
                    acc1 = fma(f32(b_whh[(g + 5u) * h + j]), g_s[g + 5u], acc1);
                    acc0 = fma(f32(b_whh[(g + 6u) * h + j]), g_s[g + 6u], acc0);
                    acc1 = fma(f32(b_whh[(g + 7u) * h + j]), g_s[g + 7u], acc1);
                    g += 8u;
                }
                while (g < g1) {
                    acc0 = fma(f32(b_whh[g * h + j]), g_s[g], acc0);
                    g += 1u;
                }
                if (e < h) { h_s[j] = acc0 + acc1; } else { dh2_s[j] = acc0 + acc1; }
            }
        }
        workgroupBarrier();
    }
}

// ---- variant for software renderers (lavapipe/llvmpipe), H <= RH -----------------------------
// There every workgroup runs as SIMD lanes in one CPU thread, every dynamically indexed load is a
// per-lane loop, and barriers are costly, so these kernels trade workgroups for reuse: a workgroup
// owns RB batch rows (ceil(B / RB) workgroups, flat index as in grid_groups) and invocation j owns
// hidden unit j of all RB rows, so that one load of W_hh serves RB rows and one load of h serves
// 4 gates, both as vec4s, and a step needs one barrier (forward) or two (backward). The host picks
// them on software adapters only: on a real GPU B / RB workgroups would leave most of it idle.
// W_hh is first packed by lstm_pack with rows padded to H4 = ceil(H / 4) * 4 (zeros), so vec4
// loads stay aligned for any H. Same math as above; the dot products are summed in another order.
const RB: u32 = 8u;     // batch rows per workgroup
const RH: u32 = 128u;   // largest hidden size
const RH4: u32 = 32u;   // RH / 4

// lstm_pack: transposed = 0: out[g, k] = W_hh[g, k] for g < 4H, k < H4 ([4H, H4]);
//            transposed = 1: out[u, q * H4 + jj] = W_hh[q H + jj, u] for u < H4, jj < H4 ([H4, 4 H4]);
// zero where k, u or jj >= H. One invocation per output element (flat index as in grid_1d).
@group(0) @binding(1) var<storage, read> k_whh: array<elem>;
@group(0) @binding(2) var<storage, read_write> k_out: array<f32>;

@compute @workgroup_size(256)
fn lstm_pack(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32) {
    let h = p.hidden;
    let h4 = (h + 3u) & ~3u;
    let i = (wid.y * nwg.x + wid.x) * 256u + li;
    if (p.transposed == 0u) {
        if (i >= 4u * h * h4) { return; }
        let g = i / h4;
        let k = i % h4;
        var v = 0.0;
        if (k < h) { v = f32(k_whh[g * h + k]); }
        k_out[i] = v;
    } else {
        if (i >= 4u * h4 * h4) { return; }
        let u = i / (4u * h4);
        let q = (i % (4u * h4)) / h4;
        let jj = i % h4;
        var v = 0.0;
        if (u < h && jj < h) { v = f32(k_whh[(q * h + jj) * h + u]); }
        k_out[i] = v;
    }
}

@group(0) @binding(1) var<storage, read> s_xw: array<elem>;
@group(0) @binding(2) var<storage, read> s_wp: array<vec4<f32>>;   // lstm_pack transposed = 0
@group(0) @binding(3) var<storage, read> s_h0: array<elem>;
@group(0) @binding(4) var<storage, read> s_c0: array<elem>;
@group(0) @binding(5) var<storage, read_write> s_hs: array<elem>;
@group(0) @binding(6) var<storage, read_write> s_cs: array<elem>;
@group(0) @binding(7) var<storage, read_write> s_gates: array<elem>;

// h_{t-1} of the RB rows, double-buffered: [2][RB][RH4] vec4s (step t reads buffer t % 2).
var<workgroup> sh: array<vec4<f32>, 512>;

@compute @workgroup_size(128)
fn lstm_fwd_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let b0 = (wid.y * nwg.x + wid.x) * RB;
    let time = p.time;
    let h = p.hidden;
    let g4 = 4u * h;
    let q4 = (h + 3u) / 4u;
    let j = li;
    let own = j < h;
    // Rows past the batch read the last row and store nothing.
    var c: array<f32, 8>;
    if (own) {
        for (var r = 0u; r < RB; r++) {
            let b = min(b0 + r, p.batch - 1u);
            c[r] = f32(s_c0[b * h + j]);
            sh[r * RH4 + j / 4u][j % 4u] = f32(s_h0[b * h + j]);
        }
    }
    workgroupBarrier();
    for (var t = 0u; t < time; t++) {
        let cur = (t & 1u) * RB * RH4;
        let nxt = RB * RH4 - cur;
        if (own) {
            // a[r] = (i, f, g, o) pre-activations of unit j, row r, as two matrices: column r of
            // a0 (rows 0-3) and a1 (rows 4-7); per 4 columns k of W_hh, a += W_blk^T H_blk with
            // W_blk's columns the 4 gate rows and H_blk's the rows' h (nothing indexed at run time).
            var a0: mat4x4<f32>;
            var a1: mat4x4<f32>;
            var xr: array<vec4<f32>, 8>;
            for (var r = 0u; r < RB; r++) {
                let row = (min(b0 + r, p.batch - 1u) * time + t) * g4 + j;
                xr[r] = vec4<f32>(f32(s_xw[row]), f32(s_xw[row + h]), f32(s_xw[row + 2u * h]), f32(s_xw[row + 3u * h]));
            }
            a0 = mat4x4<f32>(xr[0], xr[1], xr[2], xr[3]);
            a1 = mat4x4<f32>(xr[4], xr[5], xr[6], xr[7]);
            let hb = cur;
            for (var k = 0u; k < q4; k++) {
                let wt = transpose(mat4x4<f32>(s_wp[j * q4 + k], s_wp[(h + j) * q4 + k],
                                               s_wp[(2u * h + j) * q4 + k], s_wp[(3u * h + j) * q4 + k]));
                a0 += wt * mat4x4<f32>(sh[hb + k], sh[hb + RH4 + k], sh[hb + 2u * RH4 + k], sh[hb + 3u * RH4 + k]);
                a1 += wt * mat4x4<f32>(sh[hb + 4u * RH4 + k], sh[hb + 5u * RH4 + k], sh[hb + 6u * RH4 + k],
                                       sh[hb + 7u * RH4 + k]);
            }
            var a = array<vec4<f32>, 8>(a0[0], a0[1], a0[2], a0[3], a1[0], a1[1], a1[2], a1[3]);
            for (var r = 0u; r < RB; r++) {
                let i = sigmoid(a[r].x);
                let f = sigmoid(a[r].y);
                let g = tanh_safe(a[r].z);
                let o = sigmoid(a[r].w);
                let cv = f * c[r] + i * g;
                let hv = o * tanh_safe(cv);
                c[r] = cv;
                sh[nxt + r * RH4 + j / 4u][j % 4u] = hv;
                let b = b0 + r;
                if (b < p.batch) {
                    let row = (b * time + t) * g4 + j;
                    s_gates[row] = elem(i);
                    s_gates[row + h] = elem(f);
                    s_gates[row + 2u * h] = elem(g);
                    s_gates[row + 3u * h] = elem(o);
                    let srow = (b * time + t) * h + j;
                    s_cs[srow] = elem(cv);
                    s_hs[srow] = elem(hv);
                }
            }
        }
        workgroupBarrier();
    }
}

@group(0) @binding(1) var<storage, read> u_wt: array<vec4<f32>>;   // lstm_pack transposed = 1
@group(0) @binding(2) var<storage, read> u_c0: array<elem>;
@group(0) @binding(3) var<storage, read> u_cs: array<elem>;
@group(0) @binding(4) var<storage, read> u_gates: array<elem>;
@group(0) @binding(5) var<storage, read> u_dhs: array<elem>;
@group(0) @binding(6) var<storage, read_write> u_dxw: array<elem>;

var<workgroup> sda: array<vec4<f32>, 1024>; // da of the step: [RB][4 gates x q4 vec4s], row stride 4 RH4
var<workgroup> sdh: array<f32, 1024>;       // (W_hh^T da)[unit] of the step: [RB][RH]

@compute @workgroup_size(128)
fn lstm_bwd_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let b0 = (wid.y * nwg.x + wid.x) * RB;
    let time = p.time;
    let h = p.hidden;
    let g4 = 4u * h;
    let q4 = (h + 3u) / 4u;
    let j = li;
    let own = j < h;
    var dc: array<f32, 8>;
    for (var r = 0u; r < RB; r++) {
        dc[r] = 0.0;
    }
    // sdh starts zeroed (workgroup memory is zero-initialised).
    for (var s = 0u; s < time; s++) {
        let t = time - 1u - s;
        // Phase 1: unit j's gate gradients for each row (as lstm_bwd's phase 1).
        if (own) {
            for (var r = 0u; r < RB; r++) {
                let b = min(b0 + r, p.batch - 1u);
                let row = (b * time + t) * g4 + j;
                let srow = (b * time + t) * h + j;
                let i = f32(u_gates[row]);
                let f = f32(u_gates[row + h]);
                let g = f32(u_gates[row + 2u * h]);
                let o = f32(u_gates[row + 3u * h]);
                let cv = f32(u_cs[srow]);
                var cprev: f32;
                if (t > 0u) { cprev = f32(u_cs[srow - h]); } else { cprev = f32(u_c0[b * h + j]); }
                let tc = tanh_safe(cv);
                let dh = f32(u_dhs[srow]) + sdh[r * RH + j];
                let dcv = dc[r] + dh * o * (1.0 - tc * tc);
                let da = vec4<f32>(dcv * g * i * (1.0 - i), dcv * cprev * f * (1.0 - f),
                                   dcv * i * (1.0 - g * g), dh * tc * o * (1.0 - o));
                dc[r] = dcv * f;
                let base = r * 4u * RH4 + j / 4u;
                sda[base][j % 4u] = da.x;
                sda[base + q4][j % 4u] = da.y;
                sda[base + 2u * q4][j % 4u] = da.z;
                sda[base + 3u * q4][j % 4u] = da.w;
                if (b0 + r < p.batch) {
                    u_dxw[row] = elem(da.x);
                    u_dxw[row + h] = elem(da.y);
                    u_dxw[row + 2u * h] = elem(da.z);
                    u_dxw[row + 3u * h] = elem(da.w);
                }
            }
        }
        workgroupBarrier();
        // Phase 2: dh_{t-1} = W_hh^T da_t; invocation m < q4 computes units 4m..4m+3 of every row.
        if (t > 0u && li < q4) {
            let u0 = 4u * li;
            // acc[r] = (W_hh^T da_r) for units u0..u0+3, as the columns of acc0 (rows 0-3) and
            // acc1 (rows 4-7): per 4 gate rows k, acc += W_blk^T D_blk (as in lstm_fwd_rows).
            var acc0 = mat4x4<f32>();
            var acc1 = mat4x4<f32>();
            let ws = 4u * q4;
            for (var k = 0u; k < ws; k++) {
                let wt = transpose(mat4x4<f32>(u_wt[u0 * ws + k], u_wt[(u0 + 1u) * ws + k],
                                               u_wt[(u0 + 2u) * ws + k], u_wt[(u0 + 3u) * ws + k]));
                let d = 4u * RH4;
                acc0 += wt * mat4x4<f32>(sda[k], sda[d + k], sda[2u * d + k], sda[3u * d + k]);
                acc1 += wt * mat4x4<f32>(sda[4u * d + k], sda[5u * d + k], sda[6u * d + k], sda[7u * d + k]);
            }
            var acc = array<vec4<f32>, 8>(acc0[0], acc0[1], acc0[2], acc0[3], acc1[0], acc1[1], acc1[2], acc1[3]);
            for (var r = 0u; r < RB; r++) {
                for (var e = 0u; e < 4u; e++) {
                    if (u0 + e < h) { sdh[r * RH + u0 + e] = acc[r][e]; }
                }
            }
        }
        workgroupBarrier();
    }
}

// lstm_hprev (before dW_hh += dxw^T Hprev as a matrix product): writes Hprev
// [B*T, H], row (b, t) = hs[b, t-1] or h0[b] at t = 0. One invocation per element, flat index as
// in grid_1d. Hprev is `elem` like hs (a copy: exact), since it is an operand of the product.
@group(0) @binding(1) var<storage, read> v_hs: array<elem>;
@group(0) @binding(2) var<storage, read> v_h0: array<elem>;
@group(0) @binding(3) var<storage, read_write> v_out: array<elem>;

@compute @workgroup_size(256)
fn lstm_hprev(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) li: u32) {
    let h = p.hidden;
    let i = (wid.y * nwg.x + wid.x) * 256u + li;
    if (i >= p.batch * p.time * h) {
        return;
    }
    let row = i / h;
    let t = row % p.time;
    if (t > 0u) {
        v_out[i] = v_hs[i - h];
    } else {
        v_out[i] = v_h0[(row / p.time) * h + i % h];
    }
}
