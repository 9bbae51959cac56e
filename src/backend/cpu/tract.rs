//! The tract engine of the CPU backend: the bundle's ONNX graphs through tract-onnx. Each
//! graph is parsed once from the mapped bytes when the [`Model`](crate::Model) loads (tract copies the weights into its own tensors: see the
//! README's memory table); an optimized plan is built per concrete batch size (K' rows for
//! the decoder, K+ rows for the PRM) the first time a session needs it, and shared by every
//! later session through a cache. A session owns one tract state per plan.
//!
//! Rows beyond the live count are padded (prefix codes 0, node 0) and their outputs
//! ignored: every row of the decoder and the PRM is independent of the others.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tract_onnx::prelude::*;

use crate::backend::checks;
use crate::bundle::{Bundle, Catalog, Manifest, PrmQuery};
use crate::error::{err, Error, ErrorCode, Result};
use crate::search::{Scorer, SearchConfig};

type Plan = Arc<TypedRunnableModel>;

/// tract can panic on a malformed graph instead of returning an error (the `bundle` fuzz
/// target found one: a mutated Unsqueeze axis makes its shape inference index past a
/// SmallVec). A library inside someone else's app must not take the app down, so every
/// call into tract runs under `catch_unwind`, and a panic becomes an error with `code`,
/// printed nowhere ([`crate::panic`]).
fn contain<T>(code: ErrorCode, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    crate::panic::catch(f).unwrap_or_else(|why| {
        Err(Error::new(
            code,
            format!("tract panicked while trying to {what} ({why}): the graph is malformed"),
        ))
    })
}

fn tract_err(what: &str) -> impl Fn(TractError) -> Error + '_ {
    move |e| err!(Backend, "tract failed to {what}: {e:#}")
}

/// The loaded graphs and the plan cache (shared by all sessions of a model).
pub struct TractModel {
    manifest: Manifest,
    encoder: Plan,
    decoder: InferenceModel,
    prm: InferenceModel,
    /// `model.prm_query: "path"`: the catalog, which gives each node's path input
    path: Option<Box<Catalog>>,
    plans: Mutex<HashMap<(&'static str, usize), Plan>>,
}

impl TractModel {
    pub fn load(bundle: &Bundle) -> Result<TractModel> {
        let m = bundle.manifest().clone();
        let parse = |bytes: &[u8], role: &str| -> Result<InferenceModel> {
            contain(ErrorCode::Graph, &format!("read the {role} graph"), || {
                tract_onnx::onnx()
                    .model_for_read(&mut &bytes[..])
                    .map_err(|e| err!(Graph, "tract cannot read the {role} graph: {e:#}"))
            })
        };
        let enc = parse(&bundle.encoder().bytes, "encoder")?;
        let decoder = parse(&bundle.decoder().bytes, "decoder")?;
        let prm = parse(&bundle.prm().bytes, "prm")?;
        let (h, cols) = (m.history, m.encoder_columns());
        let encoder = contain(ErrorCode::Graph, "optimize the encoder", || {
            enc.with_input_fact(
                0,
                InferenceFact::dt_shape(i64::datum_type(), tvec![1, h, cols]),
            )
            .and_then(|g| {
                g.with_input_fact(1, InferenceFact::dt_shape(f32::datum_type(), tvec![1, h]))
            })
            .and_then(|g| g.into_optimized())
            .and_then(|g| g.into_runnable())
            .map_err(tract_err("optimize the encoder"))
        })?;
        Ok(TractModel {
            manifest: m,
            encoder,
            decoder,
            prm,
            path: match bundle.manifest().dims.prm_query {
                PrmQuery::Node => None,
                _ => Some(Box::new(bundle.catalog().clone())),
            },
            plans: Mutex::new(HashMap::new()),
        })
    }

