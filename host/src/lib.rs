//! The accel host: finds and loads backend plugins, and runs guests on them with a small VMM.

pub mod atomic_file;
pub mod choose;
/// An in-process fake machine for the host's own tests and the fuzz targets: not part of the
/// host's API, so it is built only for tests and with the `test-util` feature.
#[cfg(any(test, feature = "test-util"))]
pub mod fake;
pub mod file_kind;
pub mod gdb;
pub mod isolate;
pub mod loader;
pub mod mmu;
pub mod plugin_file;
pub mod report;
pub mod snapshot;
pub mod trust;
pub mod vmm;

/// Parses a memory size such as `512M`, `1G`, `65536` or `64k` (binary units).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_lowercase() {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                _ => return Err(format!("'{text}': unknown unit '{c}' (use k, M or G)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits.parse().map_err(|_| format!("'{text}' is not a size"))?;
    n.checked_shl(shift).filter(|v| v >> shift == n).ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses a RAM size (as [`parse_size`]) and checks it against the machine's rules
/// ([`vmm::layout::check_ram_size`]), so that a bad size is refused before any file is read.
pub fn parse_ram_size(text: &str) -> Result<u64, String> {
    let size = parse_size(text)?;
    vmm::layout::check_ram_size(size)?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(super::parse_size("64k"), Ok(64 << 10));
        assert_eq!(super::parse_size("512M"), Ok(512 << 20));
        assert_eq!(super::parse_size("1G"), Ok(1 << 30));
        assert_eq!(super::parse_size("4096"), Ok(4096));
        assert!(super::parse_size("12Q").is_err());
        assert!(super::parse_size("M").is_err());
        assert!(super::parse_size("99999999999999G").is_err());
    }

    #[test]
    fn ram_sizes_state_the_rule() {
        assert_eq!(super::parse_ram_size("128M"), Ok(128 << 20));
        for bad in ["0", "1000k", "1048577", "8388608G"] {
            let message = super::parse_ram_size(bad).expect_err(bad);
            assert!(message.contains("must be a non-zero multiple of 1 MiB"), "{bad}: {message}");
        }
    }
}
