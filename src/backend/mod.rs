//! Inference backends. The set is closed ([`Device`]); a backend that is compiled out
//! still exists and answers [`ErrorCode::BackendUnavailable`](crate::ErrorCode).

#[cfg(feature = "cpu")]
pub mod cpu;
#[cfg(feature = "gpu")]
pub mod gpu;
#[cfg(test)]
#[cfg_attr(not(feature = "gpu"), allow(dead_code))] // the embeddings are GPU kernels only
pub(crate) mod reference;

/// The checks of every [`Scorer`](crate::Scorer) input, in one place: each backend calls
/// them first, so a bad call is the same error on every backend, never an index out of
/// bounds. `m` is the bundle's manifest; `beams` and `candidates` what the session holds.
#[cfg_attr(not(any(feature = "cpu", feature = "gpu")), allow(dead_code))]
pub(crate) mod checks {
    use crate::bundle::Manifest;
    use crate::error::{err, Result};

    /// [`Scorer::encode`](crate::Scorer::encode): `codes` [H * cols]
    /// ([`Manifest::encoder_columns`]) with every code inside its level's codebook (and an
    /// item column inside the catalog), `mask` [H].
    pub fn encode(m: &Manifest, codes: &[i64], mask: &[f32]) -> Result<()> {
        let (h, l, cols) = (m.history, m.levels, m.encoder_columns());
        if codes.len() != h * cols || mask.len() != h {
            return Err(err!(
                Backend,
                "encode got {} codes and {} mask values, expected {} and {h}",
                codes.len(),
                mask.len(),
                h * cols
            ));
        }
        for (i, &code) in codes.iter().enumerate() {
            let lv = i % cols;
            if lv == l {
                if code < 0 || code as usize >= m.num_items {
                    return Err(err!(
                        Backend,
                        "history item {code} (the encoder's item column) is outside 0..{}",
                        m.num_items
                    ));
                }
            } else if code < 0 || code as usize >= m.codebook[lv] {
                return Err(err!(
                    Backend,
                    "history code {code} at level {lv} is outside 0..{}",
                    m.codebook[lv]
                ));
            }
        }
        Ok(())
    }

    /// [`Scorer::decode`](crate::Scorer::decode): a level of the trie, at most `beams`
    /// prefixes of L-1 codes each, the codes before `level` inside their codebooks, room
    /// for `k * C` outputs.
    pub fn decode(
        m: &Manifest,
        beams: usize,
        level: usize,
        prefixes: &[i64],
        k: usize,
        out: &[f32],
    ) -> Result<()> {
        let (l, c) = (m.levels, m.max_codebook());
        let w = (l - 1).max(1);
        if level >= l || k > beams || prefixes.len() < k * w || out.len() < k * c {
            return Err(err!(
                Capacity,
                "decode of {k} prefixes at level {level} does not fit the session ({beams} beams, {l} levels, {} prefix codes, room for {} outputs)",
                prefixes.len(),
                out.len()
            ));
        }
        for b in 0..k {
            for (p, &code) in prefixes[b * w..b * w + level].iter().enumerate() {
                if code < 0 || code as usize >= m.codebook[p] {
                    return Err(err!(
                        Backend,
                        "prefix code {code} at level {p} is outside 0..{}",
                        m.codebook[p]
                    ));
                }
            }
        }
        Ok(())
    }

    /// [`Scorer::score`](crate::Scorer::score): at most `candidates` trie nodes, each a
    /// node of the catalog, room for one score each.
    pub fn score(m: &Manifest, candidates: usize, nodes: &[i64], out: &[f32]) -> Result<()> {
        if nodes.len() > candidates || out.len() < nodes.len() {
            return Err(err!(
                Capacity,
                "{} nodes to score (room for {} scores), the session holds {candidates}",
                nodes.len(),
                out.len()
            ));
        }
        if let Some(&node) = nodes.iter().find(|&&n| n < 0 || n as usize >= m.num_nodes) {
            return Err(err!(
                Backend,
                "node {node} is not a trie node (expected 0..{})",
                m.num_nodes
            ));
        }
        Ok(())
    }
}

