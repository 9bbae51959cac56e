//! A GPU session: its buffers, the request path (inputs, one submission, read-back) and
//! its [`Scorer`] implementation.

use super::*;
use crate::backend::checks;

/// Per-session GPU buffers, bind group and the static dispatch lists.
pub struct GpuSession {
    pub(super) s: Arc<Shared>,
    pub(super) plan: Plan,
    pub(super) act: wgpu::Buffer,
    pub(super) ints: wgpu::Buffer,
    pub(super) readback: wgpu::Buffer,
    pub(super) _params: wgpu::Buffer,
    pub(super) bg: wgpu::BindGroup,
    pub(super) ints_host: Vec<i32>,
    pub(super) encoder_pending: bool,
    pub(super) encoded: bool,
    pub(super) beams: usize,
    pub(super) candidates: usize,
    pub(super) results: usize,
    pub(super) prm: bool,
    pub(super) rb_host: Vec<u32>, // the last read-back, as words
    /// Result of the last read-back mapping: 0 pending, 1 mapped, 2 failed.
    pub(super) mapped: Arc<std::sync::atomic::AtomicU8>,
}

impl GpuSession {
    pub(super) fn new(s: Arc<Shared>, cfg: &SearchConfig) -> Result<GpuSession> {
        let plan = Plan::build(&s, cfg);
        let gpu = &s.gpu;
        let act_bytes = (plan.act_len * 4) as u64;
        check_buffer(gpu, "activation arena", act_bytes)?;
        check_buffer(gpu, "id buffer", (plan.ints_len * 4) as u64)?;
        let max_groups = plan
            .encoder
            .iter()
            .chain(&plan.decoder)
            .chain(&plan.finish)
            .chain([&plan.prm])
            .map(|st| st.groups)
            .max()
            .unwrap_or(1);
        check_limit(
            "max_compute_workgroups_per_dimension",
            max_groups as u64,
            gpu.limits.max_compute_workgroups_per_dimension as u64,
            &gpu.info.name,
        )?;
        let device = &gpu.device;
        let act = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("activations"),
            size: act_bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let ints = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ids"),
            size: (plan.ints_len * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_DST
                | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let m = &s.manifest;
        // the step-by-step path reads back log-probs or scores, the search N results
        let rb_len = (cfg.beam_capacity() * m.max_codebook())
            .max(cfg.candidates)
            .max(2 + 2 * cfg.results);
        let readback = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size: (rb_len * 4) as u64,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("params"),
            size: plan.params.len().max(1) as u64 * PARAMS_STRIDE,
            usage: wgpu::BufferUsages::UNIFORM,
            mapped_at_creation: true,
        });
        {
            let mut map = params.slice(..).get_mapped_range_mut().map_err(map_err)?;
            for (i, p) in plan.params.iter().enumerate() {
                let at = i * PARAMS_STRIDE as usize;
                let b = bytemuck::bytes_of(p);
                map.slice(at..at + b.len()).copy_from_slice(b);
            }
        }
        params.unmap();
        let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("session"),
            layout: &s.session_layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: act.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: ints.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &params,
                        offset: 0,
                        size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
                    }),
                },
            ],
        });
        gpu.check()?;
        let ints_host = vec![0i32; plan.ints_len];
        Ok(GpuSession {
            s: s.clone(),
            plan,
            act,
            ints,
            readback,
            _params: params,
            bg,
            ints_host,
            encoder_pending: false,
            encoded: false,
            beams: cfg.beam_capacity(),
            candidates: cfg.candidates,
            results: cfg.results,
            prm: cfg.prm,
            rb_host: vec![0u32; rb_len],
            mapped: Arc::new(std::sync::atomic::AtomicU8::new(0)),
        })
    }

    pub(super) fn record<'a>(
        &self,
        pass: &mut wgpu::ComputePass<'_>,
        steps: impl IntoIterator<Item = &'a Step>,
    ) {
        pass.set_bind_group(0, &self.s.model_bg, &[]);
        for st in steps {
            pass.set_pipeline(&self.s.pipelines[st.kernel as usize]);
            pass.set_bind_group(1, &self.bg, &[st.params * PARAMS_STRIDE as u32]);
            pass.dispatch_workgroups(st.groups, 1, 1);
        }
    }

    /// A command encoder holding one compute pass that `f` records into.
    pub(super) fn pass(&self, f: impl FnOnce(&mut wgpu::ComputePass<'_>)) -> wgpu::CommandEncoder {
        let mut enc = self
            .s
            .gpu
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            f(&mut pass);
        }
        enc
    }

    /// Write ints[range] to the GPU.
    pub(super) fn upload_ints(&self, from: usize, to: usize) {
        self.s.gpu.queue.write_buffer(
            &self.ints,
            (from * 4) as u64,
            bytemuck::cast_slice(&self.ints_host[from..to]),
        );
    }

    /// Record `steps` (after the pending encoder, if any), copy `floats` values from act
    /// offset `src` to the read-back buffer, submit, wait, and copy them into `out`.
    pub(super) fn run(
        &mut self,
        level: Option<usize>,
        src: u32,
        floats: usize,
        out: &mut [f32],
    ) -> Result<()> {
        self.s.gpu.check()?;
        let mut enc = self.pass(|pass| {
            if self.encoder_pending {
                self.record(pass, &self.plan.encoder);
            }
            let step = match level {
                Some(l) => &self.plan.decoder_cpu[l],
                None => &self.plan.prm,
            };
            self.record(pass, [step]);
        });
        let bytes = (floats * 4) as u64;
        enc.copy_buffer_to_buffer(&self.act, src as u64 * 4, &self.readback, 0, bytes);
        self.encoder_pending = false;
        self.submit_and_read(enc, floats)?;
        for (o, &w) in out[..floats].iter_mut().zip(&self.rb_host) {
            *o = f32::from_bits(w);
        }
        Ok(())
    }

    /// Submit `enc` (which ends with copies into the read-back buffer), wait for it, and
    /// copy the first `words` words of the read-back buffer into `rb_host`.
    pub(super) fn submit_and_read(
        &mut self,
        enc: wgpu::CommandEncoder,
        words: usize,
    ) -> Result<()> {
        let gpu = &self.s.gpu;
        let submission = gpu.queue.submit(Some(enc.finish()));
        let bytes = (words * 4) as u64;
        let slice = self.readback.slice(..bytes);
        use std::sync::atomic::Ordering;
        self.mapped.store(0, Ordering::Release);
        let flag = self.mapped.clone();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            flag.store(if r.is_ok() { 1 } else { 2 }, Ordering::Release);
        });
        // Wait for this submission. With several sessions on one device, another thread's
        // poll can be the one that runs our map callback, a moment after our own poll
        // returns: so wait on the flag, polling again until it is set.
        let start = std::time::Instant::now();
        loop {
            gpu.device
                .poll(wgpu::PollType::Wait {
                    submission_index: Some(submission.clone()),
                    timeout: Some(GPU_TIMEOUT),
                })
                .map_err(|e| err!(DeviceLost, "waiting for the GPU failed: {e}"))?;
            match self.mapped.load(Ordering::Acquire) {
                1 => break,
                0 if start.elapsed() < GPU_TIMEOUT => std::thread::yield_now(),
                _ => {
                    gpu.check()?;
                    return Err(err!(DeviceLost, "the GPU results could not be read back"));
                }
            }
        }
        if let Err(e) = gpu.check() {
            self.readback.unmap();
            return Err(e);
        }
        {
            let view = slice.get_mapped_range().map_err(map_err)?;
            self.rb_host[..words].copy_from_slice(bytemuck::cast_slice(&view[..]));
        }
        self.readback.unmap();
        Ok(())
    }

    /// Whether requests run [`GpuSession::search_on_device`] (the model's option).
    pub fn searches_on_device(&self) -> bool {
        self.s.search
    }

    /// The whole request on the device: the encoder, then per level the decoder, the trie
    /// masking and top-K+ (`expand`, `select_candidates`), the PRM, and the top-K' (or
    /// top-N at the last level, `select_beams`), recorded into one compute pass and one
    /// submission; the read-back is the result count, the error flag and N (node, key)
    /// pairs: 8 + 8 N bytes.
    pub fn search_on_device(
        &mut self,
        codes: &[i64],
        mask: &[f32],
        seen_leaves: &[u32],
        out: &mut [(u32, f32)],
    ) -> Result<usize> {
        self.encode(codes, mask)?;
        let n = self.results;
        if out.len() < n {
            return Err(err!(
                Capacity,
                "the result buffer holds {}, the session returns up to {n}",
                out.len()
            ));
        }
        let plan = &self.plan;
        // counts (1 live beam: the root), the root beam, the seen items
        self.ints_host[..4].copy_from_slice(&[1, 0, 0, 0]);
        self.upload_ints(0, 4);
        let at = plan.beam_node as usize;
        self.ints_host[at] = 0;
        self.upload_ints(at, at + 1);
        let queue = &self.s.gpu.queue;
        queue.write_buffer(&self.act, plan.beam_cum as u64 * 4, &0f32.to_le_bytes());
        let cap = seen_capacity(self.s.trie.num_items);
        if seen_leaves.len() > cap {
            return Err(err!(
                Capacity,
                "{} distinct history items, the session holds {cap}",
                seen_leaves.len()
            ));
        }
        let at = plan.seen as usize;
        self.ints_host[at] = seen_leaves.len() as i32;
        for (dst, &leaf) in self.ints_host[at + 1..].iter_mut().zip(seen_leaves) {
            *dst = leaf as i32;
        }
        self.upload_ints(at, at + 1 + seen_leaves.len());
        self.s.gpu.check()?;
        let mut enc = self.pass(|pass| {
            self.record(pass, &plan.encoder);
            for level in 0..plan.decoder.len() {
                let prm = if self.prm { Some(&plan.prm) } else { None };
                let steps = [&plan.decoder[level], &plan.select[level]]
                    .into_iter()
                    .chain(prm)
                    .chain([&plan.finish[level]]);
                self.record(pass, steps);
            }
        });
        // read-back: [result count, error flag, N nodes, N keys]
        enc.copy_buffer_to_buffer(&self.ints, RESULTS as u64 * 4, &self.readback, 0, 8);
        let nb = (n * 4) as u64;
        enc.copy_buffer_to_buffer(&self.ints, plan.res_node as u64 * 4, &self.readback, 8, nb);
        enc.copy_buffer_to_buffer(
            &self.act,
            plan.res_key as u64 * 4,
            &self.readback,
            8 + nb,
            nb,
        );
        self.encoder_pending = false;
        self.submit_and_read(enc, 2 + 2 * n)?;
        let (count, flag) = (self.rb_host[0] as usize, self.rb_host[1]);
        match flag {
            0 => {}
            1 => {
                return Err(err!(
                    Backend,
                    "the decoder gave a non-finite log-probability on the GPU: the model's weights or the backend are broken"
                ))
            }
            _ => {
                return Err(err!(
                    Backend,
                    "the PRM gave a non-finite score on the GPU: the model's weights or the backend are broken"
                ))
            }
        }
        if count > n {
            return Err(err!(
                Backend,
                "the GPU search returned {count} results, expected at most {n}"
            ));
        }
        for (i, o) in out[..count].iter_mut().enumerate() {
            *o = (self.rb_host[2 + i], f32::from_bits(self.rb_host[2 + n + i]));
        }
        Ok(count)
    }
}

