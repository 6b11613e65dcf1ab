//! Checkpoints: one self-describing `.safetensors` file per save.
//!
//! * Tensors: every parameter under its PyTorch name (float32, PyTorch shape), so
//!   `safetensors.torch.load_file` + `load_state_dict` loads them into the same PyTorch model once
//!   the optimizer entries are filtered out; the Adam moments under `optimizer.exp_avg.<name>` and
//!   `optimizer.exp_avg_sq.<name>` (PyTorch's names for them).
//! * Metadata (`__metadata__`, strings): `format` = [`FORMAT`], and `etude` = a JSON document
//!   ([`Meta`]): model config, tokenizer, vocabulary, epoch, step, RNG state, and whatever the
//!   trainer needs to resume.
//!
//! * `checksum` (metadata): `crc32:XXXXXXXX`, a CRC-32 over the format tag, the `etude` JSON and
//!   every tensor's name, shape and bytes in file order ([`checksum`]). Checked on load when
//!   present; checkpoints written before it existed have none and still load. A checkpoint whose
//!   metadata holds what only later etudes write (`run`, `mode`) must have one.
//!
//! Saving writes a temporary file beside the target and renames it over the target, so a crash
//! never leaves a half-written checkpoint where a good one was.

use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use crate::files::atomic_write;
use std::path::{Path, PathBuf};

/// The value of the `format` metadata key: a file without it is not an etude checkpoint.
pub const FORMAT: &str = "etude-checkpoint-1";
/// Prefixes of the optimizer state tensors.
pub const EXP_AVG: &str = "optimizer.exp_avg.";
pub const EXP_AVG_SQ: &str = "optimizer.exp_avg_sq.";
/// The metadata key of the checksum.
pub const CHECKSUM: &str = "checksum";

/// The model's parameter count from a checkpoint file's safetensors header alone (its first 8
/// bytes give the header's length; the header's JSON gives each tensor's shape), leaving out the
/// Adam moments stored beside the model: the tensors are not read, and a run that just wrote the
/// file does not read it again.
pub fn parameters_in_header(path: &Path) -> Option<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let n = u64::from_le_bytes(len);
    // safetensors' own bound on a header (100 MB).
    if n > 100_000_000 {
        return None;
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&header).ok()?;
    let is_param = |name: &str| name != "__metadata__" && !name.starts_with(EXP_AVG) && !name.starts_with(EXP_AVG_SQ);
    let shapes = v.as_object()?.iter().filter(|(k, _)| is_param(k)).map(|(_, t)| t.get("shape")?.as_array()?.iter().map(serde_json::Value::as_u64).product::<Option<u64>>());
    shapes.sum()
}

/// `crc32:XXXXXXXX` over what a checkpoint holds: the format tag, the metadata JSON text (as
/// stored) and every tensor's name, shape and little-endian bytes, by name (safetensors lays the
/// tensors out in its own order), each part prefixed by its length so that no two different
/// contents share one byte stream.
pub fn checksum(meta_json: &str, tensors: &[HostTensor]) -> String {
    let mut h = crc32fast::Hasher::new();
    let mut part = |bytes: &[u8]| {
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    part(FORMAT.as_bytes());
    part(meta_json.as_bytes());
    let mut sorted: Vec<&HostTensor> = tensors.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for t in sorted {
        part(t.name.as_bytes());
        let shape: Vec<u8> = t.shape.iter().flat_map(|&d| (d as u64).to_le_bytes()).collect();
        part(&shape);
        let data: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        part(&data);
    }
    format!("crc32:{:08x}", h.finalize())
}

/// A named f32 tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A checkpoint in memory: the JSON metadata and the tensors in file order.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub meta: serde_json::Value,
    pub tensors: Vec<HostTensor>,
}

