//! The recorder: every op's dispatches are recorded (pipeline, bound buffers, parameter words in
//! the params arena) and submitted together, one command buffer with one compute pass, by
//! [`Recording::submit`]; bind groups are cached between steps; the scratch store, the dispatch
//! and submission counts and the profiling hooks live here too (see `profile.rs`, `scratch.rs`).
//! Also the helpers that shape a dispatch: parameter words and workgroup grids.
//!
//! # One lock, taken once per op
//!
//! The [`Recorder`] sits behind the backend's one `Mutex`. A public operation takes it once
//! ([`GpuBackend::recording`]) and hands the [`Recording`] (the guard and the read-only
//! [`Context`]) to its op family's `record_*` function, which records every dispatch of the op
//! through it and may pass it on to another family's `record_*` (the LSTM backward to
//! `record_matmul`). A `record_*` function never sees the `GpuBackend`, so it cannot call the
//! public API and take the lock again; and since the op holds the recorder from its first dispatch
//! to its last, two threads sharing a backend cannot interleave inside one op (its scratch buffers
//! stay its own). Should the lock still be taken twice by one thread, [`GpuBackend::recording`]
//! panics naming the cause instead of deadlocking.

use super::context::{Context, Shader};
use super::scratch::Scratch;
use super::{profile, DispatchTime, Elem, GpuBackend, GpuBuffer, Pipe, Precision, Timestamps};
use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, MutexGuard};

/// Bytes reserved per dispatch in the params arena (the largest uniform offset alignment any
/// adapter asks for).
pub(crate) const PARAM_SLOT: usize = 256;
/// Most 32-bit words of parameters one dispatch may carry.
pub(crate) const MAX_PARAM_WORDS: usize = PARAM_SLOT / 4;
/// Bound on the bind-group cache (entries of live buffers are kept up to this many).
const MAX_CACHED_BIND_GROUPS: usize = 1 << 16;
/// Most workgroups in one dimension of a dispatch (WebGPU's default and lavapipe's limit).
pub(crate) const MAX_GROUPS_PER_DIM: u32 = 65535;

/// The bits of an `f32` parameter, as the shader's `f32` field reads them.
pub(crate) fn f(x: f32) -> u32 {
    x.to_bits()
}

/// A size as the 32-bit word the shaders read; panics when it does not fit.
pub(crate) fn u(x: usize) -> u32 {
    u32::try_from(x).expect("size does not fit in 32 bits")
}

/// Workgroup counts for `threads` invocations in workgroups of `wg` (a flat 1-D problem), spread over
/// x and y so that neither exceeds 65535. In WGSL the flat index is
/// `(wid.y * nwg.x + wid.x) * WG + lid.x` (with `@builtin(num_workgroups) nwg`), and invocations with
/// an index past the problem size must return.
pub(crate) fn grid_1d(threads: usize, wg: u32) -> [u32; 3] {
    let groups = threads.div_ceil(wg as usize);
    grid_groups(groups)
}

/// Workgroup counts for `groups` workgroups, flat index `wid.y * nwg.x + wid.x`, split over x and y.
pub(crate) fn grid_groups(groups: usize) -> [u32; 3] {
    if groups == 0 {
        return [0, 0, 0];
    }
    let x = groups.min(MAX_GROUPS_PER_DIM as usize);
    let y = groups.div_ceil(x);
    assert!(y <= MAX_GROUPS_PER_DIM as usize, "dispatch of {groups} workgroups is too large");
    [x as u32, y as u32, 1]
}

/// Workgroup counts for a 2-D problem of `cols x rows` threads in `wx x wy` workgroups.
pub(crate) fn grid_2d(cols: usize, rows: usize, wx: u32, wy: u32) -> [u32; 3] {
    let gx = cols.div_ceil(wx as usize);
    let gy = rows.div_ceil(wy as usize);
    assert!(
        gx <= MAX_GROUPS_PER_DIM as usize && gy <= MAX_GROUPS_PER_DIM as usize,
        "2-D dispatch of {gx} x {gy} workgroups exceeds 65535 per dimension"
    );
    [gx as u32, gy as u32, 1]
}

/// One buffer (or view) a recorded dispatch binds: the buffer's id, its byte range, the buffer.
pub(super) struct Bound {
    pub(super) id: u64,
    pub(super) offset: u64,
    pub(super) bytes: u64,
    pub(super) buffer: Arc<wgpu::Buffer>,
}

/// One recorded dispatch.
pub(super) struct Recorded {
    pub(super) pipe: Arc<Pipe>,
    /// (shader, entry point): what a timestamp profile reports it as.
    pub(super) label: (&'static str, &'static str),
    pub(super) buffers: Vec<Bound>,
    pub(super) slot: u32,
    pub(super) groups: [u32; 3],
}

