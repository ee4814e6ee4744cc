//! Log forwarding across the plugin boundary.
//!
//! A cdylib carries its own copy of the `log` crate and so its own global logger. At load the host
//! hands the plugin a [`LogSink`]; the plugin installs a logger that sends every record through it,
//! so plugin logs land in the host's logger.

use std::sync::OnceLock;

use abi_stable::{std_types::RStr, StableAbi};

/// A host's logging callback, as handed to a plugin.
#[repr(C)]
#[derive(StableAbi, Clone, Copy)]
pub struct LogSink {
    /// The most verbose level the host wants, as `log::LevelFilter as u8`.
    pub max_level: u8,
    /// Emits one record: level (`log::Level as u8`), target, message.
    pub log: extern "C" fn(level: u8, target: RStr<'_>, message: RStr<'_>),
}

fn level_from_u8(level: u8) -> log::Level {
    match level {
        1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    }
}

fn filter_from_u8(level: u8) -> log::LevelFilter {
    match level {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

extern "C" fn host_log(level: u8, target: RStr<'_>, message: RStr<'_>) {
    // A panic in the host's logger must not unwind into the plugin.
    let _ = std::panic::catch_unwind(|| {
        log::logger().log(
            &log::Record::builder()
                .level(level_from_u8(level))
                .target(target.as_str())
                .args(format_args!("{}", message.as_str()))
                .build(),
        );
    });
}

/// The sink a host passes to plugins: records go to this process's `log` logger.
pub fn host_sink() -> LogSink {
    LogSink { max_level: log::max_level() as u8, log: host_log }
}

struct Forwarder;

static SINK: OnceLock<LogSink> = OnceLock::new();

impl log::Log for Forwarder {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        SINK.get().is_some_and(|s| metadata.level() as u8 <= s.max_level)
    }

    fn log(&self, record: &log::Record<'_>) {
        if let Some(sink) = SINK.get() {
            if record.level() as u8 <= sink.max_level {
                let message = record.args().to_string();
                (sink.log)(record.level() as u8, record.target().into(), message.as_str().into());
            }
        }
    }

    fn flush(&self) {}
}

static FORWARDER: Forwarder = Forwarder;

/// Plugin side: installs the forwarding logger. The first sink wins; later calls (the same file
/// loaded twice) keep it.
pub fn install_plugin_logger(sink: LogSink) {
    if SINK.set(sink).is_ok() && log::set_logger(&FORWARDER).is_ok() {
        log::set_max_level(filter_from_u8(sink.max_level));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_encodings_match_the_log_crate() {
        for level in
            [log::Level::Error, log::Level::Warn, log::Level::Info, log::Level::Debug, log::Level::Trace]
        {
            assert_eq!(level_from_u8(level as u8), level);
        }
        for filter in [log::LevelFilter::Off, log::LevelFilter::Error, log::LevelFilter::Trace] {
            assert_eq!(filter_from_u8(filter as u8), filter);
        }
    }
}
