//! Specialises `kernels.wgsl` for one weight format and the adapter's optional features.

use crate::bundle::Numeric;

/// What the shader is specialised for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Variant {
    pub numeric: Numeric,
    /// Read f16 weights as `f16` (SHADER_F16) instead of unpacking pairs from `u32`.
    pub native_f16: bool,
    /// Reduce with `subgroupAdd`/`subgroupMax` (SUBGROUP) instead of shared memory only.
    pub subgroups: bool,
}

const SOURCE: &str = concat!(include_str!("kernels.wgsl"), include_str!("search.wgsl"));

const REDUCE_SHARED: &str = "
fn wg_sum(v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red[tid] += red[tid + s];
        }
        workgroupBarrier();
    }
    let t = red[0];
    workgroupBarrier();
    return t;
}

fn wg_max(v: f32) -> f32 {
    red[tid] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (tid < s) {
            red[tid] = max(red[tid], red[tid + s]);
        }
        workgroupBarrier();
    }
    let t = red[0];
    workgroupBarrier();
    return t;
}
";

// one partial per subgroup in shared memory, then every invocation sums the partials
const REDUCE_SUBGROUP: &str = "
fn wg_sum(v: f32) -> f32 {
    let s = subgroupAdd(v);
    if (sg_i == 0u) {
        red[tid / sg_s] = s;
    }
    workgroupBarrier();
    var t = 0.0;
    for (var i = 0u; i < (WG + sg_s - 1u) / sg_s; i++) {
        t += red[i];
    }
    workgroupBarrier();
    return t;
}

fn wg_max(v: f32) -> f32 {
    let s = subgroupMax(v);
    if (sg_i == 0u) {
        red[tid / sg_s] = s;
    }
    workgroupBarrier();
    var t = -3.0e38;
    for (var i = 0u; i < (WG + sg_s - 1u) / sg_s; i++) {
        t = max(t, red[i]);
    }
    workgroupBarrier();
    return t;
}
";

/// The WGSL source for `v`, with `model` (the model's constants, see `layout.rs`).
pub fn source(v: Variant, model: &str) -> String {
    let native_f16 = v.native_f16 && v.numeric == Numeric::F16;
    let mut enables = String::new();
    if native_f16 {
        enables.push_str("enable f16;\n");
    }
    // naga 30 takes subgroup builtins with the SUBGROUP device feature alone (it rejects
    // `enable subgroups;` as not yet implemented)
    let wts = if native_f16 {
        "@group(0) @binding(0) var<storage, read> wts: array<f16>;"
    } else {
        "@group(0) @binding(0) var<storage, read> wts: array<u32>;"
    };
    let wraw = match (v.numeric, native_f16) {
        (Numeric::F32, _) => "    return bitcast<f32>(wts[i]);",
        (Numeric::F16, true) => "    return f32(wts[i]);",
        (Numeric::F16, false) => "    return unpack2x16float(wts[i >> 1u])[i & 1u];",
        // sign-extending byte extract: 4 int8 weights per word, little-endian
        (Numeric::Int8, _) => {
            "    return f32(extractBits(bitcast<i32>(wts[i >> 2u]), (i & 3u) * 8u, 8u));"
        }
    };
    let (reduce, sg_args, sg_init) = if v.subgroups {
        (
            REDUCE_SUBGROUP,
            ", @builtin(subgroup_invocation_id) sgi: u32, @builtin(subgroup_size) sgs: u32",
            "sg_i = sgi;\n    sg_s = sgs;",
        )
    } else {
        (REDUCE_SHARED, "", "")
    };
    SOURCE
        .replace("//!ENABLES", &enables)
        .replace("//!MODEL", model)
        .replace("//!WTS_DECL", wts)
        .replace("//!WRAW", wraw)
        .replace("//!REDUCE", reduce)
        .replace(" /*!SG_ARGS*/", sg_args)
        .replace("/*!SG_INIT*/", sg_init)
}

/// Bytes per weight element in the arena.
pub fn elem_bytes(n: Numeric) -> usize {
    match n {
        Numeric::F32 => 4,
        Numeric::F16 => 2,
        Numeric::Int8 => 1,
    }
}
