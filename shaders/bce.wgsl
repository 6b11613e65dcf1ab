// Fused, numerically stable binary cross-entropy with logits (piano-roll mode, issue 14), over
// logits [n, k] (k = 88 keys), targets y [n, k] (0 or 1) and a weight per row w [n]:
//   loss(x, y)       = max(x, 0) - x*y + log(1 + exp(-|x|))      (natural log; finite for any x)
//   stats[i]         = w[i] * sum_j loss(logits[i, j], y[i, j])
//   dlogits[i, j]    = (sigmoid(logits[i, j]) - y[i, j]) * w[i] * grad_scale
// sigmoid is evaluated as 1/(1+e^-x) for x >= 0 and e^x/(1+e^x) below, so neither side overflows.
// Bindings: 1 logits, 2 y, 3 w, 4 dlogits, 5 stats. logits, y, w and dlogits are `elem` (f32 or
// f16, prepended by the pipeline cache), stats always f32; arithmetic in f32.
// Dispatch: one invocation per row, 64 per workgroup, flat index (wid.y * nwg.x + wid.x) * 64 + lid.x
// (grid_1d(n, 64)); each invocation walks its row's k keys in order, so the per-row sum is
// deterministic.

struct Params {
    n: u32,
    k: u32,
    grad_scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<elem>;
@group(0) @binding(2) var<storage, read> y: array<elem>;
@group(0) @binding(3) var<storage, read> w: array<elem>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<elem>;
@group(0) @binding(5) var<storage, read_write> stats: array<f32>;

@compute @workgroup_size(64)
fn bce_logits(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    if (row >= p.n) { return; }
    let k = p.k;
    let base = row * k;
    let wi = f32(w[row]);
    let scale = wi * p.grad_scale;
    var sum = 0.0;
    for (var j = 0u; j < k; j++) {
        let x = f32(logits[base + j]);
        let t = f32(y[base + j]);
        let e = exp(-abs(x));
        sum += max(x, 0.0) - x * t + log(1.0 + e);
        var s = 1.0 / (1.0 + e);
        if (x < 0.0) {
            s = e / (1.0 + e);
        }
        dlogits[base + j] = elem((s - t) * scale);
    }
    stats[row] = wi * sum;
}
