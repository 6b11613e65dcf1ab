// Bias over the channel axis of y [outer, channels, inner] (a Linear: inner = 1; a conv: inner = time).
// Storage is `elem` (f32 or f16, prepended by the pipeline cache); arithmetic and sums in f32.
//   bias_add:  y[o, c, i] += bias[c]                    (1: bias, 2: y)
//              one invocation per element of y, 256 per workgroup, 2-D workgroup grid with flat
//              index (wid.y * nwg.x + wid.x) * 256 + lid.x.
//   bias_grad: dbias[c] += sum_{o, i} dy[o, c, i]      (1: dy, 2: dbias)
//              one workgroup of 256 per channel (flat workgroup index wid.y * nwg.x + wid.x); each
//              invocation sums a strided share of the outer*inner elements, then a tree reduction
//              in workgroup memory; a deterministic order, no atomics.

struct Params {
    a0: u32, // bias_add: element count n;  bias_grad: outer
    a1: u32, // channels
    a2: u32, // inner
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> bias: array<elem>;
@group(0) @binding(2) var<storage, read_write> y: array<elem>;

@compute @workgroup_size(256)
fn bias_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.a0) { return; }
    let c = (i / p.a2) % p.a1;
    y[i] = elem(f32(y[i]) + f32(bias[c]));
}

@group(0) @binding(1) var<storage, read> dy: array<elem>;
@group(0) @binding(2) var<storage, read_write> dbias: array<elem>;

var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn bias_grad(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let outer = p.a0;
    let channels = p.a1;
    let inner = p.a2;
    let c = wid.y * nwg.x + wid.x; // uniform across the workgroup
    var s = 0.0;
    if (c < channels) {
        let total = outer * inner;
        for (var j = lid.x; j < total; j += 256u) {
            let o = j / inner;
            let ii = j % inner;
            s += f32(dy[(o * channels + c) * inner + ii]);
        }
    }
    part[lid.x] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid.x < stride) {
            part[lid.x] += part[lid.x + stride];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u && c < channels) {
        dbias[c] = elem(f32(dbias[c]) + part[0]);
    }
}

// ---- variants for software renderers (lavapipe/llvmpipe), inner = 1 and channels % 4 = 0 -------
// A Linear's bias as vec4s of 4 channels: fewer (per-lane, costly there) loads per element.
//   bias_add_vec4:  one invocation per vec4 of y (n / 4), flat index as in bias_add.
//   bias_grad_vec4: one invocation per 4 channels (flat index as in bias_add), summing the outer
//                   rows in order; few invocations, which suits a CPU, not a GPU.
@group(0) @binding(1) var<storage, read> bias_v: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read_write> y_v: array<vec4<elem>>;

@compute @workgroup_size(256)
fn bias_add_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.a0 / 4u) { return; }
    y_v[i] = vec4<elem>(vec4<f32>(y_v[i]) + vec4<f32>(bias_v[i % (p.a1 / 4u)]));
}

@group(0) @binding(1) var<storage, read> dy_v: array<vec4<elem>>;
@group(0) @binding(2) var<storage, read_write> dbias_v: array<vec4<elem>>;

@compute @workgroup_size(64)
fn bias_grad_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let c4 = p.a1 / 4u;
    let q = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    if (q >= c4) { return; }
    var s = vec4<f32>(0.0);
    for (var o = 0u; o < p.a0; o++) {
        s += vec4<f32>(dy_v[o * c4 + q]);
    }
    dbias_v[q] = vec4<elem>(vec4<f32>(dbias_v[q]) + s);
}
