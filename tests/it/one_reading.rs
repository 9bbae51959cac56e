//! One reading of a bundle (issue 29): bytes that protobuf readers could read as two
//! different models, or that hold what one engine runs and another skips, are refused at
//! open, so a bundle that opens is the same model to the fused, tract and GPU engines.

use promise_rt::{Bundle, ErrorCode};

use crate::util::{
    append_graph_entry, append_model_bytes, copy_bundle, float_data_tensor, pb_field, pb_varint,
    set_opset, tiny,
};

fn refused(what: &str, edit: impl Fn(&std::path::Path), needle: &str) {
    let d = copy_bundle(&tiny());
    edit(d.path());
    let e = Bundle::open(d.path()).expect_err(what);
    assert_eq!(e.code(), ErrorCode::Graph, "{what}: {e}");
    assert!(e.to_string().contains(needle), "{what}: {e}");
}

#[test]
fn ambiguous_protobuf_is_refused() {
    refused(
        "a second graph field (a reader that keeps the last sees another model)",
        |d| {
            let mut g = Vec::new();
            g.extend_from_slice(&pb_field(2, b"second"));
            append_model_bytes(d, "encoder.onnx", &pb_field(7, &g));
        },
        "field 7 twice",
    );
    refused(
        "trailing zero padding (field 0)",
        |d| append_model_bytes(d, "decoder.onnx", &[0u8; 64]),
        "field number 0",
    );
    refused(
        "an initializer with raw_data and float_data",
        |d| {
            let t = float_data_tensor("gen.extra", &[4], true);
            append_graph_entry(d, "encoder.onnx", &pb_field(5, &t));
        },
        "stores its values twice",
    );
    refused(
        "float_data weights (run by one engine, refused by another)",
        |d| {
            let t = float_data_tensor("gen.extra", &[4], false);
            append_graph_entry(d, "encoder.onnx", &pb_field(5, &t));
        },
        "raw_data",
    );
    refused(
        "a field no engine reads alike (GraphProto.sparse_initializer)",
        |d| append_graph_entry(d, "prm.onnx", &pb_field(15, b"")),
        "field 15",
    );
    refused(
        "a node of another operator domain",
        |d| {
            let mut n = pb_field(4, b"Relu");
            n.extend_from_slice(&pb_field(7, b"com.microsoft"));
            append_graph_entry(d, "encoder.onnx", &pb_field(1, &n));
        },
        "com.microsoft",
    );
    refused(
        "a second default opset import",
        |d| append_model_bytes(d, "encoder.onnx", &pb_field(8, &pb_varint(2, 17))),
        "imported twice",
    );
}

#[test]
fn opsets_that_change_an_operator_are_refused() {
    // ReduceMean takes its axes as an input from 18 on; Unsqueeze as an attribute before 13
    for v in [11, 12, 18, 21] {
        refused(
            &format!("opset {v}"),
            |d| set_opset(d, "encoder.onnx", v),
            &format!("operator set version {v}"),
        );
    }
    for v in [13, 17] {
        let d = copy_bundle(&tiny());
        set_opset(d.path(), "decoder.onnx", v);
        Bundle::open(d.path()).unwrap_or_else(|e| panic!("opset {v}: {e}"));
    }
}

/// What the `differential` fuzz target found on 2026-12-03: bytes that tract refuses while
/// the fused engine, which reads weights by name, would run them. Both now fail at open.
#[test]
fn what_tract_refuses_the_bundle_refuses() {
    refused(
        "a node that reads a value nothing defines",
        |d| {
            let mut n = pb_field(1, b"no-such-value");
            n.extend_from_slice(&pb_field(2, b"out"));
            n.extend_from_slice(&pb_field(4, b"Relu"));
            append_graph_entry(d, "decoder.onnx", &pb_field(1, &n));
        },
        "no graph input, initializer or earlier node defines",
    );
    refused(
        "a value defined twice",
        |d| {
            let mut n = pb_field(1, b"history_mask");
            n.extend_from_slice(&pb_field(2, b"memory"));
            n.extend_from_slice(&pb_field(4, b"Relu"));
            append_graph_entry(d, "encoder.onnx", &pb_field(1, &n));
        },
        "defined twice",
    );
    refused(
        "a node name that is not UTF-8",
        |d| {
            let mut n = pb_field(1, b"history_mask");
            n.extend_from_slice(&pb_field(2, b"fresh"));
            n.extend_from_slice(&pb_field(3, &[0xf8, 0xf8]));
            n.extend_from_slice(&pb_field(4, b"Relu"));
            append_graph_entry(d, "encoder.onnx", &pb_field(1, &n));
        },
        "not valid UTF-8",
    );
}

