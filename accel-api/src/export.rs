//! [`export_plugin!`](crate::export_plugin): the one line that makes a crate an accel plugin.

/// Exports a backend as an accel plugin: the abi_stable root module, with every call converted
/// and guarded so that no panic crosses into the host.
///
/// Two forms. A backend that can run:
///
/// ```
/// use accel_api::{
///     backend::{Backend, BackendVcpu, BackendVm, Kick},
///     AccelError, CoreRegs, FpRegs, MemoryRegion, MpState, ProbeInfo, PutLevel, RegClass, RegValue,
///     Result, SyncCounters, VcpuConfig, VcpuExit, VmConfig,
/// };
///
/// struct Nothing;
///
/// impl Backend for Nothing {
///     type Vm = Nothing;
///     fn probe(&self) -> ProbeInfo {
///         probe()
///     }
///     fn create_vm(&self, _: &VmConfig) -> Result<Nothing> {
///         Err(AccelError::unsupported("this example makes no VMs"))
///     }
/// }
///
/// impl BackendVm for Nothing {
///     type Vcpu = Nothing;
///     unsafe fn add_memory(&self, _: &MemoryRegion) -> Result<u32> {
///         Err(AccelError::unsupported("no memory"))
///     }
///     fn remove_memory(&self, _: u32) -> Result<()> {
///         Err(AccelError::unsupported("no memory"))
///     }
///     fn create_vcpu(&self, _: &VcpuConfig) -> Result<Nothing> {
///         Err(AccelError::unsupported("no vCPUs"))
///     }
/// }
///
/// impl BackendVcpu for Nothing {
///     fn index(&self) -> u32 { 0 }
///     fn get_core(&mut self) -> Result<CoreRegs> { Ok(CoreRegs::default()) }
///     fn put_core(&mut self, _: &CoreRegs, _: PutLevel) -> Result<()> { Ok(()) }
///     fn get_fp(&mut self) -> Result<FpRegs> { Ok(FpRegs::default()) }
///     fn put_fp(&mut self, _: &FpRegs, _: PutLevel) -> Result<()> { Ok(()) }
///     fn get_regs(&mut self, _: RegClass) -> Result<Vec<RegValue>> { Ok(Vec::new()) }
///     fn put_regs(&mut self, _: &[RegValue], _: PutLevel) -> Result<()> { Ok(()) }
///     fn get_mp_state(&mut self) -> Result<MpState> { Ok(MpState::RUNNABLE) }
///     fn set_mp_state(&mut self, _: MpState) -> Result<()> { Ok(()) }
///     fn kicker(&self) -> Box<dyn Kick> { Box::new(NoKick) }
///     fn counters(&self) -> SyncCounters { SyncCounters::default() }
///     fn set_mmio_read_data(&mut self, _: u64) -> Result<()> { Ok(()) }
///     fn run(&mut self) -> Result<VcpuExit> { Ok(VcpuExit::Interrupted) }
/// }
///
/// struct NoKick;
/// impl Kick for NoKick {
///     fn kick(&self) {}
/// }
///
/// fn probe() -> ProbeInfo {
///     ProbeInfo::unavailable("an example that cannot run guests")
/// }
///
/// fn open() -> Result<Nothing> {
///     Ok(Nothing)
/// }
///
/// accel_api::export_plugin! {
///     name: "nothing",
///     probe: probe,   // fn() -> ProbeInfo: can it run here, and if not, why
///     open: open,     // fn() -> Result<impl Backend>
/// }
/// ```
///
/// A backend that cannot run on this host at all (the wrong OS, say) names the reason, and
/// needs no backend type:
///
/// ```
/// fn reason() -> String {
///     "this backend needs a machine we are not on".to_string()
/// }
///
/// accel_api::export_plugin! {
///     name: "elsewhere",
///     unavailable: reason,
/// }
/// ```
///
/// The plugin crate is a `cdylib` that depends on `accel-api` and `abi_stable`. It must unwind on
/// panic: with `panic = "abort"` a panic would end the host, so the macro refuses to build.
#[macro_export]
macro_rules! export_plugin {
    (name: $name:expr, probe: $probe:path, open: $open:path $(,)?) => {
        $crate::__export_root! {
            $name,
            {
                $crate::glue::guarded_probe($probe)
            },
            {
                $crate::interface::accel::guarded_open($open)
            }
        }
    };
    (name: $name:expr, unavailable: $reason:path $(,)?) => {
        $crate::__export_root! {
            $name,
            {
                fn probe() -> $crate::ProbeInfo {
                    $crate::glue::unavailable(module_path!(), $reason())
                }
                $crate::glue::guarded_probe(probe)
            },
            {
                $crate::glue::guard("open", || {
                    ::std::result::Result::Err($crate::AccelError::new($crate::ErrorKind::UNAVAILABLE, $reason()))
                })
            }
        }
    };
}

/// The root module behind [`export_plugin!`].
#[doc(hidden)]
#[macro_export]
macro_rules! __export_root {
    ($name:expr, $probe:block, $open:block) => {
        #[cfg(panic = "abort")]
        compile_error!(
            "an accel plugin must be built with panic = \"unwind\": with panic = \"abort\" a panic in \
             the plugin would end the host instead of coming back as an error"
        );

        /// The plugin's root module, found by the host through abi_stable's loader.
        #[::abi_stable::export_root_module]
        pub fn accel_plugin_root() -> $crate::abi::PluginRef {
            use ::abi_stable::prefix_type::PrefixTypeTrait;

            extern "C" fn plugin_name() -> ::abi_stable::std_types::RStr<'static> {
                ::abi_stable::std_types::RStr::from_str($name)
            }
            extern "C" fn plugin_set_logger(sink: $crate::logging::LogSink) {
                let _ = ::std::panic::catch_unwind(move || {
                    $crate::logging::install_plugin_logger(sink);
                    $crate::glue::install_panic_hook();
                });
            }
            extern "C" fn plugin_probe() -> $crate::abi::ProbeRecord $probe
            extern "C" fn plugin_open(
            ) -> ::abi_stable::std_types::RResult<$crate::abi::AccelBox, $crate::AccelError> $open

            $crate::abi::Plugin {
                name: plugin_name,
                set_logger: plugin_set_logger,
                probe: plugin_probe,
                open: plugin_open,
            }
            .leak_into_prefix()
        }
    };
}
