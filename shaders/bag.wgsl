// Embedding bag (piano-roll mode's input projection, issue 14): the gather-sum of the table rows
// of each frame's active keys. Layout: ids [n, slots] (u32; an id >= rows is an empty slot, by
// convention 0xffffffff), table/dtable [rows, e], out/dout [n, e]. Storage is `elem` (f32 or f16,
// prepended by the pipeline cache), the partial tables f32.
//   bag_fwd (1: ids, 2: table, 3: out): out[i, c] = sum_{j < slots, ids[i,j] < rows} table[ids[i,j], c],
//            summed in increasing j. One invocation per output element, 256 per workgroup, flat
//            index (wid.y * nwg.x + wid.x) * 256 + lid.x (grid_1d(n * e, 256)).
//   bag_bwd: dtable[r, c] += sum_{(i, j) : ids[i,j] = r} dout[i, c], without float atomics, in two
//            dispatches through a scratch buffer partial [segments, rows, e]:
//     bag_bwd_partial (1: ids, 2: dout, 3: partial): the frames are cut into `segments` runs of
//            `seg_len`; invocation (c = global x, s = global y) owns column c of segment s's table:
//            it zeroes it, then adds dout[i, c] into partial[s, ids[i, j], c] for the frames i of
//            its run and their slots j, in increasing (i, j). Workgroups of 64 along c; grid
//            (ceil(e/64), segments).
//     bag_bwd_reduce (1: partial, 2: dtable): dtable[r, c] += sum_s partial[s, r, c] in increasing
//            s; one invocation per element of dtable, grid_1d(rows * e, 256).
//            The order of every sum is fixed: the result is deterministic.

struct Params {
    n: u32,
    slots: u32,
    e: u32,
    rows: u32,
    segments: u32, // bag_bwd only
    seg_len: u32,  // bag_bwd only
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;

@group(0) @binding(2) var<storage, read> table: array<elem>;
@group(0) @binding(3) var<storage, read_write> out: array<elem>;

@compute @workgroup_size(256)
fn bag_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (idx >= p.n * p.e) { return; }
    let i = idx / p.e;
    let c = idx % p.e;
    var v = 0.0;
    for (var j = 0u; j < p.slots; j++) {
        let id = ids[i * p.slots + j];
        if (id < p.rows) {
            v += f32(table[id * p.e + c]);
        }
    }
    out[idx] = elem(v);
}

@group(0) @binding(2) var<storage, read> dout: array<elem>;
@group(0) @binding(3) var<storage, read_write> partial: array<f32>;

@compute @workgroup_size(64)
fn bag_bwd_partial(@builtin(global_invocation_id) gid: vec3<u32>) {
    let c = gid.x;
    let s = gid.y;
    let e = p.e;
    let rows = p.rows;
    if (c >= e || s >= p.segments) { return; }
    let base = s * rows * e + c;
    for (var r = 0u; r < rows; r++) {
        partial[base + r * e] = 0.0;
    }
    let start = s * p.seg_len;
    let end = min(p.n, start + p.seg_len);
    for (var i = start; i < end; i++) {
        let g = f32(dout[i * e + c]);
        for (var j = 0u; j < p.slots; j++) {
            let id = ids[i * p.slots + j];
            if (id < rows) {
                let d = base + id * e;
                partial[d] = partial[d] + g;
            }
        }
    }
}

@group(0) @binding(1) var<storage, read> partial_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> dtable: array<elem>;

@compute @workgroup_size(256)
fn bag_bwd_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let idx = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    let plane = p.rows * p.e;
    if (idx >= plane) { return; }
    var sum = 0.0;
    for (var s = 0u; s < p.segments; s++) {
        sum += partial_in[s * plane + idx];
    }
    dtable[idx] = elem(f32(dtable[idx]) + sum);
}