impl Checkpoint {
    pub fn tensor(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Serialise to safetensors bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>, String> {
        let bytes: Vec<Vec<u8>> =
            self.tensors.iter().map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
        let mut views = Vec::with_capacity(self.tensors.len());
        for (t, b) in self.tensors.iter().zip(&bytes) {
            let view = TensorView::new(Dtype::F32, t.shape.clone(), b).map_err(|e| format!("{}: {e}", t.name))?;
            views.push((t.name.clone(), view));
        }
        let mut md = HashMap::new();
        md.insert("format".to_string(), FORMAT.to_string());
        let meta_json = self.meta.to_string();
        md.insert(CHECKSUM.to_string(), checksum(&meta_json, &self.tensors));
        md.insert("etude".to_string(), meta_json);
        let bytes = safetensors::serialize(views, Some(md)).map_err(|e| e.to_string())?;
        sorted_header(bytes)
    }

    /// Parse safetensors bytes; `origin` names the file in error messages.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self, String> {
        let (_, header) = safetensors::SafeTensors::read_metadata(bytes)
            .map_err(|e| format!("{origin}: not a safetensors checkpoint ({e})"))?;
        let md = header.metadata().clone().unwrap_or_default();
        match md.get("format").map(String::as_str) {
            Some(FORMAT) => {}
            Some(other) => return Err(format!("{origin}: checkpoint format {other:?}, this etude reads {FORMAT:?}")),
            None => return Err(format!("{origin}: a safetensors file, but not an etude checkpoint (no format tag)")),
        }
        let meta: serde_json::Value = serde_json::from_str(md.get("etude").map(String::as_str).unwrap_or(""))
            .map_err(|e| format!("{origin}: damaged checkpoint metadata ({e})"))?;
        let st = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| format!("{origin}: damaged checkpoint ({e})"))?;
        // Keep the file's order (safetensors sorts by offset, which is the order they were written).
        let mut named: Vec<_> = st.tensors();
        named.sort_by_key(|(_, v)| v.data().as_ptr() as usize);
        let mut tensors = Vec::with_capacity(named.len());
        for (name, view) in named {
            if view.dtype() != Dtype::F32 {
                return Err(format!("{origin}: tensor {name} is {:?}, expected F32", view.dtype()));
            }
            let data = view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            tensors.push(HostTensor { name, shape: view.shape().to_vec(), data });
        }
        // Older checkpoints have no checksum: they load as before. But every checkpoint that holds
        // run settings (`run`) or a piano-roll model (`mode`) was written by an etude that writes a
        // checksum (both came after it): without one, the key was removed and nothing can vouch
        // for the bytes.
        if !md.contains_key(CHECKSUM) {
            if let Some(key) = ["run", "mode"].into_iter().find(|k| meta.get(k).is_some()) {
                return Err(format!(
                    "{origin}: damaged checkpoint (no checksum, though every etude that writes `{key}` into a checkpoint writes one)"
                ));
            }
        }
        if let Some(stored) = md.get(CHECKSUM) {
            let actual = checksum(md.get("etude").map(String::as_str).unwrap_or(""), &tensors);
            if *stored != actual {
                // Name what the damage did where it shows (a non-finite value), else the mismatch.
                let what = match tensors.iter().find(|t| t.data.iter().any(|v| !v.is_finite())) {
                    Some(t) => format!("{} holds non-finite values", t.name),
                    None => "its tensors or metadata changed after it was written".to_string(),
                };
                return Err(format!("{origin}: damaged checkpoint (checksum {stored} expected, {actual} found: {what})"));
            }
        }
        Ok(Checkpoint { meta, tensors })
    }

    /// Write atomically (see [`atomic_write`]).
    pub fn save(&self, path: &Path) -> Result<(), String> {
        atomic_write(path, &self.to_bytes()?)
    }

    /// Read and parse the file at `path` (its checksum checked): the one place a checkpoint file is
    /// read, each read logged for [`reads_on_this_thread`].
    pub fn load(path: &Path) -> Result<Self, String> {
        READS.with(|r| r.borrow_mut().push(path.to_path_buf()));
        let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }
}