impl Scorer for GpuSession {
    fn encode(&mut self, codes: &[i64], mask: &[f32]) -> Result<()> {
        let m = &self.s.manifest;
        let (h, cols, c) = (m.history, m.encoder_columns(), m.max_codebook());
        checks::encode(m, codes, mask)?;
        let at = self.plan.codes as usize;
        // pre-offset rows of gen.enc_code_emb: column j is row j * C + code (an item
        // column: L * C + item)
        for (i, &code) in codes.iter().enumerate() {
            self.ints_host[at + i] = (code as usize + (i % cols) * c) as i32;
        }
        self.upload_ints(at, at + h * cols);
        // the first real row: the kernels skip the leading padding rows (every attention
        // masks them); a history of padding only keeps every row, as the graphs do
        let from = mask.iter().position(|&v| v != 0.0).unwrap_or(0);
        self.ints_host[MEM_FROM as usize] = from as i32;
        self.upload_ints(MEM_FROM as usize, MEM_FROM as usize + 1);
        self.s.gpu.queue.write_buffer(
            &self.act,
            self.plan.mask as u64 * 4,
            bytemuck::cast_slice(mask),
        );
        self.encoder_pending = true;
        self.encoded = true;
        Ok(())
    }

    fn decode(&mut self, level: usize, prefixes: &[i64], k: usize, out: &mut [f32]) -> Result<()> {
        if !self.encoded {
            return Err(err!(Backend, "decode called before encode"));
        }
        let m = &self.s.manifest;
        checks::decode(m, self.beams, level, prefixes, k, out)?;
        let (l, c) = (m.levels, m.max_codebook());
        let w = (l - 1).max(1);
        let at = self.plan.prefix[level % 2] as usize;
        for i in 0..k {
            for j in 0..w {
                self.ints_host[at + i * w + j] = (prefixes[i * w + j] as usize + j * c) as i32;
            }
        }
        self.ints_host[LIVE_BEAMS as usize] = k as i32;
        self.upload_ints(0, 1);
        self.upload_ints(at, at + k * w);
        self.run(Some(level), self.plan.logp, k * c, out)
    }

    fn score(&mut self, nodes: &[i64], out: &mut [f32]) -> Result<()> {
        if !self.encoded {
            return Err(err!(Backend, "score called before encode"));
        }
        checks::score(&self.s.manifest, self.candidates, nodes, out)?;
        let n = nodes.len();
        let at = self.plan.nodes as usize;
        for (i, &node) in nodes.iter().enumerate() {
            self.ints_host[at + i] = node as i32;
        }
        self.ints_host[LIVE_NODES as usize] = n as i32;
        self.upload_ints(1, 2);
        self.upload_ints(at, at + n);
        self.run(None, self.plan.scores, n, out)
    }
}

impl std::fmt::Debug for GpuSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuSession")
            .field("beams", &self.beams)
            .field("candidates", &self.candidates)
            .field("dispatches", &self.plan.dispatches(self.prm))
            .finish()
    }
}