/// The third finding of 2026-12-03 (`corpus/differential/open-constant-c34d754f`): two
/// bytes of the encoder's code-offset constant overwritten. tract indexed past its table,
/// the fused engine (which computes the offsets) ran it; now both refuse it at open.
#[test]
fn the_code_offsets_are_the_architectures() {
    refused(
        "an overwritten code offset",
        |d| {
            let p = d.join("encoder.onnx");
            let mut b = std::fs::read(&p).unwrap();
            b[126] = 0x00;
            b[127] = 0x44;
            std::fs::write(&p, &b).unwrap();
        },
        "offsets added to history_codes",
    );
}

/// A `differential` fuzz input applied to the bundle in `d` as the target applies it:
/// `[graph (encoder, decoder, prm), mode (odd: xor), offset u32 LE, payload...]`.
fn replay(d: &std::path::Path, seed: &str) {
    let data = std::fs::read(
        crate::util::repo()
            .join("tests/fuzz/corpus/differential")
            .join(seed),
    )
    .unwrap();
    let file = ["encoder.onnx", "decoder.onnx", "prm.onnx"][data[0] as usize % 3];
    let p = d.join(file);
    let mut b = std::fs::read(&p).unwrap();
    let at = u32::from_le_bytes(data[2..6].try_into().unwrap()) as usize % b.len();
    for (x, v) in b[at..].iter_mut().zip(&data[6..]) {
        *x = if data[1] % 2 == 1 { *x ^ *v } else { *v };
    }
    std::fs::write(&p, &b).unwrap();
}

/// The first `from` f32 in `file` replaced by `to` (the constants of the tiny bundle's
/// graphs are the only places these values occur).
fn patch_f32(d: &std::path::Path, file: &str, from: f32, to: f32) {
    let p = d.join(file);
    let mut b = std::fs::read(&p).unwrap();
    let at = b
        .windows(4)
        .position(|w| w == from.to_le_bytes())
        .unwrap_or_else(|| panic!("{file} holds no {from}"));
    b[at..at + 4].copy_from_slice(&to.to_le_bytes());
    std::fs::write(&p, &b).unwrap();
}

/// Float constants that the fused and GPU engines compute for themselves (the masks, the
/// mask bias, the norms' epsilon, the `1 - mask`) are matched against the architecture at
/// open.
#[test]
fn the_float_constants_are_the_architectures() {
    refused(
        "a norm epsilon of 1e-3",
        |d| patch_f32(d, "encoder.onnx", 1e-6, 1e-3),
        "the norm's epsilon",
    );
    refused(
        "a mask bias of -1e4",
        |d| patch_f32(d, "decoder.onnx", -1e9, -1e4),
        "-1000000000",
    );
    refused(
        "the 1 of 1 - mask as 2",
        |d| patch_f32(d, "encoder.onnx", 1.0, 2.0),
        "1 - mask",
    );
}

/// Every shipped bundle's graphs pass the constant checks (the exporter writes only what
/// the architecture implies).
#[test]
fn every_shipped_bundle_passes_the_constant_checks() {
    let models = crate::util::repo().join("models");
    for b in ["tiny", "ml1m", "ml1m-f16", "ml1m-int8", "ml1m-large-int8"] {
        Bundle::open(models.join(b)).unwrap_or_else(|e| panic!("{b}: {e}"));
    }
    for b in ["causal", "path", "wide"] {
        let p = crate::util::repo().join("tests/data").join(b);
        Bundle::open(&p).unwrap_or_else(|e| panic!("{b}: {e}"));
    }
}

