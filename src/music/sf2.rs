//! The SoundFont 2 file format, as far as keeping one preset of a font goes: [`keep_preset`] reads
//! a font's chunks and writes a new font holding that preset alone, its instruments, their samples
//! and nothing else. `scripts/piano-font.sh` builds etude's bundled piano
//! (`assets/piano/etude-piano.sf2`) with it from Debian's FluidR3_GM.sf2, byte for byte the same
//! every time (no date, no host name: the output depends on the input bytes only).
//!
//! A font is a RIFF file of form `sfbk` with three lists (SoundFont 2.04, section 4):
//! * `INFO`: `ifil` (version), `isng` (sound engine), `INAM` (name), and optional texts (`ICOP`
//!   copyright, `ICMT` comment, `ISFT` tools, ...);
//! * `sdta`: `smpl`, the 16-bit mono sample points of every sample one after another (each followed
//!   by at least 46 zero points), and optionally `sm24`, their low 8 bits;
//! * `pdta`: nine tables of fixed-size records, each closed by a terminal record: presets
//!   (`phdr`, 38 bytes) own zones (`pbag`, 4) of modulators (`pmod`, 10) and generators (`pgen`,
//!   4), one of which (41) names an instrument (`inst`, 22) owning zones (`ibag`) of modulators
//!   (`imod`) and generators (`igen`), one of which (53) names a sample (`shdr`, 46). A record's
//!   zone or generator range ends where the next record's begins.

/// Generator 41: the preset zone's instrument.
const GEN_INSTRUMENT: u16 = 41;
/// Generator 53: the instrument zone's sample.
const GEN_SAMPLE_ID: u16 = 53;
/// Zero sample points written after every sample (the format's minimum).
const PAD_POINTS: usize = 46;
/// Sample types of a stereo pair's sides (right, left, linked): their `sampleLink` names the other
/// side, which is kept too.
const LINKED_TYPES: [u16; 3] = [2, 4, 8];
/// Sample types of samples in ROM, which a file cannot carry.
const ROM_FLAG: u16 = 0x8000;

/// One chunk: its four-letter id and its data.
struct Chunk<'a> {
    id: [u8; 4],
    data: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The chunks one after another in `b` (each padded to an even length).
fn chunks(b: &[u8]) -> Result<Vec<Chunk<'_>>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= b.len() {
        let id = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        let len = u32_at(b, at + 4) as usize;
        let data = b.get(at + 8..at + 8 + len).ok_or_else(|| format!("chunk {} runs past the end of its list", String::from_utf8_lossy(&id)))?;
        out.push(Chunk { id, data });
        at += 8 + len + (len & 1);
    }
    Ok(out)
}

/// The `LIST` chunk of type `kind` among `top`, as its chunks.
fn list<'a>(top: &[Chunk<'a>], kind: &[u8; 4]) -> Result<Vec<Chunk<'a>>, String> {
    let l = top
        .iter()
        .find(|c| &c.id == b"LIST" && c.data.len() >= 4 && &c.data[..4] == kind)
        .ok_or_else(|| format!("no LIST {} chunk", String::from_utf8_lossy(kind)))?;
    chunks(&l.data[4..])
}

fn find<'a>(cs: &[Chunk<'a>], id: &[u8; 4]) -> Option<&'a [u8]> {
    cs.iter().find(|c| &c.id == id).map(|c| c.data)
}

/// The records of table `id` (each `size` bytes), the terminal record included.
fn table<'a>(cs: &[Chunk<'a>], id: &[u8; 4], size: usize) -> Result<Vec<&'a [u8]>, String> {
    let d = find(cs, id).ok_or_else(|| format!("no {} table", String::from_utf8_lossy(id)))?;
    if d.len() % size != 0 || d.len() < size {
        return Err(format!("the {} table is {} bytes, not a whole number of {size}-byte records", String::from_utf8_lossy(id), d.len()));
    }
    Ok(d.chunks_exact(size).collect())
}

/// A chunk: id, length, data, and a zero byte when the length is odd.
fn put_chunk(out: &mut Vec<u8>, id: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(id);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    if data.len() % 2 == 1 {
        out.push(0);
    }
}

fn put_list(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    let mut data = kind.to_vec();
    data.extend_from_slice(body);
    put_chunk(out, b"LIST", &data);
}

/// A zero-terminated text of even length (the format's INFO strings).
fn text(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    if v.len() % 2 == 1 {
        v.push(0);
    }
    v
}

/// A 20-byte record name.
fn name20(s: &[u8]) -> [u8; 20] {
    let mut n = [0u8; 20];
    let k = s.len().min(19);
    n[..k].copy_from_slice(&s[..k]);
    n
}

