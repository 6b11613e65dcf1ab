// Causal dilated 1-D convolution (PyTorch Conv1d layout), forward and backward.
//
// Math. Tap j looks back s_j = (K-1-j) * dilation steps; x at negative time is 0:
//   forward:         y[b,o,t]  = bias[o] + sum_{c,j} w[o,c,j] * x[b,c,t-s_j]
//   backward input:  dx[b,c,t] (+)= sum_{o,j} w[o,c,j] * dy[b,o,t+s_j]        (t+s_j < T)
//   backward weight: dw[o,c,j] += sum_{b,t} dy[b,o,t] * x[b,c,t-s_j]          (t >= s_j)
//   (the bias gradient is the Backend's bias_grad, recorded by the host.)
// Layout: row-major x [B, Cin, T], w [Cout, Cin, K], bias [Cout], y [B, Cout, T]. Tensors are
// `elem` (f32 or f16, prepended by the pipeline cache), the split-K partials f32; tiles and sums f32.
//
// Each pass is a sum over taps of matrix products, computed like shaders/matmul.wgsl: a
// workgroup of 16x16 invocations owns a 64x64 tile of the output; per tap and per step of 16
// along the reduced dimension it stages a 64x16 panel of the left operand and a 16x64 panel of
// the right one in workgroup memory (zero outside the tensors and in the causal padding), then
// each invocation accumulates a 4x4 register block (rows ty + 16i, columns tx + 16j). Taps that
// see only padding (s_j >= T) are skipped (the test depends only on uniform parameters).
//
//   conv_fwd:        tile of y over (o, flat column b*T+t); reduce over c, for every tap.
//                    Bindings 1 x, 2 w, 3 bias, 4 y. Dispatch x = ceil(B*T/64), y = ceil(Cout/64).
//   conv_bwd_input:  tile of dx over (c, b*T+t); reduce over o, for every tap; `accumulate`.
//                    Bindings 1 dy, 2 w, 3 dx. Dispatch x = ceil(B*T/64), y = ceil(Cin/64).
//   conv_bwd_weight: split-K partial sums: tile of dw[:, :, j] over (o, c) for one tap j and one
//                    slice of `slice_len` consecutive flat columns b*T+t; writes
//                    part[slice][o][c][j] (every element, zeros for padding-only taps).
//                    Bindings 1 x, 2 dy, 3 part. Dispatch x = ceil(Cin/64), y = ceil(Cout/64),
//                    z = slices * K (z = slice * K + j).
//   conv_bwd_weight_reduce: dw[i] += sum_slice part[slice][i], in slice order (deterministic).
//                    Bindings 1 part, 2 dw. Dispatch: flat 1-D over Cout*Cin*K, 256 per group.

struct Params {
    batch: u32,
    cin: u32,
    cout: u32,
    time: u32,
    k: u32,
    dilation: u32,   // clamped to T by the host: a tap looking back >= T steps is padding either way
    accumulate: u32, // conv_bwd_input: add to dx instead of overwriting it
    slice_len: u32,  // conv_bwd_weight: flat columns per slice
    slices: u32,     // conv_bwd_weight(_reduce): number of slices
}

@group(0) @binding(0) var<uniform> p: Params;

// conv_fwd
@group(0) @binding(1) var<storage, read> fx: array<elem>;
@group(0) @binding(2) var<storage, read> fw: array<elem>;
@group(0) @binding(3) var<storage, read> fbias: array<elem>;
@group(0) @binding(4) var<storage, read_write> fy: array<elem>;
// conv_bwd_input
@group(0) @binding(1) var<storage, read> idy: array<elem>;
@group(0) @binding(2) var<storage, read> iw: array<elem>;
@group(0) @binding(3) var<storage, read_write> idx: array<elem>;
// conv_bwd_weight
@group(0) @binding(1) var<storage, read> wx: array<elem>;
@group(0) @binding(2) var<storage, read> wdy: array<elem>;
@group(0) @binding(3) var<storage, read_write> wpart: array<f32>;
// conv_bwd_weight_reduce
@group(0) @binding(1) var<storage, read> rpart: array<f32>;
@group(0) @binding(2) var<storage, read_write> rdw: array<elem>;

const TILE: u32 = 64u; // tile rows and columns
const TK: u32 = 16u;   // depth of one step
const LD: u32 = 65u;   // padded panel row length (avoids bank conflicts on the stores)

