//! `--backend auto|gpu|cpu` and `--device`: which engine runs a command.

use clap::{Args, ValueEnum};
use etude::engine::cpu::CpuBackend;
use etude::engine::gpu::GpuBackend;

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
    /// Open the engine, saying on stderr which one and why when the choice was automatic.
    pub fn open(&self) -> Result<Engine, String> {
        match self.backend {
            BackendChoice::Cpu => Ok(Engine::Cpu(CpuBackend::new())),
            BackendChoice::Gpu => Ok(Engine::Gpu(Box::new(GpuBackend::new(self.device.as_deref())?))),
            BackendChoice::Auto => match GpuBackend::new(self.device.as_deref()) {
                Ok(g) if !g.is_software() || self.device.is_some() => {
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
}