/// The fourth finding of 2026-12-03 (`corpus/differential/regression-decoder-a4a65f87`):
/// one decoder head weight overwritten to 226. tract's log-softmax underflowed to -inf for
/// some codes (the probe refused the bundle) where the fused engine stayed finite (it
/// loaded). Every engine now floors a log-probability at `search::LOGP_FLOOR`: the bundle
/// loads on both and gives the same items.
#[test]
fn a_wide_logit_range_gives_the_same_items_on_every_engine() {
    use promise_rt::{CpuEngine, Device, LoadOptions, Model, SearchConfig};
    let d = crate::util::copy_bundle(&crate::util::tiny());
    replay(d.path(), "regression-decoder-a4a65f87");
    let bundle = Bundle::open(d.path()).unwrap();
    let load = |e| {
        Model::load_with(
            &bundle,
            Device::Cpu,
            &LoadOptions::default().with_cpu_engine(e),
        )
        .unwrap_or_else(|err| panic!("{e:?}: {err}"))
    };
    let (fused, tract) = (load(CpuEngine::Fused), load(CpuEngine::Tract));
    for prm in [false, true] {
        let cfg = SearchConfig::with_beams(4, 10, prm);
        let (mut a, mut t) = (fused.session(cfg).unwrap(), tract.session(cfg).unwrap());
        for h in [&[0u32, 1, 2][..], &[5, 4], &[9]] {
            let x: Vec<u32> = a.recommend(h).unwrap().iter().map(|r| r.item).collect();
            let y: Vec<u32> = t.recommend(h).unwrap().iter().map(|r| r.item).collect();
            assert_eq!(x, y, "history {h:?}, prm {prm}");
        }
    }
}

/// The first `from` in `file` replaced by `to` (same length).
fn patch_bytes(d: &std::path::Path, file: &str, from: &[u8], to: &[u8]) {
    let p = d.join(file);
    let mut b = std::fs::read(&p).unwrap();
    let at = b
        .windows(from.len())
        .position(|w| w == from)
        .unwrap_or_else(|| panic!("{file} holds no {from:?}"));
    b[at..at + to.len()].copy_from_slice(to);
    std::fs::write(&p, &b).unwrap();
}

/// Node attributes change what tract computes while the fused and GPU engines read none:
/// each must be one the exporter writes, with the value the engines assume.
#[test]
fn the_attributes_are_the_architectures() {
    refused(
        "a transpose of attention with its perm changed (0,2,1,3 -> 0,1,2,3)",
        |d| {
            patch_bytes(
                d,
                "encoder.onnx",
                b"perm\x40\x00\x40\x02\x40\x01\x40\x03",
                b"perm\x40\x00\x40\x01\x40\x02\x40\x03",
            )
        },
        "the engines compute it only with",
    );
    refused(
        "a Concat axis of 2",
        |d| {
            patch_bytes(
                d,
                "encoder.onnx",
                b"\x0a\x04axis\x18\x00",
                b"\x0a\x04axis\x18\x02",
            )
        },
        "the engines compute it only with",
    );
    refused(
        "an attribute the graphs do not use",
        |d| patch_bytes(d, "encoder.onnx", b"\x0a\x04axis", b"\x0a\x04axiz"),
        "which the bundle graphs do not use",
    );
    refused(
        "a transpose without its perm (the default reverses every axis)",
        |d| patch_bytes(d, "encoder.onnx", b"\x0a\x04perm", b"\x0a\x04perq"),
        "has no \"perm\"",
    );
}

/// A reshape target built from other constants than the architecture's (the history's 20
/// rows split as 10) is refused at open.
#[test]
fn the_reshape_targets_are_the_architectures() {
    refused(
        "a head split over 10 rows instead of the history's 20",
        |d| {
            let mut from = 20i64.to_le_bytes().to_vec();
            let mut to = 10i64.to_le_bytes().to_vec();
            // a Constant's raw_data field (9) of 8 bytes: 0x4a 0x08
            from.splice(0..0, [0x4a, 0x08]);
            to.splice(0..0, [0x4a, 0x08]);
            patch_bytes(d, "encoder.onnx", &from, &to)
        },
        "reshapes to",
    );
}

/// The differential finding of 2026-12-06 (`corpus/differential/regression-axes-0f9f292e`):
/// an Unsqueeze's axes constant overwritten with a huge value. tract panicked optimising
/// the encoder while the fused engine ran it; now the axes are checked at open.
#[test]
fn the_axes_are_in_range() {
    refused(
        "the encoder's first Unsqueeze axes overwritten",
        |d| replay(d, "regression-axes-0f9f292e"),
        "the graphs give one constant axis in -1..=3",
    );
}