#[derive(Hash, PartialEq, Eq)]
pub(super) struct BindKey {
    pipe: usize,
    slot: u32,
    /// (id, byte offset, bytes) of each bound buffer: views of one arena share its id.
    ids: Vec<(u64, u64, u64)>,
}

pub(super) struct Recorder {
    pub(super) pending: Vec<Recorded>,
    pub(super) params: Vec<u8>,
    pub(super) arena: Option<wgpu::Buffer>,
    pub(super) arena_cap: usize,
    pub(super) binds: HashMap<BindKey, (wgpu::BindGroup, Vec<Arc<wgpu::Buffer>>)>,
    pub(super) binds_after_sweep: usize,
    pub(super) staging: Option<wgpu::Buffer>,
    pub(super) staging_cap: u64,
    /// Timestamp profiling state (see [`GpuBackend::set_profiling`]): `None` when off.
    pub(super) profiler: Option<profile::Profiler>,
    /// The scratch buffers not in use (see `scratch.rs`).
    pub(super) scratch: Scratch,
    /// Dispatches recorded and submissions made since creation or the last `reset_stats`.
    dispatches: u64,
    submissions: u64,
}

impl Recorder {
    pub(super) fn new() -> Recorder {
        Recorder {
            pending: Vec::new(),
            params: Vec::new(),
            arena: None,
            arena_cap: 0,
            binds: HashMap::new(),
            binds_after_sweep: 0,
            staging: None,
            staging_cap: 0,
            profiler: None,
            scratch: Scratch::default(),
            dispatches: 0,
            submissions: 0,
        }
    }

    /// Counts a submission made outside [`Recording::submit`] (a read-back's copy).
    pub(super) fn count_submission(&mut self) {
        self.submissions += 1;
    }
}

/// The recorder, held by one public operation for as long as it records (see the module
/// documentation), with the context its ops read.
pub(crate) struct Recording<'a> {
    pub(crate) ctx: &'a Context,
    pub(super) rec: MutexGuard<'a, Recorder>,
    _held: Held,
}

thread_local! {
    /// The recorders (by their backend's address) this thread holds.
    static HELD: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
}

/// This thread's mark on a recorder it holds, removed when the recording ends (or unwinds).
struct Held(usize);

impl Held {
    fn mark(key: usize) -> Held {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            assert!(
                !h.contains(&key),
                "GPU backend: the recorder was taken again by the thread that holds it (an op re-entered \
                 the backend's public API while recording; call the op family's record_* function instead)"
            );
            h.push(key);
        });
        Held(key)
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|&k| k == self.0) {
                h.swap_remove(i);
            }
        });
    }
}

impl GpuBackend {
    /// The recorder, held until the recording is dropped: what every public operation takes once
    /// and hands to its `record_*` function. Panics if this thread holds it already.
    pub(crate) fn recording(&self) -> Recording<'_> {
        let held = Held::mark(&self.ctx as *const Context as usize);
        let rec = self.rec.lock().unwrap_or_else(|e| e.into_inner());
        Recording { ctx: &self.ctx, rec, _held: held }
    }

    /// (dispatches recorded, submissions made) since creation or the last [`GpuBackend::reset_stats`].
    pub fn stats(&self) -> (u64, u64) {
        let r = self.recording();
        (r.rec.dispatches, r.rec.submissions)
    }

    pub fn reset_stats(&self) {
        let mut r = self.recording();
        r.rec.dispatches = 0;
        r.rec.submissions = 0;
    }

    /// Switches per-dispatch GPU timing on or off (off by default; off costs nothing). While on,
    /// every submission writes a timestamp around each dispatch and waits for the device to read
    /// them back (so it serialises the host and the device: wall times taken meanwhile are not
    /// representative); [`GpuBackend::take_profile`] returns what was measured. Work recorded
    /// before the switch is submitted first, under the old setting. Fails, leaving profiling off,
    /// where the adapter lacks `TIMESTAMP_QUERY`.
    pub fn set_profiling(&self, on: bool) -> Result<(), String> {
        let mut r = self.recording();
        r.submit();
        if !on {
            r.rec.profiler = None;
            return Ok(());
        }
        let ctx = r.ctx;
        if ctx.timestamps == Timestamps::None {
            return Err(format!("{} does not offer timestamp queries (TIMESTAMP_QUERY)", ctx.info.name));
        }
        if r.rec.profiler.is_none() {
            r.rec.profiler = Some(profile::Profiler::new(&ctx.device, ctx.queue.get_timestamp_period()));
        }
        Ok(())
    }

    /// The GPU times of the dispatches submitted since profiling was switched on or since the last
    /// call, in submission order (recorded work is submitted first). Empty when profiling is off.
    pub fn take_profile(&self) -> Vec<DispatchTime> {
        let mut r = self.recording();
        r.submit();
        r.rec.profiler.as_mut().map(|p| std::mem::take(&mut p.times)).unwrap_or_default()
    }
}

