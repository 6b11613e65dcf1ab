// Optimizer kernels.
// x, g and param are `elem` (f32 or f16, prepended by the pipeline cache); acc, scale and the
// moments are always f32. A gradient is multiplied by `grad_unscale` (1 / the loss scale, 1 at f32)
// before use.
//   sum_squares: acc[0] += sum_i (x[i] u)^2, i < n, u = grad_unscale   (1: x, 2: acc)
//                a single workgroup of 256: strided partial sums, tree reduction in workgroup
//                memory, one invocation adds into acc[0] (deterministic, no atomics).
//   clip_scale:  scale[0] = min(1, max_norm / (sqrt(acc[0]) + 1e-6)), 1 when max_norm <= 0
//                (1: acc, 2: scale); one workgroup, one invocation does the work.
//   norm_partials: the first pass of the global norm over one gradient arena (grad_norm_clip):
//                part[w] = sum_{i = w*256 + l + k*G*256 < n} (x[i] u)^2, G = nwg.x workgroups of
//                256 (a fixed function of n, at most 256), strided partial sums then a tree
//                reduction as sum_squares'                                  (1: x, 2: part)
//   norm_finish: its second pass, one workgroup of 256: acc[0] = sum_{w < n} part[w] (n = G,
//                overwritten), scale[0] = clip_scale of it, max_norm in the step_size field
//                                                              (1: part, 2: acc, 3: scale)
//   adam:        per element, with s = scale[0] and d = decay_factor:
//                                                            (1: g, 2: scale, 3: p, 4: m, 5: v)
//                p = elem(p d)  (AdamW's decoupled decay fused in; d = 1 for Adam: p unchanged);
//                g' = (g u) s + wd p; m = b1 m + (1-b1) g'; v = b2 v + (1-b2) g'^2;
//                p -= step_size * m / (sqrt(v) / bc2_sqrt + eps), step_size = lr / (1 - b1^t),
//                bc2_sqrt = sqrt(1 - b2^t) computed on the host.
//                256 per workgroup, 2-D grid, flat index (wid.y * nwg.x + wid.x) * 256 + lid.x.
//   decay:       param[i] *= factor, factor = 1 - lr * decay (AdamW's decoupled weight decay, run
//                before adam; the factor rides in the step_size field)     (1: param)
//                256 per workgroup, 2-D grid, flat index as adam's.

struct Params {
    n: u32,          // sum_squares, adam: element count; clip_scale: max_norm bits
    step_size: f32,
    bc2_sqrt: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    grad_unscale: f32, // sum_squares, norm_partials, adam
    decay_factor: f32, // adam
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;

var<workgroup> part: array<f32, 256>;

// Sum of the 256 threads' `s` in `part[0]` (a tree in workgroup memory; every thread of the
// workgroup must call it, in uniform control flow).
fn workgroup_sum(lid: u32, s: f32) {
    part[lid] = s;
    workgroupBarrier();
    for (var h = 128u; h > 0u; h >>= 1u) {
        if (lid < h) {
            part[lid] += part[lid + h];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn sum_squares(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    for (var i = lid.x; i < p.n; i += 256u) {
        let v = f32(x[i]) * p.grad_unscale;
        s = fma(v, v, s);
    }
    workgroup_sum(lid.x, s);
    if (lid.x == 0u) {
        acc[0] = acc[0] + part[0];
    }
}

@group(0) @binding(2) var<storage, read_write> part_out: array<f32>;

@compute @workgroup_size(256)
fn norm_partials(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    let stride = nwg.x * 256u;
    for (var i = wid.x * 256u + lid.x; i < p.n; i += stride) {
        let v = f32(x[i]) * p.grad_unscale;
        s = fma(v, v, s);
    }
    workgroup_sum(lid.x, s);
    if (lid.x == 0u) {
        part_out[wid.x] = part[0];
    }
}

@group(0) @binding(1) var<storage, read> part_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> norm_acc: array<f32>;
@group(0) @binding(3) var<storage, read_write> norm_scale: array<f32>;

@compute @workgroup_size(256)
fn norm_finish(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    for (var i = lid.x; i < p.n; i += 256u) {
        s += part_in[i];
    }
    workgroup_sum(lid.x, s);
    if (lid.x == 0u) {
        let total = part[0];
        norm_acc[0] = total;
        let max_norm = p.step_size;
        var sc = 1.0;
        if (max_norm > 0.0) {
            sc = min(1.0, max_norm / (sqrt(total) + 1e-6));
        }
        norm_scale[0] = sc;
    }
}

@group(0) @binding(1) var<storage, read> acc_in: array<f32>;
@group(0) @binding(2) var<storage, read_write> scale_out: array<f32>;

@compute @workgroup_size(1)
fn clip_scale() {
    let max_norm = bitcast<f32>(p.n);
    var s = 1.0;
    if (max_norm > 0.0) {
        s = min(1.0, max_norm / (sqrt(acc_in[0]) + 1e-6));
    }
    scale_out[0] = s;
}

@group(0) @binding(1) var<storage, read> g: array<elem>;
@group(0) @binding(2) var<storage, read> scale: array<f32>;
@group(0) @binding(3) var<storage, read_write> param: array<elem>;
@group(0) @binding(4) var<storage, read_write> m1: array<f32>;
@group(0) @binding(5) var<storage, read_write> m2: array<f32>;

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) { return; }
    // Rounded to the storage precision, as the separate `decay` pass stores it.
    let pv = f32(elem(f32(param[i]) * p.decay_factor));
    let gv = f32(g[i]) * p.grad_unscale * scale[0] + p.weight_decay * pv;
    let m = p.beta1 * m1[i] + (1.0 - p.beta1) * gv;
    let v = p.beta2 * m2[i] + (1.0 - p.beta2) * gv * gv;
    m1[i] = m;
    m2[i] = v;
    param[i] = elem(pv - p.step_size * m / (sqrt(v) / p.bc2_sqrt + p.eps));
}

@group(0) @binding(1) var<storage, read_write> decayed: array<elem>;

@compute @workgroup_size(256)
fn decay(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) { return; }
    decayed[i] = elem(f32(decayed[i]) * p.step_size);
}
