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

mod search;
