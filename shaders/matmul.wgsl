// Matrix product C[m, n] = op(A) op(B) (+ C when accumulate), op(A) being [m, k].
// Layout: row-major. A is stored [m, k], or [k, m] when trans_a; B is stored [k, n], or [n, k]
// when trans_b; C is [m, n]. Bindings: 1 A, 2 B, 3 C, of `elem` (f32 or f16, prepended by the
// pipeline cache); panels and sums f32.
// Dispatch: entry points around one body (`tile`), 4x4 outputs per invocation.
//   matmul:       16x16 invocations per 64x64 tile of C (x = ceil(n/64) column tiles, y = ceil(m/64)
//                 row tiles): the default.
//   matmul_small: 8x8 invocations per 32x32 tile (x = ceil(n/32), y = ceil(m/32)): chosen by the host
//                 when the 64x64 grid would have too few workgroups to fill a GPU (small m*n such as
//                 one LSTM step or a dense layer on a batch).
//   matmul_split: split-K for few tiles and a long k (the weight gradients, k = B*T rows): as
//                 `matmul`, with z = `splits` ranges of `kchunk` along k; range z writes its
//                 partial tile to part[z, m, n] (f32, binding 3 instead of C).
//   matmul_reduce: C[i] = (accumulate ? C[i] : 0) + sum_z part[z, i], z in order (deterministic,
//                 no atomics); one invocation per element of C, 256 per workgroup, flat index as in
//                 grid_1d. Bindings 1 part, 2 C.
// Per step of 16 along k, the workgroup stages a (4 NT)x16 panel of op(A) and a 16x(4 NT) panel of
// op(B) in workgroup memory as vec4s (NT = invocations per side; loads from global memory are
// coalesced along whichever dimension is contiguous there, zero past the edges). Every invocation
// (tx, ty) then accumulates a 4x4 register block, rows 4ty..4ty+3 and columns 4tx..4tx+3, with two
// vec4 workgroup loads per 16 multiply-adds (the A vec4 is a broadcast across tx, the B vec4s are
// consecutive across tx). Edges (m, n, k not multiples of the tile) are handled by the zero
// padding of the panels and a bounds check on the store.

struct Params {
    m: u32,
    k: u32,
    n: u32,
    trans_a: u32,
    trans_b: u32,
    accumulate: u32,
    splits: u32, // matmul_split / matmul_reduce: ranges along k
    kchunk: u32, // matmul_split: k per range
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<elem>;
@group(0) @binding(2) var<storage, read> b: array<elem>;
@group(0) @binding(3) var<storage, read_write> c: array<elem>;
// matmul_split
@group(0) @binding(3) var<storage, read_write> part: array<f32>;
// matmul_reduce
@group(0) @binding(1) var<storage, read> r_part: array<f32>;
@group(0) @binding(2) var<storage, read_write> r_c: array<elem>;

const TK: u32 = 16u;   // depth of one step

// As[kk * NT + q][r] = op(A)[row0 + 4q + r, k0 + kk];  Bs[kk * NT + q][r] = op(B)[k0 + kk, col0 + 4q + r]
var<workgroup> As: array<vec4<f32>, 256>; // TK x 16 vec4 (the 64-tile kernel; the 32-tile uses half)
var<workgroup> Bs: array<vec4<f32>, 256>;

// The 4x4 block of an invocation: rI[j] = C[row0 + 4ty + I, col0 + 4tx + j]. Named vec4s, not a
// private array indexed by loop variables, which some compilers (NVIDIA's among them) place in
// slow local memory.
struct Acc {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let row0 = wid.y * 64u;
    let col0 = wid.x * 64u;
    store_block(row0 + 4u * lid.y, col0 + 4u * lid.x, tile(row0, col0, lid.x, lid.y, li, 16u, 0u, p.k));
}

@compute @workgroup_size(8, 8)
fn matmul_small(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let row0 = wid.y * 32u;
    let col0 = wid.x * 32u;
    store_block(row0 + 4u * lid.y, col0 + 4u * lid.x, tile(row0, col0, lid.x, lid.y, li, 8u, 0u, p.k));
}

@compute @workgroup_size(16, 16)
fn matmul_split(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                @builtin(local_invocation_index) li: u32) {
    let row0 = wid.y * 64u;
    let col0 = wid.x * 64u;
    let k_begin = min(p.k, wid.z * p.kchunk);
    let k_end = min(p.k, k_begin + p.kchunk);
    let acc = tile(row0, col0, lid.x, lid.y, li, 16u, k_begin, k_end);
    let r = row0 + 4u * lid.y;
    let col = col0 + 4u * lid.x;
    let base = wid.z * p.m * p.n;
    part_row(base, r, col, acc.r0);
    part_row(base, r + 1u, col, acc.r1);
    part_row(base, r + 2u, col, acc.r2);
    part_row(base, r + 3u, col, acc.r3);
}

fn part_row(base: u32, r: u32, col0: u32, v: vec4<f32>) {
    if (r >= p.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        if (col0 + j < p.n) { part[base + r * p.n + col0 + j] = v[j]; }
    }
}

@compute @workgroup_size(256)
fn matmul_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) li: u32) {
    let i = (wid.y * nwg.x + wid.x) * 256u + li;
    let mn = p.m * p.n;
    if (i >= mn) { return; }
    var sum = 0.0;
    if (p.accumulate != 0u) { sum = f32(r_c[i]); }
    for (var z = 0u; z < p.splits; z++) {
        sum += r_part[z * mn + i];
    }
    r_c[i] = elem(sum);
}

