// Matrix product C[m, n] = op(A) op(B) (+ C when accumulate), op(A) being [m, k].
// Layout: row-major. A is stored [m, k], or [k, m] when trans_a; B is stored [k, n], or [n, k]
// when trans_b; C is [m, n]. Bindings: 1 A, 2 B, 3 C.
// Dispatch: workgroups of 16x16 invocations, one workgroup per 64x64 tile of C: x = ceil(n/64)
// column tiles, y = ceil(m/64) row tiles. Per step of 16 along k, the workgroup stages a 64x16
// panel of op(A) and a 16x64 panel of op(B) in workgroup memory (each invocation loads 4 + 4
// elements, coalesced along whichever dimension is contiguous in memory, zero past the edges),
// then every invocation accumulates a 4x4 register block: rows ty + 16i, columns tx + 16j
// (strided so that neighbouring invocations read neighbouring workgroup-memory words and write
// neighbouring C elements). Edges (m, n, k not multiples of the tile) are handled by the zero
// padding of the panels and a bounds check on the store.

struct Params {
    m: u32,
    k: u32,
    n: u32,
    trans_a: u32,
    trans_b: u32,
    accumulate: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TM: u32 = 64u;   // tile rows
const TN: u32 = 64u;   // tile columns
const TK: u32 = 16u;   // depth of one step
const LD: u32 = 65u;   // padded row length of the panels (avoids bank conflicts on the stores)

var<workgroup> As: array<f32, 1040>; // [TK][LD]: As[kk * LD + mm] = op(A)[row0 + mm, k0 + kk]
var<workgroup> Bs: array<f32, 1040>; // [TK][LD]: Bs[kk * LD + nn] = op(B)[k0 + kk, col0 + nn]

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
          @builtin(local_invocation_index) li: u32) {
    let m = p.m;
    let k = p.k;
    let n = p.n;
    let row0 = wid.y * TM;
    let col0 = wid.x * TN;
    let tx = lid.x;
    let ty = lid.y;

    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            acc[i][j] = 0.0;
        }
    }

    for (var k0 = 0u; k0 < k; k0 += TK) {
        // Stage the panels: 1024 elements each, 4 per invocation.
        for (var r = 0u; r < 4u; r++) {
            let e = li + 256u * r;
            // op(A) panel, 64 rows x 16 depth
            var mm: u32;
            var kk: u32;
            if (p.trans_a == 0u) { kk = e % TK; mm = e / TK; } else { mm = e % TM; kk = e / TM; }
            let gr = row0 + mm;
            let gk = k0 + kk;
            var va = 0.0;
            if (gr < m && gk < k) {
                if (p.trans_a == 0u) { va = a[gr * k + gk]; } else { va = a[gk * m + gr]; }
            }
            As[kk * LD + mm] = va;
            // op(B) panel, 16 depth x 64 columns
            var nn: u32;
            var kb: u32;
            if (p.trans_b == 0u) { nn = e % TN; kb = e / TN; } else { kb = e % TK; nn = e / TK; }
            let gc = col0 + nn;
            let gkb = k0 + kb;
            var vb = 0.0;
            if (gc < n && gkb < k) {
                if (p.trans_b == 0u) { vb = b[gkb * n + gc]; } else { vb = b[gc * k + gkb]; }
            }
            Bs[kb * LD + nn] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = As[kk * LD + ty + 16u * i];
                bv[i] = Bs[kk * LD + tx + 16u * i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(av[i], bv[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let r = row0 + ty + 16u * i;
        if (r >= m) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + tx + 16u * j;
            if (col < n) {
                let idx = r * n + col;
                if (p.accumulate != 0u) {
                    c[idx] = c[idx] + acc[i][j];
                } else {
                    c[idx] = acc[i][j];
                }
            }
        }
    }
}
