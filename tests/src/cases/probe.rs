//! Probe: the backend says it can run, and reports sane headline capabilities.

use accel_api::VcpuFeatures;

use crate::{ensure, Case, CaseResult, Context};

pub fn cases() -> Vec<Case> {
    vec![Case { name: "probe::available_with_capabilities", run: available_with_capabilities }]
}

fn available_with_capabilities(ctx: &Context) -> CaseResult {
    let accel = ctx.accelerator()?;
    let info = ctx.plugin.probe();
    let opened = accel.probe();
    ensure!(opened.available, "the opened accelerator reports itself unavailable: {}", opened.reason);
    ensure!(
        opened.caps == info.caps,
        "the plugin probe and the opened accelerator disagree: {:?} vs {:?}",
        info.caps,
        opened.caps
    );
    let caps = info.caps;
    ensure!(caps.max_vcpus >= 1, "max_vcpus is {}", caps.max_vcpus);
    ensure!(
        (32..=52).contains(&caps.ipa_bits),
        "IPA size {} bits is out of the architectural range",
        caps.ipa_bits
    );
    ensure!(
        caps.vcpu_features.contains(VcpuFeatures::PSCI_0_2 | VcpuFeatures::POWER_OFF),
        "PSCI 0.2 and power-off are required, features are {:?}",
        caps.vcpu_features
    );
    ensure!(!info.reason.is_empty(), "the probe gives no description");
    Ok(())
}
