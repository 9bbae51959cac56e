//! Uploads at load: the weights of the three graphs into the two arenas, the catalog's
//! trie into its buffer.

use super::*;

/// A weight in the arenas: first element, and where its scales are (stride 0 and the
/// constant 1.0 at aux[0] for unscaled formats).
#[derive(Clone, Copy, Debug)]
pub(super) struct W {
    pub(super) off: u32,
    pub(super) scale: u32,
    pub(super) stride: u32,
}

/// A rank-1 f32 tensor in `aux`.
#[derive(Clone, Copy, Debug)]
pub(super) struct V(pub(super) u32);

/// Where every weight went, by its name in the bundle's graphs.
pub(super) struct Weights {
    pub(super) w: HashMap<String, (W, Vec<usize>)>,
    pub(super) v: HashMap<String, (V, usize)>,
}

impl Weights {
    /// Where the matrix `w` went, checked against the architecture's shape.
    pub(super) fn w(&self, w: &Weight) -> Result<W> {
        match self.w.get(&w.name) {
            Some((x, d)) if *d == w.shape => Ok(*x),
            Some((_, d)) => Err(w.not_as_checked(Some(d))),
            None => Err(w.not_as_checked(None)),
        }
    }
    /// Where the vector `w` (a gain or bias, stored as f32) went.
    pub(super) fn v(&self, w: &Weight) -> Result<V> {
        match self.v.get(&w.name) {
            Some((x, n)) if *n == w.len() => Ok(*x),
            Some((_, n)) => Err(w.not_as_checked(Some(&[*n]))),
            None => Err(w.not_as_checked(None)),
        }
    }
}

/// Lay out every initializer of the three graphs in the two arenas and copy the bytes
/// from the mapped files into buffers mapped at creation.
pub(super) fn upload(gpu: &Gpu, bundle: &Bundle) -> Result<(wgpu::Buffer, wgpu::Buffer, Weights)> {
    let numeric = bundle.manifest().numeric;
    let want = match numeric {
        Numeric::F32 => ElemType::F32,
        Numeric::F16 => ElemType::F16,
        Numeric::Int8 => ElemType::I8,
    };
    let eb = shader::elem_bytes(numeric);
    let graphs = [bundle.encoder(), bundle.decoder(), bundle.prm()];
    // pass 1: offsets
    let mut wts_bytes = 0usize; // arena of rank >= 2 weights
    let mut aux_len = 1usize; // f32 values; aux[0] = 1.0
    struct Place<'a> {
        init: &'a Initializer,
        graph: usize,
        to_aux: bool,
        at: usize, // byte offset (wts) or f32 index (aux)
    }
    let mut places: Vec<Place> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    for (gi, g) in graphs.iter().enumerate() {
        for init in &g.index.initializers {
            if !seen.insert(&init.name) {
                continue; // the same weight in two graphs: one copy
            }
            if !init.raw {
                return Err(err!(
                    Graph,
                    "weight {:?} is not stored as raw_data; the GPU backend reads raw bytes",
                    init.name
                ));
            }
            let rank = init.dims.len();
            let to_aux = init.elem == ElemType::F32 && (rank <= 1 || init.name.ends_with(".scale"));
            if to_aux {
                places.push(Place {
                    init,
                    graph: gi,
                    to_aux,
                    at: aux_len,
                });
                aux_len += init.len / 4;
            } else {
                if init.elem != want {
                    return Err(err!(
                        Graph,
                        "weight {:?} is {:?}, the manifest's numeric {:?} means {want:?}",
                        init.name,
                        init.elem,
                        numeric.as_str()
                    ));
                }
                places.push(Place {
                    init,
                    graph: gi,
                    to_aux,
                    at: wts_bytes,
                });
                wts_bytes += init.len.div_ceil(4) * 4;
            }
        }
    }
    let wts_size = (wts_bytes.max(4)) as u64;
    let aux_size = (aux_len * 4) as u64;
    check_buffer(gpu, "weights", wts_size)?;
    check_buffer(gpu, "norm gains, biases and scales", aux_size)?;
    let make = |label, size| {
        gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: true,
        })
    };
    let wts = make("weights", wts_size);
    let aux = make("aux", aux_size);
    let mut weights = Weights {
        w: HashMap::new(),
        v: HashMap::new(),
    };
    {
        let mut wmap = wts.slice(..).get_mapped_range_mut().map_err(map_err)?;
        let mut amap = aux.slice(..).get_mapped_range_mut().map_err(map_err)?;
        amap.slice(..4).copy_from_slice(&1.0f32.to_le_bytes());
        for p in &places {
            let bytes = &graphs[p.graph].bytes[p.init.offset..p.init.offset + p.init.len];
            let dims: Vec<usize> = p.init.dims.iter().map(|&d| d as usize).collect();
            if p.to_aux {
                amap.slice(p.at * 4..p.at * 4 + bytes.len())
                    .copy_from_slice(bytes);
                weights
                    .v
                    .insert(p.init.name.clone(), (V(p.at as u32), p.init.len / 4));
            } else {
                wmap.slice(p.at..p.at + bytes.len()).copy_from_slice(bytes);
                weights.w.insert(
                    p.init.name.clone(),
                    (
                        W {
                            off: (p.at / eb) as u32,
                            scale: 0,
                            stride: 0,
                        },
                        dims,
                    ),
                );
            }
        }
    }
    wts.unmap();
    aux.unmap();
    // int8: attach each weight's scales (checked against the weight's shape)
    let names: Vec<String> = weights.w.keys().cloned().collect();
    for name in names {
        let sname = format!("{name}.scale");
        let Some(&(V(at), len)) = weights.v.get(&sname) else {
            if numeric == Numeric::Int8 {
                return Err(err!(Graph, "int8 weight {name:?} has no {sname:?}"));
            }
            continue;
        };
        let entry = weights.w.get_mut(&name).expect("listed above");
        let dims = &entry.1;
        let cols = *dims.last().unwrap_or(&1);
        let rows = if dims.len() >= 2 {
            dims[dims.len() - 2]
        } else {
            1
        };
        let per_col = len * rows == dims.iter().product::<usize>();
        let per_row = dims.len() == 2 && len == rows;
        if !(per_col || per_row) || cols == 0 {
            return Err(err!(
                Graph,
                "scale {sname:?} has {len} values, expected one per column or per row of {dims:?}"
            ));
        }
        entry.0.scale = at;
        entry.0.stride = 1;
    }
    Ok((wts, aux, weights))
}

