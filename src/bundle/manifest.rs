//! `manifest.json`: what a bundle is (its fields are documented once, in models/README.md).
//! Parsed and checked once at open; the checked [`Manifest`] is what every engine reads.

use serde::Deserialize;

use crate::error::{err, Result};

/// The bundle format version this runtime reads.
pub const FORMAT_VERSION: u32 = 1;

/// Weight storage format of a bundle's graphs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numeric {
    F32,
    F16,
    Int8,
}

impl Numeric {
    fn parse(s: &str) -> Result<Numeric> {
        match s {
            "f32" => Ok(Numeric::F32),
            "f16" => Ok(Numeric::F16),
            "int8" => Ok(Numeric::Int8),
            other => Err(err!(
                Manifest,
                "manifest numeric is {other:?}, expected \"f32\", \"f16\" or \"int8\""
            )),
        }
    }
    /// The manifest spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Numeric::F32 => "f32",
            Numeric::F16 => "f16",
            Numeric::Int8 => "int8",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawManifest {
    format: String,
    format_version: u32,
    name: String,
    dataset: String,
    numeric: String,
    sid: RawSid,
    history: usize,
    model: RawModel,
    pub(super) graphs: RawGraphs,
    pub(super) catalog: String,
    /// The app's item ids (`ids.bin`, optional; models/README.md "Item ids").
    #[serde(default)]
    pub(super) ids: Option<String>,
    pub(super) files: Vec<RawFile>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSid {
    levels: usize,
    codebook: Vec<usize>,
    num_items: usize,
    num_nodes: usize,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    d_model: usize,
    heads: usize,
    head_dim: usize,
    ff: usize,
    encoder_layers: usize,
    decoder_layers: usize,
    #[serde(default)]
    prm_heads: Option<usize>,
    #[serde(default)]
    prm_ff: Option<usize>,
    params_generator: u64,
    params_prm: u64,
    #[serde(default)]
    encoder_attention: Option<String>,
    #[serde(default)]
    prm_query: Option<String>,
    #[serde(default)]
    prm_kind: Option<String>,
    #[serde(default)]
    encoder_input: Option<String>,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGraphs {
    pub(super) encoder: String,
    pub(super) decoder: String,
    pub(super) prm: String,
}
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    pub(super) name: String,
    pub(super) bytes: u64,
    pub(super) sha256: String,
}

/// Model dimensions from the manifest (validated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dims {
    pub d_model: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub ff: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    /// The attention PRM's heads and FFN width; 0 for a dense PRM, which has neither.
    pub prm_heads: usize,
    pub prm_ff: usize,
    pub params_generator: u64,
    pub params_prm: u64,
    /// The encoder's self-attention is causal (item t reads items <= t; manifest
    /// `model.encoder_attention: "causal"`), else bidirectional (the default).
    pub encoder_causal: bool,
    /// How the PRM builds a node's query (manifest `model.prm_query`).
    pub prm_query: PrmQuery,
    /// What the PRM is (manifest `model.prm_kind`).
    pub prm_kind: PrmKind,
    /// The encoder's token also adds a per-item embedding (manifest `model.encoder_input:
    /// "codes_and_item"`): its input has a column after the L codes, the item's index,
    /// and `gen.enc_code_emb` a row `L * C + item` per item. Else (`"codes"`, the
    /// default) the token is the sum of the item's code embeddings only.
    pub encoder_item: bool,
}

/// What the PRM computes (manifest `model.prm_kind`; models/README.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrmKind {
    /// `"attention"` (the default, the paper's): the node's query, one block of
    /// cross-attention over the memory and an FFN, an MLP to one logit
    /// (`model.prm_heads`, `model.prm_ff`).
    Attention,
    /// `"dense"`: the user state `u = memory[H - 1] * mask[H - 1] @ prm.w + prm.b` (the
    /// encoder's row of the latest item) and one row per trie node:
    /// `score = <u, prm.node[node]> + prm.node_bias[node]`. Input `node_ids`; no
    /// `prm_heads`, `prm_ff` or `prm_query` in the manifest.
    Dense,
}

/// How the PRM turns a trie node into its query vector (manifest `model.prm_query`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrmQuery {
    /// `"node"` (the default): one learned row per trie node, `prm.node_emb
    /// [num_nodes, d]`, input `node_ids`. The table grows with the catalog.
    Node,
    /// `"path"`: the sum of one row per code on the node's path, `prm.path_emb
    /// [L * C + 1, d]` (row `l * C + c`: code c at level l; row `L * C`: the padding of
    /// levels below the node), input `node_path [candidates, L]`. Its size does not
    /// depend on the catalog.
    Path,
}

