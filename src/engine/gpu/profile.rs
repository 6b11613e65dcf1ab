//! Per-dispatch GPU timing with timestamp queries (opt-in: [`super::GpuBackend::set_profiling`]).
//!
//! With `TIMESTAMP_QUERY_INSIDE_PASSES` a submission keeps its single compute pass and writes a
//! timestamp before the first dispatch and after every dispatch: dispatch `i` took
//! `t[i + 1] - t[i]` (including any barrier wgpu put in front of it). With `TIMESTAMP_QUERY`
//! alone, each dispatch gets a pass of its own whose `timestamp_writes` mark its beginning and
//! end (more passes, so slightly more overhead per dispatch than the unprofiled submission).
//! Either way the values are resolved into a buffer, copied to a mappable one and read back
//! after the submission, times `queue.get_timestamp_period()` nanoseconds per tick.
//!
//! A query set holds at most `QUERY_SET_MAX_QUERIES` (4096) values, so a submission with more
//! dispatches is encoded in several chunks, each with its own pass and readback.

use super::Recorded;

/// Which timestamp queries a device offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timestamps {
    /// No `TIMESTAMP_QUERY`: no GPU-side timing (wall times only).
    None,
    /// `TIMESTAMP_QUERY` only: at pass boundaries (a pass per dispatch while profiling).
    PassBoundaries,
    /// `TIMESTAMP_QUERY_INSIDE_PASSES` too: between the dispatches of one pass.
    InsidePasses,
}

impl Timestamps {
    /// What an adapter with `features` offers.
    pub fn of(features: wgpu::Features) -> Timestamps {
        if !features.contains(wgpu::Features::TIMESTAMP_QUERY) {
            Timestamps::None
        } else if features.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES) {
            Timestamps::InsidePasses
        } else {
            Timestamps::PassBoundaries
        }
    }

    /// The device features to request for this level.
    pub fn features(self) -> wgpu::Features {
        match self {
            Timestamps::None => wgpu::Features::empty(),
            Timestamps::PassBoundaries => wgpu::Features::TIMESTAMP_QUERY,
            Timestamps::InsidePasses => {
                wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
            }
        }
    }
}

/// The GPU time of one dispatch.
#[derive(Clone, Debug, PartialEq)]
pub struct DispatchTime {
    /// The shader's name (`shaders/NAME.wgsl`).
    pub shader: &'static str,
    /// Its entry point.
    pub entry: &'static str,
    /// Workgroups dispatched (x, y, z).
    pub groups: [u32; 3],
    /// Nanoseconds on the device.
    pub ns: f64,
}

const MAX_QUERIES: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// The query set and buffers of the profiler, reused by every profiled submission.
pub(super) struct Profiler {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period: f64,
    /// What was measured since the last `take_profile`.
    pub times: Vec<DispatchTime>,
}

impl Profiler {
    pub fn new(device: &wgpu::Device, period: f32) -> Profiler {
        let bytes = MAX_QUERIES as u64 * wgpu::QUERY_SIZE as u64;
        let set = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("etude timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: MAX_QUERIES,
        });
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: bytes, usage, mapped_at_creation: false })
        };
        let resolve = buffer("timestamp resolve", wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC);
        let readback = buffer("timestamp readback", wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        Profiler { set, resolve, readback, period: period as f64, times: Vec::new() }
    }

    /// Encodes, submits and times `pending` (bound with `bind_groups`), waiting for the results.
    pub fn submit_timed(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        kind: Timestamps,
        pending: &[Recorded],
        bind_groups: &[wgpu::BindGroup],
    ) {
        // Dispatches per chunk: n + 1 queries inside one pass, or 2 n at pass boundaries.
        let per_chunk = match kind {
            Timestamps::InsidePasses => MAX_QUERIES as usize - 1,
            _ => MAX_QUERIES as usize / 2,
        };
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        for (chunk, groups) in pending.chunks(per_chunk).zip(bind_groups.chunks(per_chunk)) {
            let queries = match kind {
                Timestamps::InsidePasses => {
                    let mut pass = encoder
                        .begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
                    pass.write_timestamp(&self.set, 0);
                    for (i, (d, bg)) in chunk.iter().zip(groups).enumerate() {
                        pass.set_pipeline(&d.pipe.pipeline);
                        pass.set_bind_group(0, bg, &[]);
                        pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                        pass.write_timestamp(&self.set, i as u32 + 1);
                    }
                    chunk.len() as u32 + 1
                }
                _ => {
                    for (i, (d, bg)) in chunk.iter().zip(groups).enumerate() {
                        let writes = wgpu::ComputePassTimestampWrites {
                            query_set: &self.set,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        };
                        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: None,
                            timestamp_writes: Some(writes),
                        });
                        pass.set_pipeline(&d.pipe.pipeline);
                        pass.set_bind_group(0, bg, &[]);
                        pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                    }
                    2 * chunk.len() as u32
                }
            };
            let bytes = queries as u64 * wgpu::QUERY_SIZE as u64;
            encoder.resolve_query_set(&self.set, 0..queries, &self.resolve, 0);
            encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, bytes);
            queue.submit([encoder.finish()]);
            let ticks = self.read_back(device, bytes);
            for (i, d) in chunk.iter().enumerate() {
                let (t0, t1) = match kind {
                    Timestamps::InsidePasses => (ticks[i], ticks[i + 1]),
                    _ => (ticks[2 * i], ticks[2 * i + 1]),
                };
                self.times.push(DispatchTime {
                    shader: d.label.0,
                    entry: d.label.1,
                    groups: d.groups,
                    ns: t1.saturating_sub(t0) as f64 * self.period,
                });
            }
            encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        }
    }

    /// The first `bytes` of the readback buffer as timestamps, once the device is done.
    fn read_back(&self, device: &wgpu::Device, bytes: u64) -> Vec<u64> {
        let (tx, rx) = std::sync::mpsc::channel();
        self.readback.map_async(wgpu::MapMode::Read, 0..bytes, move |r| {
            let _ = tx.send(r);
        });
        device.poll(wgpu::PollType::wait_indefinitely()).expect("GPU device lost while waiting");
        rx.recv().expect("map callback ran").expect("mapping the timestamp readback buffer failed");
        let ticks = {
            let view = self.readback.get_mapped_range(0..bytes).expect("readback buffer is mapped");
            view.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).collect()
        };
        self.readback.unmap();
        ticks
    }
}

/// Per-kernel totals of `times`: (shader, entry, dispatches, nanoseconds), largest total first.
pub fn by_kernel(times: &[DispatchTime]) -> Vec<(&'static str, &'static str, usize, f64)> {
    let mut out: Vec<(&'static str, &'static str, usize, f64)> = Vec::new();
    for t in times {
        match out.iter_mut().find(|k| k.0 == t.shader && k.1 == t.entry) {
            Some(k) => {
                k.2 += 1;
                k.3 += t.ns;
            }
            None => out.push((t.shader, t.entry, 1, t.ns)),
        }
    }
    out.sort_by(|a, b| b.3.total_cmp(&a.3));
    out
}