// op(A)[r, kk], zero past the edges (kk >= k_end).
fn load_a(r: u32, kk: u32, k_end: u32) -> f32 {
    if (r >= p.m || kk >= k_end) { return 0.0; }
    if (p.trans_a == 0u) { return f32(a[r * p.k + kk]); }
    return f32(a[kk * p.m + r]);
}

// op(B)[kk, col], zero past the edges (kk >= k_end).
fn load_b(kk: u32, col: u32, k_end: u32) -> f32 {
    if (col >= p.n || kk >= k_end) { return 0.0; }
    if (p.trans_b == 0u) { return f32(b[kk * p.n + col]); }
    return f32(b[col * p.k + kk]);
}

// C[r, col0 .. col0 + 3] (+)= v, the columns inside C only.
fn store4(r: u32, col0: u32, v: vec4<f32>) {
    if (r >= p.m) { return; }
    store1(r, col0, v.x);
    store1(r, col0 + 1u, v.y);
    store1(r, col0 + 2u, v.z);
    store1(r, col0 + 3u, v.w);
}

fn store1(r: u32, col: u32, x: f32) {
    if (col >= p.n) { return; }
    let idx = r * p.n + col;
    if (p.accumulate != 0u) {
        c[idx] = elem(f32(c[idx]) + x);
    } else {
        c[idx] = elem(x);
    }
}

// The (4 nt) x (4 nt) tile of C at (row0, col0) summed over k in [k_begin, k_end), computed by
// nt x nt invocations; returns invocation (tx, ty)'s 4x4 block.
fn tile(row0: u32, col0: u32, tx: u32, ty: u32, li: u32, nt: u32, k_begin: u32, k_end: u32) -> Acc {
    let threads = nt * nt;
    // Each invocation stages whole vec4s of the panels (TK * nt of each, 16 / nt per invocation):
    // a workgroup vec4 is only ever written by one invocation, whole.
    let slots = TK * nt / threads;

    var acc = Acc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
    for (var k0 = k_begin; k0 < k_end; k0 += TK) {
        for (var r = 0u; r < slots; r++) {
            let s = li + threads * r;
            // op(A) panel: rows 4q..4q+3 at depth kk (neighbouring invocations step along the
            // dimension that is contiguous in memory)
            var q: u32;
            var kk: u32;
            if (p.trans_a == 0u) { kk = s % TK; q = s / TK; } else { q = s % nt; kk = s / nt; }
            let ra = row0 + 4u * q;
            let gk = k0 + kk;
            As[kk * nt + q] = vec4<f32>(load_a(ra, gk, k_end), load_a(ra + 1u, gk, k_end),
                                        load_a(ra + 2u, gk, k_end), load_a(ra + 3u, gk, k_end));
            // op(B) panel: depth kb, columns 4qb..4qb+3
            var qb: u32;
            var kb: u32;
            if (p.trans_b == 0u) { qb = s % nt; kb = s / nt; } else { kb = s % TK; qb = s / TK; }
            let cb = col0 + 4u * qb;
            let gkb = k0 + kb;
            Bs[kb * nt + qb] = vec4<f32>(load_b(gkb, cb, k_end), load_b(gkb, cb + 1u, k_end),
                                         load_b(gkb, cb + 2u, k_end), load_b(gkb, cb + 3u, k_end));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let av = As[kk * nt + ty];
            let bv = Bs[kk * nt + tx];
            acc.r0 = fma(vec4<f32>(av.x), bv, acc.r0);
            acc.r1 = fma(vec4<f32>(av.y), bv, acc.r1);
            acc.r2 = fma(vec4<f32>(av.z), bv, acc.r2);
            acc.r3 = fma(vec4<f32>(av.w), bv, acc.r3);
        }
        workgroupBarrier();
    }
    return acc;
}

