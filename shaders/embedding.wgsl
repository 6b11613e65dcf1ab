// Embedding lookup and its gradient. Layout: ids [n] (u32), table/dtable [rows, e], out/dout [n, e].
//   embedding_fwd: out[i, c] = table[ids[i], c]        (1: ids, 2: table, 3: out)
//                  one invocation per output element, 256 per workgroup, 2-D workgroup grid with
//                  flat index (wid.y * nwg.x + wid.x) * 256 + lid.x. An id outside the table
//                  (which the CPU backend rejects) writes zeros instead of reading out of bounds.
//   embedding_bwd: dtable[r, c] += sum_{i : ids[i] = r} dout[i, c]   (1: ids, 2: dout, 3: dtable)
//                  no float atomics: one workgroup of 64 per (block of 64 columns = wid.x, table
//                  row r = wid.y). The workgroup walks the ids in chunks of 64 staged in workgroup
//                  memory; every invocation (one column) adds the rows whose id is r in increasing
//                  i, so repeated ids accumulate in a fixed order (deterministic). The id test is
//                  uniform across the workgroup. Cost: rows * n id comparisons per column block.

struct Params {
    n: u32,
    e: u32,
    rows: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;

@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn embedding_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (idx >= p.n * p.e) { return; }
    let i = idx / p.e;
    let c = idx % p.e;
    let id = ids[i];
    var v = 0.0;
    if (id < p.rows) {
        v = table[id * p.e + c];
    }
    out[idx] = v;
}

@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read_write> dtable: array<f32>;

var<workgroup> chunk: array<u32, 64>;

@compute @workgroup_size(64)
fn embedding_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = wid.y;
    let c = wid.x * 64u + lid.x;
    let n = p.n;
    let e = p.e;
    var s = 0.0;
    var hit = false;
    for (var base = 0u; base < n; base += 64u) {
        let i = base + lid.x;
        chunk[lid.x] = select(0xffffffffu, ids[min(i, n - 1u)], i < n);
        workgroupBarrier();
        let cnt = min(64u, n - base);
        for (var j = 0u; j < cnt; j++) {
            if (chunk[j] == r) {
                hit = true;
                if (c < e) {
                    s += dout[(base + j) * e + c];
                }
            }
        }
        workgroupBarrier();
    }
    if (hit && c < e) {
        let d = r * e + c;
        dtable[d] = dtable[d] + s;
    }
}