/// The validated manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub name: String,
    pub dataset: String,
    pub numeric: Numeric,
    pub levels: usize,
    pub codebook: Vec<usize>,
    pub num_items: usize,
    pub num_nodes: usize,
    /// History length H the encoder reads (most recent H items).
    pub history: usize,
    pub dims: Dims,
}

impl Manifest {
    /// Parse and validate a manifest from its JSON text (what
    /// [`Bundle::open`](super::Bundle::open) does first).
    pub fn from_json(text: &str) -> Result<Manifest> {
        parse_manifest(text).map(|(m, _)| m)
    }

    /// Largest codebook (the decoder's output width C).
    pub fn max_codebook(&self) -> usize {
        self.codebook.iter().copied().max().unwrap_or(0)
    }

    /// Columns of the encoder's input per history item: the item's L codes, then its
    /// index when the encoder reads item embeddings ([`Dims::encoder_item`]).
    pub fn encoder_columns(&self) -> usize {
        self.levels + usize::from(self.dims.encoder_item)
    }
}

/// Largest `manifest.json` read (a real one is about 1.5 KB).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Most entries `files` may list (a bundle has five).
pub const MAX_FILES: usize = 16;

/// A bundle file name: plain (no separator), visible (no leading dot), printable (no
/// control characters), at most [`MAX_NAME_BYTES`]; what `unpack` may create.
pub(super) fn safe_name(name: &str) -> Result<&str> {
    if name.is_empty()
        || name.len() > MAX_NAME_BYTES
        || name.starts_with('.')
        || name.contains(['/', '\\'])
        || name.chars().any(crate::error::must_escape)
    {
        return Err(err!(
            Manifest,
            "manifest file name {name:?} must be a plain file name inside the bundle directory \
             (1..={MAX_NAME_BYTES} bytes, no separator, no leading dot, no control character)"
        ));
    }
    Ok(name)
}

/// Longest bundle file name (a container's index holds names of up to 48 bytes).
pub const MAX_NAME_BYTES: usize = 48;

