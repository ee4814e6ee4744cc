//! vCPU snapshots: the complete state of a vCPU in the shared register model, a versioned binary
//! file format (`docs/snapshot-format.md`), and save/restore through any backend.

use accel_api::{
    client::{Vcpu, Vm},
    config::Capabilities,
    error::{AccelError, ErrorKind, Result},
    events::{MpState, VcpuEvents},
    regs::{CoreReg, CoreRegs, FpRegs, PutLevel},
    sve::{SveRegs, SVE_VQ_MAX},
    sysreg::{RegClass, RegId, RegSpace, RegValue},
    VcpuConfig, VcpuFeatures,
};

/// The file's magic bytes.
pub const MAGIC: &[u8; 8] = b"ACCELVCP";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

/// One vCPU's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuSnapshot {
    /// The vCPU's index.
    pub index: u32,
    /// The features it was created with.
    pub features: VcpuFeatures,
    /// Its SVE vector length in quadwords, 0 without SVE.
    pub sve_vq: u32,
    /// Core registers.
    pub core: CoreRegs,
    /// FP/SIMD registers (V0–V31 as the low bits of Z0–Z31 with SVE; FPSR and FPCR always).
    pub fp: FpRegs,
    /// SVE registers, with SVE.
    pub sve: Option<SveRegs>,
    /// Every other register.
    pub regs: Vec<RegValue>,
    /// Pending events.
    pub events: VcpuEvents,
    /// MP state.
    pub mp_state: MpState,
}

fn corrupt(message: impl Into<String>) -> AccelError {
    AccelError::new(ErrorKind::INVALID_ARGUMENT, format!("corrupt vCPU snapshot: {}", message.into()))
}

fn not_restorable(message: impl Into<String>) -> AccelError {
    AccelError::unsupported(format!("vCPU snapshot not restorable here: {}", message.into()))
}

/// The width of the syndrome an injected SError carries: ESR_EL1.ISS, bits `[24:0]` (Arm ARM,
/// "ESR_EL1, Exception Syndrome Register (EL1)"); EC and IL are the hypervisor's.
pub const SERROR_ESR_MASK: u64 = (1 << 25) - 1;
/// The bits of a CSSELR_EL1 value that select a cache: TnD `[4]`, Level `[3:1]`, InD `[0]`; the rest
/// are RES0 (Arm ARM, "CSSELR_EL1, Cache Size Selection Register").
pub const CSSELR_MASK: u64 = 0x1f;

impl VcpuSnapshot {
    /// Reads the whole state of `vcpu`, created with `features` (and `sve_vq` quadwords of SVE).
    pub fn save(vcpu: &mut Vcpu, features: VcpuFeatures) -> Result<Self> {
        let core = vcpu.get_core()?;
        let fp = vcpu.get_fp()?;
        let sve = if features.contains(VcpuFeatures::SVE) { Some(vcpu.get_sve()?) } else { None };
        let mut regs = Vec::new();
        for class in RegClass::ALL {
            regs.extend(vcpu.get_regs(class)?);
        }
        let mut events = vcpu.get_events()?;
        // An injected external abort is delivered, not pending: it never reads back.
        events.ext_dabt_pending = false;
        Ok(Self {
            index: vcpu.index(),
            features,
            sve_vq: sve.as_ref().map_or(0, |s| s.vq),
            core,
            fp,
            sve,
            regs,
            events,
            mp_state: vcpu.get_mp_state()?,
        })
    }

