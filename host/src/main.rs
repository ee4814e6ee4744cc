//! `accel-host`: list and probe accel plugins, and run an AArch64 guest image on one.

use std::{path::PathBuf, process::ExitCode};

use accel_host::{loader, parse_size, vmm};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "accel-host", version, about = "Run AArch64 guests on any accel backend plugin")]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List the plugins found in the plugin directories, with their availability.
    List,
    /// Probe one backend and print its capabilities.
    Probe {
        /// A backend name (looked up in the plugin directories) or a plugin file path.
        #[arg(long)]
        accel: String,
    },
    /// Run a guest image (AArch64 ELF, or raw binary loaded at the start of RAM).
    Run {
        /// A backend name (looked up in the plugin directories) or a plugin file path.
        #[arg(long)]
        accel: String,
        /// Number of vCPUs.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// RAM size, e.g. 128M or 1G.
        #[arg(long, default_value = "128M", value_parser = parse_size)]
        mem: u64,
        /// The guest image.
        image: PathBuf,
    },
}

fn list() -> Result<(), String> {
    let files = loader::discover();
    if files.is_empty() {
        let dirs: Vec<String> = loader::plugin_dirs().iter().map(|d| d.display().to_string()).collect();
        println!("no plugins found in {}", dirs.join(", "));
        return Ok(());
    }
    for path in files {
        match loader::load(&path) {
            Ok(plugin) => {
                let info = plugin.probe();
                let state = if info.available { "available" } else { "unavailable" };
                println!("{:<8} {:<12} {}  ({})", plugin.name(), state, info.reason, path.display());
            }
            Err(e) => println!("{:<8} {:<12} {e}", "?", "not loaded"),
        }
    }
    Ok(())
}

fn probe(accel: &str) -> Result<(), String> {
    let (path, plugin) = loader::resolve(accel).map_err(|e| e.to_string())?;
    let info = plugin.probe();
    println!("backend          {}", plugin.name());
    println!("plugin           {}", path.display());
    println!("available        {}", if info.available { "yes" } else { "no" });
    println!("{:<16} {}", if info.available { "host" } else { "reason" }, info.reason);
    if info.available {
        let c = info.caps;
        println!("max vCPUs        {}", c.max_vcpus);
        println!("IPA bits         {}", c.ipa_bits);
        println!("vCPU features    {}", c.vcpu_features.names().join(", "));
        if c.sve_vqs != 0 {
            let bits: Vec<String> =
                accel_api::sve::vector_lengths_bits(c.sve_vqs).iter().map(u32::to_string).collect();
            println!("SVE lengths      {} bits", bits.join(", "));
        }
        println!("guest debug      {}", if c.guest_debug { "yes" } else { "no" });
        println!("HW breakpoints   {}", c.hw_breakpoints);
        println!("HW watchpoints   {}", c.hw_watchpoints);
        println!("read-only memory {}", if c.readonly_memory { "yes" } else { "no" });
    }
    Ok(())
}

fn run(accel: &str, cpus: u32, mem: u64, image: &PathBuf) -> Result<i32, String> {
    let (_, plugin) = loader::resolve(accel).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let accelerator = plugin.open().map_err(|e| e.to_string())?;
    let config = vmm::MachineConfig { cpus, mem_size: mem };
    let outcome =
        vmm::run(&accelerator, &config, &bytes, Box::new(std::io::stdout())).map_err(|e| e.to_string())?;
    match &outcome {
        vmm::Outcome::Fault(why) => eprintln!("accel-host: guest fault: {why}"),
        vmm::Outcome::Crash => eprintln!("accel-host: the guest reported a crash"),
        vmm::Outcome::PowerOff | vmm::Outcome::Reset => log::info!("guest stopped: {outcome:?}"),
    }
    Ok(outcome.exit_code())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level)).init();
    let result = match &cli.command {
        Command::List => list().map(|()| 0),
        Command::Probe { accel } => probe(accel).map(|()| 0),
        Command::Run { accel, cpus, mem, image } => run(accel, *cpus, *mem, image),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(message) => {
            eprintln!("accel-host: error: {message}");
            ExitCode::from(1)
        }
    }
}
