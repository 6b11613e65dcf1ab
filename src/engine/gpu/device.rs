//! Opening the device: [`GpuBackend::new`] picks an adapter, opens it with the adapter's own
//! limits and the features the precision and profiling need, and builds the [`Context`] and an
//! empty recorder; and what a backend tells of its device.

use super::adapter::{self, pick_adapter_index, precision_features, Precision};
use super::context::{Context, KernelVariant};
use super::recorder::Recorder;
use super::{GpuBackend, Timestamps};
use std::sync::Mutex;

impl GpuBackend {
    /// Opens the adapter chosen by [`pick_adapter_index`] with `want`, or with the `ETUDE_DEVICE`
    /// environment variable when `want` is `None`, at f32.
    pub fn new(want: Option<&str>) -> Result<GpuBackend, String> {
        Self::with_precision(want, Precision::F32)
    }

    /// [`GpuBackend::new`] storing floats at `precision`; f16 fails, with a one-line message, on
    /// an adapter without `SHADER_F16`.
    pub fn with_precision(want: Option<&str>, precision: Precision) -> Result<GpuBackend, String> {
        let env = std::env::var("ETUDE_DEVICE").ok();
        let want = want.or(env.as_deref());
        let (adapters, reports) = adapter::enumerate();
        let index = pick_adapter_index(&reports, want)?;
        let adapter = &adapters[index];
        // The adapter's own limits: the largest storage bindings and buffers, workgroup memory and
        // invocations it offers (WebGPU's defaults are far lower: 128 MiB bindings, 8 storage
        // buffers per stage, 16 KiB workgroup memory).
        let limits = adapter.limits();
        let required_features = precision_features(precision, adapter.features(), &adapter.get_info().name)?;
        // Timestamp queries are requested where offered (they cost nothing until a query is
        // written) so that profiling can be switched on later; see `set_profiling`.
        let timestamps = Timestamps::of(adapter.features());
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("etude"),
            required_features: required_features | timestamps.features(),
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| format!("cannot open GPU device on {}: {e}", adapter.get_info().name))?;
        let ctx = Context::new(precision, device, queue, adapter.get_info(), limits, timestamps);
        Ok(GpuBackend { ctx, rec: Mutex::new(Recorder::new()) })
    }

    /// The precision of [`crate::engine::Backend::alloc`] buffers.
    pub fn precision(&self) -> Precision {
        self.ctx.precision
    }

    /// The factor gradient buffers carry (see the module documentation): [`F16_LOSS_SCALE`] at
    /// f16, 1 at f32.
    pub fn loss_scale(&self) -> f32 {
        self.ctx.loss_scale()
    }

    /// The chosen adapter.
    pub fn adapter_info(&self) -> &wgpu::AdapterInfo {
        &self.ctx.info
    }

    /// The limits the device was opened with.
    pub fn limits(&self) -> &wgpu::Limits {
        &self.ctx.limits
    }

    /// True on a software implementation (lavapipe/llvmpipe, SwiftShader, WARP, any CPU device).
    pub fn is_software(&self) -> bool {
        self.ctx.is_software()
    }

    pub fn device(&self) -> &wgpu::Device {
        &self.ctx.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.ctx.queue
    }

    /// Forces a choice of kernel variants (`Auto`, the default, picks by adapter): lets tests run
    /// both variants on one adapter.
    pub fn set_kernel_variant(&self, v: KernelVariant) {
        self.ctx.set_kernel_variant(v);
    }

    /// Which timestamp queries this device offers ([`Timestamps::None`]: no GPU-side timing).
    pub fn timestamps(&self) -> Timestamps {
        self.ctx.timestamps
    }
}
