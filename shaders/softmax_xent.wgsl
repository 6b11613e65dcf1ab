// Fused, numerically stable softmax cross-entropy over logits [n, v] with targets [n] (u32).
//   dlogits[i, j] = (softmax(logits[i])[j] - (j == target[i])) * grad_scale
//   stats[2i]     = -log softmax(logits[i])[target[i]] = log(sum_j exp(x_j - max)) - (x_t - max)
//   stats[2i + 1] = 1 when the first maximum of the row is the target, else 0
// Bindings: 1 logits, 2 targets, 3 dlogits, 4 stats. logits and dlogits are `elem` (f32 or f16,
// prepended by the pipeline cache), stats always f32; arithmetic in f32.
// Dispatch: one workgroup of 64 per row (flat workgroup index wid.y * nwg.x + wid.x). Three
// passes over the row: (max, first argmax) reduced as pairs in workgroup memory, then the sum of
// exp(x - max) reduced the same way, then the gradient written by all invocations. A target outside
// [0, v) (which the CPU backend rejects) gives NaN stats instead of reading out of bounds.

struct Params {
    n: u32,
    v: u32,
    grad_scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<elem>;
@group(0) @binding(2) var<storage, read> targets: array<u32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<elem>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;

var<workgroup> red_v: array<f32, 64>;
var<workgroup> red_i: array<u32, 64>;

@compute @workgroup_size(64)
fn softmax_xent(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.n) { return; } // uniform across the workgroup
    let v = p.v;
    let base = row * v;
    let t = lid.x;

    // 1. max and the first index holding it
    var best = -3.4028235e38;
    var best_i = 0xffffffffu;
    for (var j = t; j < v; j += 64u) {
        let x = f32(logits[base + j]);
        if (x > best || best_i == 0xffffffffu) {
            best = x;
            best_i = j;
        }
    }
    red_v[t] = best;
    red_i[t] = best_i;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) {
            let ov = red_v[t + s];
            let oi = red_i[t + s];
            let mv = red_v[t];
            let mi = red_i[t];
            // prefer the larger value; on a tie, the smaller index; empty slots (index ~0) lose
            if (oi != 0xffffffffu && (mi == 0xffffffffu || ov > mv || (ov == mv && oi < mi))) {
                red_v[t] = ov;
                red_i[t] = oi;
            }
        }
        workgroupBarrier();
    }
    let mx = red_v[0];
    let arg = red_i[0];
    workgroupBarrier();

    // 2. sum of exp(x - max)
    var sum = 0.0;
    for (var j = t; j < v; j += 64u) {
        sum += exp(f32(logits[base + j]) - mx);
    }
    red_v[t] = sum;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_v[t] += red_v[t + s];
        }
        workgroupBarrier();
    }
    let total = red_v[0];

    // 3. gradient and statistics
    let tgt = targets[row];
    let inv = p.grad_scale / total;
    for (var j = t; j < v; j += 64u) {
        var d = exp(f32(logits[base + j]) - mx) * inv;
        if (j == tgt) {
            d -= p.grad_scale;
        }
        dlogits[base + j] = elem(d);
    }
    if (t == 0u) {
        var loss = bitcast<f32>(0x7fc00000u); // NaN for a target outside the row
        if (tgt < v) {
            loss = log(total) - (f32(logits[base + tgt]) - mx);
        }
        stats[2u * row] = loss;
        stats[2u * row + 1u] = select(0.0, 1.0, arg == tgt);
    }
}
