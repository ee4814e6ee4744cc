//! vCPU snapshot files (`docs/snapshot-format.md`): `VcpuSnapshot::from_bytes` on the input as it
//! is, on the input as a section count and sections behind a valid header and checksum (so that
//! the section parser sees it), and on the encoding of a well-formed snapshot built from the
//! input: whole, with its sections dropped, repeated, reordered, patched or resized (checksum
//! valid), and with a byte changed or cut short (checksum left as it was).
//!
//! Invariants, for any input:
//! - nothing panics, and nothing allocates more than the file could describe;
//! - an accepted file describes a snapshot that restore can take as it is: SVE registers exactly
//!   when the features have SVE, well-formed at the vector length CONF names (0 without SVE), V
//!   registers that are the low bits of the Z registers, no external abort pending;
//! - an accepted file re-encodes to a file that decodes to the same snapshot, and passes
//!   `validate`;
//! - a snapshot that `validate` refuses (unknown feature bits, an MP state outside the defined
//!   set, a register id twice or outside every space, an SError ESR wider than ESR_EL1.ISS) is
//!   refused by the decoder for the same reason, in one line;
//! - `check_restorable` against any capabilities answers in one line;
//! - a well-formed snapshot round-trips through its encoding unchanged, and the encoding with any
//!   one byte changed, or cut short anywhere, is refused.
#![no_main]

use accel_api::{
    events::{MpState, VcpuEvents},
    regs::{CoreReg, CoreRegs, FpRegs},
    sve::SveRegs,
    Capabilities, RegId, RegValue, VcpuFeatures,
};

use accel_host::snapshot::{VcpuSnapshot, MAGIC, SERROR_ESR_MASK, VERSION};
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

/// The parts of a snapshot: well-formed unless `wild`, when the raw values may be impossible.
#[derive(Arbitrary, Debug)]
struct SnapSpec {
    wild: bool,
    index: u32,
    features: u64,
    vq: u8,
    /// Values repeated through the core registers.
    core: Vec<u64>,
    /// Bytes repeated through V0–V31.
    v: Vec<u8>,
    fpsr: u32,
    fpcr: u32,
    /// Bytes repeated through Z, P and FFR.
    sve_bytes: Vec<u8>,
    regs: Vec<(u64, u64)>,
    serror_pending: bool,
    serror_has_esr: bool,
    serror_esr: u64,
    mp_state: u32,
}

/// A backend's capabilities, as far as restore checks them.
#[derive(Arbitrary, Debug)]
struct CapsSpec {
    max_vcpus: u32,
    vcpu_features: u64,
    sve_vqs: u32,
    serror_esr: bool,
}

/// How a well-formed snapshot's encoding is damaged.
#[derive(Arbitrary, Debug)]
struct Damage {
    at: u32,
    xor: u8,
    cut_at: u32,
}

/// A change to the sections of a valid file.
#[derive(Arbitrary, Debug)]
enum Edit {
    Drop(u8),
    Duplicate(u8),
    Swap(u8, u8),
    Patch { section: u8, offset: u16, bytes: Vec<u8> },
    Resize { section: u8, len: u16 },
    Retag { section: u8, tag: u8 },
}

const TAGS: [&[u8; 4]; 7] = [b"CONF", b"CORE", b"FPSI", b"SVE ", b"REGS", b"EVNT", b"MPST"];

/// The sections of a file `to_bytes` wrote.
fn sections_of(bytes: &[u8]) -> Vec<([u8; 4], Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 16;
    while at + 8 <= bytes.len() - 4 {
        let tag: [u8; 4] = bytes[at..at + 4].try_into().expect("4 bytes");
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        out.push((tag, bytes[at + 8..at + 8 + len].to_vec()));
        at += 8 + len;
    }
    out
}

/// A file of `sections`, with a valid header and checksum.
fn file_of(sections: &[([u8; 4], Vec<u8>)]) -> Vec<u8> {
    let mut body = (sections.len() as u32).to_le_bytes().to_vec();
    for (tag, payload) in sections {
        body.extend(tag);
        body.extend((payload.len() as u32).to_le_bytes());
        body.extend(payload);
    }
    framed(&body)
}

fn edit(sections: &mut Vec<([u8; 4], Vec<u8>)>, edit: Edit) {
    let n = sections.len();
    let at = |i: u8| i as usize % n;
    match edit {
        Edit::Drop(i) => {
            sections.remove(at(i));
        }
        Edit::Duplicate(i) => {
            let s = sections[at(i)].clone();
            sections.push(s);
        }
        Edit::Swap(i, j) => sections.swap(at(i), at(j)),
        Edit::Patch { section, offset, bytes } => {
            let payload = &mut sections[at(section)].1;
            let offset = offset as usize % payload.len().max(1);
            for (k, b) in bytes.into_iter().enumerate() {
                if let Some(p) = payload.get_mut(offset + k) {
                    *p = b;
                }
            }
        }
        Edit::Resize { section, len } => sections[at(section)].1.resize(len as usize, 0),
        Edit::Retag { section, tag } => sections[at(section)].0 = *TAGS[tag as usize % TAGS.len()],
    }
}

