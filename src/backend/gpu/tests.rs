//! Every kernel against its plain Rust reference (`reference.rs`) on fresh random inputs,
//! for each weight format and with SHADER_F16 / SUBGROUP on and off. Runs on whatever
//! adapter wgpu finds (lavapipe in CI). Without an adapter the tests skip with a printed
//! reason on a developer machine and fail under `CI=true`.

use wgpu::util::DeviceExt;

use super::*;
use crate::backend::reference as r;
use crate::backend::reference::{assert_close, Rng};

/// |gpu - ref| <= atol + rtol * |ref| for f32 kernels against the f64 reference.
const MATMUL_TOL: (f32, f32) = (5e-5, 1e-5);
const ATTENTION_TOL: (f32, f32) = (1e-5, 1e-5);
const LOG_SOFTMAX_TOL: (f32, f32) = (2e-5, 1e-6);
const EMBED_TOL: (f32, f32) = (1e-6, 1e-6);

/// A weight stored in `numeric`: its arena bytes, the values the kernel sees before
/// scaling, and the scales (one per column, or per row with `per_row`).
struct Stored {
    bytes: Vec<u8>,
    values: Vec<f32>,
    scales: Vec<f32>,
}

fn store(numeric: Numeric, w: &[f32], rows: usize, cols: usize, per_row: bool) -> Stored {
    match numeric {
        Numeric::F32 => Stored {
            bytes: w.iter().flat_map(|v| v.to_le_bytes()).collect(),
            values: w.to_vec(),
            scales: vec![1.0; if per_row { rows } else { cols }],
        },
        Numeric::F16 => {
            let h: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
            Stored {
                bytes: h.iter().flat_map(|v| v.to_le_bytes()).collect(),
                values: h.iter().map(|v| v.to_f32()).collect(),
                scales: vec![1.0; if per_row { rows } else { cols }],
            }
        }
        Numeric::Int8 => {
            let groups = if per_row { rows } else { cols };
            let mut scales = vec![0f32; groups];
            for i in 0..rows {
                for j in 0..cols {
                    let g = if per_row { i } else { j };
                    scales[g] = scales[g].max(w[i * cols + j].abs() / 127.0);
                }
            }
            let q: Vec<i8> = (0..rows * cols)
                .map(|x| {
                    let g = if per_row { x / cols } else { x % cols };
                    (w[x] / scales[g]).round().clamp(-127.0, 127.0) as i8
                })
                .collect();
            Stored {
                bytes: q.iter().map(|&v| v as u8).collect(),
                values: q.iter().map(|&v| v as f32).collect(),
                scales,
            }
        }
    }
}

/// Arena builder mirroring `upload`: weights 4-byte aligned, aux[0] = 1.0.
struct Arenas {
    numeric: Numeric,
    wts: Vec<u8>,
    aux: Vec<f32>,
}

impl Arenas {
    fn new(numeric: Numeric) -> Arenas {
        Arenas {
            numeric,
            wts: Vec::new(),
            aux: vec![1.0],
        }
    }
    /// Add a weight; returns its descriptor and the reference's (values, scales).
    fn weight(&mut self, w: &[f32], rows: usize, cols: usize, per_row: bool) -> (W, Stored) {
        let s = store(self.numeric, w, rows, cols, per_row);
        let off = (self.wts.len() / shader::elem_bytes(self.numeric)) as u32;
        self.wts.extend_from_slice(&s.bytes);
        while !self.wts.len().is_multiple_of(4) {
            self.wts.push(0);
        }
        let desc = if self.numeric == Numeric::Int8 {
            let at = self.aux.len() as u32;
            self.aux.extend_from_slice(&s.scales);
            W {
                off,
                scale: at,
                stride: 1,
            }
        } else {
            W {
                off,
                scale: 0,
                stride: 0,
            }
        };
        (desc, s)
    }
    fn vector(&mut self, v: &[f32]) -> V {
        let at = self.aux.len() as u32;
        self.aux.extend_from_slice(v);
        V(at)
    }
}

