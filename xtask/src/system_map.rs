//! A kernel's `System.map`: symbol name to link-time address, for debugger tests that need the
//! address of a kernel function or variable. The addresses hold when the kernel runs where it was
//! linked, that is without KASLR (boot with `nokaslr`, or give the kernel no `kaslr-seed`).

use std::{collections::HashMap, path::Path};

use crate::{Error, Result};

/// The symbols of one kernel.
#[derive(Debug)]
pub struct SystemMap {
    symbols: HashMap<String, Vec<u64>>,
}

impl SystemMap {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error(format!("reading {}: {e}", path.display())))?;
        Self::parse(&text).map_err(|Error(e)| Error(format!("{}: {e}", path.display())))
    }

    /// Parses `nm`-style lines, `<hex address> <type> <name>`, as `System.map` and
    /// `/proc/kallsyms` (with an optional `[module]` column) have them.
    pub fn parse(text: &str) -> Result<Self> {
        let mut symbols: HashMap<String, Vec<u64>> = HashMap::new();
        for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let parsed = match fields[..] {
                [address, kind, name] | [address, kind, name, _] if kind.len() == 1 => {
                    u64::from_str_radix(address, 16).ok().map(|a| (name, a))
                }
                _ => None,
            };
            let Some((name, address)) = parsed.filter(|_| fields.len() == 3 || fields[3].starts_with('['))
            else {
                return Err(Error(format!("line {} is not a System.map line: {line:?}", n + 1)));
            };
            symbols.entry(name.to_string()).or_default().push(address);
        }
        if symbols.is_empty() {
            return Err(Error("no symbols".into()));
        }
        Ok(Self { symbols })
    }

    /// How many distinct names the map holds.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// The address of `name`; an error if it is absent or names more than one address (as
    /// `static` functions of the same name in different files do).
    pub fn address(&self, name: &str) -> Result<u64> {
        match self.symbols.get(name).map(Vec::as_slice) {
            None | Some([]) => Err(Error(format!("no symbol {name} in the System.map"))),
            Some([address]) => Ok(*address),
            Some(many) if many.iter().all(|a| *a == many[0]) => Ok(many[0]),
            Some(many) => Err(Error(format!("{name} names {} addresses in the System.map", many.len()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAP: &str = "ffff800008000000 T _text\nffff800008010000 T _stext\n\
                       ffff8000080f8a40 t do_idle\nffff800009cb79c0 D jiffies\n\
                       ffff800008123450 t show_stat\nffff800008765430 t show_stat\n\
                       ffff800008abc000 T vhost_init\t[vhost]\n";

    #[test]
    fn lookups() {
        let map = SystemMap::parse(MAP).expect("parses");
        assert_eq!(map.address("jiffies").expect("jiffies"), 0xffff_8000_09cb_79c0);
        assert_eq!(map.address("do_idle").expect("do_idle"), 0xffff_8000_080f_8a40);
        assert_eq!(map.address("vhost_init").expect("module symbol"), 0xffff_8000_08ab_c000);
        assert!(map.address("show_stat").is_err(), "ambiguous");
        assert!(map.address("nothing").is_err());
        assert_eq!(map.len(), 6);
    }

    #[test]
    fn debians_placeholder_is_refused() {
        let stub = "ffffffffffffffff B The real System.map is in the linux-image-<version>-dbg package\n";
        assert!(SystemMap::parse(stub).is_err());
        assert!(SystemMap::parse("").is_err());
        assert!(SystemMap::parse("zzzz T x\n").is_err());
    }
}
