//! The stage kernels against the fused CPU engine (log-probs and PRM scores through the
//! [`Scorer`] interface, every shader variant), the search kernels against the CPU
//! search's top-k (`search.rs`), the dispatch count, limits. Runs on whatever adapter wgpu
//! finds (lavapipe in CI). Without an adapter the tests skip with a printed reason on a
//! developer machine and fail under `CI=true`.

use wgpu::util::DeviceExt;

use super::*;
use crate::backend::cpu::fused::FusedModel;
use crate::backend::cpu::kernels::Isa;
use crate::backend::reference::{assert_close, Rng};

/// |gpu - fused| <= atol + rtol * |fused| for log-probs and PRM scores: two f32 engines
/// that sum in different orders.
const STAGE_TOL: (f32, f32) = (2e-4, 1e-4);

/// The weight arenas a search-kernel test binds (the search kernels read none).
struct Arenas {
    wts: Vec<u8>,
    aux: Vec<f32>,
}

impl Arenas {
    fn empty() -> Arenas {
        Arenas {
            wts: Vec::new(),
            aux: vec![1.0],
        }
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
    // the kernels, specialised for the tiny bundle (the search kernels read no weights)
    let bundle = Bundle::open(concat!(env!("CARGO_MANIFEST_DIR"), "/models/tiny")).unwrap();
    let (_, _, weights) = upload(&gpu, &bundle).expect("tiny uploads");
    let arch = bundle.architecture();
    let table = Table::build(&weights, arch).expect("every weight");
    let geometry = Geometry::new(bundle.manifest(), arch);
    let source = shader::source(gpu.variant, &geometry.wgsl(&table));
    let (model_layout, session_layout) = layouts(&gpu.device);
    let pipelines =
        build_pipelines(&gpu, &source, &model_layout, &session_layout).expect("kernels build");
    Some(Rig {
        gpu,
        model_layout,
        session_layout,
        pipelines,
    })
}

impl Rig {
    /// Run one dispatch over `act` and `ints` (both read back in place; the search kernels
    /// write ids).
    fn run_ids(
        &self,
        kernel: Kernel,
        p: Params,
        groups: u32,
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
        let desc = init("desc", &[0u8; 4], wgpu::BufferUsages::STORAGE); // unused here
        let mbg = d.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.model_layout,
            entries: &[
                entry(0, &wts),
                entry(1, &aux),
                entry(2, &trie),
                entry(3, &desc),
            ],
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
            pass.dispatch_workgroups(groups, 1, 1);
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

/// Every shader variant the adapter can run for `numeric`: (SHADER_F16 wanted, SUBGROUP
/// wanted).
fn variants(numeric: Numeric) -> Vec<(bool, bool)> {
    let f16s: &[bool] = if numeric == Numeric::F16 {
        &[true, false]
    } else {
        &[true]
    };
    f16s.iter().flat_map(|&f| [(f, true), (f, false)]).collect()
}

/// The stage kernels give the fused CPU engine's log-probs at every level and its PRM
/// scores, through the [`Scorer`] interface (the decoder over whole prefixes), on bundles
/// that cover each path: f32 with a node-table PRM (tiny), a causal encoder reading an
/// item column, int8 with the path query, f16 with 4 heads and H = 200 (the default
/// bundle's f16 variant), each shader variant. Histories have leading padding (skipped rows) and one is padding only (every
/// row kept).
#[test]
fn stage_kernels_match_the_fused_engine() {
    for dir in [
        "models/tiny",
        "tests/data/causal",
        "tests/data/path",
        "models/ml1m-f16",
    ] {
        let bundle = Bundle::open(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .expect("bundle");
        let m = bundle.manifest().clone();
        let (h, l, c) = (m.history, m.levels, m.max_codebook());
        let cfg = SearchConfig::default();
        let fused = Arc::new(FusedModel::load(&bundle, Isa::detect()).expect("fused"));
        let mut cpu = fused.session(&cfg).expect("fused session");
        let mut rng = Rng::new(0x57A6E);
        for (f16, sg) in variants(m.numeric) {
            if rig(m.numeric, f16, sg).is_none() {
                return;
            }
            let opts = GpuOptions {
                shader_f16: f16,
                subgroups: sg,
                search: false,
                ..GpuOptions::default()
            };
            let model = GpuModel::load_with(&bundle, &opts).expect("loads on the GPU");
            let mut gpu = model.session(&cfg).expect("gpu session");
            let what = format!("{dir} {:?}", model.variant());
            for real in [h.min(7), h, 0] {
                let cols = m.encoder_columns();
                let mut codes = vec![0i64; h * cols];
                let mut mask = vec![0f32; h];
                for r in h - real..h {
                    mask[r] = 1.0;
                    for lv in 0..l {
                        codes[r * cols + lv] = rng.below(m.codebook[lv]) as i64;
                    }
                    if cols > l {
                        codes[r * cols + l] = rng.below(m.num_items) as i64;
                    }
                }
                cpu.encode(&codes, &mask).unwrap();
                gpu.encode(&codes, &mask).unwrap();
                let w = (l - 1).max(1);
                let k = 5.min(cfg.beam_capacity());
                for level in 0..l {
                    let mut prefixes = vec![0i64; cfg.beam_capacity() * w];
                    for b in 0..k {
                        for j in 0..level.min(w) {
                            prefixes[b * w + j] = rng.below(m.codebook[j]) as i64;
                        }
                    }
                    let (mut want, mut got) = (vec![0f32; k * c], vec![0f32; k * c]);
                    cpu.decode(level, &prefixes, k, &mut want).unwrap();
                    gpu.decode(level, &prefixes, k, &mut got).unwrap();
                    // codes past the level's codebook hold NEG - lse: compare the real ones
                    let cb = m.codebook[level];
                    let real_codes = |v: &[f32]| -> Vec<f32> {
                        v.chunks(c).flat_map(|row| row[..cb].to_vec()).collect()
                    };
                    assert_close(
                        &format!("{what}: log-probs, level {level}, {real} real rows"),
                        &real_codes(&got),
                        &real_codes(&want),
                        STAGE_TOL,
                    );
                }
                let nodes: Vec<i64> = (0..cfg.candidates)
                    .map(|_| 1 + rng.below(m.num_nodes - 1) as i64)
                    .collect();
                let (mut want, mut got) = (vec![0f32; nodes.len()], vec![0f32; nodes.len()]);
                cpu.score(&nodes, &mut want).unwrap();
                gpu.score(&nodes, &mut got).unwrap();
                assert_close(
                    &format!("{what}: PRM scores, {real} real rows"),
                    &got,
                    &want,
                    STAGE_TOL,
                );
            }
        }
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

/// What does not fit a stage kernel's workgroup is refused as `limits` naming d_model
/// (the WebGPU default allows 16 KiB: d_model 2048 does not fit); the shipped models fit. Any history length, FF width or codebook width fits: the kernels
/// tile the keys, chunk the FF hidden units and loop over the codes.
#[test]
fn a_model_too_wide_for_workgroup_memory_is_refused() {
    let default = wgpu::Limits::default().max_compute_workgroup_storage_size as u64;
    for dir in ["models/ml1m", "models/ml1m-large"] {
        let bundle =
            Bundle::open(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)).unwrap();
        let g = Geometry::new(bundle.manifest(), bundle.architecture());
        g.check_fits("test gpu", default)
            .expect("the shipped models fit");
        let wide = Geometry { d: 2048, ..g };
        let e = wide.check_fits("test gpu", default).unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::Limits);
        assert!(e.message().contains("d_model 2048"), "{e}");
    }
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
    s.encode(&vec![0; h * m.encoder_columns()], &vec![1.0; h])
        .unwrap();
    let mut out = vec![0.0; 16 * c];
    s.decode(0, &vec![0; 16 * (l - 1)], 1, &mut out).unwrap();
    model.shared.gpu.device.destroy();
    let e = s
        .decode(0, &vec![0; 16 * (l - 1)], 1, &mut out)
        .unwrap_err();
    assert_eq!(e.code(), crate::ErrorCode::DeviceLost, "{e}");
}

mod search;
