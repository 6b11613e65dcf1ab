//! `--backend auto|gpu|cpu` and `--device`: which engine runs a command.

use clap::{Args, ValueEnum};
use etude::engine::cpu::CpuBackend;
use etude::engine::gpu::{GpuBackend, Precision};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendChoice {
    /// A real GPU when there is one; the CPU backend when the only adapter is a software one.
    Auto,
    /// The GPU backend (wgpu), on whatever adapter is picked, software ones included.
    Gpu,
    /// The CPU backend.
    Cpu,
}

#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Engine: auto (a real GPU if present, else the CPU), gpu (wgpu, any adapter) or cpu.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// GPU adapter: an index from `etude devices` or part of its name (also ETUDE_DEVICE).
    #[arg(long, value_name = "N|NAME")]
    pub device: Option<String>,
}

/// The chosen engine.
pub enum Engine {
    Cpu(CpuBackend),
    Gpu(Box<GpuBackend>),
}

impl BackendArgs {
    /// Open the engine at `precision` ([`open_engine`]).
    pub fn open_with_precision(&self, precision: Precision) -> Result<Engine, String> {
        open_engine(self.backend, self.device.as_deref(), precision)
    }

    /// Open the engine at f32 ([`open_engine`]).
    pub fn open(&self) -> Result<Engine, String> {
        open_engine(self.backend, self.device.as_deref(), Precision::F32)
    }
}

/// The one place a command opens its engine: `choice` on adapter `device` (an index or part of a
/// name; GPU only) storing floats at `precision`. `auto` says on stderr which engine it took and
/// why. f16 is the GPU backend's alone: it fails with one line on the CPU backend, when `auto`
/// would pick the CPU, or on an adapter without SHADER_F16.
pub fn open_engine(choice: BackendChoice, device: Option<&str>, precision: Precision) -> Result<Engine, String> {
    if choice == BackendChoice::Cpu && device.is_some() {
        return Err("--device chooses a GPU adapter: it does not apply to --backend cpu".into());
    }
    let gpu_only = "--precision f16 needs the GPU backend (--backend gpu); the CPU backend computes in f32";
    match choice {
        BackendChoice::Cpu if precision != Precision::F32 => Err(gpu_only.into()),
        BackendChoice::Cpu => Ok(Engine::Cpu(CpuBackend::new())),
        BackendChoice::Gpu => Ok(Engine::Gpu(Box::new(GpuBackend::with_precision(device, precision)?))),
        BackendChoice::Auto if precision != Precision::F32 => {
            let g = GpuBackend::with_precision(device, precision).map_err(|e| format!("{gpu_only}: {e}"))?;
            eprintln!("backend: gpu ({}, --precision f16)", g.adapter_info().name);
            Ok(Engine::Gpu(Box::new(g)))
        }
        BackendChoice::Auto => match GpuBackend::new(device) {
            Ok(g) if !g.is_software() || device.is_some() => {
                eprintln!("backend: gpu ({})", g.adapter_info().name);
                Ok(Engine::Gpu(Box::new(g)))
            }
            Ok(g) => {
                eprintln!(
                    "backend: cpu (the only GPU adapter, {}, is a software renderer: the CPU backend is faster; --backend gpu forces it)",
                    g.adapter_info().name
                );
                Ok(Engine::Cpu(CpuBackend::new()))
            }
            Err(e) => {
                eprintln!("backend: cpu ({e})");
                Ok(Engine::Cpu(CpuBackend::new()))
            }
        },
    }
}