pub(super) fn parse_manifest(text: &str) -> Result<(Manifest, RawManifest)> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| err!(Manifest, "manifest.json is not valid JSON: {e}"))?;
    // serde would also accept a struct written as a JSON array of its fields
    if !value.is_object() {
        return Err(err!(
            Manifest,
            "manifest.json is a JSON {}, expected an object",
            json_kind(&value)
        ));
    }
    let raw: RawManifest = serde_json::from_value(value).map_err(|e| {
        err!(
            Manifest,
            "manifest.json is not a valid bundle manifest: {e}"
        )
    })?;
    if raw.files.len() > MAX_FILES {
        return Err(err!(
            Manifest,
            "manifest files lists {} entries, expected at most {MAX_FILES}",
            raw.files.len()
        ));
    }
    for (i, f) in raw.files.iter().enumerate() {
        safe_name(&f.name)?;
        if raw.files[..i].iter().any(|g| g.name == f.name) {
            return Err(err!(Manifest, "manifest files lists {:?} twice", f.name));
        }
    }
    if raw.format != "promise-bundle" {
        return Err(err!(
            Manifest,
            "manifest format is {:?}, expected \"promise-bundle\"",
            raw.format
        ));
    }
    if raw.format_version != FORMAT_VERSION {
        return Err(err!(
            Manifest,
            "manifest format_version is {}, this runtime reads version {FORMAT_VERSION}",
            raw.format_version
        ));
    }
    let numeric = Numeric::parse(&raw.numeric)?;
    let s = &raw.sid;
    if s.levels == 0 || s.levels > super::catalog::MAX_LEVELS {
        return Err(err!(
            Manifest,
            "manifest sid.levels is {}, expected 1..={}",
            s.levels,
            super::catalog::MAX_LEVELS
        ));
    }
    if s.codebook.len() != s.levels {
        return Err(err!(
            Manifest,
            "manifest sid.codebook has {} entries, expected one per level ({})",
            s.codebook.len(),
            s.levels
        ));
    }
    if let Some((l, c)) = s
        .codebook
        .iter()
        .enumerate()
        .find(|(_, &c)| c == 0 || c > 0xFFFF)
    {
        return Err(err!(
            Manifest,
            "manifest sid.codebook[{l}] is {c}, expected 1..=65535"
        ));
    }
    if s.num_items == 0 || s.num_items > u32::MAX as usize / 2 {
        return Err(err!(
            Manifest,
            "manifest sid.num_items is {}, expected 1..=2147483647",
            s.num_items
        ));
    }
    if raw.history == 0 || raw.history > 4096 {
        return Err(err!(
            Manifest,
            "manifest history is {}, expected 1..=4096",
            raw.history
        ));
    }
    let m = &raw.model;
    for (name, v) in [
        ("d_model", m.d_model),
        ("heads", m.heads),
        ("head_dim", m.head_dim),
        ("ff", m.ff),
        ("encoder_layers", m.encoder_layers),
        ("decoder_layers", m.decoder_layers),
    ] {
        if v == 0 || v > 65536 {
            return Err(err!(
                Manifest,
                "manifest model.{name} is {v}, expected 1..=65536"
            ));
        }
    }
    let prm_kind = match m.prm_kind.as_deref() {
        None | Some("attention") => PrmKind::Attention,
        Some("dense") => PrmKind::Dense,
        Some(other) => {
            return Err(err!(
                Manifest,
                "manifest model.prm_kind is {other:?}, expected \"attention\" or \"dense\""
            ))
        }
    };
    let mut prm_dims = [0usize; 2];
    for ((name, v), out) in [("prm_heads", m.prm_heads), ("prm_ff", m.prm_ff)]
        .into_iter()
        .zip(prm_dims.iter_mut())
    {
        match (prm_kind, v) {
            (PrmKind::Attention, Some(v)) if (1..=65536).contains(&v) => *out = v,
            (PrmKind::Attention, Some(v)) => {
                return Err(err!(
                    Manifest,
                    "manifest model.{name} is {v}, expected 1..=65536"
                ))
            }
            (PrmKind::Attention, None) => {
                return Err(err!(
                    Manifest,
                    "manifest model.{name} is missing, expected 1..=65536 (the attention PRM)"
                ))
            }
            (PrmKind::Dense, Some(v)) => {
                return Err(err!(
                    Manifest,
                    "manifest model.{name} is {v}, but a dense PRM (model.prm_kind) has none: expected no {name}"
                ))
            }
            (PrmKind::Dense, None) => {}
        }
    }
    let [prm_heads, prm_ff] = prm_dims;
    let encoder_causal = match m.encoder_attention.as_deref() {
        None | Some("bidirectional") => false,
        Some("causal") => true,
        Some(other) => {
            return Err(err!(
                Manifest,
                "manifest model.encoder_attention is {other:?}, expected \"bidirectional\" or \"causal\""
            ))
        }
    };
    let prm_query = match m.prm_query.as_deref() {
        None => PrmQuery::Node,
        Some(q) if prm_kind == PrmKind::Dense => {
            return Err(err!(
                Manifest,
                "manifest model.prm_query is {q:?}, but a dense PRM (model.prm_kind) reads node ids: expected no prm_query"
            ))
        }
        Some("node") => PrmQuery::Node,
        Some("path") => PrmQuery::Path,
        Some(other) => {
            return Err(err!(
                Manifest,
                "manifest model.prm_query is {other:?}, expected \"node\" or \"path\""
            ))
        }
    };
    let encoder_item = match m.encoder_input.as_deref() {
        None | Some("codes") => false,
        Some("codes_and_item") => true,
        Some(other) => {
            return Err(err!(
            Manifest,
            "manifest model.encoder_input is {other:?}, expected \"codes\" or \"codes_and_item\""
        ))
        }
    };
    let manifest = Manifest {
        name: raw.name.clone(),
        dataset: raw.dataset.clone(),
        numeric,
        levels: s.levels,
        codebook: s.codebook.clone(),
        num_items: s.num_items,
        num_nodes: s.num_nodes,
        history: raw.history,
        dims: Dims {
            d_model: m.d_model,
            heads: m.heads,
            head_dim: m.head_dim,
            ff: m.ff,
            encoder_layers: m.encoder_layers,
            decoder_layers: m.decoder_layers,
            prm_heads,
            prm_ff,
            params_generator: m.params_generator,
            params_prm: m.params_prm,
            encoder_causal,
            prm_query,
            prm_kind,
            encoder_item,
        },
    };
    Ok((manifest, raw))
}

pub(super) fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}
