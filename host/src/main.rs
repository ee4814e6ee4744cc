//! `accel-host`: list and probe accel plugins, and run an AArch64 guest image on one.

use std::{path::PathBuf, process::ExitCode};

use accel_api::VcpuFeatures;
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
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
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
        /// Extra vCPU features, comma-separated: sve, pmu-v3, el1-32bit, ptrauth-address,
        /// ptrauth-generic.
        #[arg(long, value_delimiter = ',', value_parser = parse_feature)]
        features: Vec<VcpuFeatures>,
        /// Serve the gdb remote protocol: HOST:PORT to listen on, or a character device path.
        #[arg(long, value_name = "ADDR")]
        gdb: Option<String>,
        /// With --gdb: start with every vCPU stopped until gdb continues them.
        #[arg(long, requires = "gdb")]
        gdb_wait: bool,
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

fn probe_json(name: &str, path: &std::path::Path, info: &accel_api::ProbeInfo) -> serde_json::Value {
    use serde_json::json;
    let c = &info.caps;
    let mut fields = serde_json::Map::new();
    for (spec, value) in info.id.decoded() {
        let entry = fields.entry(spec.reg).or_insert_with(|| json!({}));
        entry[spec.name] = json!(value);
    }
    let hex = |v: u64| format!("{v:#x}");
    json!({
        "backend": name,
        "plugin": path.display().to_string(),
        "available": info.available,
        "reason": info.reason.as_str(),
        "capabilities": {
            "max_vcpus": c.max_vcpus,
            "ipa_bits": c.ipa_bits,
            "vcpu_features": c.vcpu_features.names(),
            "psci_0_2": c.vcpu_features.contains(VcpuFeatures::PSCI_0_2),
            "pmu_v3": c.vcpu_features.contains(VcpuFeatures::PMU_V3),
            "el1_32bit": c.vcpu_features.contains(VcpuFeatures::EL1_32BIT),
            "sve": c.vcpu_features.contains(VcpuFeatures::SVE),
            "sve_vector_lengths_bits": accel_api::sve::vector_lengths_bits(c.sve_vqs),
            "ptrauth": c.vcpu_features.contains(VcpuFeatures::PTRAUTH_ADDRESS | VcpuFeatures::PTRAUTH_GENERIC),
            "guest_debug": c.guest_debug,
            "hw_breakpoints": c.hw_breakpoints,
            "hw_watchpoints": c.hw_watchpoints,
            "serror_esr_injection": c.serror_esr,
            "ext_dabt_injection": c.ext_dabt,
            "readonly_memory": c.readonly_memory,
            "mp_state": c.mp_state,
            "system_suspend": c.system_suspend,
            "counter_offset": c.counter_offset,
            "cpu_target": c.cpu_target,
        },
        "id_registers": {
            "MIDR_EL1": hex(info.id.midr),
            "ID_AA64PFR0_EL1": hex(info.id.aa64pfr0),
            "ID_AA64PFR1_EL1": hex(info.id.aa64pfr1),
            "ID_AA64DFR0_EL1": hex(info.id.aa64dfr0),
            "ID_AA64DFR1_EL1": hex(info.id.aa64dfr1),
            "ID_AA64ISAR0_EL1": hex(info.id.aa64isar0),
            "ID_AA64ISAR1_EL1": hex(info.id.aa64isar1),
            "ID_AA64ISAR2_EL1": hex(info.id.aa64isar2),
            "ID_AA64MMFR0_EL1": hex(info.id.aa64mmfr0),
            "ID_AA64MMFR1_EL1": hex(info.id.aa64mmfr1),
            "ID_AA64MMFR2_EL1": hex(info.id.aa64mmfr2),
            "ID_AA64MMFR3_EL1": hex(info.id.aa64mmfr3),
            "ID_AA64ZFR0_EL1": hex(info.id.aa64zfr0),
            "ID_AA64SMFR0_EL1": hex(info.id.aa64smfr0),
            "aarch32": info.id.aarch32.iter().map(|v| hex(u64::from(*v))).collect::<Vec<_>>(),
            "MVFR": info.id.mvfr.iter().map(|v| hex(u64::from(*v))).collect::<Vec<_>>(),
            "DBGDIDR": hex(u64::from(info.id.dbgdidr)),
        },
        "id_fields": fields,
        "pa_bits": info.id.pa_bits(),
    })
}

