//! A bare-metal program as one built for QEMU's `virt` board is: it takes the device tree from
//! x0, reports the memory and the CPUs it describes and the command line, and powers off.

#![no_std]
#![no_main]

#[path = "../rt.rs"]
mod rt;

/// The guest's program; `dtb` is x0 at entry.
#[no_mangle]
pub extern "C" fn main(dtb: usize) -> ! {
    rt::puts("dtbinfo: device tree at ");
    rt::put_hex(dtb as u64);
    rt::puts("\n");
    // SAFETY: the machine put a device tree at x0; `from_ptr` checks its header and size before
    // reading the rest.
    let tree = match unsafe { fdt::Fdt::from_ptr(dtb as *const u8) } {
        Ok(tree) => tree,
        Err(_) => {
            rt::puts("dtbinfo: no valid device tree at x0\n");
            rt::psci(rt::PSCI_SYSTEM_OFF)
        }
    };
    let mut total = 0u64;
    for region in tree.memory().regions() {
        let size = region.size.unwrap_or(0) as u64;
        rt::puts("dtbinfo: memory ");
        rt::put_hex(region.starting_address as u64);
        rt::puts(" size ");
        rt::put_hex(size);
        rt::puts("\n");
        total += size;
    }
    rt::puts("dtbinfo: memory total MiB ");
    rt::put_dec(total >> 20);
    rt::puts("\ndtbinfo: cpus ");
    rt::put_dec(tree.cpus().count() as u64);
    rt::puts("\ndtbinfo: psci ");
    rt::puts(tree.find_node("/psci").and_then(|n| n.property("method")).and_then(|p| p.as_str()).unwrap_or("none"));
    rt::puts("\ndtbinfo: bootargs '");
    rt::puts(tree.chosen().bootargs().unwrap_or(""));
    rt::puts("'\n");
    rt::psci(rt::PSCI_SYSTEM_OFF)
}
