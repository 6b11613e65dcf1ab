// Optimizer kernels.
// x, g and param are `elem` (f32 or f16, prepended by the pipeline cache); acc, scale and the
// moments are always f32. A gradient is multiplied by `grad_unscale` (1 / the loss scale, 1 at f32)
// before use.
//   sum_squares: acc[0] += sum_i (x[i] u)^2, i < n, u = grad_unscale   (1: x, 2: acc)
//                a single workgroup of 256: strided partial sums, tree reduction in workgroup
//                memory, one invocation adds into acc[0] (deterministic, no atomics).
//   clip_scale:  scale[0] = min(1, max_norm / (sqrt(acc[0]) + 1e-6)), 1 when max_norm <= 0
//                (1: acc, 2: scale); one workgroup, one invocation does the work.
//   adam:        per element, with s = scale[0]:         (1: g, 2: scale, 3: p, 4: m, 5: v)
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
    grad_unscale: f32, // sum_squares, adam
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> x: array<elem>;
@group(0) @binding(2) var<storage, read_write> acc: array<f32>;

var<workgroup> part: array<f32, 256>;

@compute @workgroup_size(256)
fn sum_squares(@builtin(local_invocation_id) lid: vec3<u32>) {
    var s = 0.0;
    for (var i = lid.x; i < p.n; i += 256u) {
        let v = f32(x[i]) * p.grad_unscale;
        s = fma(v, v, s);
    }
    part[lid.x] = s;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid.x < stride) {
            part[lid.x] += part[lid.x + stride];
        }
        workgroupBarrier();
    }
    if (lid.x == 0u) {
        acc[0] = acc[0] + part[0];
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
    let pv = f32(param[i]);
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
