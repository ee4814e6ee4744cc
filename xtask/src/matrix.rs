//! The kernel × CPU matrix of the nested VM: which Debian kernel runs as the nested VM's own
//! kernel (the one whose KVM the suite drives) on which QEMU CPU model, the set of boots that
//! `cargo xtask test` picks, and what each model and kernel are known to give nested KVM,
//! checked in every boot against the backend's probe and the kernel's log.

use std::fmt;

use crate::{provision::kernel::KernelVersion, report::Tally, vm::VmRun};

/// The test VM's job that prints the nested VM's kernel log.
pub const KERNEL_LOG_JOB: &str = "kernel-log";

/// One boot of the nested VM: the kernel series it runs and the CPU model QEMU emulates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// The nested VM's kernel (the L1 host kernel that provides `/dev/kvm`).
    pub kernel: KernelVersion,
    /// The QEMU CPU model (`-cpu`).
    pub cpu: String,
}

impl Boot {
    /// A boot of `kernel` on `cpu`.
    pub fn new(kernel: KernelVersion, cpu: &str) -> Self {
        Self { kernel, cpu: cpu.to_string() }
    }

    /// A name usable in a file name, such as `6.1-a64fx`.
    pub fn file_stem(&self) -> String {
        format!("{}-{}", self.kernel, self.cpu)
    }
}

impl fmt::Display for Boot {
    /// `6.1/a64fx`: kernel series, then CPU model.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kernel, self.cpu)
    }
}

/// Every CPU model of the matrix (`--matrix`): the newest QEMU has (`max`), a Cortex-A72
/// (nVHE), a Neoverse N1 (VHE, no AArch32 at EL1) and an A64FX (VHE, SVE up to 512 bits).
pub const MATRIX_CPUS: [&str; 4] = ["max", "cortex-a72", "neoverse-n1", "a64fx"];

/// The CPU models `--kernel` alone boots.
const DEFAULT_CPUS: [&str; 2] = ["max", "cortex-a72"];

/// What `cargo xtask test` boots with no selection: 6.12 on `max` (VHE, SVE at every length,
/// pointer auth) and on `cortex-a72` (nVHE, no SVE), and 6.1 on `a64fx`. The third boot adds the
/// most that the first two do not cover: the older kernel (no SMCCC filter, so no PSCI in the
/// plugin, and no counter offset), SVE on that kernel with a vector-length set that has a gap
/// (128, 256 and 512 bits), no AArch32 at EL1, and the smallest IPA size (40 bits).
pub const DEFAULT_BOOTS: [(KernelVersion, &str); 3] =
    [(KernelVersion::V6_12, "max"), (KernelVersion::V6_12, "cortex-a72"), (KernelVersion::V6_1, "a64fx")];

/// The boots a command line asks for. `--matrix`: every kernel given (default: all) on every CPU
/// model given (default: [`MATRIX_CPUS`]). Otherwise, with neither `--kernel` nor `--cpu`,
/// [`DEFAULT_BOOTS`]; with either, each kernel given (default: 6.12) on each model given
/// (default: `max` and `cortex-a72`). Repeats are dropped, the order kept.
pub fn select(kernels: &[KernelVersion], cpus: &[String], matrix: bool) -> Vec<Boot> {
    let or = |given: &[String], default: &[&str]| -> Vec<String> {
        if given.is_empty() {
            default.iter().map(|c| c.to_string()).collect()
        } else {
            given.to_vec()
        }
    };
    let (kernels, cpus) = if matrix {
        let kernels = if kernels.is_empty() { KernelVersion::ALL.to_vec() } else { kernels.to_vec() };
        (kernels, or(cpus, &MATRIX_CPUS))
    } else if kernels.is_empty() && cpus.is_empty() {
        return DEFAULT_BOOTS.iter().map(|(k, c)| Boot::new(*k, c)).collect();
    } else {
        let kernels = if kernels.is_empty() { vec![KernelVersion::default()] } else { kernels.to_vec() };
        (kernels, or(cpus, &DEFAULT_CPUS))
    };
    let mut boots: Vec<Boot> = Vec::new();
    for kernel in &kernels {
        for cpu in &cpus {
            let boot = Boot::new(*kernel, cpu);
            if !boots.contains(&boot) {
                boots.push(boot);
            }
        }
    }
    boots
}