/// The differential finding of 2026-12-06 (`corpus/differential/regression-gather-0d0df605`):
/// the PRM's constant Gather index overwritten (0 -> 49920). tract read past a tensor at
/// the probe where the fused engine ran; now constant indices are checked at open.
#[test]
fn constant_gather_indices_are_in_range() {
    refused(
        "the PRM's constant Gather index overwritten",
        |d| replay(d, "regression-gather-0d0df605"),
        "as the row of a batch of one the graphs gather one scalar: index 0 on axis 0",
    );
}

/// The differential finding of 2026-12-07 (`corpus/differential/regression-attrtype-071cefdf`):
/// a Constant's `value` attribute declaring AttributeType 122 (TENSOR is 4). tract refused
/// the encoder ("unknown ONNX AttributeType") while the fused engine, which reads the value
/// field, loaded it. Now every attribute must declare the type of the value it holds.
#[test]
fn an_attribute_declares_the_type_of_its_value() {
    refused(
        "a Constant's value declaring type 122",
        |d| replay(d, "regression-attrtype-071cefdf"),
        "declares AttributeType 122",
    );
    refused(
        "a Concat axis (an int) declaring FLOAT",
        |d| {
            patch_bytes(
                d,
                "encoder.onnx",
                b"\x0a\x04axis\x18\x00\xa0\x01\x02",
                b"\x0a\x04axis\x18\x00\xa0\x01\x01",
            )
        },
        "declares AttributeType 1, but its value is of type 2",
    );
    refused(
        "a Concat axis without its type (a one-byte doc_string in its place)",
        |d| {
            patch_bytes(
                d,
                "encoder.onnx",
                b"\x0a\x04axis\x18\x00\xa0\x01\x02",
                b"\x0a\x04axis\x18\x00\x6a\x01\x20",
            )
        },
        "declares AttributeType 0",
    );
}

/// A scalar turned into a vector on another axis than 0 (the graphs build every shape
/// vector so) is refused at open: tract would refuse it, the fused engine would run it.
#[test]
fn scalars_are_unsqueezed_on_axis_0() {
    refused(
        "the first [0] axes constant set to [1]",
        |d| {
            patch_bytes(
                d,
                "encoder.onnx",
                b"\x08\x01\x10\x07\x4a\x08\x00\x00\x00\x00\x00\x00\x00\x00",
                b"\x08\x01\x10\x07\x4a\x08\x01\x00\x00\x00\x00\x00\x00\x00",
            )
        },
        "(Unsqueeze) of a scalar takes axis 1; in that role the graphs take axis 0",
    );
}