struct Rig {
    gpu: Gpu,
    model_layout: wgpu::BindGroupLayout,
    session_layout: wgpu::BindGroupLayout,
    pipelines: Pipelines,
}

fn rig(numeric: Numeric, shader_f16: bool, subgroups: bool) -> Option<Rig> {
    let opts = GpuOptions {
        shader_f16,
        subgroups,
        ..GpuOptions::default()
    };
    let gpu = match open(numeric, &opts) {
        Ok(g) => g,
        Err(e) if e.code() == crate::ErrorCode::BackendUnavailable => {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("CI=true and no GPU adapter: {e}");
            }
            eprintln!("skipping the GPU kernel test: {e}");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    let (model_layout, session_layout) = layouts(&gpu.device);
    let pipelines = build_pipelines(&gpu, &model_layout, &session_layout).expect("kernels build");
    Some(Rig {
        gpu,
        model_layout,
        session_layout,
        pipelines,
    })
}

impl Rig {
    /// Run one dispatch over `act` (read back in place).
    fn run(
        &self,
        kernel: Kernel,
        p: Params,
        groups: [u32; 3],
        ar: &Arenas,
        act: &mut [f32],
        ints: &[i32],
    ) {
        let mut iv = ints.to_vec();
        iv.resize(iv.len().max(1), 0);
        self.run_ids(kernel, p, groups, ar, act, &mut iv);
    }

    /// Run one dispatch over `act` and `ints` (both read back in place; the search kernels
    /// write ids).
    fn run_ids(
        &self,
        kernel: Kernel,
        p: Params,
        groups: [u32; 3],
        ar: &Arenas,
        act: &mut [f32],
        ints: &mut [i32],
    ) {
        let d = &self.gpu.device;
        let init = |label, contents: &[u8], usage| {
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage,
            })
        };
        let mut wbytes = ar.wts.clone();
        wbytes.resize(wbytes.len().max(4), 0);
        let wts = init("wts", &wbytes, wgpu::BufferUsages::STORAGE);
        let aux = init(
            "aux",
            bytemuck::cast_slice(&ar.aux),
            wgpu::BufferUsages::STORAGE,
        );
        let actb = init(
            "act",
            bytemuck::cast_slice(act),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let intb = init(
            "ints",
            bytemuck::cast_slice(ints),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        );
        let ints_out = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (ints.len() * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut pbytes = vec![0u8; PARAMS_STRIDE as usize];
        pbytes[..std::mem::size_of::<Params>()].copy_from_slice(bytemuck::bytes_of(&p));
        let pb = init("params", &pbytes, wgpu::BufferUsages::UNIFORM);
        let out = d.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: (act.len() * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        fn entry(binding: u32, buffer: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
            wgpu::BindGroupEntry {
                binding,
                resource: buffer.as_entire_binding(),
            }
        }
        let trie = init("trie", &[0u8; 4], wgpu::BufferUsages::STORAGE); // unused here
        let mbg = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.model_layout,
            entries: &[entry(0, &wts), entry(1, &aux), entry(2, &trie)],
        });
        let sbg = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.session_layout,
            entries: &[
                entry(0, &actb),
                entry(1, &intb),
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &pb,
                        offset: 0,
                        size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
                    }),
                },
            ],
        });
        let mut enc = d.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&self.pipelines[kernel as usize]);
            pass.set_bind_group(0, &mbg, &[]);
            pass.set_bind_group(1, &sbg, &[0]);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        enc.copy_buffer_to_buffer(&actb, 0, &out, 0, (act.len() * 4) as u64);
        enc.copy_buffer_to_buffer(&intb, 0, &ints_out, 0, (ints.len() * 4) as u64);
        self.gpu.queue.submit(Some(enc.finish()));
        out.slice(..)
            .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
        ints_out
            .slice(..)
            .map_async(wgpu::MapMode::Read, |r| r.expect("map"));
        d.poll(wgpu::PollType::wait_indefinitely()).expect("poll");
        self.gpu.check().expect("no GPU error");
        let view = out.slice(..).get_mapped_range().expect("mapped");
        act.copy_from_slice(bytemuck::cast_slice(&view[..]));
        let view = ints_out.slice(..).get_mapped_range().expect("mapped");
        ints.copy_from_slice(bytemuck::cast_slice(&view[..]));
    }
}

