//! The adapter: picking one, opening the device, its limits as errors, the pipelines.

use super::*;

/// One compute pipeline per [`Kernel`], indexed by `Kernel as usize`.
pub(super) type Pipelines = Vec<wgpu::ComputePipeline>;

/// The device, its queue and what went wrong on it.
pub(super) struct Gpu {
    pub(super) device: wgpu::Device,
    pub(super) queue: wgpu::Queue,
    pub(super) info: wgpu::AdapterInfo,
    pub(super) variant: Variant,
    pub(super) limits: wgpu::Limits,
    /// Set by the device-lost callback.
    pub(super) lost: Arc<Mutex<Option<String>>>,
    /// Set by the uncaptured-error handler (validation, out of memory).
    pub(super) error: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    pub(super) fn check(&self) -> Result<()> {
        if let Some(why) = self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(err!(DeviceLost, "the GPU device was lost: {why}"));
        }
        if let Some(e) = self.error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(err!(Backend, "the GPU reported an error: {e}"));
        }
        Ok(())
    }
}

/// Pick an adapter: discrete > integrated > virtual > software, as allowed by `opts`.
pub(super) fn open(numeric: Numeric, opts: &GpuOptions) -> Result<Gpu> {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor {
        backends: wgpu::Backends::PRIMARY,
        ..wgpu::InstanceDescriptor::new_without_display_handle()
    });
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
    let rank = |t: wgpu::DeviceType| match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    };
    let found: Vec<String> = adapters
        .iter()
        .map(|a| {
            let i = a.get_info();
            format!("{} ({:?}, {:?})", i.name, i.device_type, i.backend)
        })
        .collect();
    let adapter = adapters
        .into_iter()
        .filter(|a| opts.allow_software || a.get_info().device_type != wgpu::DeviceType::Cpu)
        .min_by_key(|a| rank(a.get_info().device_type))
        .ok_or_else(|| {
            if found.is_empty() {
                err!(
                    BackendUnavailable,
                    "no GPU adapter found (Vulkan, Metal or DX12); on Linux install a Vulkan driver, e.g. Debian's mesa-vulkan-drivers"
                )
            } else {
                err!(
                    BackendUnavailable,
                    "no hardware GPU adapter found, only software ones: {}",
                    found.join(", ")
                )
            }
        })?;
    let info = adapter.get_info();
    let have = adapter.features();
    let native_f16 =
        opts.shader_f16 && numeric == Numeric::F16 && have.contains(wgpu::Features::SHADER_F16);
    let subgroups = opts.subgroups && have.contains(wgpu::Features::SUBGROUP);
    let mut features = wgpu::Features::empty();
    if native_f16 {
        features |= wgpu::Features::SHADER_F16;
    }
    if subgroups {
        features |= wgpu::Features::SUBGROUP;
    }
    let limits = adapter.limits();
    check_limit(
        "max_bind_groups",
        2,
        limits.max_bind_groups as u64,
        &info.name,
    )?;
    check_limit(
        "max_storage_buffers_per_shader_stage",
        6,
        limits.max_storage_buffers_per_shader_stage as u64,
        &info.name,
    )?;
    check_limit(
        "max_compute_workgroup_size_x",
        256,
        limits.max_compute_workgroup_size_x as u64,
        &info.name,
    )?;
    check_limit(
        "max_compute_invocations_per_workgroup",
        256,
        limits.max_compute_invocations_per_workgroup as u64,
        &info.name,
    )?;
    check_limit(
        "max_dynamic_uniform_buffers_per_pipeline_layout",
        1,
        limits.max_dynamic_uniform_buffers_per_pipeline_layout as u64,
        &info.name,
    )?;
    if limits.min_uniform_buffer_offset_alignment as u64 > PARAMS_STRIDE {
        return Err(err!(
            Limits,
            "GPU {}: min_uniform_buffer_offset_alignment is {}, the kernels need at most {PARAMS_STRIDE}",
            info.name,
            limits.min_uniform_buffer_offset_alignment
        ));
    }
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        label: Some("promise-rt"),
        required_features: features,
        required_limits: limits.clone(),
        ..Default::default()
    }))
    .map_err(|e| {
        err!(
            BackendUnavailable,
            "GPU {} refused a device: {e}",
            info.name
        )
    })?;
    let lost = Arc::new(Mutex::new(None));
    let l2 = lost.clone();
    device.set_device_lost_callback(move |reason, msg| {
        *l2.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{reason:?}: {msg}"));
    });
    let error = Arc::new(Mutex::new(None));
    let e2 = error.clone();
    device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
        *e2.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }));
    Ok(Gpu {
        device,
        queue,
        info,
        variant: Variant {
            numeric,
            native_f16,
            subgroups,
        },
        limits,
        lost,
        error,
    })
}

pub(super) fn map_err(e: impl std::fmt::Display) -> crate::Error {
    err!(Backend, "a GPU buffer could not be mapped: {e}")
}

pub(super) fn check_limit(name: &str, need: u64, have: u64, gpu: &str) -> Result<()> {
    if have < need {
        return Err(err!(
            Limits,
            "GPU {gpu}: {name} is {have}, the model needs {need}"
        ));
    }
    Ok(())
}

pub(super) fn check_buffer(gpu: &Gpu, what: &str, bytes: u64) -> Result<()> {
    let l = &gpu.limits;
    let max = l.max_storage_buffer_binding_size.min(l.max_buffer_size);
    if bytes > max {
        return Err(err!(
            Limits,
            "GPU {}: the {what} needs a {bytes}-byte storage buffer, the adapter allows {max}",
            gpu.info.name
        ));
    }
    Ok(())
}

/// The two bind group layouts every kernel shares: group 0 the model (`wts`, `aux`, the
/// trie, the weight descriptors), group 1 the session's activations, ids and dynamic
/// parameter block.
pub(super) fn layouts(device: &wgpu::Device) -> (wgpu::BindGroupLayout, wgpu::BindGroupLayout) {
    let storage = |binding, read_only| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    };
    let model_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("model"),
        entries: &[
            storage(0, true),
            storage(1, true),
            storage(2, true),
            storage(3, true),
        ],
    });
    let session_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("session"),
        entries: &[
            storage(0, false),
            storage(1, false),
            wgpu::BindGroupLayoutEntry {
                binding: 2,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: true,
                    min_binding_size: wgpu::BufferSize::new(std::mem::size_of::<Params>() as u64),
                },
                count: None,
            },
        ],
    });
    (model_layout, session_layout)
}

pub(super) fn build_pipelines(
    gpu: &Gpu,
    source: &str,
    model_layout: &wgpu::BindGroupLayout,
    session_layout: &wgpu::BindGroupLayout,
) -> Result<Pipelines> {
    let device = &gpu.device;
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("promise kernels"),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("promise"),
        bind_group_layouts: &[Some(model_layout), Some(session_layout)],
        immediate_size: 0,
    });
    let out: Pipelines = Kernel::ALL
        .iter()
        .map(|k| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.entry()),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(k.entry()),
                compilation_options: Default::default(),
                cache: None,
            })
        })
        .collect();
    if let Some(e) = pollster::block_on(scope.pop()) {
        return Err(err!(
            Backend,
            "the GPU kernels failed to build for {:?} on {}: {e}",
            gpu.variant,
            gpu.info.name
        ));
    }
    gpu.check()?;
    Ok(out)
}
