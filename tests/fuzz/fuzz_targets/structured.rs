//! open -> load -> session -> recommend on *structured* mutations of the tiny bundle: the
//! manifest's numbers (dimensions, history, codebooks, counts) set to arbitrary values, and
//! initializers appended to a graph under the name of another graph's weight, or renamed
//! in place. These are the classes a byte-level fuzzer rarely reaches (a number that
//! passes every per-field bound but whose products do not; a weight in the wrong graph).
//! Property: every step returns an error or valid output (catalogue items, distinct, not
//! in the history, finite scores); nothing panics, nothing aborts (an over-budget
//! allocation would abort the process: libFuzzer reports it as a crash).
//!
//! Input: a sequence of 8-byte ops [kind, a, b, c, value u32 LE]:
//! - kind 0: manifest `model.<FIELDS[a]>` = value
//! - kind 1: manifest `history` = value
//! - kind 2: manifest `sid.codebook[a % levels]` = value
//! - kind 3: manifest `sid.num_items` / `sid.num_nodes` / `sid.levels` (a % 3) = value
//! - kind 4: append to graph a % 3 an f32 initializer named like weight b of graph c % 3,
//!   of that weight's shape (value % 4 picks the fill)
//! - kind 5: flip one byte (value) of initializer name b of graph a % 3, in place
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use promise_rt::internals::onnx::index;
use promise_rt::{Bundle, CpuEngine, Device, LoadOptions, Model, SearchConfig};

const GRAPHS: [&str; 3] = ["encoder.onnx", "decoder.onnx", "prm.onnx"];
const FIELDS: [&str; 8] = [
    "d_model",
    "heads",
    "head_dim",
    "ff",
    "encoder_layers",
    "decoder_layers",
    "prm_heads",
    "prm_ff",
];

fn tiny() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/tiny")
}

fn scratch() -> &'static PathBuf {
    static D: OnceLock<PathBuf> = OnceLock::new();
    D.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("promise-fuzz-structured-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    })
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

fn field(num: u64, payload: &[u8], out: &mut Vec<u8>) {
    varint(num << 3 | 2, out);
    varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

/// The model with an f32 initializer appended to its graph (field 7 re-encoded).
fn append(model: &[u8], name: &str, dims: &[i64], fill: f32) -> Vec<u8> {
    let mut t = Vec::new();
    for &d in dims {
        varint(1 << 3, &mut t);
        varint(d.max(0) as u64, &mut t);
    }
    varint(2 << 3, &mut t);
    varint(1, &mut t);
    field(8, name.as_bytes(), &mut t);
    let n: i64 = dims.iter().product::<i64>().clamp(0, 1 << 20);
    let raw: Vec<u8> = (0..n).flat_map(|_| fill.to_le_bytes()).collect();
    field(9, &raw, &mut t);
    let mut init = Vec::new();
    field(5, &t, &mut init);
    let (mut out, mut pos) = (Vec::new(), 0usize);
    let read = |pos: &mut usize| -> Option<u64> {
        let (mut v, mut s) = (0u64, 0);
        loop {
            let x = *model.get(*pos)?;
            *pos += 1;
            v |= ((x & 0x7f) as u64) << s;
            if x & 0x80 == 0 {
                return Some(v);
            }
            s += 7;
        }
    };
    while pos < model.len() {
        let start = pos;
        let Some(key) = read(&mut pos) else { break };
        match key & 7 {
            0 => {
                read(&mut pos);
            }
            2 => {
                let len = read(&mut pos).unwrap_or(0) as usize;
                if key >> 3 == 7 && pos + len <= model.len() {
                    let mut g = model[pos..pos + len].to_vec();
                    g.extend_from_slice(&init);
                    field(7, &g, &mut out);
                    pos += len;
                    continue;
                }
                pos += len;
            }
            1 => pos += 8,
            5 => pos += 4,
            _ => break,
        }
        out.extend_from_slice(&model[start..pos.min(model.len())]);
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let dir = tiny();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let mut graphs: Vec<Vec<u8>> = GRAPHS
        .iter()
        .map(|g| std::fs::read(dir.join(g)).unwrap())
        .collect();
    let catalog = std::fs::read(dir.join("catalog.bin")).unwrap();
    for op in data.chunks_exact(8).take(6) {
        let (kind, a, b, c) = (op[0] % 6, op[1] as usize, op[2] as usize, op[3] as usize);
        let value = u32::from_le_bytes([op[4], op[5], op[6], op[7]]);
        match kind {
            0 => manifest["model"][FIELDS[a % FIELDS.len()]] = value.into(),
            1 => manifest["history"] = value.into(),
            2 => {
                let levels = manifest["sid"]["codebook"].as_array().map_or(1, |v| v.len().max(1));
                manifest["sid"]["codebook"][a % levels] = value.into();
            }
            3 => manifest["sid"][["num_items", "num_nodes", "levels"][a % 3]] = value.into(),
            4 => {
                let Ok(src) = index(&graphs[c % 3], "source") else { continue };
                if src.initializers.is_empty() {
                    continue;
                }
                let w = &src.initializers[b % src.initializers.len()];
                let fill = [0.0, 1.0, -3.0, 1e30][value as usize % 4];
                graphs[a % 3] = append(&graphs[a % 3], &w.name.clone(), &w.dims.clone(), fill);
            }
            _ => {
                let g = &mut graphs[a % 3];
                let Ok(idx) = index(g, "target") else { continue };
                if idx.initializers.is_empty() {
                    continue;
                }
                let name = idx.initializers[b % idx.initializers.len()].name.clone();
                // the name's bytes sit right before its field in the tensor: find them
                if let Some(at) = g.windows(name.len()).position(|w| w == name.as_bytes()) {
                    let i = at + value as usize % name.len().max(1);
                    g[i] = g[i].wrapping_add(1 + (value >> 8) as u8 % 26);
                }
            }
        }
    }
    let out = scratch();
    for (name, bytes) in GRAPHS.iter().zip(&graphs) {
        std::fs::write(out.join(name), bytes).unwrap();
    }
    std::fs::write(out.join("catalog.bin"), &catalog).unwrap();
    // keep the files' sizes in step, so that only the structure is wrong
    if let Some(files) = manifest["files"].as_array_mut() {
        for f in files {
            let name = f["name"].as_str().unwrap_or("").to_owned();
            if let Ok(md) = std::fs::metadata(out.join(&name)) {
                f["bytes"] = md.len().into();
            }
        }
    }
    std::fs::write(out.join("manifest.json"), manifest.to_string()).unwrap();
    let Ok(bundle) = Bundle::open(out) else { return };
    let opts = LoadOptions::default().with_cpu_engine(CpuEngine::Fused);
    let Ok(model) = Model::load_with(&bundle, Device::Cpu, &opts) else { return };
    let Ok(mut s) = model.session(SearchConfig::default()) else { return };
    let items = bundle.catalog().num_items() as u32;
    let history = [0u32, 1 % items, 2 % items];
    if let Ok(recs) = s.recommend(&history) {
        let mut seen = Vec::new();
        for r in recs {
            assert!(r.item < items && r.score.is_finite());
            assert!(!history.contains(&r.item) && !seen.contains(&r.item));
            seen.push(r.item);
        }
    }
});