/// How the nested VM's kernel runs KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypMode {
    /// The kernel runs at EL2 (Virtualization Host Extensions, ID_AA64MMFR1_EL1.VH = 1).
    Vhe,
    /// The kernel runs at EL1 with a small hypervisor at EL2.
    Nvhe,
}

impl HypMode {
    /// What the kernel's log says: `kvm [1]: VHE mode initialized successfully` for VHE, and
    /// `Hyp mode initialized successfully` (6.1) or `Hyp nVHE mode initialized successfully`
    /// (6.12) for nVHE.
    pub fn from_log(lines: &[String]) -> Option<Self> {
        lines.iter().find_map(|l| {
            if l.contains("VHE mode initialized successfully") && !l.contains("nVHE") {
                Some(HypMode::Vhe)
            } else if l.contains("Hyp mode initialized successfully")
                || l.contains("Hyp nVHE mode initialized successfully")
            {
                Some(HypMode::Nvhe)
            } else {
                None
            }
        })
    }
}

impl fmt::Display for HypMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HypMode::Vhe => "VHE",
            HypMode::Nvhe => "nVHE",
        })
    }
}

/// What a QEMU 10 CPU model, with `-M virt,virtualization=on`, gives the nested VM's KVM, as
/// measured (`accel-host probe` on each, and the kernel's log).
#[derive(Debug, Clone, Copy)]
pub struct ModelFacts {
    /// The `-cpu` name.
    pub cpu: &'static str,
    /// How KVM runs.
    pub hyp: HypMode,
    /// The SVE vector lengths KVM offers, in bits; empty without SVE.
    pub sve_bits: &'static [u32],
    /// Pointer authentication (address and generic).
    pub ptrauth: bool,
    /// AArch32 at EL1 (the EL1 32-bit vCPU feature).
    pub el1_32bit: bool,
    /// The PMUv3 vCPU feature.
    pub pmu_v3: bool,
    /// SError injection with a syndrome (needs RAS in the CPU).
    pub serror_esr: bool,
    /// The largest IPA size on 6.12 and on 6.1 (6.1 has no 52-bit IPA with 4K pages).
    pub ipa_bits: (u32, u32),
}

/// Every model whose facts are recorded.
pub const MODELS: [ModelFacts; 4] = [
    ModelFacts {
        cpu: "max",
        hyp: HypMode::Vhe,
        sve_bits: &[128, 256, 384, 512, 640, 768, 896, 1024, 1152, 1280, 1408, 1536, 1664, 1792, 1920, 2048],
        ptrauth: true,
        el1_32bit: true,
        pmu_v3: true,
        serror_esr: true,
        ipa_bits: (52, 48),
    },
    ModelFacts {
        cpu: "cortex-a72",
        hyp: HypMode::Nvhe,
        sve_bits: &[],
        ptrauth: false,
        el1_32bit: true,
        pmu_v3: true,
        serror_esr: false,
        ipa_bits: (44, 44),
    },
    ModelFacts {
        cpu: "neoverse-n1",
        hyp: HypMode::Vhe,
        sve_bits: &[],
        ptrauth: false,
        el1_32bit: false,
        pmu_v3: true,
        serror_esr: true,
        ipa_bits: (48, 48),
    },
    ModelFacts {
        cpu: "a64fx",
        hyp: HypMode::Vhe,
        sve_bits: &[128, 256, 512],
        ptrauth: false,
        el1_32bit: false,
        pmu_v3: true,
        serror_esr: false,
        ipa_bits: (40, 40),
    },
];

/// What a kernel series' KVM offers whatever the CPU.
#[derive(Debug, Clone, Copy)]
pub struct KernelFacts {
    /// `KVM_ARM_VM_SMCCC_FILTER` (Linux 6.4), so PSCI answered in the plugin.
    pub smccc_filter: bool,
    /// `KVM_CAP_COUNTER_OFFSET` (Linux 6.4).
    pub counter_offset: bool,
}

impl KernelFacts {
    /// The facts of `kernel`.
    pub fn of(kernel: KernelVersion) -> Self {
        match kernel {
            KernelVersion::V6_12 => Self { smccc_filter: true, counter_offset: true },
            KernelVersion::V6_1 => Self { smccc_filter: false, counter_offset: false },
        }
    }
}