/// Where the catalog's trie is in the `trie` buffer (u32 words): first_child
/// [nodes + 1] at 0, node_code [nodes] at `code`.
#[derive(Clone, Copy, Debug)]
pub(super) struct TrieLayout {
    pub(super) code: u32,
    pub(super) num_items: usize,
}

/// The catalog's trie for the search kernels, built from the mapped catalog (37 KiB for
/// ML-1M), uploaded through a buffer mapped at creation.
pub(super) fn upload_trie(gpu: &Gpu, catalog: &Catalog) -> Result<(wgpu::Buffer, TrieLayout)> {
    let nodes = catalog.num_nodes() as u32;
    let layout = TrieLayout {
        code: nodes + 1,
        num_items: catalog.num_items(),
    };
    let mut out = vec![0u32; 2 * nodes as usize + 1]; // transient: the catalog is read in place elsewhere
    for n in 0..nodes {
        out[n as usize] = catalog.children(n).start;
        out[(layout.code + n) as usize] = catalog.node_code(n) as u32;
    }
    out[nodes as usize] = catalog.children(nodes - 1).end;
    let buf = upload_words(gpu, "trie", &out)?;
    Ok((buf, layout))
}

/// A read-only storage buffer holding `words` (the trie, the weight descriptors), uploaded
/// through a buffer mapped at creation.
pub(super) fn upload_words(gpu: &Gpu, what: &str, words: &[u32]) -> Result<wgpu::Buffer> {
    let size = (words.len().max(1) * 4) as u64;
    check_buffer(gpu, what, size)?;
    let buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(what),
        size,
        usage: wgpu::BufferUsages::STORAGE,
        mapped_at_creation: true,
    });
    {
        let mut map = buf.slice(..).get_mapped_range_mut().map_err(map_err)?;
        map.slice(..words.len() * 4)
            .copy_from_slice(bytemuck::cast_slice(words));
    }
    buf.unmap();
    Ok(buf)
}
