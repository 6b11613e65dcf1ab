//! The context a backend records against ([`Context`]): the device opened on the chosen adapter,
//! what it offers (limits, timestamps, software or not), the precision, the kernel variants, and
//! the pipeline cache (one compute pipeline per shader, entry point and precision, compiled on
//! first use). Everything here is shared read-only by the ops while they record, but for the
//! pipeline cache, whose lock is taken only inside [`Context::pipeline`].

use super::adapter::{is_software_info, Precision, F16_LOSS_SCALE};
use super::Timestamps;
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
    /// A context on an opened device, with an empty pipeline cache and the kernels chosen by
    /// adapter ([`KernelVariant::Auto`]).
    pub(crate) fn new(
        precision: Precision,
        device: wgpu::Device,
        queue: wgpu::Queue,
        info: wgpu::AdapterInfo,
        limits: wgpu::Limits,
        timestamps: Timestamps,
    ) -> Context {
        Context {
            precision,
            device,
            queue,
            info,
            limits,
            timestamps,
            pipelines: Mutex::new(Pipelines::default()),
            kernel_variant: AtomicU8::new(0),
            next_id: AtomicU64::new(1),
        }
    }

    /// Forces a choice of kernel variants (see [`KernelVariant`]).
    pub(crate) fn set_kernel_variant(&self, v: KernelVariant) {
        let i = KernelVariant::ALL.iter().position(|&k| k == v).expect("every variant is listed");
        self.kernel_variant.store(i as u8, Ordering::Relaxed);
    }

    /// The factor gradient buffers carry (see `GpuBackend::loss_scale`).
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