    fn plan(&self, role: &'static str, rows: usize) -> Result<Plan> {
        let mut cache = self.plans.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = cache.get(&(role, rows)) {
            return Ok(p.clone());
        }
        let m = &self.manifest;
        let (h, l, d) = (m.history, m.levels, m.dims.d_model);
        let base = if role == "decoder" {
            &self.decoder
        } else {
            &self.prm
        };
        let last: TVec<usize> = if role == "decoder" {
            tvec![rows, l - 1]
        } else if self.path.is_some() {
            tvec![rows, l]
        } else {
            tvec![rows]
        };
        let plan = contain(ErrorCode::Graph, &format!("optimize the {role}"), || {
            base.clone()
                .with_input_fact(
                    0,
                    InferenceFact::dt_shape(f32::datum_type(), tvec![1, h, d]),
                )
                .and_then(|g| {
                    g.with_input_fact(1, InferenceFact::dt_shape(f32::datum_type(), tvec![1, h]))
                })
                .and_then(|g| {
                    g.with_input_fact(2, InferenceFact::dt_shape(i64::datum_type(), last))
                })
                .and_then(|g| g.into_optimized())
                .and_then(|g| g.into_runnable())
                .map_err(tract_err("optimize a plan"))
        })?;
        cache.insert((role, rows), plan.clone());
        Ok(plan)
    }