/// What computes a model's requests ([`Model::backend`](crate::Model::backend)). Its
/// `Display` is the one-line form the CLI prints.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BackendInfo {
    /// The CPU backend: its engine and, for the fused engine, the instruction set of its
    /// matmuls (`"avx2+fma"`, `"neon"`, ...).
    Cpu {
        engine: CpuEngine,
        isa: Option<&'static str>,
    },
    /// The GPU backend: the adapter, whether it is a software one (lavapipe, WARP), the
    /// shader's specialisation, and whether the whole search runs on the device.
    Gpu {
        adapter: String,
        software: bool,
        native_f16: bool,
        subgroups: bool,
        device_search: bool,
    },
}

impl std::fmt::Display for BackendInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendInfo::Cpu {
                engine: CpuEngine::Fused,
                isa,
            } => write!(f, "cpu fused ({})", isa.unwrap_or("?")),
            BackendInfo::Cpu { engine, .. } => write!(f, "cpu {}", engine.name()),
            BackendInfo::Gpu {
                adapter,
                software,
                native_f16,
                subgroups,
                device_search,
            } => write!(
                f,
                "gpu {adapter}{} (f16 {}, subgroups {}, search on the {})",
                if *software { " [software]" } else { "" },
                if *native_f16 { "native" } else { "unpacked" },
                if *subgroups { "on" } else { "off" },
                if *device_search { "device" } else { "host" }
            ),
        }
    }
}

/// Which engine the CPU backend runs ([`LoadOptions::cpu_engine`](crate::LoadOptions)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CpuEngine {
    /// Our fused kernels for the bundle's architecture (default; several times faster).
    #[default]
    Fused,
    /// The bundle's ONNX graphs through tract-onnx.
    Tract,
}

impl CpuEngine {
    /// Its name on the command line and in messages: `"fused"` or `"tract"`.
    pub fn name(self) -> &'static str {
        match self {
            CpuEngine::Fused => "fused",
            CpuEngine::Tract => "tract",
        }
    }
}

impl std::str::FromStr for CpuEngine {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<CpuEngine> {
        match s {
            "fused" => Ok(CpuEngine::Fused),
            "tract" => Ok(CpuEngine::Tract),
            other => Err(crate::error::err!(
                InvalidArgument,
                "cpu engine is {other:?}, expected \"fused\" or \"tract\""
            )),
        }
    }
}

/// Where a [`Model`](crate::Model) runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Device {
    /// The CPU (feature `cpu`, default): our fused kernels or tract-onnx ([`CpuEngine`]).
    Cpu,
    /// Our WGSL kernels through wgpu on the device GPU (feature `gpu`); any adapter,
    /// software ones (lavapipe) included.
    Gpu,
    /// A hardware GPU when one qualifies (found, with the limits the model needs), else
    /// the CPU. Never a software adapter: the CPU backend is faster than one.
    Auto,
}

impl std::str::FromStr for Device {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Device> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "gpu" => Ok(Device::Gpu),
            "auto" => Ok(Device::Auto),
            other => Err(crate::error::err!(
                InvalidArgument,
                "device is {other:?}, expected \"cpu\", \"gpu\" or \"auto\""
            )),
        }
    }
}

#[cfg(all(test, feature = "cpu"))]
mod tests {
    use crate::search::{Scorer, SearchConfig};
    use crate::{Bundle, ErrorCode};

