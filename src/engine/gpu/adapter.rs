//! Adapter choice: listing the adapters wgpu finds ([`list_adapters`], what `etude devices`
//! prints), picking one ([`pick_adapter_index`]: `--device`, `ETUDE_DEVICE`, else the best kind),
//! and the precision a backend stores floats at with the device features it needs.

/// The static loss scale of f16 training (see the module documentation of `engine::gpu`). 1024 lifts a softmax
/// gradient of `1/(B*T*V)` (about 4e-7 at B128, T64, V300) to about 4e-4, a normal f16 number,
/// while a logit gradient stays at most `1024 / rows`, far from f16's largest value (65504).
pub const F16_LOSS_SCALE: f32 = 1024.0;

/// How the GPU backend stores the floats of [`Backend::alloc`] buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats everywhere (the default).
    #[default]
    F32,
    /// Weights, gradients and activations as f16 (needs the adapter's `SHADER_F16`), arithmetic
    /// and sums in f32, Adam's moments in f32.
    F16,
}

impl Precision {
    /// `"f32"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, fm: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fm.write_str(self.name())
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Precision::F32),
            "f16" => Ok(Precision::F16),
            _ => Err(format!("unknown precision {s:?} (f32 or f16)")),
        }
    }
}

/// What `etude devices` prints about one adapter.
#[derive(Clone, Debug)]
pub struct AdapterReport {
    /// Position in [`list_adapters`]' order (what `--device N` selects).
    pub index: usize,
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
    /// `SHADER_F16` is available.
    pub shader_f16: bool,
    /// `TIMESTAMP_QUERY` is available.
    pub timestamp_query: bool,
    pub max_workgroup_storage: u32,
    pub max_invocations_per_workgroup: u32,
    pub max_storage_binding: u64,
    pub max_buffer: u64,
}

impl std::fmt::Display for AdapterReport {
    /// One line: `0: NAME (Vulkan, DiscreteGpu; driver ...; f16 yes, timestamps yes; workgroup 32 KiB / 1024 invocations; storage binding 128 MiB, buffer 2048 MiB)`.
    fn fmt(&self, fm: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(
            fm,
            "{}: {} ({:?}, {:?}; driver {} {}; f16 {}, timestamps {}; workgroup {} KiB / {} invocations; \
             storage binding {} MiB, buffer {} MiB)",
            self.index,
            self.name,
            self.backend,
            self.device_type,
            self.driver,
            self.driver_info,
            yes(self.shader_f16),
            yes(self.timestamp_query),
            self.max_workgroup_storage / 1024,
            self.max_invocations_per_workgroup,
            self.max_storage_binding >> 20,
            self.max_buffer >> 20
        )
    }
}

impl AdapterReport {
    /// Software rasterisers / CPU implementations (lavapipe, SwiftShader, WARP).
    pub fn is_software(&self) -> bool {
        is_software_info(self.device_type, &self.name)
    }
}

pub(crate) fn is_software_info(device_type: wgpu::DeviceType, name: &str) -> bool {
    let n = name.to_lowercase();
    device_type == wgpu::DeviceType::Cpu
        || ["llvmpipe", "lavapipe", "swiftshader", "warp"].iter().any(|s| n.contains(s))
}

/// The message when no adapter exists.
pub const NO_ADAPTER: &str = "no GPU adapter found: install a Vulkan driver (on Debian/Ubuntu: apt-get install \
mesa-vulkan-drivers for the software one), or use --backend cpu";

/// Vulkan, Metal and DX12 only (GL is excluded: slow to compile, weaker compute).
const BACKENDS: wgpu::Backends =
    wgpu::Backends::VULKAN.union(wgpu::Backends::METAL).union(wgpu::Backends::DX12);

fn instance() -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle().with_env();
    desc.backends = BACKENDS;
    wgpu::Instance::new(desc)
}

fn report(index: usize, a: &wgpu::Adapter) -> AdapterReport {
    let info = a.get_info();
    let lim = a.limits();
    let feat = a.features();
    AdapterReport {
        index,
        name: info.name,
        backend: info.backend,
        device_type: info.device_type,
        driver: info.driver,
        driver_info: info.driver_info,
        shader_f16: feat.contains(wgpu::Features::SHADER_F16),
        timestamp_query: feat.contains(wgpu::Features::TIMESTAMP_QUERY),
        max_workgroup_storage: lim.max_compute_workgroup_storage_size,
        max_invocations_per_workgroup: lim.max_compute_invocations_per_workgroup,
        max_storage_binding: lim.max_storage_buffer_binding_size,
        max_buffer: lim.max_buffer_size,
    }
}

/// Every adapter wgpu finds on the Vulkan, Metal and DX12 backends, in a stable order.
pub fn list_adapters() -> Vec<AdapterReport> {
    enumerate().1
}

