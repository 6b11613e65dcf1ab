// Element-wise operations on flat arrays of `elem` (f32 or f16, prepended by the pipeline cache;
// arithmetic in f32).
//   fill:         x[i] = value                                  (binding 1: x)
//   add:          y[i] += x[i]                                  (1: x, 2: y)
//   copy_strided: dst[dst_off + r*dst_stride + c] (+)= src[src_off + r*src_stride + c]   (1: src, 2: dst)
//   act_fwd:      y = relu|tanh|sigmoid(x)                      (1: x, 2: y)
//   act_bwd:      dx = dy * act'(y), from the forward output y  (1: y, 2: dy, 3: dx)
//   gated_fwd:    z[b, j] = tanh(a[b, j]) * sigmoid(a[b, plane + j]), a [batch, 2, plane]  (1: a, 2: z)
//   gated_bwd:    da from a and dz                              (1: a, 2: dz, 3: da)
//   transpose:    y[b, c, r] = x[b, r, c]                       (1: x, 2: y)
//   gelu_fwd:     y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)   (1: x, 2: y)
//   gelu_bwd:     dx = dy * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3*0.044715 x^2)),
//                 written, from the forward input x             (1: x, 2: dy, 3: dx)
// Layout: row-major, element i of a flat array; `plane = r * t` for the gated unit.
// Dispatch: 256 invocations per workgroup, one per element; the workgroup grid is 2-D (x up to
// 65535) and the flat index is (wid.y * nwg.x + wid.x) * 256 + lid.x. transpose instead uses
// 16x16 workgroups over (column tile, row tile, batch) and a 16x17 workgroup-memory tile so that
// both the read of x and the write of y are coalesced.

struct Params {
    n: u32,     // element count (rows for copy_strided / transpose)
    a1: u32,    // fill: value bits; act: code (0 relu, 1 tanh, 2 sigmoid); gated: plane; copy/transpose: cols
    a2: u32,    // copy_strided: src_off
    a3: u32,    // copy_strided: src_stride
    a4: u32,    // copy_strided: dst_off
    a5: u32,    // copy_strided: dst_stride
    a6: u32,    // copy_strided: accumulate
}

@group(0) @binding(0) var<uniform> p: Params;

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// GELU's tanh argument u = sqrt(2/pi) (x + 0.044715 x^3), clamped to +-15 where tanh is +-1 in f32
// (1 - tanh(15) = 1.9e-13): a cubic's argument is huge for large |x| (3.6e4 at x = 100), and
// SPIR-V's Tanh may be evaluated as its exp formula, inf / inf on some drivers (lavapipe's
// saturates without the clamp; the clamp changes no correctly rounded f32 result).
fn gelu_tanh(x: f32) -> f32 {
    return tanh(clamp(0.7978846 * (x + 0.044715 * x * x * x), -15.0, 15.0));
}

// ---- fill ----
@group(0) @binding(1) var<storage, read_write> fill_x: array<elem>;

@compute @workgroup_size(256)
fn fill(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    fill_x[i] = elem(bitcast<f32>(p.a1));
}

// ---- two-buffer ops: x (read) -> y (read_write) ----
@group(0) @binding(1) var<storage, read> in1: array<elem>;
@group(0) @binding(2) var<storage, read_write> out2: array<elem>;

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    out2[i] = elem(f32(out2[i]) + f32(in1[i]));
}

@compute @workgroup_size(256)
fn copy_strided(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    let cols = p.a1;
    if (i >= p.n * cols) { return; }
    let r = i / cols;
    let c = i % cols;
    let s = f32(in1[p.a2 + r * p.a3 + c]);
    let d = p.a4 + r * p.a5 + c;
    if (p.a6 != 0u) {
        out2[d] = elem(f32(out2[d]) + s);
    } else {
        out2[d] = elem(s);
    }
}

@compute @workgroup_size(256)
fn act_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    let x = f32(in1[i]);
    var y: f32;
    switch p.a1 {
        case 0u: { y = max(x, 0.0); }
        case 1u: { y = tanh(x); }
        default: { y = sigmoid(x); }
    }
    out2[i] = elem(y);
}

@compute @workgroup_size(256)
fn gated_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    let plane = p.a1;
    let b = i / plane;
    let j = i % plane;
    let filt = f32(in1[b * 2u * plane + j]);
    let gate = f32(in1[b * 2u * plane + plane + j]);
    out2[i] = elem(tanh(filt) * sigmoid(gate));
}

@compute @workgroup_size(256)
fn gelu_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    let x = f32(in1[i]);
    out2[i] = elem(0.5 * x * (1.0 + gelu_tanh(x)));
}

// ---- three-buffer ops: two inputs -> one output ----
@group(0) @binding(1) var<storage, read> a1: array<elem>;
@group(0) @binding(2) var<storage, read> a2: array<elem>;
@group(0) @binding(3) var<storage, read_write> out3: array<elem>;

@compute @workgroup_size(256)
fn act_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    let y = f32(a1[i]);
    let dy = f32(a2[i]);
    var dx: f32;
    switch p.a1 {
        case 0u: { dx = select(0.0, dy, y > 0.0); }
        case 1u: { dx = dy * (1.0 - y * y); }
        default: { dx = dy * y * (1.0 - y); }
    }
    out3[i] = elem(dx);
}

@compute @workgroup_size(256)
fn gated_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    let plane = p.a1;
    let b = i / plane;
    let j = i % plane;
    let fi = b * 2u * plane + j;
    let th = tanh(f32(a1[fi]));
    let sg = sigmoid(f32(a1[fi + plane]));
    let dz = f32(a2[i]);
    out3[fi] = elem(dz * sg * (1.0 - th * th));
    out3[fi + plane] = elem(dz * th * sg * (1.0 - sg));
}

@compute @workgroup_size(256)
fn gelu_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat(wid, nwg, lid);
    if (i >= p.n) { return; }
    let x = f32(a1[i]);
    let t = gelu_tanh(x);
    let d = 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * 0.7978846 * (1.0 + 3.0 * 0.044715 * x * x);
    out3[i] = elem(f32(a2[i]) * d);
}

// ---- transpose through a workgroup-memory tile ----
var<workgroup> tile: array<f32, 272>; // 16 x 17: the extra column avoids bank conflicts

@compute @workgroup_size(16, 16)
fn transpose(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let rows = p.n;
    let cols = p.a1;
    let base = wid.z * rows * cols;
    // read x[r, c] with c varying fastest across lid.x
    let r = wid.y * 16u + lid.y;
    let c = wid.x * 16u + lid.x;
    if (r < rows && c < cols) {
        tile[lid.y * 17u + lid.x] = f32(in1[base + r * cols + c]);
    }
    workgroupBarrier();
    // write y[c, r] with r varying fastest across lid.x
    let oc = wid.x * 16u + lid.y;
    let or = wid.y * 16u + lid.x;
    if (oc < cols && or < rows) {
        out2[base + oc * rows + or] = elem(tile[lid.x * 17u + lid.y]);
    }
}
