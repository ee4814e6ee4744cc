//! vCPU snapshots: the complete state of a vCPU in the shared register model, a versioned binary
//! file format (`docs/snapshot-format.md`), and save/restore through any backend.

use accel_api::{
    client::{Vcpu, Vm},
    error::{AccelError, ErrorKind, Result},
    events::{MpState, VcpuEvents},
    regs::{CoreReg, CoreRegs, FpRegs, PutLevel},
    sve::{SveRegs, SVE_VQ_MAX},
    sysreg::{RegClass, RegId, RegValue},
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

    /// Creates the vCPU in `vm` and writes the whole state into it, at the full put level.
    pub fn restore(&self, vm: &Vm) -> Result<Vcpu> {
        let config = VcpuConfig { index: self.index, features: self.features, sve_max_vq: self.sve_vq };
        let mut vcpu = vm.create_vcpu(&config)?;
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
                    snap.events.serror_pending = s.take(1, "SError pending")?[0] != 0;
                    snap.events.serror_has_esr = s.take(1, "SError has ESR")?[0] != 0;
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
        // Restore creates the vCPU at CONF's vector length and then writes the SVE registers:
        // the two must agree, and without SVE there is no vector length.
        let registers_vq = snap.sve.as_ref().map_or(0, |s| s.vq);
        if snap.sve_vq != registers_vq {
            return Err(corrupt(format!(
                "CONF names an SVE vector length of {} quadwords, the SVE registers have {registers_vq}",
                snap.sve_vq
            )));
        }
        if r.pos != r.bytes.len() {
            return Err(corrupt(format!("{} bytes after the last section", r.bytes.len() - r.pos)));
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sve: bool) -> VcpuSnapshot {
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