/// Which adapter etude uses. `want` (from `--device` or `ETUDE_DEVICE`) is an index into `adapters`
/// or a case-insensitive substring of an adapter's name; without it, the first discrete GPU, else
/// integrated, else virtual, else software/CPU.
pub fn pick_adapter_index(adapters: &[AdapterReport], want: Option<&str>) -> Result<usize, String> {
    if adapters.is_empty() {
        return Err(NO_ADAPTER.to_string());
    }
    let names = || adapters.iter().map(|a| format!("{}: {}", a.index, a.name)).collect::<Vec<_>>().join("; ");
    if let Some(w) = want.map(str::trim).filter(|w| !w.is_empty()) {
        if let Ok(i) = w.parse::<usize>() {
            return adapters
                .iter()
                .position(|a| a.index == i)
                .ok_or_else(|| format!("no adapter with index {i} (adapters: {})", names()));
        }
        let lw = w.to_lowercase();
        return adapters
            .iter()
            .position(|a| a.name.to_lowercase().contains(&lw))
            .ok_or_else(|| format!("no adapter whose name contains {w:?} (adapters: {})", names()));
    }
    let rank = |a: &AdapterReport| match a.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        _ if a.is_software() => 4,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let best = adapters.iter().enumerate().min_by_key(|(i, a)| (rank(a), *i)).map(|(i, _)| i);
    Ok(best.unwrap_or(0))
}

/// The device features `precision` needs from an adapter `name` offering `offered`; f16 without
/// `SHADER_F16` is a one-line error.
pub(crate) fn precision_features(precision: Precision, offered: wgpu::Features, name: &str) -> Result<wgpu::Features, String> {
    match precision {
        Precision::F32 => Ok(wgpu::Features::empty()),
        Precision::F16 if offered.contains(wgpu::Features::SHADER_F16) => Ok(wgpu::Features::SHADER_F16),
        Precision::F16 => Err(format!(
            "--precision f16: the GPU adapter {name} does not support half-precision shaders (SHADER_F16); \
             use --precision f32"
        )),
    }
}

/// The adapters wgpu finds on [`BACKENDS`], with their reports, in [`list_adapters`]' order.
pub(crate) fn enumerate() -> (Vec<wgpu::Adapter>, Vec<AdapterReport>) {
    let inst = instance();
    let adapters = pollster::block_on(inst.enumerate_adapters(BACKENDS));
    let reports = adapters.iter().enumerate().map(|(i, a)| report(i, a)).collect();
    (adapters, reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(index: usize, name: &str, device_type: wgpu::DeviceType) -> AdapterReport {
        AdapterReport {
            index,
            name: name.into(),
            backend: wgpu::Backend::Vulkan,
            device_type,
            driver: String::new(),
            driver_info: String::new(),
            shader_f16: false,
            timestamp_query: false,
            max_workgroup_storage: 16384,
            max_invocations_per_workgroup: 256,
            max_storage_binding: 1 << 27,
            max_buffer: 1 << 28,
        }
    }

    #[test]
    fn picks_discrete_then_integrated_then_virtual_then_software() {
        use wgpu::DeviceType::*;
        let all = vec![
            fake(0, "llvmpipe (LLVM 15.0.6, 256 bits)", Cpu),
            fake(1, "Virtio GPU", VirtualGpu),
            fake(2, "Intel(R) UHD Graphics 630", IntegratedGpu),
            fake(3, "NVIDIA GeForce RTX 4090", DiscreteGpu),
        ];
        assert_eq!(pick_adapter_index(&all, None), Ok(3));
        assert_eq!(pick_adapter_index(&all[..3], None), Ok(2));
        assert_eq!(pick_adapter_index(&all[..2], None), Ok(1));
        assert_eq!(pick_adapter_index(&all[..1], None), Ok(0));
        // a software device reported as "Other" still comes last
        let other = vec![fake(0, "SwiftShader Device", Other), fake(1, "Some GPU", Other)];
        assert_eq!(pick_adapter_index(&other, None), Ok(1));
    }

    #[test]
    fn override_by_index_or_name_substring() {
        use wgpu::DeviceType::*;
        let all = vec![fake(0, "llvmpipe (LLVM 15)", Cpu), fake(1, "NVIDIA H100", DiscreteGpu)];
        assert_eq!(pick_adapter_index(&all, Some("llvmpipe")), Ok(0));
        assert_eq!(pick_adapter_index(&all, Some("h100")), Ok(1));
        assert_eq!(pick_adapter_index(&all, Some("0")), Ok(0));
        assert_eq!(pick_adapter_index(&all, Some(" ")), Ok(1), "blank means no override");
        assert!(pick_adapter_index(&all, Some("7")).unwrap_err().contains("no adapter with index 7"));
        assert!(pick_adapter_index(&all, Some("radeon")).unwrap_err().contains("NVIDIA H100"));
        assert_eq!(pick_adapter_index(&[], None), Err(NO_ADAPTER.to_string()));
        assert!(all[0].is_software() && !all[1].is_software());
    }


    #[test]
    fn f16_needs_shader_f16() {
        let none = wgpu::Features::empty();
        assert_eq!(precision_features(Precision::F32, none, "x"), Ok(none));
        let err = precision_features(Precision::F16, none, "Old GPU").unwrap_err();
        assert!(err.contains("Old GPU") && err.contains("SHADER_F16") && !err.contains('\n'), "{err}");
        let f16 = wgpu::Features::SHADER_F16 | wgpu::Features::TIMESTAMP_QUERY;
        assert_eq!(precision_features(Precision::F16, f16, "x"), Ok(wgpu::Features::SHADER_F16));
    }
}