impl Recording<'_> {
    /// Records one dispatch of `entry` in `shader`: `params` (at most 64 words) at binding 0,
    /// `buffers` at bindings 1, 2, ... in order, `groups` workgroups, in the shader's f16 variant
    /// when any of the buffers holds f16 (else f32). A dispatch with no workgroups is skipped. See
    /// the module documentation for the conventions.
    pub(crate) fn dispatch(
        &mut self,
        shader: &Shader,
        entry: &'static str,
        buffers: &[&GpuBuffer],
        params: &[u32],
        groups: [u32; 3],
    ) {
        if groups.contains(&0) {
            return;
        }
        assert!(params.len() <= MAX_PARAM_WORDS, "{entry}: {} parameter words, at most {MAX_PARAM_WORDS}", params.len());
        assert!(
            groups.iter().all(|&g| g <= MAX_GROUPS_PER_DIM),
            "{entry}: dispatch {groups:?} exceeds 65535 workgroups per dimension"
        );
        let precision =
            if buffers.iter().any(|b| b.elem == Elem::F16) { Precision::F16 } else { Precision::F32 };
        let pipe = self.ctx.pipeline(shader, entry, precision);
        let rec = &mut *self.rec;
        let slot = rec.params.len();
        rec.params.extend_from_slice(bytemuck::cast_slice(params));
        rec.params.resize(slot + PARAM_SLOT, 0);
        rec.pending.push(Recorded {
            pipe,
            label: (shader.name, entry),
            buffers: buffers
                .iter()
                .map(|b| Bound { id: b.id, offset: b.offset, bytes: b.binding_bytes(), buffer: b.buffer.clone() })
                .collect(),
            slot: slot as u32,
            groups,
        });
        rec.dispatches += 1;
    }

    /// Submits everything recorded in one command buffer with one compute pass.
    pub(crate) fn submit(&mut self) {
        let ctx = self.ctx;
        let rec = &mut *self.rec;
        if rec.pending.is_empty() {
            return;
        }
        if rec.params.len() > rec.arena_cap || rec.arena.is_none() {
            let cap = rec.params.len().next_power_of_two().max(64 * 1024);
            rec.arena = Some(ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params arena"),
                size: cap as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }));
            rec.arena_cap = cap;
            rec.binds.clear(); // they point into the old arena
        }
        let arena = rec.arena.clone().expect("params arena exists");
        ctx.queue.write_buffer(&arena, 0, &rec.params);

        let pending = std::mem::take(&mut rec.pending);
        let mut bind_groups = Vec::with_capacity(pending.len());
        for d in &pending {
            let key = BindKey {
                pipe: d.pipe.id,
                slot: d.slot,
                ids: d.buffers.iter().map(|b| (b.id, b.offset, b.bytes)).collect(),
            };
            let bg = match rec.binds.get(&key) {
                Some((bg, _)) => bg.clone(),
                None => {
                    let mut entries = Vec::with_capacity(d.buffers.len() + 1);
                    entries.push(wgpu::BindGroupEntry {
                        binding: 0,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &arena,
                            offset: d.slot as u64,
                            size: NonZeroU64::new(PARAM_SLOT as u64),
                        }),
                    });
                    for (i, b) in d.buffers.iter().enumerate() {
                        let resource = wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &b.buffer,
                            offset: b.offset,
                            size: NonZeroU64::new(b.bytes),
                        });
                        entries.push(wgpu::BindGroupEntry { binding: i as u32 + 1, resource });
                    }
                    let bg = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: None,
                        layout: &d.pipe.layout,
                        entries: &entries,
                    });
                    rec.binds.insert(key, (bg.clone(), d.buffers.iter().map(|b| b.buffer.clone()).collect()));
                    bg
                }
            };
            bind_groups.push(bg);
        }
        if let Some(profiler) = rec.profiler.as_mut() {
            profiler.submit_timed(&ctx.device, &ctx.queue, ctx.timestamps, &pending, &bind_groups);
            rec.submissions += 1;
        } else {
            let mut encoder = ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
            {
                let desc = wgpu::ComputePassDescriptor { label: None, timestamp_writes: None };
                let mut pass = encoder.begin_compute_pass(&desc);
                for (d, bg) in pending.iter().zip(&bind_groups) {
                    pass.set_pipeline(&d.pipe.pipeline);
                    pass.set_bind_group(0, bg, &[]);
                    pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                }
            }
            ctx.queue.submit([encoder.finish()]);
            rec.submissions += 1;
        }
        rec.params.clear();
        drop(pending);
        // Forget bind groups of buffers nobody else holds any more (bounded cache).
        if rec.binds.len() > 2 * rec.binds_after_sweep + 256 {
            rec.binds.retain(|_, (_, bufs)| bufs.iter().all(|b| Arc::strong_count(b) > 1));
            if rec.binds.len() > MAX_CACHED_BIND_GROUPS {
                rec.binds.clear(); // a workload that never repeats itself: start over
            }
            rec.binds_after_sweep = rec.binds.len();
        }
    }
}