fn probe(accel: &str, json: bool) -> Result<(), String> {
    let (path, plugin) = loader::resolve(accel).map_err(|e| e.to_string())?;
    let info = plugin.probe();
    if json {
        let value = probe_json(&plugin.name(), &path, &info);
        println!("{}", serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!("backend          {}", plugin.name());
    println!("plugin           {}", path.display());
    println!("available        {}", if info.available { "yes" } else { "no" });
    println!("{:<16} {}", if info.available { "host" } else { "reason" }, info.reason);
    if !info.available {
        return Ok(());
    }
    let c = info.caps;
    let yes = |b: bool| if b { "yes" } else { "no" };
    println!("max vCPUs        {}", c.max_vcpus);
    println!("IPA bits         {}", c.ipa_bits);
    println!("vCPU features    {}", c.vcpu_features.names().join(", "));
    if c.sve_vqs != 0 {
        let bits: Vec<String> =
            accel_api::sve::vector_lengths_bits(c.sve_vqs).iter().map(u32::to_string).collect();
        println!("SVE lengths      {} bits", bits.join(", "));
    }
    println!("guest debug      {}", yes(c.guest_debug));
    println!("HW breakpoints   {}", c.hw_breakpoints);
    println!("HW watchpoints   {}", c.hw_watchpoints);
    println!("SError ESR       {}", yes(c.serror_esr));
    println!("ext. data abort  {}", yes(c.ext_dabt));
    println!("read-only memory {}", yes(c.readonly_memory));
    println!("MP state         {}", yes(c.mp_state));
    println!("system suspend   {}", yes(c.system_suspend));
    println!("counter offset   {}", yes(c.counter_offset));
    println!("CPU target       {}", c.cpu_target);
    println!("DBGDIDR          {:#010x}", info.id.dbgdidr);
    let mut current = "";
    let mut line = String::new();
    for (spec, value) in info.id.decoded() {
        if spec.reg != current {
            if !line.is_empty() {
                println!("{line}");
            }
            let raw = info.id.reg(spec.reg).unwrap_or(0);
            line = format!("{:<16} {raw:#018x} ", spec.reg);
            current = spec.reg;
        }
        line.push_str(&format!(" {}={value}", spec.name));
    }
    println!("{line}");
    Ok(())
}

fn parse_feature(name: &str) -> Result<VcpuFeatures, String> {
    VcpuFeatures::from_name(name).ok_or_else(|| format!("unknown vCPU feature '{name}'"))
}

fn run(
    accel: &str,
    cpus: u32,
    mem: u64,
    features: VcpuFeatures,
    gdb: Option<vmm::GdbConfig>,
    image: &PathBuf,
) -> Result<i32, String> {
    let (_, plugin) = loader::resolve(accel).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(image).map_err(|e| format!("{}: {e}", image.display()))?;
    let accelerator = plugin.open().map_err(|e| e.to_string())?;
    let config = vmm::MachineConfig { cpus, mem_size: mem, features, gdb };
    let outcome =
        vmm::run(&accelerator, &config, &bytes, Box::new(std::io::stdout())).map_err(|e| e.to_string())?;
    match &outcome {
        vmm::Outcome::Fault(why) => eprintln!("accel-host: guest fault: {why}"),
        vmm::Outcome::Crash => eprintln!("accel-host: the guest reported a crash"),
        vmm::Outcome::PowerOff | vmm::Outcome::Reset | vmm::Outcome::Killed => {
            log::info!("guest stopped: {outcome:?}")
        }
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
        Command::Probe { accel, json } => probe(accel, *json).map(|()| 0),
        Command::Run { accel, cpus, mem, image, gdb, gdb_wait, features } => {
            let gdb = gdb.clone().map(|address| vmm::GdbConfig {
                options: accel_host::gdb::GdbOptions { address },
                wait: *gdb_wait,
            });
            let features = features.iter().fold(VcpuFeatures::NONE, |a, f| a | *f);
            run(accel, *cpus, *mem, features, gdb, image)
        }
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(message) => {
            eprintln!("accel-host: error: {message}");
            ExitCode::from(1)
        }
    }
}