/// Every shader variant the adapter can run: (numeric, SHADER_F16 wanted, SUBGROUP wanted).
fn variants() -> Vec<(Numeric, bool, bool)> {
    let mut v = Vec::new();
    for numeric in [Numeric::F32, Numeric::F16, Numeric::Int8] {
        for f16 in [true, false] {
            if numeric != Numeric::F16 && !f16 {
                continue; // the switch only matters for f16 weights
            }
            for sg in [true, false] {
                v.push((numeric, f16, sg));
            }
        }
    }
    v
}

#[test]
fn matmul_matches_reference() {
    let mut rng = Rng::new(1);
    for (numeric, f16, sg) in variants() {
        let Some(rig) = rig(numeric, f16, sg) else {
            return;
        };
        let v = rig.gpu.variant;
        // (rows, k, n, lda, relu+bias, accumulate, live rows, fused rmsnorm, weights)
        for &(rows, k, n, lda, rb, accumulate, live, norm, blocks) in &[
            (
                1usize, 64usize, 64usize, 64usize, false, false, None, false, 1usize,
            ),
            (5, 64, 256, 64, true, false, None, true, 1),
            (33, 100, 24, 100, false, true, None, false, 1),
            (7, 16, 130, 48, true, true, Some(3usize), true, 1),
            (64, 128, 1, 128, true, false, None, false, 1),
            (20, 64, 64, 64, false, false, None, true, 3),
            (9, 48, 16, 96, false, false, Some(6), true, 2),
        ] {
            let mut ar = Arenas::new(numeric);
            let mut ws = Vec::new();
            let mut stored = Vec::new();
            for _ in 0..blocks {
                let (w, st) = ar.weight(&rng.vec(k * n), k, n, false);
                ws.push(w);
                stored.push(st);
            }
            let bias = rng.vec(n);
            let bv = ar.vector(&bias);
            let gain = rng.vec(k);
            let gv = ar.vector(&gain);
            let x: Vec<f32> = rng.vec(rows * lda).iter().map(|v| v * 2.0).collect();
            let y0 = rng.vec(blocks * rows * n);
            let mut act = x.clone();
            let o = act.len() as u32;
            act.extend_from_slice(&y0);
            let w = |i: usize| ws[i.min(blocks - 1)];
            let p = Params {
                rows: rows as u32,
                live: if live.is_some() { 0 } else { NONE },
                n: n as u32,
                k: k as u32,
                a: 0,
                lda: lda as u32,
                o,
                ldo: n as u32,
                w0: w(0).off,
                s0: w(0).scale,
                ss0: w(0).stride,
                w1: w(1).off,
                s1: w(1).scale,
                ss1: w(1).stride,
                w2: w(2).off,
                s2: w(2).scale,
                ss2: w(2).stride,
                flags: if rb { RELU | BIAS } else { 0 } | if accumulate { ACCUMULATE } else { 0 },
                x0: bv.0,
                g0: if norm { gv.0 } else { NONE },
                ..Params::default()
            };
            let ints = [live.unwrap_or(0) as i32];
            let groups = [n.div_ceil(8) as u32, rows.div_ceil(4) as u32, blocks as u32];
            rig.run(Kernel::Matmul, p, groups, &ar, &mut act, &ints);
            let mut xs: Vec<f32> = (0..rows)
                .flat_map(|r| x[r * lda..r * lda + k].to_vec())
                .collect();
            if norm {
                xs = r::rmsnorm(&xs, &gain, rows, k, 1e-6);
            }
            for (z, st) in stored.iter().enumerate() {
                let before = &y0[z * rows * n..(z + 1) * rows * n];
                let mut want = r::matmul(
                    &xs,
                    &st.values,
                    &st.scales,
                    rb.then_some(&bias[..]),
                    rb,
                    accumulate.then_some(before),
                    rows,
                    k,
                    n,
                );
                if let Some(lv) = live {
                    want[lv * n..].copy_from_slice(&before[lv * n..]); // rows past live untouched
                }
                let at = o as usize + z * rows * n;
                assert_close(
                    &format!("matmul {rows}x{k}x{n} norm={norm} block {z} {v:?}"),
                    &act[at..at + rows * n],
                    &want,
                    MATMUL_TOL,
                );
            }
        }
    }
}