    /// Checks that the snapshot holds only values that can exist: known feature bits, an MP
    /// state of the defined set, an SVE vector length that agrees with the SVE registers, each
    /// register id once and well-formed, and an SError syndrome within ESR_EL1.ISS. The error is
    /// one line naming the field. [`from_bytes`](Self::from_bytes) refuses what this refuses.
    pub fn validate(&self) -> Result<()> {
        let known = VcpuFeatures::NAMED.iter().fold(0, |all, (f, _)| all | f.0);
        if self.features.0 & !known != 0 {
            return Err(corrupt(format!(
                "CONF features {:#x} has bits no feature defines ({:#x})",
                self.features.0,
                self.features.0 & !known
            )));
        }
        if !MpState::NAMED.iter().any(|(m, _)| *m == self.mp_state) {
            return Err(corrupt(format!(
                "MPST MP state {:#x} is none of runnable (0), stopped (5) or suspended (10)",
                self.mp_state.0
            )));
        }
        let has_sve = self.features.contains(VcpuFeatures::SVE);
        if has_sve != self.sve.is_some() {
            return Err(corrupt("the FP/SVE sections do not match the vCPU's features"));
        }
        // Restore creates the vCPU at CONF's vector length and then writes the SVE registers:
        // the two must agree, and without SVE there is no vector length.
        let registers_vq = self.sve.as_ref().map_or(0, |s| s.vq);
        if self.sve_vq != registers_vq {
            return Err(corrupt(format!(
                "CONF names an SVE vector length of {} quadwords, the SVE registers have {registers_vq}",
                self.sve_vq
            )));
        }
        if let Some(sve) = &self.sve {
            if !(1..=SVE_VQ_MAX).contains(&sve.vq) || !sve.is_well_formed() {
                return Err(corrupt(format!("SVE registers of {} quadwords are malformed", sve.vq)));
            }
            let zl = sve.z_len();
            if let Some(n) = (0..32).find(|&n| self.fp.v[n][..] != sve.z[n * zl..][..16]) {
                return Err(corrupt(format!("V{n} is not the low 128 bits of Z{n}")));
            }
        }
        let mut ids: Vec<RegId> = self.regs.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(corrupt(format!("REGS holds register {} ({:#x}) twice", pair[0].name(), pair[0].0)));
        }
        for id in &ids {
            let bad = match id.space() {
                RegSpace::Sys => id.0 > 0xffff,
                RegSpace::Ccsidr => id.index() & !CSSELR_MASK != 0,
                RegSpace::Firmware | RegSpace::Raw => false,
                // The core registers have a section of their own.
                RegSpace::Core | RegSpace::Unknown(_) => true,
            };
            if bad {
                return Err(corrupt(format!("REGS register id {:#x} is not a register of any space", id.0)));
            }
        }
        let events = &self.events;
        if events.serror_esr & !SERROR_ESR_MASK != 0 {
            return Err(corrupt(format!(
                "EVNT SError ESR {:#x} has bits above ESR_EL1.ISS [24:0]",
                events.serror_esr
            )));
        }
        if !events.serror_has_esr && events.serror_esr != 0 {
            return Err(corrupt(format!(
                "EVNT SError ESR {:#x} is given, but SError has ESR is not set",
                events.serror_esr
            )));
        }
        if events.ext_dabt_pending {
            return Err(corrupt("an external data abort is never pending in a snapshot"));
        }
        Ok(())
    }

    /// Checks the snapshot against a backend's capabilities (from its probe): the vCPU index,
    /// the features, the SVE vector length and an SError syndrome must all be offered.
    pub fn check_restorable(&self, caps: &Capabilities) -> Result<()> {
        if self.index >= caps.max_vcpus {
            return Err(not_restorable(format!(
                "CONF vCPU index {} is beyond this backend's {} vCPUs",
                self.index, caps.max_vcpus
            )));
        }
        let missing = self.features.difference(caps.vcpu_features);
        if !missing.is_empty() {
            return Err(not_restorable(format!(
                "CONF features {} are not offered by this backend",
                missing.names().join(", ")
            )));
        }
        if self.sve_vq != 0 && (self.sve_vq > 32 || caps.sve_vqs & (1 << (self.sve_vq - 1)) == 0) {
            return Err(not_restorable(format!(
                "CONF SVE vector length of {} quadwords is not offered by this backend (offered: {:#x})",
                self.sve_vq, caps.sve_vqs
            )));
        }
        // KVM reports "has ESR" whenever the host has RAS, pending SError or not; only a pending
        // SError's syndrome is written.
        if self.events.serror_pending && self.events.serror_has_esr && !caps.serror_esr {
            return Err(not_restorable(
                "EVNT a pending SError with a syndrome, which this backend cannot inject",
            ));
        }
        Ok(())
    }

    /// Creates the vCPU in `vm` and writes the whole state into it, at the full put level.
    ///
    /// Everything that can be checked without the vCPU is checked first, so that a snapshot
    /// refused here leaves no vCPU behind: [`validate`](Self::validate) and
    /// [`check_restorable`](Self::check_restorable) against `caps`, the capabilities of the
    /// backend `vm` belongs to. The registers the kernel lists are only known once the vCPU
    /// exists: a register it does not list is refused then, before any state is written.
    pub fn restore(&self, vm: &Vm, caps: &Capabilities) -> Result<Vcpu> {
        self.validate()?;
        self.check_restorable(caps)?;
        let config = VcpuConfig { index: self.index, features: self.features, sve_max_vq: self.sve_vq };
        let mut vcpu = vm.create_vcpu(&config)?;
        // A class the backend does not offer lists nothing: a register of it is refused below.
        let listed: std::collections::HashSet<RegId> = RegClass::ALL
            .into_iter()
            .filter_map(|class| vcpu.get_regs(class).ok())
            .flatten()
            .map(|r| r.id)
            .collect();
        if let Some(r) = self.regs.iter().find(|r| !listed.contains(&r.id)) {
            return Err(not_restorable(format!(
                "REGS register {} ({:#x}) is not one this vCPU has",
                r.id.name(),
                r.id.0
            )));
        }
        vcpu.put_core(&self.core, PutLevel::FULL)?;
        match &self.sve {
            Some(sve) => {
                vcpu.put_sve(sve, PutLevel::FULL)?;
                // FPSR and FPCR travel with the FP class; V registers are already in Z.
                let mut fp = vcpu.get_fp()?;
                fp.fpsr = self.fp.fpsr;
                fp.fpcr = self.fp.fpcr;
                vcpu.put_fp(&fp, PutLevel::RUNTIME)?;
            }
            None => vcpu.put_fp(&self.fp, PutLevel::FULL)?,
        }
        vcpu.put_regs(&self.regs, PutLevel::FULL)?;
        vcpu.put_events(&self.events)?;
        vcpu.set_mp_state(self.mp_state)?;
        Ok(vcpu)
    }

    /// Encodes the snapshot in the version-1 format.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut sections: Vec<(&[u8; 4], Vec<u8>)> = Vec::new();
        let mut conf = Vec::new();
        conf.extend(self.index.to_le_bytes());
        conf.extend(self.features.0.to_le_bytes());
        conf.extend(self.sve_vq.to_le_bytes());
        sections.push((b"CONF", conf));
        sections.push((b"CORE", CoreReg::all().flat_map(|r| self.core.get(r).to_le_bytes()).collect()));
        let fp_ctrl: Vec<u8> =
            self.fp.fpsr.to_le_bytes().into_iter().chain(self.fp.fpcr.to_le_bytes()).collect();
        match &self.sve {
            Some(sve) => {
                let mut p = sve.vq.to_le_bytes().to_vec();
                p.extend(sve.z.iter());
                p.extend(sve.p.iter());
                p.extend(sve.ffr.iter());
                p.extend(&fp_ctrl);
                sections.push((b"SVE ", p));
            }
            None => {
                let mut p: Vec<u8> = self.fp.v.iter().flatten().copied().collect();
                p.extend(&fp_ctrl);
                sections.push((b"FPSI", p));
            }
        }
        let mut regs = (self.regs.len() as u32).to_le_bytes().to_vec();
        for v in &self.regs {
            regs.extend(v.id.0.to_le_bytes());
            regs.extend(v.value.to_le_bytes());
        }
        sections.push((b"REGS", regs));
        let mut ev = vec![u8::from(self.events.serror_pending), u8::from(self.events.serror_has_esr)];
        ev.extend(self.events.serror_esr.to_le_bytes());
        sections.push((b"EVNT", ev));
        sections.push((b"MPST", self.mp_state.0.to_le_bytes().to_vec()));

        let mut out = MAGIC.to_vec();
        out.extend(VERSION.to_le_bytes());
        out.extend((sections.len() as u32).to_le_bytes());
        for (tag, payload) in sections {
            out.extend(tag);
            out.extend((payload.len() as u32).to_le_bytes());
            out.extend(payload);
        }
        let crc = crc32fast::hash(&out);
        out.extend(crc.to_le_bytes());
        out
    }

    /// Decodes a version-1 snapshot, refusing anything truncated, corrupted or unknown.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < MAGIC.len() + 12 {
            return Err(corrupt(format!("{} bytes is too short for a snapshot", bytes.len())));
        }
        if &bytes[..8] != MAGIC {
            return Err(corrupt("not a vCPU snapshot (bad magic)"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let version = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
        if version != VERSION {
            return Err(AccelError::unsupported(format!(
                "vCPU snapshot format version {version}; this build reads version {VERSION}"
            )));
        }
        let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        let got = crc32fast::hash(body);
        if want != got {
            return Err(corrupt(format!(
                "checksum {got:#010x} does not match the recorded {want:#010x} (truncated or altered)"
            )));
        }
        let mut r = Reader { bytes: body, pos: 12 };
        let count = r.u32("section count")?;
        let mut snap = VcpuSnapshot {
            index: 0,
            features: VcpuFeatures::NONE,
            sve_vq: 0,
            core: CoreRegs::default(),
            fp: FpRegs::default(),
            sve: None,
            regs: Vec::new(),
            events: VcpuEvents::default(),
            mp_state: MpState::RUNNABLE,
        };
        let mut seen = Vec::new();
        for _ in 0..count {
            let tag: [u8; 4] = r.take(4, "section tag")?.try_into().unwrap_or_default();
            // A second copy would silently replace (or, for FPSI after SVE, contradict) the first.
            if seen.contains(&tag) {
                return Err(corrupt(format!("section {:?} appears twice", String::from_utf8_lossy(&tag))));
            }
            let len = r.u32("section length")? as usize;
            let mut s = Reader { bytes: r.take(len, "section payload")?, pos: 0 };
            match &tag {
                b"CONF" => {
                    snap.index = s.u32("vCPU index")?;
                    snap.features = VcpuFeatures(s.u64("features")?);
                    snap.sve_vq = s.u32("SVE vector length")?;
                }
                b"CORE" => {
                    for reg in CoreReg::all() {
                        snap.core.set(reg, s.u64("core register")?);
                    }
                }
                b"FPSI" => {
                    for v in snap.fp.v.iter_mut() {
                        v.copy_from_slice(s.take(16, "V register")?);
                    }
                    snap.fp.fpsr = s.u32("FPSR")?;
                    snap.fp.fpcr = s.u32("FPCR")?;
                }
                b"SVE " => {
                    let vq = s.u32("SVE vector length")?;
                    // Checked before the registers are allocated: their size follows from it.
                    if !(1..=SVE_VQ_MAX).contains(&vq) {
                        return Err(corrupt(format!("SVE vector length of {vq} quadwords")));
                    }
                    let mut sve = SveRegs::zeroed(vq);
                    let (zl, pl) = (sve.z.len(), sve.p.len());
                    sve.z.as_mut_slice().copy_from_slice(s.take(zl, "Z registers")?);
                    sve.p.as_mut_slice().copy_from_slice(s.take(pl, "P registers")?);
                    let fl = sve.ffr.len();
                    sve.ffr.as_mut_slice().copy_from_slice(s.take(fl, "FFR")?);
                    snap.fp.fpsr = s.u32("FPSR")?;
                    snap.fp.fpcr = s.u32("FPCR")?;
                    for (n, v) in snap.fp.v.iter_mut().enumerate() {
                        v.copy_from_slice(&sve.z[n * vq as usize * 16..][..16]);
                    }
                    snap.sve = Some(sve);
                }
                b"REGS" => {
                    let n = s.u32("register count")?;
                    for _ in 0..n {
                        snap.regs.push(RegValue {
                            id: RegId(s.u64("register id")?),
                            value: s.u64("register value")?,
                        });
                    }
                }
                b"EVNT" => {
                    snap.events.serror_pending = s.flag("EVNT SError pending")?;
                    snap.events.serror_has_esr = s.flag("EVNT SError has ESR")?;
                    snap.events.serror_esr = s.u64("SError ESR")?;
                }
                b"MPST" => snap.mp_state = MpState(s.u32("MP state")?),
                other => {
                    return Err(corrupt(format!("unknown section {:?}", String::from_utf8_lossy(other))))
                }
            }
            if s.pos != s.bytes.len() {
                return Err(corrupt(format!(
                    "section {:?} has {} extra bytes",
                    String::from_utf8_lossy(&tag),
                    s.bytes.len() - s.pos
                )));
            }
            seen.push(tag);
        }
        for needed in [b"CONF", b"CORE", b"REGS", b"EVNT", b"MPST"] {
            if !seen.contains(needed) {
                return Err(corrupt(format!("section {:?} is missing", String::from_utf8_lossy(needed))));
            }
        }
        let has_sve = snap.features.contains(VcpuFeatures::SVE);
        if has_sve != snap.sve.is_some() || has_sve == seen.contains(b"FPSI") {
            return Err(corrupt("the FP/SVE sections do not match the vCPU's features"));
        }
        if r.pos != r.bytes.len() {
            return Err(corrupt(format!("{} bytes after the last section", r.bytes.len() - r.pos)));
        }
        snap.validate()?;
        Ok(snap)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            corrupt(format!(
                "truncated: {what} needs {n} bytes at offset {}, {} remain",
                self.pos,
                self.bytes.len() - self.pos
            ))
        })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap_or_default()))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8, what)?.try_into().unwrap_or_default()))
    }

    /// A byte that is 0 (false) or 1 (true).
    fn flag(&mut self, what: &str) -> Result<bool> {
        match self.take(1, what)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(corrupt(format!("{what} is {other}, neither 0 nor 1"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sample(sve: bool) -> VcpuSnapshot {
        let mut core = CoreRegs::default();
        for (i, r) in CoreReg::all().enumerate() {
            core.set(r, 0x1000 + i as u64);
        }
        let mut fp = FpRegs { fpsr: 0x1f, fpcr: 0x0300_0000, ..Default::default() };
        let sve_regs = sve.then(|| {
            let mut s = SveRegs::zeroed(4);
            for (i, b) in s.z.iter_mut().enumerate() {
                *b = i as u8;
            }
            s.ffr[0] = 9;
            s
        });
        if let Some(s) = &sve_regs {
            for (n, v) in fp.v.iter_mut().enumerate() {
                v.copy_from_slice(&s.z[n * 64..][..16]);
            }
        } else {
            fp.set_v_u128(3, 0xdead_beef);
        }
        VcpuSnapshot {
            index: 2,
            features: if sve { VcpuFeatures::PSCI_0_2 | VcpuFeatures::SVE } else { VcpuFeatures::PSCI_0_2 },
            sve_vq: if sve { 4 } else { 0 },
            core,
            fp,
            sve: sve_regs,
            regs: vec![
                RegValue { id: accel_api::sysreg::TPIDR_EL1, value: 7 },
                RegValue { id: RegId::ccsidr(1), value: 3 },
            ],
            events: VcpuEvents {
                serror_pending: true,
                serror_has_esr: true,
                serror_esr: 0x1234,
                ext_dabt_pending: false,
            },
            mp_state: MpState::STOPPED,
        }
    }

    #[test]
    fn encoding_round_trips() {
        for sve in [false, true] {
            let s = sample(sve);
            let bytes = s.to_bytes();
            assert_eq!(&bytes[..8], MAGIC);
            assert_eq!(VcpuSnapshot::from_bytes(&bytes).as_ref(), Ok(&s), "sve: {sve}");
        }
    }

    /// A file of `sections` with a valid header and checksum.
    fn file(count: u32, sections: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend(VERSION.to_le_bytes());
        out.extend(count.to_le_bytes());
        out.extend(sections);
        let crc = crc32fast::hash(&out);
        out.extend(crc.to_le_bytes());
        out
    }

    #[test]
    fn a_vector_length_out_of_range_is_refused_before_allocating() {
        for vq in [0u32, SVE_VQ_MAX + 1, 0x1000_0000, u32::MAX] {
            let mut section = b"SVE ".to_vec();
            section.extend(4u32.to_le_bytes());
            section.extend(vq.to_le_bytes());
            let e = VcpuSnapshot::from_bytes(&file(1, &section)).unwrap_err();
            assert_eq!(e.message, format!("corrupt vCPU snapshot: SVE vector length of {vq} quadwords"));
        }
    }

    /// The sections of the encoding of `snapshot`, as (tag, payload).
    fn sections(snapshot: &VcpuSnapshot) -> Vec<(Vec<u8>, Vec<u8>)> {
        let bytes = snapshot.to_bytes();
        let mut out = Vec::new();
        let mut at = 16;
        while at < bytes.len() - 4 {
            let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            out.push((bytes[at..at + 4].to_vec(), bytes[at + 8..at + 8 + len].to_vec()));
            at += 8 + len;
        }
        out
    }

    fn file_of(sections: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (tag, payload) in sections {
            body.extend(tag);
            body.extend((payload.len() as u32).to_le_bytes());
            body.extend(payload);
        }
        file(sections.len() as u32, &body)
    }

    #[test]
    fn sections_that_contradict_each_other_are_refused() {
        let message = |s: &[(Vec<u8>, Vec<u8>)]| VcpuSnapshot::from_bytes(&file_of(s)).unwrap_err().message;
        // CONF's vector length differs from the SVE registers'.
        let mut s = sections(&sample(true));
        s[0].1[12..16].copy_from_slice(&2u32.to_le_bytes());
        assert!(message(&s).contains("CONF names an SVE vector length of 2 quadwords"), "{}", message(&s));
        // A vector length without SVE.
        let mut s = sections(&sample(false));
        s[0].1[12..16].copy_from_slice(&4u32.to_le_bytes());
        assert!(message(&s).contains("the SVE registers have 0"), "{}", message(&s));
        // FPSI beside SVE, whose V registers would replace the low bits of Z.
        let mut s = sections(&sample(true));
        s.push(sections(&sample(false))[2].clone());
        assert_eq!(&s[6].0, b"FPSI");
        assert!(message(&s).contains("do not match the vCPU's features"), "{}", message(&s));
        // A repeated section.
        let mut s = sections(&sample(false));
        s.push(s[3].clone());
        assert!(message(&s).contains("section \"REGS\" appears twice"), "{}", message(&s));
        assert_eq!(VcpuSnapshot::from_bytes(&file_of(&sections(&sample(true)))), Ok(sample(true)));
    }

    #[test]
    fn impossible_values_are_refused_naming_the_field() {
        let refused = |edit: &dyn Fn(&mut VcpuSnapshot), field: &str| {
            let mut s = sample(false);
            edit(&mut s);
            let e = VcpuSnapshot::from_bytes(&s.to_bytes()).expect_err(field);
            assert_eq!(e.kind, ErrorKind::INVALID_ARGUMENT);
            assert!(e.message.contains(field), "{field}: {}", e.message);
            assert!(!e.message.contains('\n'));
            assert_eq!(s.validate().map_err(|e| e.message), Err(e.message), "validate agrees");
        };
        refused(&|s| s.features.0 |= 1 << 40, "CONF features 0x10000000004 has bits no feature defines");
        refused(&|s| s.mp_state = MpState(0xdead_beef), "MPST MP state 0xdeadbeef");
        refused(&|s| s.mp_state = MpState(1), "MPST MP state 0x1");
        refused(&|s| s.regs.push(s.regs[0]), "REGS holds register TPIDR_EL1");
        refused(&|s| s.regs.push(RegValue { id: RegId(0x1_0000), value: 0 }), "REGS register id 0x10000");
        refused(&|s| s.regs.push(RegValue { id: RegId::ccsidr(0x20), value: 0 }), "REGS register id");
        refused(&|s| s.regs.push(RegValue { id: RegId(7 << 56), value: 0 }), "REGS register id");
        refused(&|s| s.events.serror_esr = u64::MAX, "EVNT SError ESR 0xffffffffffffffff has bits above");
        refused(&|s| s.events.serror_esr = 1 << 25, "EVNT SError ESR 0x2000000");
        refused(
            &|s| {
                s.events.serror_has_esr = false;
            },
            "SError has ESR is not set",
        );
        // The flag bytes are 0 or 1.
        let mut s = sections(&sample(false));
        s[4].1[0] = 2;
        let e = VcpuSnapshot::from_bytes(&file_of(&s)).unwrap_err();
        assert!(e.message.contains("EVNT SError pending is 2, neither 0 nor 1"), "{}", e.message);
        // The largest ISS is accepted.
        let mut s = sample(false);
        s.events.serror_esr = SERROR_ESR_MASK;
        assert_eq!(VcpuSnapshot::from_bytes(&s.to_bytes()), Ok(s));
    }

    #[test]
    fn a_snapshot_is_checked_against_the_backend_before_restoring() {
        let caps = Capabilities {
            max_vcpus: 4,
            vcpu_features: VcpuFeatures::PSCI_0_2 | VcpuFeatures::SVE,
            sve_vqs: 0b1010,
            serror_esr: true,
            ..Default::default()
        };
        assert_eq!(sample(false).check_restorable(&caps), Ok(()));
        assert_eq!(sample(true).check_restorable(&caps), Ok(()));
        let message = |s: &VcpuSnapshot, caps: &Capabilities| s.check_restorable(caps).unwrap_err().message;
        let mut s = sample(false);
        s.index = 4;
        assert!(message(&s, &caps).contains("CONF vCPU index 4 is beyond this backend's 4 vCPUs"));
        let mut s = sample(false);
        s.features |= VcpuFeatures::PMU_V3;
        assert!(
            message(&s, &caps).contains("CONF features pmu-v3 are not offered"),
            "{}",
            message(&s, &caps)
        );
        let only_vq1 = Capabilities { sve_vqs: 1, ..caps };
        assert!(message(&sample(true), &only_vq1).contains("SVE vector length of 4 quadwords is not offered"));
        let no_esr = Capabilities { serror_esr: false, ..caps };
        assert!(message(&sample(false), &no_esr).contains("EVNT a pending SError with a syndrome"));
    }

    #[test]
    fn damage_is_refused_with_reasons() {
        let bytes = sample(true).to_bytes();
        let message = |b: &[u8]| VcpuSnapshot::from_bytes(b).unwrap_err().to_string();
        assert!(message(&bytes[..bytes.len() - 9]).contains("checksum"), "truncated");
        assert!(message(&bytes[..10]).contains("too short"));
        let mut flipped = bytes.clone();
        flipped[40] ^= 1;
        assert!(message(&flipped).contains("checksum"));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(message(&magic).contains("bad magic"));
        let mut version = bytes.clone();
        version[8] = 2;
        let e = VcpuSnapshot::from_bytes(&version).unwrap_err();
        assert_eq!(e.kind, ErrorKind::UNSUPPORTED);
        // A structurally short section with a valid checksum.
        let mut short = bytes[..bytes.len() - 4].to_vec();
        short.truncate(short.len() - 3);
        let crc = crc32fast::hash(&short);
        short.extend(crc.to_le_bytes());
        assert!(message(&short).contains("truncated"), "{}", message(&short));
    }
}

/// A reader built from `docs/snapshot-format.md` alone: it parses the document's tables (so a
/// change to the document is seen here) and decodes what [`VcpuSnapshot::to_bytes`] writes by
/// them, independently of [`VcpuSnapshot::from_bytes`].
#[cfg(test)]
mod document {
    use std::collections::BTreeMap;

    use super::*;

    const DOCUMENT: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/snapshot-format.md"));

    /// One decoded field: little-endian integers, or bytes.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Value {
        Ints(Vec<u64>),
        Bytes(Vec<u8>),
    }

    /// The rows of the table that follows `heading` (a line of the document), as cells.
    fn table_after(heading: &str) -> Vec<Vec<String>> {
        let mut lines = DOCUMENT.lines().skip_while(|l| l.trim() != heading).skip(1);
        let rows: Vec<Vec<String>> = lines
            .by_ref()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .map(|l| l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect())
            .collect();
        assert!(rows.len() > 2, "no table after {heading:?}");
        rows[2..].to_vec()
    }

    /// The section tags, in the order the document gives them.
    fn tags() -> Vec<String> {
        DOCUMENT
            .lines()
            .filter_map(|l| l.strip_prefix("### `")?.strip_suffix('`').map(str::to_string))
            .collect()
    }

    /// Decodes `payload` by the field table of section `tag`.
    fn decode(tag: &str, payload: &[u8]) -> Vec<(String, Value)> {
        let mut fields: Vec<(String, Value)> = Vec::new();
        let mut at = 0;
        for row in table_after(&format!("### `{tag}`")) {
            let (name, ty) = (&row[0], &row[1]);
            let mut terms: Vec<&str> = ty.split(" × ").collect();
            let base = terms.pop().expect("a type");
            let mut count = 1u64;
            for term in terms {
                count *=
                    term.parse::<u64>().unwrap_or_else(|_| match fields.iter().find(|(n, _)| n == term) {
                        Some((_, Value::Ints(v))) if v.len() == 1 => v[0],
                        _ => panic!("{tag}: {term:?} names no earlier single field"),
                    });
            }
            let (per, width) = match base {
                "u8" => (1, Some(1)),
                "u16" => (1, Some(2)),
                "u32" => (1, Some(4)),
                "u64" => (1, Some(8)),
                "(u64, u64)" => (2, Some(8)),
                bytes => (bytes.strip_suffix(" bytes").and_then(|n| n.parse().ok()).expect(bytes), None),
            };
            let value = match width {
                Some(width) => Value::Ints(
                    (0..count * per)
                        .map(|_| {
                            let mut le = [0u8; 8];
                            le[..width].copy_from_slice(&payload[at..at + width]);
                            at += width;
                            u64::from_le_bytes(le)
                        })
                        .collect(),
                ),
                None => {
                    let len = (count * per) as usize;
                    at += len;
                    Value::Bytes(payload[at - len..at].to_vec())
                }
            };
            fields.push((name.clone(), value));
        }
        assert_eq!(
            at,
            payload.len(),
            "section {tag}: the document's fields take {at} of {} bytes",
            payload.len()
        );
        fields
    }

    /// Reads a whole file by the document: its header table, the sections, the checksum.
    fn read(bytes: &[u8]) -> BTreeMap<String, Vec<(String, Value)>> {
        let header = table_after("All integers are little-endian. The file is:");
        let cell = |row: &Vec<String>| row[2].split('`').nth(1).expect("a value in backticks").to_string();
        let magic = cell(header.iter().find(|r| r[2].starts_with("magic")).expect("the magic's row"));
        assert_eq!(&bytes[..magic.len()], magic.as_bytes());
        let version: u32 = cell(header.iter().find(|r| r[2].starts_with("format version")).expect("version"))
            .parse()
            .expect("a version number");
        assert_eq!(bytes[8..12], version.to_le_bytes());
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        assert_eq!(crc32fast::hash(body).to_le_bytes(), crc);
        let count = u32::from_le_bytes(body[12..16].try_into().unwrap());
        let mut at = 16;
        let mut sections = BTreeMap::new();
        let mut order = Vec::new();
        for _ in 0..count {
            // "a 4-byte tag, a 4-byte payload length, and the payload".
            let tag = String::from_utf8(body[at..at + 4].to_vec()).unwrap();
            let len = u32::from_le_bytes(body[at + 4..at + 8].try_into().unwrap()) as usize;
            assert!(tags().contains(&tag), "the document has no section {tag:?}");
            sections.insert(tag.clone(), decode(&tag, &body[at + 8..at + 8 + len]));
            order.push(tag);
            at += 8 + len;
        }
        assert_eq!(at, body.len());
        let documented: Vec<String> = tags().into_iter().filter(|t| order.contains(t)).collect();
        assert_eq!(order, documented, "sections in the order the document gives");
        sections
    }

    fn ints(fields: &[(String, Value)], start: &str) -> Vec<u64> {
        fields
            .iter()
            .filter(|(n, _)| n.starts_with(start))
            .flat_map(|(_, v)| match v {
                Value::Ints(i) => i.clone(),
                Value::Bytes(_) => panic!("{start} is bytes"),
            })
            .collect()
    }

    fn bytes_of<'a>(fields: &'a [(String, Value)], name: &str) -> &'a [u8] {
        match fields.iter().find(|(n, _)| n == name) {
            Some((_, Value::Bytes(b))) => b,
            other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn a_reader_built_from_the_document_reads_what_the_code_writes() {
        for sve in [false, true] {
            let snapshot = super::tests::sample(sve);
            let file = read(&snapshot.to_bytes());
            let conf = &file["CONF"];
            assert_eq!(
                ints(conf, ""),
                [u64::from(snapshot.index), snapshot.features.0, u64::from(snapshot.sve_vq)]
            );
            let core: Vec<u64> = CoreReg::all().map(|r| snapshot.core.get(r)).collect();
            assert_eq!(core.len(), 41);
            assert_eq!(ints(&file["CORE"], ""), core, "CORE, register by register");
            let fp = if sve { &file["SVE "] } else { &file["FPSI"] };
            assert_eq!(ints(fp, "FPSR"), [u64::from(snapshot.fp.fpsr)]);
            assert_eq!(ints(fp, "FPCR"), [u64::from(snapshot.fp.fpcr)]);
            match &snapshot.sve {
                Some(regs) => {
                    assert_eq!(ints(fp, "VQ"), [u64::from(regs.vq)]);
                    assert_eq!(bytes_of(fp, "Z0–Z31"), regs.z.as_slice());
                    assert_eq!(bytes_of(fp, "P0–P15"), regs.p.as_slice());
                    assert_eq!(bytes_of(fp, "FFR"), regs.ffr.as_slice());
                    assert!(!file.contains_key("FPSI"));
                }
                None => {
                    assert_eq!(bytes_of(fp, "V0–V31"), snapshot.fp.v.as_flattened());
                    assert!(!file.contains_key("SVE "));
                }
            }
            let regs: Vec<u64> = snapshot.regs.iter().flat_map(|r| [r.id.0, r.value]).collect();
            assert_eq!(ints(&file["REGS"], "count"), [snapshot.regs.len() as u64]);
            assert_eq!(ints(&file["REGS"], "register id"), regs);
            let e = &snapshot.events;
            assert_eq!(
                ints(&file["EVNT"], ""),
                [u64::from(e.serror_pending), u64::from(e.serror_has_esr), e.serror_esr]
            );
            assert_eq!(ints(&file["MPST"], ""), [u64::from(snapshot.mp_state.0)]);
        }
    }
}
