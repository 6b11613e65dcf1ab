//! `etude devices`: the adapters wgpu sees, and the one etude would pick.

use clap::Args;
use etude::engine::gpu::{list_adapters, pick_adapter_index};

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  etude devices                   # list adapters; the one marked * is what --backend gpu uses
  etude devices --device llvmpipe # which adapter a --device choice selects
  ETUDE_DEVICE=1 etude devices    # the same through the environment")]
pub struct DevicesArgs {
    /// Show which adapter this choice (index or part of the name) selects.
    #[arg(long, value_name = "N|NAME")]
    pub device: Option<String>,
}

pub fn run(args: DevicesArgs) -> Result<(), String> {
    let adapters = list_adapters();
    if adapters.is_empty() {
        return Err("no GPU adapter found: install a Vulkan driver (on Debian/Ubuntu: apt-get install \
                    mesa-vulkan-drivers for the software one), or use --backend cpu"
            .into());
    }
    let env = std::env::var("ETUDE_DEVICE").ok();
    let want = args.device.as_deref().or(env.as_deref());
    let picked = pick_adapter_index(&adapters, want);
    for a in &adapters {
        let mark = if picked.as_ref().ok() == Some(&a.index) { "*" } else { " " };
        println!("{mark} {a}");
    }
    match picked {
        Ok(i) => {
            let a = &adapters[i];
            let why = match want {
                Some(w) => format!("selected by {w:?}"),
                None => "preferred order: discrete GPU, integrated, virtual, software".to_string(),
            };
            println!("etude would use adapter {i}: {} ({why})", a.name);
            if matches!(a.device_type, wgpu::DeviceType::Cpu) {
                println!("note: it is a software renderer; `--backend auto` trains on the CPU backend instead");
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}