#[test]
fn attention_matches_reference() {
    let mut rng = Rng::new(3);
    let Some(rig) = rig(Numeric::F32, true, true) else {
        return;
    };
    // (rows, tq, skv, kvrow, heads, dh, masked, causal): encoder self-attention, decoder
    // self-attention (causal, per-beam keys), cross-attention and the PRM's (shared keys)
    for &(rows, tq, skv, kvrow, heads, dh, masked, causal) in &[
        (
            1usize, 20usize, 20usize, 0usize, 4usize, 16usize, true, false,
        ),
        (5, 3, 3, 3, 4, 16, false, true),
        (5, 2, 20, 0, 8, 16, true, false),
        (64, 1, 20, 0, 1, 16, true, false),
        (3, 3, 7, 0, 2, 64, true, false),
    ] {
        let w = heads * dh;
        let krows = if kvrow == 0 { skv } else { rows * kvrow };
        let q = rng.vec(rows * tq * w);
        let k: Vec<f32> = rng.vec(krows * w).iter().map(|v| v * 2.0).collect();
        let v = rng.vec(krows * w);
        let mask: Vec<f32> = (0..skv)
            .map(|s| if s == 0 || rng.f() > -0.4 { 1.0 } else { 0.0 })
            .collect();
        let mut act = Vec::new();
        let place = |act: &mut Vec<f32>, x: &[f32]| {
            let at = act.len() as u32;
            act.extend_from_slice(x);
            at
        };
        let (qa, ka, va, ma) = (
            place(&mut act, &q),
            place(&mut act, &k),
            place(&mut act, &v),
            place(&mut act, &mask),
        );
        let o = place(&mut act, &vec![0.0; rows * tq * w]);
        let p = Params {
            rows: rows as u32,
            a: qa,
            lda: w as u32,
            b: ka,
            c: va,
            ldk: w as u32,
            o,
            ldo: w as u32,
            heads: heads as u32,
            dh: dh as u32,
            tq: tq as u32,
            skv: skv as u32,
            kvrow: kvrow as u32,
            mask: if masked { ma } else { NONE },
            causal: causal as u32,
            scale: 1.0 / (dh as f32).sqrt(),
            ..Params::default()
        };
        let groups = (rows * tq * heads).div_ceil(64) as u32;
        rig.run(
            Kernel::Attention,
            p,
            [groups, 1, 1],
            &Arenas::new(Numeric::F32),
            &mut act,
            &[0],
        );
        let want = r::attention(
            &q,
            &k,
            &v,
            masked.then_some(&mask[..]),
            rows,
            tq,
            skv,
            kvrow,
            heads,
            dh,
            causal,
        );
        assert_close(
            &format!("attention rows={rows} tq={tq} skv={skv} heads={heads} causal={causal}"),
            &act[o as usize..],
            &want,
            ATTENTION_TOL,
        );
    }
}

#[test]
fn log_softmax_matches_reference() {
    let mut rng = Rng::new(4);
    for sg in [true, false] {
        let Some(rig) = rig(Numeric::F32, true, sg) else {
            return;
        };
        for &(rows, n, cb) in &[
            (1usize, 32usize, 32usize),
            (6, 32, 24),
            (4, 100, 77),
            (2, 300, 256),
        ] {
            let x: Vec<f32> = rng.vec(rows * n).iter().map(|v| v * 8.0).collect();
            let mut act = x.clone();
            act.resize(2 * rows * n, 0.0);
            let p = Params {
                rows: rows as u32,
                n: n as u32,
                a: 0,
                lda: n as u32,
                o: (rows * n) as u32,
                ldo: n as u32,
                cb: cb as u32,
                ..Params::default()
            };
            rig.run(
                Kernel::LogSoftmax,
                p,
                [rows as u32, 1, 1],
                &Arenas::new(Numeric::F32),
                &mut act,
                &[0],
            );
            let want = r::log_softmax(&x, rows, n, cb);
            assert_close(
                &format!("log_softmax {rows}x{n} cb={cb} subgroups={sg}"),
                &act[rows * n..],
                &want,
                LOG_SOFTMAX_TOL,
            );
        }
    }
}