var<workgroup> As: array<f32, 1040>; // [TK][LD]: As[kk * LD + mm] = left[row0 + mm, k0 + kk]
var<workgroup> Bs: array<f32, 1040>; // [TK][LD]: Bs[kk * LD + nn] = right[k0 + kk, col0 + nn]

// The 4x4 register block of an invocation, row i = output row ty + 16i, component j = column
// tx + 16j. Four named vec4s rather than a private array indexed by loop variables, which some
// compilers (NVIDIA's among them) place in slow local memory.
struct Acc {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

// One step of 16 along the reduced dimension from the staged panels.
fn accumulate_panels(acc: ptr<function, Acc>, tx: u32, ty: u32) {
    for (var kk = 0u; kk < TK; kk++) {
        let base = kk * LD;
        let bv = vec4<f32>(Bs[base + tx], Bs[base + tx + 16u], Bs[base + tx + 32u], Bs[base + tx + 48u]);
        (*acc).r0 = fma(vec4<f32>(As[base + ty]), bv, (*acc).r0);
        (*acc).r1 = fma(vec4<f32>(As[base + ty + 16u]), bv, (*acc).r1);
        (*acc).r2 = fma(vec4<f32>(As[base + ty + 32u]), bv, (*acc).r2);
        (*acc).r3 = fma(vec4<f32>(As[base + ty + 48u]), bv, (*acc).r3);
    }
}

fn zero_acc() -> Acc {
    return Acc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
}

// Row i of the block, as a value (its components are then picked without touching memory).
fn acc_row(acc: Acc, i: u32) -> vec4<f32> {
    switch i {
        case 0u: { return acc.r0; }
        case 1u: { return acc.r1; }
        case 2u: { return acc.r2; }
        default: { return acc.r3; }
    }
}

@compute @workgroup_size(16, 16)
fn conv_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
            @builtin(local_invocation_index) li: u32) {
    let cin = p.cin;
    let cout = p.cout;
    let T = p.time;
    let K = p.k;
    let n = p.batch * T;
    let row0 = wid.y * TILE; // output channel
    let col0 = wid.x * TILE; // flat b*T + t
    var acc = zero_acc();
    for (var j = 0u; j < K; j++) {
        let s = (K - 1u - j) * p.dilation;
        if (s >= T) { continue; }
        for (var c0 = 0u; c0 < cin; c0 += TK) {
            for (var r = 0u; r < 4u; r++) {
                let e = li + 256u * r;
                // left: W_j[o, c] = w[o, c, j]; 64 rows x 16 depth
                let kk = e % TK;
                let mm = e / TK;
                let o = row0 + mm;
                let ca = c0 + kk;
                var va = 0.0;
                if (o < cout && ca < cin) { va = f32(fw[(o * cin + ca) * K + j]); }
                As[kk * LD + mm] = va;
                // right: x[b, c, t - s] (0 in the padding); 16 depth x 64 columns, along t
                let nn = e % TILE;
                let kb = e / TILE;
                let col = col0 + nn;
                let cb = c0 + kb;
                var vb = 0.0;
                if (col < n && cb < cin) {
                    let b = col / T;
                    let t = col % T;
                    if (t >= s) { vb = f32(fx[(b * cin + cb) * T + t - s]); }
                }
                Bs[kb * LD + nn] = vb;
            }
            workgroupBarrier();
            accumulate_panels(&acc, lid.x, lid.y);
            workgroupBarrier();
        }
    }
    for (var i = 0u; i < 4u; i++) {
        let o = row0 + lid.y + 16u * i;
        if (o >= cout) { continue; }
        let row = acc_row(acc, i);
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + 16u * j;
            if (col < n) {
                let b = col / T;
                let t = col % T;
                fy[(b * cout + o) * T + t] = elem(row[j] + f32(fbias[o]));
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn conv_bwd_input(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                  @builtin(local_invocation_index) li: u32) {
    let cin = p.cin;
    let cout = p.cout;
    let T = p.time;
    let K = p.k;
    let n = p.batch * T;
    let row0 = wid.y * TILE; // input channel
    let col0 = wid.x * TILE; // flat b*T + t
    var acc = zero_acc();
    for (var j = 0u; j < K; j++) {
        let s = (K - 1u - j) * p.dilation;
        if (s >= T) { continue; }
        for (var o0 = 0u; o0 < cout; o0 += TK) {
            for (var r = 0u; r < 4u; r++) {
                let e = li + 256u * r;
                // left: W_j^T[c, o] = w[o, c, j]; 64 rows (c) x 16 depth (o), along c
                let mm = e % TILE;
                let kk = e / TILE;
                let c = row0 + mm;
                let oa = o0 + kk;
                var va = 0.0;
                if (c < cin && oa < cout) { va = f32(iw[(oa * cin + c) * K + j]); }
                As[kk * LD + mm] = va;
                // right: dy[b, o, t + s] (0 past the end); 16 depth x 64 columns, along t
                let nn = e % TILE;
                let kb = e / TILE;
                let col = col0 + nn;
                let ob = o0 + kb;
                var vb = 0.0;
                if (col < n && ob < cout) {
                    let b = col / T;
                    let t = col % T;
                    if (t + s < T) { vb = f32(idy[(b * cout + ob) * T + t + s]); }
                }
                Bs[kb * LD + nn] = vb;
            }
            workgroupBarrier();
            accumulate_panels(&acc, lid.x, lid.y);
            workgroupBarrier();
        }
    }
    for (var i = 0u; i < 4u; i++) {
        let c = row0 + lid.y + 16u * i;
        if (c >= cin) { continue; }
        let row = acc_row(acc, i);
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + 16u * j;
            if (col < n) {
                let b = col / T;
                let t = col % T;
                let at = (b * cin + c) * T + t;
                if (p.accumulate != 0u) {
                    idx[at] = elem(f32(idx[at]) + row[j]);
                } else {
                    idx[at] = elem(row[j]);
                }
            }
        }
    }
}

@compute @workgroup_size(16, 16)
fn conv_bwd_weight(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                   @builtin(local_invocation_index) li: u32) {
    let cin = p.cin;
    let cout = p.cout;
    let T = p.time;
    let K = p.k;
    let n = p.batch * T;
    let row0 = wid.y * TILE; // output channel o
    let col0 = wid.x * TILE; // input channel c
    let j = wid.z % K;
    let slice = wid.z / K;
    let start = slice * p.slice_len;
    let end = min(start + p.slice_len, n);
    let s = (K - 1u - j) * p.dilation;
    var acc = zero_acc();
    if (s < T) {
        for (var k0 = start; k0 < end; k0 += TK) {
            for (var r = 0u; r < 4u; r++) {
                let e = li + 256u * r;
                // Both panels along the flat column b*T + t (contiguous in t).
                let kk = e % TK;
                let mm = e / TK;
                let col = k0 + kk;
                var b = 0u;
                var t = 0u;
                if (col < end) { b = col / T; t = col % T; }
                // left: dy[b, o, t]; 64 rows (o) x 16 depth
                let o = row0 + mm;
                var va = 0.0;
                if (col < end && o < cout) { va = f32(wdy[(b * cout + o) * T + t]); }
                As[kk * LD + mm] = va;
                // right: x[b, c, t - s]; 16 depth x 64 columns (c)
                let c = col0 + mm;
                var vb = 0.0;
                if (col < end && c < cin && t >= s) { vb = f32(wx[(b * cin + c) * T + t - s]); }
                Bs[kk * LD + mm] = vb;
            }
            workgroupBarrier();
            accumulate_panels(&acc, lid.x, lid.y);
            workgroupBarrier();
        }
    }
    let wn = cout * cin * K;
    for (var i = 0u; i < 4u; i++) {
        let o = row0 + lid.y + 16u * i;
        if (o >= cout) { continue; }
        let row = acc_row(acc, i);
        for (var jj = 0u; jj < 4u; jj++) {
            let c = col0 + lid.x + 16u * jj;
            if (c < cin) {
                wpart[slice * wn + (o * cin + c) * K + j] = row[jj];
            }
        }
    }
}

@compute @workgroup_size(256)
fn conv_bwd_weight_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                          @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    let wn = p.cout * p.cin * p.k;
    if (i >= wn) { return; }
    var sum = 0.0;
    for (var z = 0u; z < p.slices; z++) {
        sum += rpart[z * wn + i];
    }
    rdw[i] = elem(f32(rdw[i]) + sum);
}