/// Where a zone's or a record's range starts: the `u16` at `at` of record `i` of `t`, checked.
fn start(t: &[&[u8]], i: usize, at: usize, what: &str, limit: usize) -> Result<usize, String> {
    let v = u16_at(t[i], at) as usize;
    if v > limit {
        return Err(format!("{what} {i} points at {v}, past its table's {limit}"));
    }
    Ok(v)
}

/// The index of `x` in `kept`, added at the end the first time it is seen.
fn index_of(kept: &mut Vec<usize>, x: usize) -> usize {
    kept.iter().position(|&k| k == x).unwrap_or_else(|| {
        kept.push(x);
        kept.len() - 1
    })
}

/// One level's zone tables (preset or instrument): zones, their modulators and generators.
struct Tables<'t, 'a> {
    bag: &'t [&'a [u8]],
    modt: &'t [&'a [u8]],
    gen: &'t [&'a [u8]],
}

/// Zones copied from one level (preset or instrument): the new bag, modulator and generator tables,
/// with the generator `link` (instrument or sample) renumbered through `kept`.
#[derive(Default)]
struct Zones {
    bags: Vec<u8>,
    mods: Vec<u8>,
    gens: Vec<u8>,
    n_bags: usize,
}

impl Zones {
    /// Copy the zones `bags` of `t`, renumbering generator `link`'s amount through `kept`; `check`
    /// vets a linked index before it is kept.
    fn copy(&mut self, t: &Tables, bags: std::ops::Range<usize>, link: u16, kept: &mut Vec<usize>, check: &dyn Fn(usize) -> Result<(), String>) -> Result<(), String> {
        let (bag, modt, gen) = (t.bag, t.modt, t.gen);
        for z in bags {
            let (g0, g1) = (start(bag, z, 0, "zone", gen.len() - 1)?, start(bag, z + 1, 0, "zone", gen.len() - 1)?);
            let (m0, m1) = (start(bag, z, 2, "zone", modt.len() - 1)?, start(bag, z + 1, 2, "zone", modt.len() - 1)?);
            if g1 < g0 || m1 < m0 {
                return Err(format!("zone {z} ends before it begins"));
            }
            self.bags.extend_from_slice(&((self.gens.len() / 4) as u16).to_le_bytes());
            self.bags.extend_from_slice(&((self.mods.len() / 10) as u16).to_le_bytes());
            self.n_bags += 1;
            for m in &modt[m0..m1] {
                self.mods.extend_from_slice(m);
            }
            for g in &gen[g0..g1] {
                let oper = u16_at(g, 0);
                if oper == link {
                    let old = u16_at(g, 2) as usize;
                    check(old)?;
                    let new = index_of(kept, old);
                    self.gens.extend_from_slice(&oper.to_le_bytes());
                    self.gens.extend_from_slice(&(new as u16).to_le_bytes());
                } else {
                    self.gens.extend_from_slice(g);
                }
            }
        }
        Ok(())
    }

    /// The terminal records: a bag pointing past the last generator and modulator, a zero
    /// modulator and a zero generator.
    fn close(&mut self) {
        self.bags.extend_from_slice(&((self.gens.len() / 4) as u16).to_le_bytes());
        self.bags.extend_from_slice(&((self.mods.len() / 10) as u16).to_le_bytes());
        self.mods.extend_from_slice(&[0u8; 10]);
        self.gens.extend_from_slice(&[0u8; 4]);
    }
}

/// What [`keep_preset`] kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Kept {
    pub preset_name: String,
    pub instruments: usize,
    pub samples: usize,
    /// Sample points (16-bit) in the new font's `smpl` chunk, padding included.
    pub points: usize,
}