#[test]
fn embed_matches_reference() {
    let mut rng = Rng::new(5);
    for (numeric, f16, sg) in variants() {
        if !sg {
            continue; // no reductions in the embedding kernels
        }
        let Some(rig) = rig(numeric, f16, sg) else {
            return;
        };
        let (h, l, c, d) = (20usize, 3usize, 32usize, 64usize);
        let mut ar = Arenas::new(numeric);
        let table = rng.vec(l * c * d);
        let (tw, ts) = ar.weight(&table, l * c, d, true);
        let pos = rng.vec(h * d);
        let (pw, ps) = ar.weight(&pos, h, d, false);
        let ids: Vec<i32> = (0..h * l)
            .map(|i| (rng.below(c) + (i % l) * c) as i32)
            .collect();
        let mut act = vec![0.0; h * d];
        let p = Params {
            rows: h as u32,
            n: d as u32,
            k: l as u32,
            o: 0,
            ldo: d as u32,
            w0: tw.off,
            s0: tw.scale,
            ss0: tw.stride,
            w1: pw.off,
            s1: pw.scale,
            ss1: pw.stride,
            i0: 0,
            ..Params::default()
        };
        rig.run(Kernel::EmbedEnc, p, [1, h as u32, 1], &ar, &mut act, &ids);
        let want = r::embed_enc(
            &ts.values, &ts.scales, &ps.values, &ps.scales, &ids, h, l, d,
        );
        assert_close(
            &format!("embed_enc {:?}", rig.gpu.variant),
            &act,
            &want,
            EMBED_TOL,
        );

        // decoder tokens: 5 beams (3 live) x 3 tokens, BOS + code embeddings + positions
        let (beams, tq, k) = (5usize, 3usize, l - 1);
        let bos = rng.vec(d);
        let (bw, bs) = ar.weight(&bos, 1, d, false);
        let dpos = rng.vec(l * d);
        let (dw, ds) = ar.weight(&dpos, l, d, false);
        let mut ints = vec![3i32]; // live beams
        let pids: Vec<i32> = (0..beams * k)
            .map(|i| (rng.below(c) + (i % k) * c) as i32)
            .collect();
        ints.extend_from_slice(&pids);
        let mut act = vec![-7.0; beams * tq * d];
        let p = Params {
            rows: (beams * tq) as u32,
            live: 0,
            live_mul: tq as u32,
            n: d as u32,
            k: k as u32,
            ldo: d as u32,
            w0: tw.off,
            s0: tw.scale,
            ss0: tw.stride,
            w1: bw.off,
            s1: bw.scale,
            ss1: bw.stride,
            w2: dw.off,
            s2: dw.scale,
            ss2: dw.stride,
            tq: tq as u32,
            i0: 1,
            ..Params::default()
        };
        let groups = [1, (beams * tq) as u32, 1];
        rig.run(Kernel::EmbedDec, p, groups, &ar, &mut act, &ints);
        let mut want = r::embed_dec(
            &ts.values,
            &ts.scales,
            (&bs.values, &bs.scales),
            (&ds.values, &ds.scales),
            &pids,
            beams,
            tq,
            k,
            d,
        );
        want[3 * tq * d..].fill(-7.0); // beams past the live count are not written
        assert_close(
            &format!("embed_dec {:?}", rig.gpu.variant),
            &act,
            &want,
            EMBED_TOL,
        );

        // PRM queries: node embeddings of 6 nodes (table shared with the codes above)
        let nids: Vec<i32> = (0..6).map(|_| rng.below(l * c) as i32).collect();
        let mut ints = vec![0i32, 6];
        ints.extend_from_slice(&nids);
        let mut act = vec![0.0; 6 * d];
        let p = Params {
            rows: 6,
            live: 1,
            n: d as u32,
            ldo: d as u32,
            w0: tw.off,
            s0: tw.scale,
            ss0: tw.stride,
            i0: 2,
            ..Params::default()
        };
        rig.run(Kernel::EmbedPrm, p, [1, 6, 1], &ar, &mut act, &ints);
        let want = r::embed_prm(&ts.values, &ts.scales, &nids, d);
        assert_close(
            &format!("embed_prm {:?}", rig.gpu.variant),
            &act,
            &want,
            EMBED_TOL,
        );
    }
}