thread_local! {
    static READS: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The checkpoint files [`Checkpoint::load`] has read on this thread, in order, and the log
/// emptied: how tests check that a command reads each checkpoint once (a command runs on one
/// thread; a path here per read, so growing only with the reads).
pub fn reads_on_this_thread() -> Vec<PathBuf> {
    READS.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

/// safetensors writes the metadata from a `HashMap`, whose order changes from one map to the
/// next: rewrite the JSON header with its keys sorted, so that equal checkpoints are equal bytes.
/// The header keeps its length (the same keys and values, reordered) and the tensor offsets.
fn sorted_header(mut bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    use std::collections::BTreeMap;
    let bad = |e: &dyn std::fmt::Display| format!("safetensors header: {e}");
    let n = u64::from_le_bytes(bytes[..8].try_into().map_err(|e| bad(&e))?) as usize;
    let mut header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).map_err(|e| bad(&e))?;
    if let Some(md) = header.remove("__metadata__") {
        let md: BTreeMap<String, String> = serde_json::from_value(md).map_err(|e| bad(&e))?;
        header.insert("__metadata__".into(), serde_json::to_value(md).map_err(|e| bad(&e))?);
    }
    let mut text = serde_json::to_vec(&header).map_err(|e| bad(&e))?;
    if text.len() > n {
        return Err(bad(&"the sorted header is longer than the original"));
    }
    // safetensors pads the header with spaces (to a multiple of 8 bytes).
    text.resize(n, b' ');
    bytes[8..8 + n].copy_from_slice(&text);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            meta: serde_json::json!({"epoch": 3, "model": {"kind": "lstm"}}),
            tensors: vec![
                HostTensor { name: "emb.weight".into(), shape: vec![2, 3], data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.5] },
                HostTensor { name: "fc.bias".into(), shape: vec![2], data: vec![-1.0, 0.25] },
            ],
        }
    }

    #[test]
    fn round_trips_through_a_file_and_keeps_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.safetensors");
        sample().save(&path).unwrap();
        let back = Checkpoint::load(&path).unwrap();
        assert_eq!(back, sample());
        // No temporary file is left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn equal_checkpoints_are_equal_bytes() {
        // Each serialisation builds a new metadata HashMap with its own random order.
        let first = sample().to_bytes().unwrap();
        for _ in 0..20 {
            assert!(sample().to_bytes().unwrap() == first, "the bytes depend on the metadata's hash order");
        }
        assert_eq!(Checkpoint::from_bytes(&first, "x").unwrap(), sample());
    }

    /// Flip one bit at `at` of `bytes`.
    fn flipped(bytes: &[u8], at: usize, bit: u8) -> Vec<u8> {
        let mut b = bytes.to_vec();
        b[at] ^= bit;
        b
    }

    #[test]
    fn a_checksum_catches_changed_data_and_metadata() {
        let bytes = sample().to_bytes().unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
        assert!(header.contains("crc32:"), "{header}");
        // Every bit of the tensor data: a finite value changed is still caught.
        for at in 8 + n..bytes.len() {
            for bit in [0x01, 0x10, 0x80] {
                let err = Checkpoint::from_bytes(&flipped(&bytes, at, bit), "x").unwrap_err();
                assert!(err.contains("damaged checkpoint") && err.contains("checksum"), "byte {at}: {err}");
            }
        }
        // A digit inside the metadata JSON (still valid JSON, still a valid number): 3 -> 2.
        let epoch = 8 + header.find(r#"\"epoch\":3"#).expect("epoch in the header") + r#"\"epoch\":"#.len();
        let err = Checkpoint::from_bytes(&flipped(&bytes, epoch, 0x01), "x").unwrap_err();
        assert!(err.contains("checksum"), "{err}");
        // A checkpoint without a checksum (written before it existed) still loads.
        let mut c = sample();
        c.meta["epoch"] = serde_json::json!(4);
        let old = without_checksum(&c);
        assert_eq!(Checkpoint::from_bytes(&old, "old").unwrap(), c);
    }

    /// The bytes of `c` as etude wrote them before checkpoints had a checksum.
    fn without_checksum(c: &Checkpoint) -> Vec<u8> {
        let bytes: Vec<Vec<u8>> = c.tensors.iter().map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect()).collect();
        let views: Vec<_> = c
            .tensors
            .iter()
            .zip(&bytes)
            .map(|(t, b)| (t.name.clone(), TensorView::new(Dtype::F32, t.shape.clone(), b).unwrap()))
            .collect();
        let md = HashMap::from([("format".to_string(), FORMAT.to_string()), ("etude".to_string(), c.meta.to_string())]);
        safetensors::serialize(views, Some(md)).unwrap()
    }

    #[test]
    fn refuses_truncated_and_foreign_files() {
        let bytes = sample().to_bytes().unwrap();
        for cut in [0, 4, 8, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(Checkpoint::from_bytes(&bytes[..cut], "x").is_err(), "cut at {cut}");
        }
        let foreign = safetensors::serialize(
            vec![("w".to_string(), TensorView::new(Dtype::F32, vec![1], &[0, 0, 0, 0]).unwrap())],
            None,
        )
        .unwrap();
        let err = Checkpoint::from_bytes(&foreign, "other.safetensors").unwrap_err();
        assert!(err.contains("not an etude checkpoint"), "{err}");
        assert!(Checkpoint::from_bytes(b"garbage garbage garbage", "g").is_err());
    }
}