    /// Build (or reuse) every plan a session with `cfg` needs and spawn its states.
    pub fn session(&self, cfg: &SearchConfig) -> Result<TractSession> {
        let m = &self.manifest;
        let first_pool = cfg.candidates.min(m.codebook[0]);
        // K' rows, and max(K', N) for a level the full-feed rule widens
        let mut dec_sizes = vec![1, cfg.beams, cfg.beam_capacity()];
        dec_sizes.dedup();
        let mut prm_sizes = vec![first_pool, cfg.candidates];
        prm_sizes.dedup();
        let spawn = |p: Plan| p.spawn().map_err(tract_err("spawn a plan state"));
        let mut decoders = Vec::new();
        for &k in &dec_sizes {
            decoders.push((k, spawn(self.plan("decoder", k)?)?));
        }
        let mut prms = Vec::new();
        if cfg.prm {
            for &k in &prm_sizes {
                prms.push((k, spawn(self.plan("prm", k)?)?));
            }
        }
        Ok(TractSession {
            manifest: m.clone(),
            beams: cfg.beam_capacity(),
            candidates: if cfg.prm { cfg.candidates } else { 0 },
            levels: m.levels,
            history: m.history,
            cmax: m.max_codebook(),
            encoder: spawn(self.encoder.clone())?,
            decoders,
            prms,
            memory: None,
            mask: None,
            pad_prefix: vec![0; cfg.beam_capacity() * (m.levels - 1)],
            pad_nodes: vec![0; cfg.candidates * if self.path.is_some() { m.levels } else { 1 }],
            path: self.path.clone(),
        })
    }
}

/// Per-session tract states and the current request's encoder output.
pub struct TractSession {
    manifest: Manifest,
    beams: usize,      // decoder rows the session holds: max(K', N)
    candidates: usize, // PRM rows: K+ (0 without the PRM)
    levels: usize,
    history: usize,
    cmax: usize,
    encoder: TypedSimpleState,
    decoders: Vec<(usize, TypedSimpleState)>, // (rows, state), rows ascending
    prms: Vec<(usize, TypedSimpleState)>,
    memory: Option<TValue>, // [1, H, d]
    mask: Option<TValue>,   // [1, H]
    pad_prefix: Vec<i64>,   // [max(K', N) * (L-1)] padded decoder input
    pad_nodes: Vec<i64>,    // [K+] padded PRM input ([K+, L] with the path query)
    path: Option<Box<Catalog>>,
}

impl std::fmt::Debug for TractModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractModel")
            .field("bundle", &self.manifest.name)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for TractSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TractSession")
            .field(
                "decoder_rows",
                &self.decoders.iter().map(|d| d.0).collect::<Vec<_>>(),
            )
            .field(
                "prm_rows",
                &self.prms.iter().map(|d| d.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn pick(
    states: &mut [(usize, TypedSimpleState)],
    k: usize,
) -> Result<&mut (usize, TypedSimpleState)> {
    states
        .iter_mut()
        .find(|(rows, _)| *rows >= k)
        .ok_or_else(|| {
            err!(
                Capacity,
                "{k} rows requested, the session was built for fewer"
            )
        })
}

impl Scorer for TractSession {
    fn encode(&mut self, codes: &[i64], mask: &[f32]) -> Result<()> {
        checks::encode(&self.manifest, codes, mask)?;
        let (h, cols) = (self.history, self.manifest.encoder_columns());
        let codes = Tensor::from_shape(&[1, h, cols], codes)
            .map_err(tract_err("build the history tensor"))?;
        let mask = Tensor::from_shape(&[1, h], mask).map_err(tract_err("build the mask tensor"))?;
        let mask: TValue = mask.into_tvalue();
        let inputs = tvec![codes.into_tvalue(), mask.clone()];
        let mut out = contain(ErrorCode::Backend, "run the encoder", || {
            self.encoder
                .run(inputs)
                .map_err(tract_err("run the encoder"))
        })?;
        self.memory = Some(out.remove(0));
        self.mask = Some(mask);
        Ok(())
    }

    fn decode(&mut self, level: usize, prefixes: &[i64], k: usize, out: &mut [f32]) -> Result<()> {
        checks::decode(&self.manifest, self.beams, level, prefixes, k, out)?;
        let (l, c) = (self.levels, self.cmax);
        let w = l - 1;
        let (memory, mask) = match (&self.memory, &self.mask) {
            (Some(m), Some(k)) => (m.clone(), k.clone()),
            _ => return Err(err!(Backend, "decode called before encode")),
        };
        let (rows, state) = pick(&mut self.decoders, k)?;
        let rows = *rows;
        let buf = &mut self.pad_prefix[..rows * w];
        buf.fill(0);
        buf[..k * w].copy_from_slice(&prefixes[..k * w]);
        let t =
            Tensor::from_shape(&[rows, w], buf).map_err(tract_err("build the prefix tensor"))?;
        let inputs = tvec![memory, mask, t.into_tvalue()];
        let res = contain(ErrorCode::Backend, "run the decoder", || {
            state.run(inputs).map_err(tract_err("run the decoder"))
        })?;
        let lp = res[0]
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(tract_err("read the decoder output"))?;
        if lp.len() != rows * l * c {
            return Err(err!(
                Backend,
                "decoder returned {} values, expected {rows} x {l} x {c}",
                lp.len()
            ));
        }
        for i in 0..k {
            let src = &lp[(i * l + level) * c..(i * l + level + 1) * c];
            out[i * c..(i + 1) * c].copy_from_slice(src);
        }
        Ok(())
    }

    fn score(&mut self, nodes: &[i64], out: &mut [f32]) -> Result<()> {
        checks::score(&self.manifest, self.candidates, nodes, out)?;
        let m = nodes.len();
        let (memory, mask) = match (&self.memory, &self.mask) {
            (Some(a), Some(b)) => (a.clone(), b.clone()),
            _ => return Err(err!(Backend, "score called before encode")),
        };
        let (rows, state) = pick(&mut self.prms, m)?;
        let rows = *rows;
        let t = match &self.path {
            None => {
                let buf = &mut self.pad_nodes[..rows];
                buf.fill(0);
                buf[..m].copy_from_slice(nodes);
                Tensor::from_shape(&[rows], buf)
            }
            Some(catalog) => {
                let l = self.levels;
                let buf = &mut self.pad_nodes[..rows * l];
                buf.fill(0);
                for (i, &node) in nodes.iter().enumerate() {
                    catalog.path_rows(node as u32, self.cmax, &mut buf[i * l..(i + 1) * l])?;
                }
                Tensor::from_shape(&[rows, l], buf)
            }
        }
        .map_err(tract_err("build the node tensor"))?;
        let inputs = tvec![memory, mask, t.into_tvalue()];
        let res = contain(ErrorCode::Backend, "run the prm", || {
            state.run(inputs).map_err(tract_err("run the prm"))
        })?;
        let s = res[0]
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>())
            .map_err(tract_err("read the prm output"))?;
        if s.len() != rows {
            return Err(err!(
                Backend,
                "prm returned {} scores, expected {rows}",
                s.len()
            ));
        }
        out[..m].copy_from_slice(&s[..m]);
        Ok(())
    }
}
