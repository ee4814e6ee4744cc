//! `accel-host`: list and probe accel plugins, and run an AArch64 guest image on one.

use std::{
    ffi::{OsStr, OsString},
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use accel_api::VcpuFeatures;
use accel_host::{
    atomic_file, choose,
    gdb::{GdbAddress, GdbOptions, DEFAULT_IDLE_TIMEOUT},
    isolate, loader, parse_ram_size, report, trust,
    vmm::{self, console::Escape, image},
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "accel-host", version, about = "Run AArch64 guests on any accel backend plugin")]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Load plugins even from files or directories that others can write, that another user
    /// owns, or that are symbolic links (see "Plugin trust" in the README).
    #[arg(long, global = true)]
    allow_untrusted_plugins: bool,
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
        accel: OsString,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a guest: a Linux arm64 Image (--kernel), or an AArch64 ELF or raw image.
    Run {
        /// The backend: a name (looked up in the plugin directories) or a plugin file path, or a
        /// `:`-separated list tried in order. Default: the first available of kvm, hvf, then the
        /// other plugins found, by name.
        #[arg(long)]
        accel: Option<String>,
        /// Number of vCPUs.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// RAM size, e.g. 128M or 1G: a non-zero multiple of 1 MiB.
        #[arg(long, default_value = "128M", value_parser = parse_ram_size)]
        mem: u64,
        /// Extra vCPU features, comma-separated: sve, pmu-v3, el1-32bit, ptrauth-address,
        /// ptrauth-generic.
        #[arg(long, value_delimiter = ',', value_parser = parse_feature)]
        features: Vec<VcpuFeatures>,
        /// Serve the gdb remote protocol, to one client at a time: HOST:PORT to listen on (:PORT
        /// or PORT for 127.0.0.1:PORT), unix:PATH for a new owner-only Unix socket, or a
        /// character device's path. Whoever reaches it can read and write guest memory.
        #[arg(long, value_name = "ADDR", value_parser = GdbAddress::parse)]
        gdb: Option<GdbAddress>,
        /// With --gdb: start with every vCPU stopped until gdb continues them.
        #[arg(long, requires = "gdb")]
        gdb_wait: bool,
        /// With --gdb: disconnect a client that sends nothing for SECS while the guest is
        /// stopped (0: never).
        #[arg(long, value_name = "SECS", default_value_t = DEFAULT_IDLE_TIMEOUT.as_secs(), requires = "gdb")]
        gdb_idle_timeout: u64,
        /// A Linux arm64 Image to boot.
        #[arg(long, conflicts_with = "image")]
        kernel: Option<PathBuf>,
        /// An initrd for the kernel (only with --kernel).
        #[arg(long)]
        initrd: Option<PathBuf>,
        /// The kernel command line (or a bare-metal image's /chosen/bootargs).
        #[arg(long, default_value = "")]
        append: String,
        /// Write the machine's device tree to FILE and exit, as QEMU's `-machine dumpdtb`. FILE is
        /// replaced atomically with mode 0644; a symlink there is replaced, not followed.
        #[arg(long, value_name = "FILE")]
        dump_dtb: Option<PathBuf>,
        /// The console's escape key (^A to ^Z, ^], ^\\, ^^, ^_, or none): ESC x quits, ESC h helps.
        #[arg(long, default_value = "^A")]
        escape: Escape,
        /// Print the exits the machine handled, by kind, when it stops.
        #[arg(long)]
        stats: bool,
        /// The guest image: an AArch64 ELF, or a raw binary loaded at the start of RAM (a raw
        /// file with the arm64 Image header boots as Linux).
        #[arg(required_unless_present = "kernel")]
        image: Option<PathBuf>,
    },
    /// The child process of `list` and `probe`, which loads the plugin so that a crashing plugin
    /// cannot take the caller down.
    #[command(name = "__child", hide = true)]
    Child {
        #[command(subcommand)]
        command: ChildCommand,
    },
}

#[derive(Subcommand)]
enum ChildCommand {
    /// One line of `list`.
    ListOne { path: PathBuf },
    /// `probe`.
    Probe {
        path: PathBuf,
        #[arg(long)]
        json: bool,
        /// The backend name the plugin was asked for by, which it must call itself.
        #[arg(long)]
        name: Option<String>,
    },
}