#[test]
fn variants_follow_the_options() {
    let Some(on) = rig(Numeric::F16, true, true) else {
        return;
    };
    let Some(off) = rig(Numeric::F16, false, false) else {
        return;
    };
    assert!(!off.gpu.variant.native_f16 && !off.gpu.variant.subgroups);
    let have = on.gpu.device.features();
    assert_eq!(
        on.gpu.variant.native_f16,
        have.contains(wgpu::Features::SHADER_F16)
    );
    assert_eq!(
        on.gpu.variant.subgroups,
        have.contains(wgpu::Features::SUBGROUP)
    );
    eprintln!(
        "adapter {}: SHADER_F16 {}, SUBGROUP {}",
        on.gpu.info.name, on.gpu.variant.native_f16, on.gpu.variant.subgroups
    );
}

#[test]
fn limits_and_lost_devices_have_their_own_codes() {
    let e = check_limit("max_bind_groups", 2, 1, "test gpu").unwrap_err();
    assert_eq!(e.code(), crate::ErrorCode::Limits);
    assert!(e
        .message()
        .contains("max_bind_groups is 1, the model needs 2"));
    let bundle = Bundle::open(concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny")).unwrap();
    if rig(Numeric::F32, true, true).is_none() {
        return;
    }
    let model = GpuModel::load(&bundle).expect("tiny loads on the GPU");
    let mut s = model.session(&SearchConfig::default()).unwrap();
    let m = bundle.manifest();
    let (h, l, c) = (m.history, m.levels, m.max_codebook());
    s.encode(&vec![0; h * l], &vec![1.0; h]).unwrap();
    let mut out = vec![0.0; 16 * c];
    s.decode(0, &vec![0; 16 * (l - 1)], 1, &mut out).unwrap();
    model.shared.gpu.device.destroy();
    let e = s
        .decode(0, &vec![0; 16 * (l - 1)], 1, &mut out)
        .unwrap_err();
    assert_eq!(e.code(), crate::ErrorCode::DeviceLost, "{e}");
}

/// The search's selection kernels against the CPU search's top-k (`search::topk`), on
/// random keys drawn from a few values (so ties are everywhere: the tie-break by node id
/// decides), with invalid slots, unique node ids in random order. Exact equality: the
/// kernels only compare and copy (and mix with 0.5, exact in binary).
#[test]
fn selection_kernels_match_the_cpu_top_k() {
    use crate::search::topk::{by_cum, by_key, top_k, Scored};
    let Some(rig) = rig(Numeric::F32, true, true) else {
        return;
    };
    let mut rng = Rng::new(21);
    let tie = |rng: &mut Rng| (rng.f() * 8.0).round() / 4.0;
    let ar = Arenas::new(Numeric::F32);
    // the last case is a level with 200,000 children: the radix select is O(slots)
    for &(slots, keep) in &[
        (512usize, 64usize),
        (96, 100),
        (40, 1),
        (2048, 256),
        (200_000, 64),
    ] {
        // select_candidates: slots [0, slots) of keys / nodes / unseen counts -> the pool
        let mut perm: Vec<usize> = (0..slots).collect();
        for i in (1..slots).rev() {
            perm.swap(i, rng.below(i + 1));
        }
        let nodes: Vec<i32> = (0..slots)
            .map(|e| {
                if rng.below(5) == 0 {
                    -1
                } else {
                    (perm[e] * 3 + 1) as i32
                }
            })
            .collect();
        let unseen: Vec<i32> = (0..slots).map(|_| 1 + rng.below(4) as i32).collect();
        let keys: Vec<f32> = (0..slots).map(|_| tie(&mut rng)).collect();
        let (i0, ui) = (4, 4 + slots);
        let (i1, i2, uo) = (ui + slots, ui + slots + keep, ui + slots + 2 * keep);
        let mut ints = vec![7i32; uo + keep];
        ints[i0..i0 + slots].copy_from_slice(&nodes);
        ints[ui..ui + slots].copy_from_slice(&unseen);
        let mut act = keys.clone();
        act.resize(slots + keep, 0.0);
        let p = Params {
            rows: slots as u32,
            n: 32,
            live: 0,
            i0: i0 as u32,
            a: 0,
            keep: keep as u32,
            i1: i1 as u32,
            o: slots as u32,
            i2: i2 as u32,
            u_in: ui as u32,
            u_out: uo as u32,
            count: 1,
            ..Params::default()
        };
        rig.run_ids(
            Kernel::SelectCandidates,
            p,
            [1, 1, 1],
            &ar,
            &mut act,
            &mut ints,
        );
        let mut want: Vec<Scored> = (0..slots)
            .filter(|&e| nodes[e] >= 0)
            .map(|e| Scored {
                node: nodes[e] as u32,
                parent: (e / 32) as u32,
                cum: keys[e],
                key: keys[e],
                unseen: unseen[e] as u32,
            })
            .collect();
        top_k(&mut want, keep, by_cum);
        let what = format!("select_candidates {slots} slots keep {keep}");
        assert_eq!(
            (ints[0], ints[1] as usize),
            (0, want.len()),
            "{what}: counts"
        );
        // the pool is a set (select_beams ranks it): compare in node order
        let mut got: Vec<(u32, f32, u32, u32)> = (0..want.len())
            .map(|r| {
                let (n, par, u) = (ints[i1 + r], ints[i2 + r], ints[uo + r]);
                (n as u32, act[slots + r], par as u32, u as u32)
            })
            .collect();
        got.sort_by_key(|g| g.0);
        let mut exp: Vec<(u32, f32, u32, u32)> = want
            .iter()
            .map(|w| (w.node, w.cum, w.parent, w.unseen))
            .collect();
        exp.sort_by_key(|g| g.0);
        assert_eq!(got, exp, "{what}: the pool");

        // select_beams: the pool -> the top `keep` by key (last level, need 0), and
        // before the last level with the full-feed rule (need = N: more beams in key
        // order until they hold N unseen leaves)
        let m = want.len();
        let scores: Vec<f32> = (0..m).map(|_| tie(&mut rng)).collect();
        for (prm, mix, need) in [
            (false, 0.0f32, 0usize),
            (true, 0.0, 0),
            (true, 0.5, 0),
            (true, 0.5, 3 * keep),
            (false, 0.0, 2 * keep + 1),
        ] {
            let cap = keep.max(need).min(m.max(1));
            let (pn, on, pu) = (4, 4 + m, 4 + m + cap);
            let mut ints = vec![7i32; pu + m];
            ints[1] = m as i32;
            for (r, w) in want.iter().enumerate() {
                ints[pn + r] = w.node as i32;
                ints[pu + r] = w.unseen as i32;
            }
            let mut act: Vec<f32> = want.iter().map(|w| w.cum).collect();
            act.extend_from_slice(&scores);
            act.resize(2 * m + cap, 0.0);
            let p = Params {
                n: 32,
                live: 1,
                i0: pn as u32,
                a: 0,
                b: m as u32,
                prm: prm as u32,
                mix,
                err: 3,
                keep: keep as u32,
                need: need as u32,
                u_in: pu as u32,
                i1: on as u32,
                o: (2 * m) as u32,
                count: 2,
                width: 0,
                ..Params::default()
            };
            let groups = [(m as u32).div_ceil(WG).max(1), 1, 1];
            rig.run_ids(Kernel::SelectBeams, p, groups, &ar, &mut act, &mut ints);
            let mut pool = want.clone();
            for (s, &p) in pool.iter_mut().zip(&scores) {
                s.key = match (prm, mix) {
                    (false, _) => s.cum,
                    (true, 0.0) => p,
                    (true, mix) => (1.0 - mix) * p + mix * s.cum,
                };
            }
            // the CPU search's rule (src/search/mod.rs)
            top_k(&mut pool, keep.max(need), by_key);
            let mut kept = keep.min(pool.len());
            let mut held: usize = pool[..kept].iter().map(|s| s.unseen as usize).sum();
            while held < need && kept < pool.len() {
                held += pool[kept].unseen as usize;
                kept += 1;
            }
            pool.truncate(kept);
            let what = format!("select_beams pool {m} keep {keep} need {need} prm {prm} mix {mix}");
            assert_eq!(
                (ints[2] as usize, ints[3]),
                (pool.len(), 7),
                "{what}: count, error flag"
            );
            for (r, w) in pool.iter().enumerate() {
                let got = (ints[on + r] as u32, act[2 * m + r]);
                assert_eq!(got, (w.node, w.key), "{what}: rank {r}");
            }
        }
    }
}

/// The dispatch counts the README quotes for the small model (2+2 layers): 14 for the
/// encoder (with the memory's k/v for both decoder layers and the PRM), 19 per decoder
/// level, 8 per PRM call, and the search's 3 per level (expand, select_candidates,
/// select_beams): 14 + 3 * (19 + 2 + 8 + 1) = 104 per request, in one submission.
#[test]
fn the_default_bundle_needs_104_dispatches_per_request() {
    let bundle = Bundle::open(concat!(env!("CARGO_MANIFEST_DIR"), "/models/ml1m")).unwrap();
    if rig(Numeric::F32, true, true).is_none() {
        return;
    }
    let model = GpuModel::load(&bundle).expect("ml1m loads on the GPU");
    let s = model.session(&SearchConfig::default()).unwrap();
    let dec: Vec<usize> = s.plan.decoder.iter().map(|l| l.len()).collect();
    assert_eq!(
        (s.plan.encoder.len(), dec, s.plan.prm.len()),
        (14, vec![19, 19, 19], 8)
    );
    assert_eq!((s.plan.select.len(), s.plan.finish.len()), (3, 3));
    let per_request = 14 + (0..3).map(|l| dec_len(&s, l) + 2 + 8 + 1).sum::<usize>();
    assert_eq!(per_request, 104);
}

fn dec_len(s: &GpuSession, level: usize) -> usize {
    s.plan.decoder[level].len()
}

/// The device search flags a non-finite log-probability or PRM score (a norm gain of
/// 3e38, finite so the bundle opens, makes the head's or the PRM's input overflow) and the
/// session reports it as a Backend error naming which, like the CPU search does.
#[test]
fn the_device_search_reports_non_finite_values() {
    let tiny = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny");
    if rig(Numeric::F32, true, true).is_none() {
        return;
    }
    for (file, gain, what) in [
        ("decoder.onnx", "gen.dec_norm.w", "log-probability"),
        ("prm.onnx", "prm.n3.w", "PRM"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(&tiny).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
        }
        let path = dir.path().join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        let idx = crate::bundle::onnx::index(&bytes, file).unwrap();
        let w = idx.initializers.iter().find(|i| i.name == gain).unwrap();
        for v in bytes[w.offset..w.offset + w.len].chunks_exact_mut(4) {
            v.copy_from_slice(&3e38f32.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        let bundle = Bundle::open(dir.path()).expect("finite weights open");
        let m = bundle.manifest();
        let codes = vec![1i64; m.history * m.levels];
        let mask = vec![1.0f32; m.history];
        let seen: Vec<u32> = Vec::new();
        let model = GpuModel::load(&bundle).unwrap();
        let mut s = model.session(&SearchConfig::default()).unwrap();
        let mut out = vec![(0u32, 0.0f32); 10];
        let e = s
            .search_on_device(&codes, &mask, &seen, &mut out)
            .expect_err("an overflowing gain must be reported");
        assert_eq!(e.code(), crate::ErrorCode::Backend, "{e}");
        assert!(
            e.to_string().contains(what) && e.to_string().contains("non-finite"),
            "{gain}: {e}"
        );
    }
}
