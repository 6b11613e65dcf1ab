// LayerNorm over the last axis of x [rows, width] (PyTorch nn.LayerNorm(width, eps); issue 26),
// forward and backward.
//
// Math. For each row r:
//   mean = sum_c x[r,c] / width;   rstd = 1 / sqrt(sum_c (x[r,c] - mean)^2 / width + eps)
//   y[r,c] = (x[r,c] - mean) * rstd * weight[c] + bias[c];   stats[r] = (mean, rstd)
// Backward (every gradient ACCUMULATES), with xhat = (x - mean) * rstd and g = dy * weight:
//   dx[r,c]   += rstd * (g - mean_c(g) - xhat * mean_c(g * xhat))
//   dweight[c] += sum_r dy[r,c] * xhat[r,c];   dbias[c] += sum_r dy[r,c]
// Layout: x, y, dy, dx row-major [rows, width] (element (r, c) at r*width + c); weight, bias,
// dweight, dbias [width]; stats [rows, 2] (mean at 2r, rstd at 2r+1), f32 at every precision (a
// mean rounded to f16 would shift every xhat of its row). The other tensors are `elem` (f32 or
// f16, prepended by the pipeline cache); every sum is f32, each in the CPU twin's order.
//
// One invocation per row or column, 64 per workgroup, flat index as grid_1d
// (wid.y * nwg.x + wid.x) * 64 + lid.x (simple first: a row is a model width of a few hundred):
//   ln_fwd:    one invocation per row: the mean, the variance about it (two passes, as the CPU),
//              then y and stats. Bindings 1 x, 2 weight, 3 bias, 4 y, 5 stats.
//              Dispatch grid_1d(rows, 64).
//   ln_bwd_x:  one invocation per row: mean_c(g) and mean_c(g * xhat), then dx += .
//              Bindings 1 x, 2 weight, 3 stats, 4 dy, 5 dx. Dispatch grid_1d(rows, 64).
//   ln_bwd_wb: one invocation per column c, looping over the rows in blocks of 64 (the CPU's
//              BLOCK_ROWS): dweight[c] and dbias[c] += .
//              Bindings 1 x, 2 stats, 3 dy, 4 dweight, 5 dbias.
//              Dispatch grid_1d(width, 64).

struct Params {
    rows: u32,
    width: u32,
    eps: f32,
}

@group(0) @binding(0) var<uniform> p: Params;

// ln_fwd
@group(0) @binding(1) var<storage, read> fx: array<elem>;
@group(0) @binding(2) var<storage, read> fw: array<elem>;
@group(0) @binding(3) var<storage, read> fb: array<elem>;
@group(0) @binding(4) var<storage, read_write> fy: array<elem>;
@group(0) @binding(5) var<storage, read_write> fstats: array<f32>;
// ln_bwd_x
@group(0) @binding(1) var<storage, read> xx: array<elem>;
@group(0) @binding(2) var<storage, read> xw: array<elem>;
@group(0) @binding(3) var<storage, read> xstats: array<f32>;
@group(0) @binding(4) var<storage, read> xdy: array<elem>;
@group(0) @binding(5) var<storage, read_write> xdx: array<elem>;
// ln_bwd_wb
@group(0) @binding(1) var<storage, read> wx: array<elem>;
@group(0) @binding(2) var<storage, read> wstats: array<f32>;
@group(0) @binding(3) var<storage, read> wdy: array<elem>;
@group(0) @binding(4) var<storage, read_write> wdw: array<elem>;
@group(0) @binding(5) var<storage, read_write> wdb: array<elem>;

const WG: u32 = 64u;

fn flat(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(64)
fn ln_fwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = flat(wid, nwg, lid);
    if r >= p.rows {
        return;
    }
    let W = p.width;
    let base = r * W;
    let n = f32(W);
    var sum = 0.0;
    for (var c = 0u; c < W; c++) {
        sum += f32(fx[base + c]);
    }
    let mean = sum / n;
    var sq = 0.0;
    for (var c = 0u; c < W; c++) {
        let d = f32(fx[base + c]) - mean;
        sq += d * d;
    }
    let rstd = 1.0 / sqrt(sq / n + p.eps);
    for (var c = 0u; c < W; c++) {
        fy[base + c] = elem((f32(fx[base + c]) - mean) * rstd * f32(fw[c]) + f32(fb[c]));
    }
    fstats[2u * r] = mean;
    fstats[2u * r + 1u] = rstd;
}

@compute @workgroup_size(64)
fn ln_bwd_x(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = flat(wid, nwg, lid);
    if r >= p.rows {
        return;
    }
    let W = p.width;
    let base = r * W;
    let mean = xstats[2u * r];
    let rstd = xstats[2u * r + 1u];
    var mg = 0.0;
    var mgx = 0.0;
    for (var c = 0u; c < W; c++) {
        let g = f32(xdy[base + c]) * f32(xw[c]);
        mg += g;
        mgx += g * ((f32(xx[base + c]) - mean) * rstd);
    }
    mg = mg / f32(W);
    mgx = mgx / f32(W);
    for (var c = 0u; c < W; c++) {
        let xhat = (f32(xx[base + c]) - mean) * rstd;
        let g = f32(xdy[base + c]) * f32(xw[c]);
        xdx[base + c] = elem(f32(xdx[base + c]) + rstd * (g - mg - xhat * mgx));
    }
}

@compute @workgroup_size(64)
fn ln_bwd_wb(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = flat(wid, nwg, lid);
    let W = p.width;
    if c >= W {
        return;
    }
    // Summed per block of 64 rows, the blocks' sums added in order (the CPU twin's order).
    var aw = f32(wdw[c]);
    var ab = f32(wdb[c]);
    for (var r0 = 0u; r0 < p.rows; r0 += 64u) {
        var sw = 0.0;
        var sb = 0.0;
        for (var r = r0; r < min(r0 + 64u, p.rows); r++) {
            let g = f32(wdy[r * W + c]);
            sw += g * ((f32(wx[r * W + c]) - wstats[2u * r]) * wstats[2u * r + 1u]);
            sb += g;
        }
        aw += sw;
        ab += sb;
    }
    wdw[c] = elem(aw);
    wdb[c] = elem(ab);
}