/// Every shipped bundle and the test bundles load on tract: the load runs the probe
/// requests through the graphs (tract) and the architecture (the fused engine) side by
/// side, within `one_meaning`'s tolerance.
#[test]
fn every_shipped_bundle_means_one_thing_on_tract() {
    use promise_rt::{CpuEngine, Device, LoadOptions, Model};
    let models = crate::util::repo().join("models");
    let opts = LoadOptions::default().with_cpu_engine(CpuEngine::Tract);
    let mut dirs: Vec<_> = ["tiny", "ml1m", "ml1m-f16", "ml1m-int8", "ml1m-large-int8"]
        .iter()
        .map(|b| models.join(b))
        .collect();
    dirs.extend(
        ["causal", "path", "wide"]
            .iter()
            .map(|b| crate::util::repo().join("tests/data").join(b)),
    );
    for d in dirs {
        let b = Bundle::open(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        Model::load_with(&b, Device::Cpu, &opts).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
    }
}

/// An axis in range but off its role: the encoder's mask bias unsqueezed on axis 3
/// instead of 2, so the mask would hide queries instead of keys. tract runs it (the shapes
/// broadcast) and computes another model than the fused engine, which reads no axis: the
/// open checks match each axis to the node's role and refuse it.
#[test]
fn an_axis_off_its_role_is_refused_at_open() {
    refused(
        "the mask's second Unsqueeze on axis 3",
        |d| {
            let p = d.join("encoder.onnx");
            let mut b = std::fs::read(&p).unwrap();
            let name = b"/Constant_4_output_0";
            let at = b
                .windows(name.len())
                .position(|w| w == name)
                .expect("the mask's second axes constant");
            let axes2 = b"\x08\x01\x10\x07\x4a\x08\x02\x00\x00\x00\x00\x00\x00\x00";
            let off = at
                + b[at..]
                    .windows(axes2.len())
                    .position(|w| w == axes2)
                    .expect("axes [2]");
            b[off + 6] = 3;
            std::fs::write(&p, &b).unwrap();
        },
        "of a rank-3 value takes axis 3; in that role the graphs take axis 2",
    );
}

/// Every constant Gather index is matched to its role, not only to a range: the PRM's
/// scores, row 0 of a batch of one, set to row 1 (the old range check let -1..=1 pass;
/// tract would read past the batch where the fused engine, which reads no index, ran).
#[test]
fn a_gather_index_off_its_role_is_refused_at_open() {
    refused(
        "the scores' row 0 set to row 1",
        |d| {
            let p = d.join("prm.onnx");
            let mut b = std::fs::read(&p).unwrap();
            // the Constant whose output (field 2, 18 bytes) the scores' Gather reads, then
            // its scalar's raw_data (field 9) of one i64
            let name = b"\x12\x12/Constant_output_0";
            let at = b
                .windows(name.len())
                .position(|w| w == name)
                .expect("the index constant");
            let zero = b"\x4a\x08\x00\x00\x00\x00\x00\x00\x00\x00";
            let off = at
                + b[at..]
                    .windows(zero.len())
                    .position(|w| w == zero)
                    .expect("index 0");
            b[off + 2] = 1;
            std::fs::write(&p, &b).unwrap();
        },
        "as the row of a batch of one the graphs gather one scalar: index 0 on axis 0",
    );
}

/// A rewiring within every check at open: the first norm's `x / sqrt(mean(x^2) + eps)`
/// computed as `sqrt(..) / x` (Div's operands swapped; the shapes still broadcast). tract
/// runs it and computes another model than the architecture the fused engine runs: the
/// tract load compares the two readings on probe requests and refuses it.
#[test]
fn a_rewired_graph_that_tract_runs_is_refused_on_tract() {
    use promise_rt::{CpuEngine, Device, LoadOptions, Model};
    let d = copy_bundle(&tiny());
    let p = d.path().join("encoder.onnx");
    let mut b = std::fs::read(&p).unwrap();
    // a node input: field 1, length-delimited
    let input = |s: &str| [&[0x0a, s.len() as u8][..], s.as_bytes()].concat();
    let (x, norm) = (input("/Add_1_output_0"), input("/enc.0/n1/Sqrt_output_0"));
    let from = [x.as_slice(), norm.as_slice()].concat();
    let to = [norm.as_slice(), x.as_slice()].concat();
    let at = b
        .windows(from.len())
        .position(|w| w == from.as_slice())
        .expect("Div(x, sqrt(..))");
    b[at..at + from.len()].copy_from_slice(&to);
    std::fs::write(&p, &b).unwrap();
    let bundle = Bundle::open(d.path()).expect("within the open checks");
    let tract = LoadOptions::default().with_cpu_engine(CpuEngine::Tract);
    let e = Model::load_with(&bundle, Device::Cpu, &tract).expect_err("another model on tract");
    assert_eq!(e.code(), ErrorCode::Graph, "{e}");
    assert!(
        e.to_string()
            .contains("compute another model than its architecture"),
        "{e}"
    );
}

/// No two nodes of a graph share a name: tract refuses such a graph ("duplicate name for
/// node"), the fused engine, which reads no node name, ran it (found by the `differential`
/// fuzz target, seed `corpus/differential/regression-nodename-4e6d6384`).
#[test]
fn two_nodes_with_one_name_are_refused_at_open() {
    refused(
        "a decoder node renamed to its neighbour's name",
        |d| {
            patch_bytes(
                d,
                "decoder.onnx",
                b"\x1a\x1c/dec.0/cross_att/Unsqueeze_7",
                b"\x1a\x1c/dec.0/cross_att/Unsqueeze_8",
            )
        },
        "two nodes are named \"/dec.0/cross_att/Unsqueeze_8\"",
    );
}