/// Writes `text` and a newline to standard output. A reader that has gone away (`| head`) ends
/// the output quietly.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("accel-host: error: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// `accel-host list`: each plugin is loaded and probed in a child process.
fn list(policy: trust::Policy) -> Result<i32, String> {
    let files = loader::discover().map_err(|e| e.to_string())?;
    if files.is_empty() {
        let dirs = loader::plugin_dirs().map_err(|e| e.to_string())?;
        let dirs: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        emit(&format!("no plugins found in {}", dirs.join(", ")));
        return Ok(0);
    }
    for path in files {
        let child = match isolate::run_child(&path, policy, &[OsStr::new("list-one"), path.as_os_str()]) {
            Ok(child) => child,
            Err(why) => {
                emit(&format!("{:<8} {:<12} {why}", "?", "not loaded"));
                continue;
            }
        };
        match isolate::crash_reason(&path, child.status) {
            Some(reason) => {
                log::debug!("{}: what the crashed child printed:\n{}", path.display(), child.stderr);
                emit(&format!("{:<8} {:<12} {reason}", "?", "crashed"))
            }
            None => {
                eprint!("{}", child.stderr);
                emit(child.stdout.trim_end())
            }
        }
    }
    Ok(0)
}

/// `accel-host probe`: the plugin is loaded and probed in a child process.
fn probe(accel: &OsStr, json: bool, policy: trust::Policy) -> Result<i32, String> {
    let path = loader::find(accel).map_err(|e| e.to_string())?;
    let mut args = vec![OsStr::new("probe"), path.as_os_str()];
    if json {
        args.push(OsStr::new("--json"));
    }
    if !loader::is_path(accel) {
        args.extend([OsStr::new("--name"), accel]);
    }
    let child = isolate::run_child(&path, policy, &args)?;
    if let Some(reason) = isolate::crash_reason(&path, child.status) {
        log::debug!("{}: what the crashed child printed:\n{}", path.display(), child.stderr);
        return Err(reason);
    }
    eprint!("{}", child.stderr);
    if !child.stdout.is_empty() {
        emit(child.stdout.trim_end());
    }
    Ok(child.status.code().unwrap_or(1))
}

/// Loads the plugin at `path` under `policy`, checking it calls itself `name` when given.
fn load_plugin(path: &Path, name: Option<&str>, policy: trust::Policy) -> Result<loader::Plugin, String> {
    let plugin = loader::load_with(path, policy).map_err(|e| e.to_string())?;
    if let Some(name) = name {
        loader::check_name(&plugin, path, name).map_err(|e| e.to_string())?;
    }
    Ok(plugin)
}

/// The child's side of `list` and `probe`.
fn child(command: &ChildCommand, policy: trust::Policy) -> Result<i32, String> {
    match command {
        ChildCommand::ListOne { path } => {
            match load_plugin(path, None, policy) {
                Ok(plugin) => emit(&report::list_line(&plugin, path, &plugin.probe())),
                Err(e) => emit(&format!("{:<8} {:<12} {e}", "?", "not loaded")),
            }
            Ok(0)
        }
        ChildCommand::Probe { path, json, name } => {
            let plugin = load_plugin(path, name.as_deref(), policy)?;
            let info = plugin.probe();
            if *json {
                let value = report::probe_json(&plugin, path, &info);
                emit(&serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?);
            } else {
                emit(&report::probe_table(&plugin, path, &info));
            }
            Ok(0)
        }
    }
}

fn parse_feature(name: &str) -> Result<VcpuFeatures, String> {
    VcpuFeatures::from_name(name).ok_or_else(|| format!("unknown vCPU feature '{name}'"))
}

/// What `accel-host run` was asked to do.
struct RunArgs {
    accel: Option<String>,
    config: vmm::MachineConfig,
    gdb: Option<GdbOptions>,
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    image: Option<PathBuf>,
    dump_dtb: Option<PathBuf>,
    escape: Escape,
    stats: bool,
    trust: trust::Policy,
}