impl<'a> Recording<'a> {
    /// Records an op's dispatches that pass data through an f32 scratch buffer of at least `len`
    /// elements: `f` gets the recording back and the buffer, which is the op's own until `f`
    /// returns (then it goes back to the store under `key`). Dispatches run in recording order, so
    /// the op's own dispatches see each other's writes.
    pub(crate) fn with_scratch<R>(
        &mut self,
        key: &'static str,
        len: usize,
        f: impl FnOnce(&mut Recording<'a>, &GpuBuffer) -> R,
    ) -> R {
        self.with_scratch_of(key, len, Elem::F32, f)
    }

    /// [`Recording::with_scratch`] with elements of type `elem` (scratch that a shader reads as
    /// `elem`, such as an operand handed to the matrix product).
    pub(crate) fn with_scratch_of<R>(
        &mut self,
        key: &'static str,
        len: usize,
        elem: Elem,
        f: impl FnOnce(&mut Recording<'a>, &GpuBuffer) -> R,
    ) -> R {
        // The key's buffer, taken out of the store, where it fits; else a new one.
        let buf = self.rec.scratch.take(key, len, elem).unwrap_or_else(|| self.ctx.alloc_typed(len, elem));
        let out = f(self, &buf);
        self.rec.scratch.put(key, buf);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::gpu::tests::{own_gpu, upload};
    use crate::engine::gpu::by_kernel;
    use crate::engine::{Act, Backend};

    #[test]
    fn profiling_reports_each_dispatch_in_order() {
        let g = own_gpu();
        if g.timestamps() == Timestamps::None {
            assert!(g.set_profiling(true).is_err(), "no timestamps: profiling must refuse");
            return;
        }
        let mut x = g.alloc(1000);
        let y = upload(&g, &vec![1.0; 1000]);
        g.fill(&mut x, 1000, 0.0); // before profiling: not reported
        g.set_profiling(true).expect("timestamps offered");
        g.fill(&mut x, 1000, 2.0);
        g.add(&y, &mut x, 1000);
        g.act_fwd(Act::Relu, &y, &mut x, 1000);
        let got = g.take_profile();
        let names: Vec<(&str, &str)> = got.iter().map(|d| (d.shader, d.entry)).collect();
        assert_eq!(names, [("elementwise", "fill"), ("elementwise", "add"), ("elementwise", "act_fwd")]);
        assert!(got.iter().all(|d| d.ns.is_finite() && d.ns >= 0.0));
        assert_eq!(got[0].groups, grid_1d(1000, 256));
        assert!(g.take_profile().is_empty(), "taken once");
        g.set_profiling(false).expect("switching off always works");
        g.fill(&mut x, 1000, 3.0);
        assert!(g.take_profile().is_empty(), "nothing recorded while off");
        assert_eq!(g.read(&x, 2), [3.0, 3.0]);
        let totals = by_kernel(&got);
        assert_eq!(totals.len(), 3);
        assert!(totals.windows(2).all(|w| w[0].3 >= w[1].3), "largest first");
    }

    /// Taking the recorder twice on one thread (an op calling the public API while it records)
    /// is a panic naming the cause, not a deadlock.
    #[test]
    #[should_panic(expected = "taken again by the thread that holds it")]
    fn taking_the_recorder_twice_panics() {
        let g = own_gpu();
        let _outer = g.recording();
        let _inner = g.recording();
    }

    /// Two backends, or one after its recording ended, are no re-entry.
    #[test]
    fn recorders_of_two_backends_or_in_turn_are_fine() {
        let (a, b) = (own_gpu(), own_gpu());
        let _ra = a.recording();
        let _rb = b.recording();
        drop(_ra);
        let _again = a.recording();
    }

    #[test]
    fn grids_stay_within_the_dimension_limit() {
        assert_eq!(grid_1d(0, 256), [0, 0, 0]);
        assert_eq!(grid_1d(1, 256), [1, 1, 1]);
        assert_eq!(grid_1d(65535 * 256, 256), [65535, 1, 1]);
        let [x, y, _] = grid_1d(65535 * 256 + 1, 256);
        assert!(x <= 65535 && (x as usize) * (y as usize) >= 65536);
        assert_eq!(grid_2d(65, 1, 64, 1), [2, 1, 1]);
    }
}