/// One row of `accel-host probe`'s table: the text after the 16-column label.
fn row<'a>(table: &'a [String], label: &str) -> Option<&'a str> {
    table.iter().find_map(|l| {
        let rest = l.strip_prefix(label)?;
        rest.starts_with(' ').then(|| rest.trim())
    })
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// SVE lengths in a few words: `no SVE`, `SVE 128 to 2048 bits` for an unbroken run from 128,
/// `SVE 128/256/512 bits` otherwise.
fn sve_label(bits: &[u32]) -> String {
    match bits {
        [] => "no SVE".to_string(),
        [first, .., last] if bits.iter().zip(1..).all(|(b, n)| *b == 128 * n) => {
            format!("SVE {first} to {last} bits")
        }
        _ => {
            let each: Vec<String> = bits.iter().map(u32::to_string).collect();
            format!("SVE {} bits", each.join("/"))
        }
    }
}

/// The differences between what the probe table says and what `boot`'s model and kernel give.
pub fn probe_mismatches(boot: &Boot, model: &ModelFacts, table: &[String]) -> Vec<String> {
    let kernel = KernelFacts::of(boot.kernel);
    let features: Vec<&str> = row(table, "vCPU features").unwrap_or_default().split(", ").collect();
    let mut wrong = Vec::new();
    let mut feature = |name: &str, want: bool| {
        if features.contains(&name) != want {
            wrong.push(format!("vCPU feature {name}: expected {}", if want { "offered" } else { "absent" }));
        }
    };
    feature("sve", !model.sve_bits.is_empty());
    feature("ptrauth-address", model.ptrauth);
    feature("ptrauth-generic", model.ptrauth);
    feature("el1-32bit", model.el1_32bit);
    feature("pmu-v3", model.pmu_v3);
    feature("psci-0.2", true);
    let sve = row(table, "SVE lengths");
    let want_sve = (!model.sve_bits.is_empty()).then(|| {
        let bits: Vec<String> = model.sve_bits.iter().map(u32::to_string).collect();
        format!("{} bits", bits.join(", "))
    });
    if sve != want_sve.as_deref() {
        wrong.push(format!("SVE lengths {sve:?}, expected {want_sve:?}"));
    }
    let ipa = match boot.kernel {
        KernelVersion::V6_12 => model.ipa_bits.0,
        KernelVersion::V6_1 => model.ipa_bits.1,
    };
    for (label, want) in [
        ("IPA bits", ipa.to_string()),
        ("SError ESR", yes_no(model.serror_esr).to_string()),
        ("PSCI in plugin", yes_no(kernel.smccc_filter).to_string()),
        ("counter offset", yes_no(kernel.counter_offset).to_string()),
        ("available", "yes".to_string()),
    ] {
        let got = row(table, label);
        if got != Some(want.as_str()) {
            wrong.push(format!("{label}: {got:?}, expected {want}"));
        }
    }
    wrong
}