// Invocation block at C[r, col], C[r + 1, col], ... (the rows and columns inside C).
fn store_block(r: u32, col: u32, acc: Acc) {
    store4(r, col, acc.r0);
    store4(r + 1u, col, acc.r1);
    store4(r + 2u, col, acc.r2);
    store4(r + 3u, col, acc.r3);
}

// ---- variant for software renderers (lavapipe/llvmpipe) -----------------------------------------
// matmul_regs: no workgroup memory; each invocation computes an 8x8 block of C from vec4 loads of
// A and B straight from storage, 16 vec4 loads per 4 steps of k (256 multiply-adds). On a software
// renderer every dynamically indexed load is a per-lane loop while arithmetic is SIMD across lanes,
// so loads per multiply-add decide the speed (workgroup-memory tiles are slower there). Needs m, k
// and n multiples of 4 (the host checks; vec4 loads of either layout then stay aligned), edges of
// m and n that are not multiples of 8 are clamped on load and skipped on store.
// Dispatch: one invocation per 8x8 block, 64 per workgroup, flat index (wid.y * nwg.x + wid.x) * 64
// + li as in grid_1d; block (bm, bn) = (index / ceil(n/8), index % ceil(n/8)).

// Storage is vec4<elem> (loads widened with vec4<f32>(...), stores narrowed with vec4<elem>(...)).
@group(0) @binding(1) var<storage, read> av: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read> bv: array<vec4<elem>>;
@group(0) @binding(3) var<storage, read_write> cv: array<vec4<elem>>;

