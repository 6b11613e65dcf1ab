//! The context a backend records against ([`Context`]): the device opened on the chosen adapter,
//! what it offers (limits, timestamps, software or not), the precision, the kernel variants, and
//! the pipeline cache (one compute pipeline per shader, entry point and precision, compiled on
//! first use). Everything here is shared read-only by the ops while they record, but for the
//! pipeline cache, whose lock is taken only inside [`Context::pipeline`].

use super::adapter::{self, is_software_info, pick_adapter_index, precision_features, Precision, F16_LOSS_SCALE};
use super::recorder::Recorder;
use super::{GpuBackend, Timestamps};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// Which kernels the backend records where it has a variant for software renderers (the LSTM
/// recurrence, the matrix product; see `shaders/lstm.wgsl`, `shaders/matmul.wgsl`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelVariant {
    /// By adapter: the software variants on software renderers (lavapipe), else the portable ones.
    Auto,
    /// The portable kernels, tuned for real GPUs (workgroup-memory tiles, many workgroups).
    Portable,
    /// The software-renderer kernels (register blocks, few workgroups), where their shape
    /// conditions hold (H <= 128 for the LSTM; m, k, n multiples of 4 for the product).
    Software,
}

impl KernelVariant {
    const ALL: [KernelVariant; 3] = [KernelVariant::Auto, KernelVariant::Portable, KernelVariant::Software];
}

/// The device and what the ops read while recording (see the module documentation).
pub(crate) struct Context {
    pub(super) precision: Precision,
    pub(super) device: wgpu::Device,
    pub(super) queue: wgpu::Queue,
    pub(super) info: wgpu::AdapterInfo,
    pub(super) limits: wgpu::Limits,
    /// Which timestamp queries the device was opened with.
    pub(super) timestamps: Timestamps,
    pipelines: Mutex<Pipelines>,
    /// Kernel choice where software-renderer variants exist (`Auto` unless a test forces one), as
    /// its index in `KernelVariant::ALL`.
    kernel_variant: AtomicU8,
    /// The id the next allocation gets (see `GpuBuffer::id`).
    pub(super) next_id: AtomicU64,
}

impl Context {
    /// The factor gradient buffers carry (see [`GpuBackend::loss_scale`]).
    pub(crate) fn loss_scale(&self) -> f32 {
        match self.precision {
            Precision::F32 => 1.0,
            Precision::F16 => F16_LOSS_SCALE,
        }
    }

    /// True on a software implementation (see [`GpuBackend::is_software`]).
    pub(crate) fn is_software(&self) -> bool {
        is_software_info(self.info.device_type, &self.info.name)
    }

    pub(crate) fn kernel_variant(&self) -> KernelVariant {
        KernelVariant::ALL[self.kernel_variant.load(Ordering::Relaxed) as usize]
    }

    /// Whether the software-renderer variants are in use (see [`KernelVariant`]).
    pub(crate) fn software_kernels(&self) -> bool {
        match self.kernel_variant() {
            KernelVariant::Auto => self.is_software(),
            KernelVariant::Portable => false,
            KernelVariant::Software => true,
        }
    }
}

/// A WGSL source file: its name (unique: the pipeline cache key, with the entry point) and text.
pub(crate) struct Shader {
    pub name: &'static str,
    pub source: &'static str,
}

/// A compute pipeline and the layout of its bind group 0.
pub(crate) struct Pipe {
    pub(super) id: usize,
    pub(super) pipeline: wgpu::ComputePipeline,
    pub(super) layout: wgpu::BindGroupLayout,
}

#[derive(Default)]
pub(super) struct Pipelines {
    modules: HashMap<(&'static str, Precision), wgpu::ShaderModule>,
    pipes: HashMap<(&'static str, &'static str, Precision), Arc<Pipe>>,
}

/// The WGSL a shader compiles from at `precision`: its source with `alias elem = f32;` (or
/// `enable f16;` and `alias elem = f16;`) inserted after its own leading directives.
pub(crate) fn variant_source(source: &str, precision: Precision) -> String {
    // Directives (`enable`, `requires`, `diagnostic`) must precede every declaration.
    let mut at = 0;
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        offset += line.len();
        let t = line.trim_start();
        if ["enable ", "requires ", "diagnostic"].iter().any(|d| t.starts_with(d)) {
            at = offset;
        }
    }
    let alias = match precision {
        Precision::F32 => "alias elem = f32;\n",
        Precision::F16 => "enable f16;\nalias elem = f16;\n",
    };
    let (head, tail) = source.split_at(at);
    let sep = if head.is_empty() || head.ends_with('\n') { "" } else { "\n" };
    format!("{head}{sep}{alias}{tail}")
}

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
        let ctx = Context {
            precision,
            device,
            queue,
            info: adapter.get_info(),
            limits,
            timestamps,
            pipelines: Mutex::new(Pipelines::default()),
            kernel_variant: AtomicU8::new(0),
            next_id: AtomicU64::new(1),
        };
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
        let i = KernelVariant::ALL.iter().position(|&k| k == v).expect("every variant is listed");
        self.ctx.kernel_variant.store(i as u8, Ordering::Relaxed);
    }

    /// Which timestamp queries this device offers ([`Timestamps::None`]: no GPU-side timing).
    pub fn timestamps(&self) -> Timestamps {
        self.ctx.timestamps
    }
}

impl Context {
    /// The pipeline for `entry` of `shader` with `elem` = `precision`, compiled on first use and
    /// cached.
    pub(crate) fn pipeline(&self, shader: &Shader, entry: &'static str, precision: Precision) -> Arc<Pipe> {
        let mut p = self.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pipe) = p.pipes.get(&(shader.name, entry, precision)) {
            return pipe.clone();
        }
        let device = &self.device;
        let module = p.modules.entry((shader.name, precision)).or_insert_with(|| {
            device.create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(shader.name),
                source: wgpu::ShaderSource::Wgsl(variant_source(shader.source, precision).into()),
            })
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: None,
            module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions::default(),
            cache: None,
        });
        let layout = pipeline.get_bind_group_layout(0);
        let pipe = Arc::new(Pipe { id: p.pipes.len(), pipeline, layout });
        p.pipes.insert((shader.name, entry, precision), pipe.clone());
        pipe
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_prepend_the_alias_after_the_directives() {
        assert_eq!(variant_source("// c\nfn f() {}\n", Precision::F32), "alias elem = f32;\n// c\nfn f() {}\n");
        assert_eq!(variant_source("fn f() {}", Precision::F16), "enable f16;\nalias elem = f16;\nfn f() {}");
        let with = "// c\nenable subgroups;\nfn f() {}\n";
        assert_eq!(variant_source(with, Precision::F16), "// c\nenable subgroups;\nenable f16;\nalias elem = f16;\nfn f() {}\n");
        assert_eq!("f16".parse::<Precision>(), Ok(Precision::F16));
        assert!("f64".parse::<Precision>().is_err());
    }
}