fn run(args: RunArgs) -> Result<i32, String> {
    // Every argument and file is checked before any plugin is loaded. The RAM size's rules were
    // checked as the argument was parsed (`parse_ram_size`).
    if args.initrd.is_some() && args.kernel.is_none() {
        // Not even for a raw image that turns out to carry the arm64 Image header: its initrd
        // would be silently left out.
        return Err("--initrd needs --kernel: an initrd is only loaded beside a Linux kernel given with \
                    --kernel"
            .into());
    }
    let limit = args.config.mem_size;
    let read = |path: &PathBuf, what| image::read_capped(path, limit, what).map_err(|e| e.to_string());
    let payload = match (&args.kernel, &args.image) {
        (Some(kernel), _) => vmm::Payload::Linux {
            kernel: read(kernel, "kernel")?,
            initrd: args.initrd.as_ref().map(|i| read(i, "initrd")).transpose()?,
        },
        (None, Some(image)) => vmm::Payload::Image(read(image, "image")?),
        (None, None) => return Err("give an image or --kernel".into()),
    };
    let choice = choose::choose(args.accel.as_deref(), args.trust)?;
    let plugin = load_plugin(&choice.path, choice.name.as_deref(), args.trust)?;
    let info = plugin.probe();
    if !info.available {
        return Err(format!("{}: {}", plugin.name(), info.reason));
    }
    if let Some(note) = &choice.note {
        eprintln!("accel-host: {note}");
    }
    // Everything that can be checked before the backend is opened.
    let plan = vmm::Plan::new(args.config, payload, &info.caps).map_err(|e| e.to_string())?;
    let accelerator = plugin.open().map_err(|e| e.to_string())?;
    let gdb = args.gdb.map(|options| GdbOptions {
        about: format!(
            "{} (accel ABI {}) from {}",
            plugin.name(),
            plugin.abi_version(),
            choice.path.display()
        ),
        ..options
    });
    let machine =
        vmm::Machine::build(&accelerator, plan, Box::new(std::io::stdout())).map_err(|e| e.to_string())?;
    if let Some(path) = &args.dump_dtb {
        atomic_file::write(path, &machine.dtb, 0o644)
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
        return Ok(0);
    }
    let bus = std::sync::Arc::clone(&machine.bus);
    let console = Some(args.escape);
    let outcome = match &gdb {
        Some(options) => accel_host::gdb::serve(machine, options, console),
        None => vmm::run(machine, console),
    }
    .map_err(|e| e.to_string())?;
    if args.stats {
        eprintln!("accel-host: {}", bus.stats().summary());
    }
    match &outcome {
        vmm::Outcome::Fault(why) => eprintln!("accel-host: guest fault: {why}"),
        vmm::Outcome::Crash => eprintln!("accel-host: the guest reported a crash"),
        vmm::Outcome::Reset => eprintln!("accel-host: the guest reset the machine; it stops"),
        vmm::Outcome::PowerOff | vmm::Outcome::Killed | vmm::Outcome::Quit => {
            log::info!("guest stopped: {outcome:?}")
        }
    }
    Ok(outcome.exit_code())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // No command: the help, on standard error, and the exit code of a usage error. It is
            // not an error line.
            let _ = e.print();
            return ExitCode::from(1);
        }
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // A usage error is a host error: one line, and exit code 1 as every other (2 and 3
            // are the guest's).
            let text = e.render().to_string();
            let first: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            let first = first.join(" ");
            eprintln!("accel-host: error: {} (see accel-host --help)", first.trim_start_matches("error: "));
            return ExitCode::from(1);
        }
    };
    let default_level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level)).init();
    let trust = trust::Policy { allow_untrusted: cli.allow_untrusted_plugins };
    let result = match &cli.command {
        Command::List => list(trust),
        Command::Probe { accel, json } => probe(accel, *json, trust),
        Command::Child { command } => child(command, trust),
        Command::Run {
            accel,
            cpus,
            mem,
            image,
            gdb,
            gdb_wait,
            gdb_idle_timeout,
            features,
            kernel,
            initrd,
            append,
            dump_dtb,
            escape,
            stats,
        } => {
            let features = features.iter().fold(VcpuFeatures::NONE, |a, f| a | *f);
            run(RunArgs {
                accel: accel.clone(),
                config: vmm::MachineConfig { cpus: *cpus, mem_size: *mem, features, cmdline: append.clone() },
                gdb: gdb.clone().map(|address| GdbOptions {
                    address,
                    wait: *gdb_wait,
                    about: String::new(),
                    idle_timeout: Some(std::time::Duration::from_secs(*gdb_idle_timeout))
                        .filter(|t| !t.is_zero()),
                }),
                kernel: kernel.clone(),
                initrd: initrd.clone(),
                image: image.clone(),
                dump_dtb: dump_dtb.clone(),
                escape: *escape,
                stats: *stats,
                trust,
            })
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