fn build(spec: SnapSpec) -> VcpuSnapshot {
    let mut core = CoreRegs::default();
    for (r, v) in CoreReg::all().zip(spec.core.iter().cycle()) {
        core.set(r, *v);
    }
    let fill = |buf: &mut [u8], from: &[u8]| {
        for (b, s) in buf.iter_mut().zip(from.iter().cycle()) {
            *b = *s;
        }
    };
    let mut fp = FpRegs { fpsr: spec.fpsr, fpcr: spec.fpcr, ..FpRegs::default() };
    fill(fp.v.as_flattened_mut(), &spec.v);
    let known = VcpuFeatures::NAMED.iter().fold(0, |all, (f, _)| all | f.0);
    let features = VcpuFeatures(if spec.wild { spec.features } else { spec.features & known });
    let sve = features.contains(VcpuFeatures::SVE).then(|| {
        let mut sve = SveRegs::zeroed(u32::from(spec.vq % 16) + 1);
        let fill = |buf: &mut [u8]| fill(buf, &spec.sve_bytes);
        fill(sve.z.as_mut_slice());
        fill(sve.p.as_mut_slice());
        fill(sve.ffr.as_mut_slice());
        let zl = sve.z_len();
        for (n, v) in fp.v.iter_mut().enumerate() {
            v.copy_from_slice(&sve.z[n * zl..][..16]);
        }
        sve
    });
    VcpuSnapshot {
        index: spec.index,
        features,
        sve_vq: sve.as_ref().map_or(0, |s| s.vq),
        core,
        fp,
        sve,
        regs: if spec.wild {
            spec.regs.iter().map(|&(id, value)| RegValue { id: RegId(id), value }).collect()
        } else {
            // System register ids, each once.
            let mut seen = std::collections::BTreeSet::new();
            spec.regs
                .iter()
                .filter(|(id, _)| seen.insert(id & 0xffff))
                .map(|&(id, value)| RegValue { id: RegId(id & 0xffff), value })
                .collect()
        },
        events: VcpuEvents {
            serror_pending: spec.serror_pending,
            serror_has_esr: spec.serror_has_esr,
            serror_esr: match (spec.wild, spec.serror_has_esr) {
                (true, _) => spec.serror_esr,
                (false, true) => spec.serror_esr & SERROR_ESR_MASK,
                (false, false) => 0,
            },
            ext_dabt_pending: false,
        },
        mp_state: if spec.wild {
            MpState(spec.mp_state)
        } else {
            MpState::NAMED[spec.mp_state as usize % MpState::NAMED.len()].0
        },
    }
}

/// What restore needs of a snapshot before it creates the vCPU.
fn check_restorable(s: &VcpuSnapshot) {
    let has_sve = s.features.contains(VcpuFeatures::SVE);
    assert_eq!(s.sve.is_some(), has_sve, "SVE registers exactly when the features have SVE");
    assert!(!s.events.ext_dabt_pending, "an external abort is never pending in a file");
    match &s.sve {
        Some(sve) => {
            assert!(sve.is_well_formed(), "the SVE registers fit their vector length");
            assert_eq!(s.sve_vq, sve.vq, "CONF names the vector length of the SVE registers");
            let zl = sve.z_len();
            for (n, v) in s.fp.v.iter().enumerate() {
                assert_eq!(v[..], sve.z[n * zl..][..16], "V{n} is the low 128 bits of Z{n}");
            }
        }
        None => assert_eq!(s.sve_vq, 0, "no vector length without SVE"),
    }
}

fn check_accepted(bytes: &[u8]) {
    if let Ok(snapshot) = VcpuSnapshot::from_bytes(bytes) {
        check_restorable(&snapshot);
        assert_eq!(snapshot.validate(), Ok(()), "an accepted file holds a valid snapshot");
        let again = VcpuSnapshot::from_bytes(&snapshot.to_bytes());
        assert_eq!(again.as_ref(), Ok(&snapshot), "an accepted file re-encodes to the same snapshot");
    }
}

/// `body` (a section count, then sections) behind a valid magic and version, with a valid
/// checksum: the section parser sees the fuzzer's bytes.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend(VERSION.to_le_bytes());
    out.extend(body);
    let crc = crc32fast::hash(&out);
    out.extend(crc.to_le_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    check_accepted(data);
    check_accepted(&framed(data));

    let mut u = Unstructured::new(data);
    let (Ok(spec), Ok(caps), Ok(damage)) =
        (SnapSpec::arbitrary(&mut u), CapsSpec::arbitrary(&mut u), Damage::arbitrary(&mut u))
    else {
        return;
    };
    let snapshot = build(spec);
    let bytes = snapshot.to_bytes();
    let caps = Capabilities {
        max_vcpus: caps.max_vcpus,
        vcpu_features: VcpuFeatures(caps.vcpu_features),
        sve_vqs: caps.sve_vqs,
        serror_esr: caps.serror_esr,
        ..Capabilities::default()
    };
    if let Err(e) = snapshot.check_restorable(&caps) {
        assert!(!e.message.contains('\n'), "one line: {}", e.message);
    }
    if let Err(refused) = snapshot.validate() {
        assert!(!refused.message.contains('\n'), "one line: {}", refused.message);
        let decoded = VcpuSnapshot::from_bytes(&bytes).map_err(|e| e.message);
        assert_eq!(decoded, Err(refused.message), "the decoder refuses what validate refuses");
        return;
    }
    check_restorable(&snapshot);
    assert_eq!(VcpuSnapshot::from_bytes(&bytes).as_ref(), Ok(&snapshot), "a snapshot round-trips");
    let mut sections = sections_of(&bytes);
    for e in std::iter::from_fn(|| Edit::arbitrary(&mut u).ok()).take(4) {
        if sections.is_empty() {
            break;
        }
        edit(&mut sections, e);
    }
    check_accepted(&file_of(&sections));
    if damage.xor != 0 {
        let mut damaged = bytes.clone();
        damaged[damage.at as usize % bytes.len()] ^= damage.xor;
        assert!(VcpuSnapshot::from_bytes(&damaged).is_err(), "a changed byte is refused");
    }
    let cut = damage.cut_at as usize % bytes.len();
    assert!(VcpuSnapshot::from_bytes(&bytes[..cut]).is_err(), "a file cut at {cut} is refused");
});