@compute @workgroup_size(64)
fn matmul_regs(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) li: u32) {
    let m = p.m;
    let k = p.k;
    let n = p.n;
    let bn = (n + 7u) / 8u;
    let idx = (wid.y * nwg.x + wid.x) * 64u + li;
    if (idx >= ((m + 7u) / 8u) * bn) {
        return;
    }
    let row0 = (idx / bn) * 8u;
    let col0 = (idx % bn) * 8u;
    let k4 = k / 4u;
    let m4 = m / 4u;
    let n4 = n / 4u;
    // Second halves past the edge (m or n = 4 mod 8) load the first half again and are not stored.
    let rh = min(row0 / 4u + 1u, m4 - 1u);   // vec4 column index of rows 4..7 (transposed A)
    let ch = min(col0 / 4u + 1u, n4 - 1u);   // vec4 index of columns 4..7 (B not transposed)

    // accRC: the transposed 4x4 block of C at rows 4R.., columns 4C..: column e is C row
    // row0 + 4R + e over 4 columns, so a row is stored as one vec4. Per block of 4 along k,
    // accRC += BtC * AtR with AtR (column e: op(A)[row0 + 4R + e, k0..k0+4]) and BtC (column kk:
    // op(B)[k0 + kk, col0 + 4C..]); no private arrays, so nothing is dynamically indexed.
    var acc00 = mat4x4<f32>();
    var acc01 = mat4x4<f32>();
    var acc10 = mat4x4<f32>();
    var acc11 = mat4x4<f32>();
    for (var kb = 0u; kb < k4; kb++) {
        let k0 = 4u * kb;
        var at0: mat4x4<f32>;
        var at1: mat4x4<f32>;
        if (p.trans_a == 0u) {
            let rm = m - 1u;
            at0 = mat4x4<f32>(vec4<f32>(av[min(row0, rm) * k4 + kb]), vec4<f32>(av[min(row0 + 1u, rm) * k4 + kb]),
                              vec4<f32>(av[min(row0 + 2u, rm) * k4 + kb]), vec4<f32>(av[min(row0 + 3u, rm) * k4 + kb]));
            at1 = mat4x4<f32>(vec4<f32>(av[min(row0 + 4u, rm) * k4 + kb]), vec4<f32>(av[min(row0 + 5u, rm) * k4 + kb]),
                              vec4<f32>(av[min(row0 + 6u, rm) * k4 + kb]), vec4<f32>(av[min(row0 + 7u, rm) * k4 + kb]));
        } else {
            let r0 = row0 / 4u;
            at0 = transpose(mat4x4<f32>(vec4<f32>(av[k0 * m4 + r0]), vec4<f32>(av[(k0 + 1u) * m4 + r0]),
                                        vec4<f32>(av[(k0 + 2u) * m4 + r0]), vec4<f32>(av[(k0 + 3u) * m4 + r0])));
            at1 = transpose(mat4x4<f32>(vec4<f32>(av[k0 * m4 + rh]), vec4<f32>(av[(k0 + 1u) * m4 + rh]),
                                        vec4<f32>(av[(k0 + 2u) * m4 + rh]), vec4<f32>(av[(k0 + 3u) * m4 + rh])));
        }
        var bt0: mat4x4<f32>;
        var bt1: mat4x4<f32>;
        if (p.trans_b == 0u) {
            let c0 = col0 / 4u;
            bt0 = mat4x4<f32>(vec4<f32>(bv[k0 * n4 + c0]), vec4<f32>(bv[(k0 + 1u) * n4 + c0]),
                              vec4<f32>(bv[(k0 + 2u) * n4 + c0]), vec4<f32>(bv[(k0 + 3u) * n4 + c0]));
            bt1 = mat4x4<f32>(vec4<f32>(bv[k0 * n4 + ch]), vec4<f32>(bv[(k0 + 1u) * n4 + ch]),
                              vec4<f32>(bv[(k0 + 2u) * n4 + ch]), vec4<f32>(bv[(k0 + 3u) * n4 + ch]));
        } else {
            let cm = n - 1u;
            bt0 = transpose(mat4x4<f32>(vec4<f32>(bv[min(col0, cm) * k4 + kb]), vec4<f32>(bv[min(col0 + 1u, cm) * k4 + kb]),
                                        vec4<f32>(bv[min(col0 + 2u, cm) * k4 + kb]), vec4<f32>(bv[min(col0 + 3u, cm) * k4 + kb])));
            bt1 = transpose(mat4x4<f32>(vec4<f32>(bv[min(col0 + 4u, cm) * k4 + kb]), vec4<f32>(bv[min(col0 + 5u, cm) * k4 + kb]),
                                        vec4<f32>(bv[min(col0 + 6u, cm) * k4 + kb]), vec4<f32>(bv[min(col0 + 7u, cm) * k4 + kb])));
        }
        acc00 += bt0 * at0;
        acc01 += bt1 * at0;
        acc10 += bt0 * at1;
        acc11 += bt1 * at1;
    }
    store_row(row0, col0, acc00[0], acc01[0]);
    store_row(row0 + 1u, col0, acc00[1], acc01[1]);
    store_row(row0 + 2u, col0, acc00[2], acc01[2]);
    store_row(row0 + 3u, col0, acc00[3], acc01[3]);
    store_row(row0 + 4u, col0, acc10[0], acc11[0]);
    store_row(row0 + 5u, col0, acc10[1], acc11[1]);
    store_row(row0 + 6u, col0, acc10[2], acc11[2]);
    store_row(row0 + 7u, col0, acc10[3], acc11[3]);
}

// Stores (or adds) columns col0..col0+8 of C row r, skipping what lies past m or n.
fn store_row(r: u32, col0: u32, lo: vec4<f32>, hi: vec4<f32>) {
    if (r >= p.m) {
        return;
    }
    let n4 = p.n / 4u;
    let o = r * n4 + col0 / 4u;
    if (p.accumulate != 0u) {
        cv[o] = vec4<elem>(vec4<f32>(cv[o]) + lo);
        if (col0 + 4u < p.n) { cv[o + 1u] = vec4<elem>(vec4<f32>(cv[o + 1u]) + hi); }
    } else {
        cv[o] = vec4<elem>(lo);
        if (col0 + 4u < p.n) { cv[o + 1u] = vec4<elem>(hi); }
    }
}