/// Checks a boot against its model's and kernel's recorded facts: the kernel that ran is the
/// series asked for, KVM runs in the model's mode, and the probe reports what the model and
/// kernel give. A model without recorded facts (another `--cpu`) is named, not checked.
pub fn check(tally: &mut Tally, boot: &Boot, run: &VmRun, release: &str) {
    let tag = |what: &str| format!("[{boot}] {what}");
    let log = run.job(KERNEL_LOG_JOB).map(|j| j.output.clone()).unwrap_or_default();
    let banner = log.iter().find(|l| l.contains("Linux version ")).cloned().unwrap_or_default();
    tally.check(&tag(&format!("the nested VM ran kernel {release}")), banner.contains(release), || {
        format!("its log says {banner:?}")
    });
    let Some(model) = MODELS.iter().find(|m| m.cpu == boot.cpu) else {
        println!("xtask: [{boot}] no facts are recorded for -cpu {}; its probe is not compared", boot.cpu);
        return;
    };
    let mode = HypMode::from_log(&log);
    tally.check(&tag(&format!("KVM runs in {} mode", model.hyp)), mode == Some(model.hyp), || {
        let kvm: Vec<&String> = log.iter().filter(|l| l.contains("kvm")).collect();
        format!("the kernel log says {mode:?}: {kvm:?}")
    });
    let table = run.job("host-probe").map(|j| j.output.clone()).unwrap_or_default();
    let wrong = probe_mismatches(boot, model, &table);
    let kernel = KernelFacts::of(boot.kernel);
    let sve = sve_label(model.sve_bits);
    let summary = format!(
        "the probe gives the model's and kernel's facts ({sve}, pointer auth {}, EL1 32-bit {}, PMUv3 {}, \
         SError ESR {}, PSCI in the plugin {}, counter offset {})",
        yes_no(model.ptrauth),
        yes_no(model.el1_32bit),
        yes_no(model.pmu_v3),
        yes_no(model.serror_esr),
        yes_no(kernel.smccc_filter),
        yes_no(kernel.counter_offset),
    );
    tally.check(&tag(&summary), wrong.is_empty(), || wrong.join("; "));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn boots_are_named_by_kernel_and_model() {
        let boot = Boot::new(KernelVersion::V6_1, "neoverse-n1");
        assert_eq!(boot.to_string(), "6.1/neoverse-n1");
        assert_eq!(boot.file_stem(), "6.1-neoverse-n1");
    }

    #[test]
    fn selections() {
        let names = |b: Vec<Boot>| b.iter().map(Boot::to_string).collect::<Vec<_>>();
        assert_eq!(names(select(&[], &[], false)), ["6.12/max", "6.12/cortex-a72", "6.1/a64fx"]);
        assert_eq!(select(&[], &[], true).len(), 8);
        assert_eq!(names(select(&[KernelVersion::V6_1], &[], false)), ["6.1/max", "6.1/cortex-a72"]);
        assert_eq!(names(select(&[], &["a64fx".into()], false)), ["6.12/a64fx"]);
        assert_eq!(
            names(select(&[KernelVersion::V6_1], &[], true)),
            ["6.1/max", "6.1/cortex-a72", "6.1/neoverse-n1", "6.1/a64fx"]
        );
        assert_eq!(names(select(&[], &["max".into(), "max".into()], true)), ["6.12/max", "6.1/max"]);
        // The default set covers both kernels and both ways KVM runs.
        let default = select(&[], &[], false);
        let mode = |b: &Boot| MODELS.iter().find(|m| m.cpu == b.cpu).map(|m| m.hyp);
        for kernel in KernelVersion::ALL {
            assert!(default.iter().any(|b| b.kernel == kernel));
        }
        for hyp in [HypMode::Vhe, HypMode::Nvhe] {
            assert!(default.iter().any(|b| mode(b) == Some(hyp)));
        }
        // Every model of the matrix has recorded facts.
        assert!(MATRIX_CPUS.iter().all(|c| MODELS.iter().any(|m| m.cpu == *c)));
    }

    #[test]
    fn sve_labels() {
        assert_eq!(sve_label(MODELS[0].sve_bits), "SVE 128 to 2048 bits");
        assert_eq!(sve_label(MODELS[3].sve_bits), "SVE 128/256/512 bits");
        assert_eq!(sve_label(&[]), "no SVE");
    }

    #[test]
    fn hyp_mode_from_either_kernels_log() {
        let log = |l: &str| strings(&["[    0.1] other", l]);
        assert_eq!(
            HypMode::from_log(&log("[ 1.2] kvm [1]: VHE mode initialized successfully")),
            Some(HypMode::Vhe)
        );
        assert_eq!(
            HypMode::from_log(&log("kvm [1]: Hyp mode initialized successfully")),
            Some(HypMode::Nvhe)
        );
        assert_eq!(
            HypMode::from_log(&log("kvm [1]: Hyp nVHE mode initialized successfully")),
            Some(HypMode::Nvhe)
        );
        assert_eq!(HypMode::from_log(&log("kvm [1]: something else")), None);
    }

    #[test]
    fn probe_tables_are_compared_with_the_facts() {
        let table = strings(&[
            "available        yes",
            "IPA bits         40",
            "vCPU features    power-off, psci-0.2, pmu-v3, sve",
            "SVE lengths      128, 256, 512 bits",
            "SError ESR       no",
            "PSCI in plugin   no",
            "counter offset   no",
        ]);
        let a64fx = MODELS[3];
        assert!(probe_mismatches(&Boot::new(KernelVersion::V6_1, "a64fx"), &a64fx, &table).is_empty());
        let wrong = probe_mismatches(&Boot::new(KernelVersion::V6_12, "a64fx"), &a64fx, &table);
        assert_eq!(wrong.len(), 2, "{wrong:?}");
        let n1 = MODELS[2];
        let wrong = probe_mismatches(&Boot::new(KernelVersion::V6_1, "neoverse-n1"), &n1, &table);
        assert!(wrong.iter().any(|w| w.contains("sve")) && wrong.iter().any(|w| w.contains("IPA")));
    }
}