    /// Every backend session, used directly through [`Scorer`], refuses the same bad inputs
    /// with the same error code (the checks live in [`super::checks`]), and then still
    /// answers a good call.
    fn refuses_bad_inputs(what: &str, s: &mut dyn Scorer, bundle: &Bundle, cfg: &SearchConfig) {
        let m = bundle.manifest();
        let (h, l, c) = (m.history, m.levels, m.max_codebook());
        let cols = m.encoder_columns();
        let (w, kb) = (l - 1, cfg.beam_capacity());
        let codes = vec![0i64; h * cols];
        let mask = vec![1.0f32; h];
        let code = |r: crate::Result<()>| r.map_err(|e| e.code()).err();
        let mut bad_codes = codes.clone();
        bad_codes[l - 1] = m.codebook[l - 1] as i64;
        assert_eq!(
            code(s.encode(&bad_codes, &mask)),
            Some(ErrorCode::Backend),
            "{what}"
        );
        if cols > l {
            // the item column: an index past the catalog, or negative
            for bad in [m.num_items as i64, -1] {
                let mut bad_item = codes.clone();
                bad_item[cols * (h - 1) + l] = bad;
                assert_eq!(
                    code(s.encode(&bad_item, &mask)),
                    Some(ErrorCode::Backend),
                    "{what}: item {bad}"
                );
            }
        }
        assert_eq!(
            code(s.encode(&codes[1..], &mask)),
            Some(ErrorCode::Backend),
            "{what}"
        );
        s.encode(&codes, &mask).unwrap();
        let prefixes = vec![0i64; (kb + 1) * w];
        let mut out = vec![0f32; (kb + 1) * c];
        let cap = Some(ErrorCode::Capacity);
        assert_eq!(
            code(s.decode(l, &prefixes, 1, &mut out)),
            cap,
            "{what}: level L"
        );
        assert_eq!(
            code(s.decode(0, &prefixes, kb + 1, &mut out)),
            cap,
            "{what}: K'+1"
        );
        assert_eq!(
            code(s.decode(0, &prefixes, 2, &mut out[..c])),
            cap,
            "{what}: output"
        );
        let mut bad_prefix = prefixes.clone();
        bad_prefix[0] = -1;
        assert_eq!(
            code(s.decode(1, &bad_prefix, 1, &mut out)),
            Some(ErrorCode::Backend),
            "{what}: code -1"
        );
        let nodes = vec![1i64; cfg.candidates + 1];
        let mut scores = vec![0f32; cfg.candidates + 1];
        assert_eq!(
            code(s.score(&nodes, &mut scores)),
            cap,
            "{what}: K+ + 1 nodes"
        );
        let past = [m.num_nodes as i64];
        assert_eq!(
            code(s.score(&past, &mut scores)),
            Some(ErrorCode::Backend),
            "{what}: node past the trie"
        );
        s.decode(0, &prefixes, 1, &mut out).unwrap();
        s.score(&nodes[..2], &mut scores).unwrap();
    }

    /// On the tiny bundle and on one whose encoder also reads an item column
    /// (tests/data/causal).
    #[test]
    fn every_backend_refuses_the_same_bad_inputs() {
        for dir in ["models/tiny", "tests/data/causal"] {
            refuses_on(dir);
        }
    }

    fn refuses_on(dir: &str) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let bundle = Bundle::open(dir).unwrap();
        let cfg = SearchConfig::default();
        let mut engines = vec![crate::CpuEngine::Fused];
        if cfg!(feature = "tract") {
            engines.push(crate::CpuEngine::Tract);
        }
        for engine in engines {
            let model = super::cpu::CpuModel::load(&bundle, engine).unwrap();
            let mut s = model.session(&cfg).unwrap();
            refuses_bad_inputs(&format!("{engine:?}"), &mut s, &bundle, &cfg);
        }
        #[cfg(feature = "gpu")]
        match super::gpu::GpuModel::load(&bundle) {
            Ok(model) => {
                let mut s = model.session(&cfg).unwrap();
                refuses_bad_inputs("gpu", &mut s, &bundle, &cfg);
            }
            Err(e) if std::env::var("CI").as_deref() == Ok("true") => {
                panic!("CI=true and no GPU adapter: {e}")
            }
            Err(e) => eprintln!("skipping the GPU session: {e}"),
        }
    }
}
