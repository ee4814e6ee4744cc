//! gdb's `monitor` commands: `info` (the backend, and each vCPU's MP state and PC), `debug-pool`
//! (what each debug register holds, per vCPU, and why the last refused breakpoint or watchpoint
//! was refused), `counters` (each vCPU's register reads, register writes and guest entries so
//! far, for measuring what a stop costs) and `reset` (the machine stops with the reset outcome,
//! as on a guest's PSCI SYSTEM_RESET).

use std::fmt::Write;

use accel_api::{sysreg::MPIDR_EL1, MpState};

use super::target::GdbTarget;
use crate::vmm::Outcome;

const HELP: &str = "monitor commands:\n  info        the backend, and each vCPU's state and PC\n  \
                    debug-pool  what each debug register holds, per vCPU, and the last refusal\n  \
                    counters    each vCPU's register reads, writes and guest entries so far\n  \
                    reset       stop the machine with the reset outcome (accel-host exits 0)";

impl GdbTarget {
    fn info(&mut self, out: &mut String) {
        let _ = writeln!(out, "backend: {}", self.about);
        for index in 0..self.vcpus.len() as u32 {
            if self.running[index as usize] {
                let _ = writeln!(out, "vCPU {index} (thread {}): running", index + 1);
                continue;
            }
            let state = self.exec(index, |v| {
                let mp = v.get_mp_state()?;
                let pc = v.get_core()?.pc;
                let mpidr = v.get_reg(MPIDR_EL1)?;
                Ok((mp, pc, mpidr))
            });
            match state {
                Ok((mp, pc, mpidr)) => {
                    let power = if mp == MpState::STOPPED { "powered off" } else { mp.name() };
                    let _ = writeln!(
                        out,
                        "vCPU {index} (thread {}): {power}, PC {pc:#x}, MPIDR_EL1 {mpidr:#x}",
                        index + 1
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "vCPU {index}: {e}");
                }
            }
        }
    }

    fn debug_pool(&mut self, out: &mut String) {
        let capacity = self.debug.capacity();
        let _ = writeln!(
            out,
            "the pool holds up to {} hardware breakpoints and {} watchpoints",
            capacity.breakpoints, capacity.watchpoints
        );
        for index in 0..self.vcpus.len() as u32 {
            match self.debug.program(index) {
                Ok(program) => {
                    let s = &program.setup;
                    let on = |b: bool| if b { "on" } else { "off" };
                    let _ = writeln!(
                        out,
                        "vCPU {index}: software breakpoints {}, hardware {}, single-step {}",
                        on(s.sw_breakpoints),
                        on(s.hardware),
                        on(s.single_step)
                    );
                    for v in program.registers() {
                        let _ = writeln!(out, "  {:<14} {:#018x}", v.id.name(), v.value);
                    }
                    if index == 0 {
                        for addr in &program.sw_breakpoints {
                            let _ = writeln!(out, "  BRK #0 at {addr:#x}");
                        }
                    }
                }
                Err(e) => {
                    let _ = writeln!(out, "vCPU {index}: {e}");
                }
            }
        }
        if let Some(why) = &self.last_refusal {
            let _ = writeln!(out, "last refused: {why}");
        }
    }
}

impl GdbTarget {
    /// One line per vCPU: `vCPU N: R reads, W writes, E runs` (its backend's sync counters).
    fn counters(&mut self, out: &mut String) {
        for index in 0..self.vcpus.len() as u32 {
            if self.running[index as usize] {
                let _ = writeln!(out, "vCPU {index}: running");
                continue;
            }
            match self.exec(index, |v| Ok(v.counters())) {
                Ok(c) => {
                    let _ = writeln!(
                        out,
                        "vCPU {index}: {} reads, {} writes, {} runs",
                        c.reg_reads, c.reg_writes, c.runs
                    );
                }
                Err(e) => {
                    let _ = writeln!(out, "vCPU {index}: {e}");
                }
            }
        }
    }
}

impl GdbTarget {
    /// Runs the `monitor` command `cmd`; returns what it prints.
    pub(super) fn monitor(&mut self, cmd: &[u8]) -> String {
        let mut out = String::new();
        match String::from_utf8_lossy(cmd).trim() {
            "info" => self.info(&mut out),
            "debug-pool" => self.debug_pool(&mut out),
            "counters" => self.counters(&mut out),
            "reset" => {
                out.push_str("resetting: the machine stops, and accel-host exits with the reset outcome\n");
                self.ended = Some(Outcome::Reset);
            }
            "" | "help" => {
                let _ = writeln!(out, "{HELP}");
            }
            other => {
                let _ = writeln!(out, "unknown monitor command '{other}'\n{HELP}");
            }
        }
        out
    }
}