/// A SoundFont holding preset `program` of `bank` of the font `src` alone, with `name` and `comment`
/// as its INAM and ICMT texts, the source's `ifil` and `ICOP` kept. The preset, its instruments and
/// their samples keep their records, generators and modulators; indices are renumbered in order of
/// first use; each sample's points are copied with [`PAD_POINTS`] zeros after them and its loop
/// moved with it. The same input gives the same bytes.
pub fn keep_preset(src: &[u8], bank: u16, program: u16, name: &str, comment: &str) -> Result<(Vec<u8>, Kept), String> {
    if src.len() < 12 || &src[..4] != b"RIFF" || &src[8..12] != b"sfbk" {
        return Err("not a SoundFont 2 file (no RIFF sfbk header)".into());
    }
    let riff_len = (u32_at(src, 4) as usize).min(src.len() - 8);
    let top = chunks(&src[12..8 + riff_len])?;
    let info = list(&top, b"INFO")?;
    let sdta = list(&top, b"sdta")?;
    let pdta = list(&top, b"pdta")?;
    let smpl = find(&sdta, b"smpl").ok_or("no smpl chunk")?;
    let sm24 = find(&sdta, b"sm24");
    let phdr = table(&pdta, b"phdr", 38)?;
    let pbag = table(&pdta, b"pbag", 4)?;
    let pmod = table(&pdta, b"pmod", 10)?;
    let pgen = table(&pdta, b"pgen", 4)?;
    let inst = table(&pdta, b"inst", 22)?;
    let ibag = table(&pdta, b"ibag", 4)?;
    let imod = table(&pdta, b"imod", 10)?;
    let igen = table(&pdta, b"igen", 4)?;
    let shdr = table(&pdta, b"shdr", 46)?;
    let n_points = smpl.len() / 2;

    // The preset and its zones.
    let p = (0..phdr.len() - 1)
        .find(|&i| u16_at(phdr[i], 20) == program && u16_at(phdr[i], 22) == bank)
        .ok_or_else(|| format!("no preset {program} in bank {bank}"))?;
    let (b0, b1) = (start(&phdr, p, 24, "preset", pbag.len() - 1)?, start(&phdr, p + 1, 24, "preset", pbag.len() - 1)?);
    let mut instruments = Vec::new();
    let mut preset_zones = Zones::default();
    let n_inst = inst.len() - 1;
    let inst_ok = |i: usize| if i < n_inst { Ok(()) } else { Err(format!("a preset zone names instrument {i} of {n_inst}")) };
    preset_zones.copy(&Tables { bag: &pbag, modt: &pmod, gen: &pgen }, b0..b1, GEN_INSTRUMENT, &mut instruments, &inst_ok)?;
    preset_zones.close();

    // The instruments' zones, in order of first use.
    let mut samples = Vec::new();
    let mut inst_zones = Zones::default();
    let mut inst_records = Vec::new();
    let n_samples = shdr.len() - 1;
    let sample_ok = |s: usize| if s < n_samples { Ok(()) } else { Err(format!("an instrument zone names sample {s} of {n_samples}")) };
    // `instruments` does not grow here: instrument zones name samples only.
    for &i in &instruments {
        let (z0, z1) = (start(&inst, i, 20, "instrument", ibag.len() - 1)?, start(&inst, i + 1, 20, "instrument", ibag.len() - 1)?);
        let mut rec = name20(&inst[i][..20]).to_vec();
        rec.extend_from_slice(&(inst_zones.n_bags as u16).to_le_bytes());
        inst_records.push(rec);
        inst_zones.copy(&Tables { bag: &ibag, modt: &imod, gen: &igen }, z0..z1, GEN_SAMPLE_ID, &mut samples, &sample_ok)?;
    }
    let mut eoi = name20(b"EOI").to_vec();
    eoi.extend_from_slice(&(inst_zones.n_bags as u16).to_le_bytes());
    inst_records.push(eoi);
    inst_zones.close();

    // A stereo side's partner comes along (it may add partners of its own).
    let mut k = 0;
    while k < samples.len() {
        let s = shdr[samples[k]];
        let kind = u16_at(s, 44);
        if kind & ROM_FLAG != 0 {
            return Err(format!("sample {} lives in ROM", samples[k]));
        }
        if LINKED_TYPES.contains(&kind) {
            let partner = u16_at(s, 42) as usize;
            sample_ok(partner)?;
            index_of(&mut samples, partner);
        }
        k += 1;
    }

    // The sample points and headers.
    let mut points = Vec::new();
    let mut low = Vec::new();
    let mut headers = Vec::new();
    for &s in &samples {
        let h = shdr[s];
        let (st, en, ls, le) = (u32_at(h, 20) as usize, u32_at(h, 24) as usize, u32_at(h, 28) as usize, u32_at(h, 32) as usize);
        if !(st <= en && en <= n_points) {
            return Err(format!("sample {s} spans points {st}..{en} of {n_points}"));
        }
        let at = points.len() / 2;
        points.extend_from_slice(&smpl[2 * st..2 * en]);
        points.extend_from_slice(&[0u8; 2 * PAD_POINTS]);
        if let Some(l) = sm24 {
            low.extend_from_slice(l.get(st..en).ok_or("the sm24 chunk is shorter than smpl")?);
            low.extend_from_slice(&[0u8; PAD_POINTS]);
        }
        let moved = |x: usize| (x as i64 - st as i64 + at as i64).max(0) as u32;
        let mut rec = h[..20].to_vec();
        for v in [moved(st), moved(en), moved(ls), moved(le)] {
            rec.extend_from_slice(&v.to_le_bytes());
        }
        rec.extend_from_slice(&h[36..42]); // rate, original pitch, pitch correction
        let link = if LINKED_TYPES.contains(&u16_at(h, 44)) { samples.iter().position(|&x| x == u16_at(h, 42) as usize).unwrap_or(0) } else { 0 };
        rec.extend_from_slice(&(link as u16).to_le_bytes());
        rec.extend_from_slice(&h[44..46]);
        headers.extend_from_slice(&rec);
    }
    headers.extend_from_slice(&name20(b"EOS"));
    headers.extend_from_slice(&[0u8; 26]);

    // The preset headers: ours, then the terminal record.
    let mut presets = phdr[p][..24].to_vec();
    presets.extend_from_slice(&0u16.to_le_bytes());
    presets.extend_from_slice(&phdr[p][26..38]);
    presets.extend_from_slice(&name20(b"EOP"));
    presets.extend_from_slice(&[0u8; 4]);
    presets.extend_from_slice(&(preset_zones.n_bags as u16).to_le_bytes());
    presets.extend_from_slice(&[0u8; 12]);

    // INFO: the version and copyright of the source, our name and comment.
    let mut info_body = Vec::new();
    put_chunk(&mut info_body, b"ifil", find(&info, b"ifil").ok_or("no ifil chunk")?);
    put_chunk(&mut info_body, b"isng", &text("EMU8000"));
    put_chunk(&mut info_body, b"INAM", &text(name));
    if let Some(c) = find(&info, b"ICOP") {
        put_chunk(&mut info_body, b"ICOP", c);
    }
    put_chunk(&mut info_body, b"ICMT", &text(comment));
    put_chunk(&mut info_body, b"ISFT", &text("etude:keep_preset"));

    let mut sdta_body = Vec::new();
    put_chunk(&mut sdta_body, b"smpl", &points);
    if sm24.is_some() {
        put_chunk(&mut sdta_body, b"sm24", &low);
    }
    let mut pdta_body = Vec::new();
    put_chunk(&mut pdta_body, b"phdr", &presets);
    put_chunk(&mut pdta_body, b"pbag", &preset_zones.bags);
    put_chunk(&mut pdta_body, b"pmod", &preset_zones.mods);
    put_chunk(&mut pdta_body, b"pgen", &preset_zones.gens);
    put_chunk(&mut pdta_body, b"inst", &inst_records.concat());
    put_chunk(&mut pdta_body, b"ibag", &inst_zones.bags);
    put_chunk(&mut pdta_body, b"imod", &inst_zones.mods);
    put_chunk(&mut pdta_body, b"igen", &inst_zones.gens);
    put_chunk(&mut pdta_body, b"shdr", &headers);

    let mut body = b"sfbk".to_vec();
    put_list(&mut body, b"INFO", &info_body);
    put_list(&mut body, b"sdta", &sdta_body);
    put_list(&mut body, b"pdta", &pdta_body);
    let mut out = Vec::with_capacity(body.len() + 8);
    put_chunk(&mut out, b"RIFF", &body);
    let preset_name = String::from_utf8_lossy(&phdr[p][..20]).trim_end_matches('\0').to_string();
    Ok((out, Kept { preset_name, instruments: instruments.len(), samples: samples.len(), points: points.len() / 2 }))
}

/// The sha256 of the source of etude's bundled piano: `/usr/share/sounds/sf2/FluidR3_GM.sf2` of
/// Debian's `fluid-soundfont-gm` 3.1-5.3 (148,398,306 bytes).
pub const FLUID_SHA256: &str = "74594e8f4250680adf590507a306655a299935343583256f3b722c48a1bc1cb0";

/// etude's bundled piano from FluidR3_GM's bytes: its preset 0 of bank 0 (Yamaha Grand Piano)
/// alone, named and described for etude ([`keep_preset`]).
pub fn piano_from_fluid(fluid: &[u8]) -> Result<(Vec<u8>, Kept), String> {
    keep_preset(
        fluid,
        0,
        0,
        "etude piano (Yamaha Grand Piano of FluidR3_GM)",
        "Preset 0 of bank 0 of FluidR3_GM.sf2 by Frank Wen (MIT licence, see LICENSE beside this file), kept alone by \
         etude's scripts/piano-font.sh; samples, generators and modulators unchanged.",
    )
}
