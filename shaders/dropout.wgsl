// Inverted dropout with a counter-based mask (issue 13), in place on a flat array of `elem` (f32 or
// f16, prepended by the pipeline cache; arithmetic in f32).
//   dropout: x[i] = keep(i) ? x[i] * scale : 0,   i < n                 (binding 1: x)
//            keep(i) = mask_hash(key0, key1, i) >= threshold,
//            mask_hash(k0, k1, i) = mix32(mix32(i * 0x9E3779B9 + k0) ^ k1), mix32 = lowbias32,
//            all in wrapping u32 arithmetic; key0, key1 are derived on the host from (seed, step,
//            site) and threshold = round(p * 2^32), scale = 1 / (1 - p) (src/engine/dropout.rs,
//            the CPU twin, computes the same bits). The op is its own backward: applied to the
//            gradient with the same mask it gives dx = keep ? dy * scale : 0.
// Layout: element i of a flat array. Dispatch: 256 invocations per workgroup, one per element; the
// workgroup grid is 2-D (x up to 65535) and the flat index is (wid.y * nwg.x + wid.x) * 256 + lid.x.

struct Params {
    n: u32,
    key0: u32,
    key1: u32,
    threshold: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> x: array<elem>;

fn mix32(v: u32) -> u32 {
    var h = v;
    h ^= h >> 16u;
    h *= 0x7feb352du;
    h ^= h >> 15u;
    h *= 0x846ca68bu;
    h ^= h >> 16u;
    return h;
}

@compute @workgroup_size(256)
fn dropout(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (i >= p.n) { return; }
    let h = mix32(mix32(i * 0x9e3779b9u + p.key0) ^ p.key1);
    if (h >= p.threshold) {
        x[i] = elem(f32(x[i]) * p.scale);
    } else {
        x[i] = elem(0.0);
    }
}
