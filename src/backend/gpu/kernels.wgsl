// promise-rt GPU kernels: the encoder, decoder and PRM of models/train/promise_train/model.py as stage
// kernels, and the search on the device.
//
// One workgroup runs a whole stage for one token: an encoder layer for one history row, the
// decoder's step for one beam (every layer, the head, the log-softmax and the trie
// expansion of that beam), the whole PRM for one candidate. Its activations live in
// workgroup memory (`sm`); what other workgroups or later stages read goes to the
// activation arena (`act`): the encoder's residual stream and q/k/v, the memory's keys
// and values, each beam's key/value cache, the log-probs, the search's slots. A request is
// `1 + encoder layers` dispatches for the encoder and 4 per level (decoder step,
// top-K+, PRM, top-K'): 15 for the default bundle.
//
// Weights stay in the bundle's storage format in one arena (`wts`): f32, f16 or int8,
// dequantized here with f32 accumulation. int8 carries one f32 scale per output column
// (matmul weights, position tables) or per row (gathered embedding tables), kept in `aux`
// with the rank-1 weights (norm gains, biases). A descriptor (offset, scale offset, scale
// stride) addresses each matrix, a single aux offset each vector; f32/f16 matrices point
// their scale at a constant 1.0 with stride 0. The descriptors of every weight sit in
// `desc`, in the order the `G_*`, `E_*` and `D_*` constants give (built by
// src/backend/gpu/layout.rs, which also writes those constants).
//
// Lines starting with `//!` are replaced by the host (src/backend/gpu/shader.rs): the
// model's dimensions and descriptor layout, the weight format, SHADER_F16 / SUBGROUP.

//!ENABLES

const NONE: u32 = 0xffffffffu;
const NEG: f32 = -1e9;
const WG: u32 = 64u;
const EPS: f32 = 1e-6;
// search::LOGP_FLOOR: a log-probability below it counts as it, on every engine
const LOGP_FLOOR: f32 = -80.0;

//!MODEL

// ints slots shared with the host (plan.rs)
const LIVE_BEAMS: u32 = 0u;
const LIVE_NODES: u32 = 1u;
const MEM_FROM: u32 = 4u;

struct Params {
    rows: u32,     // select_candidates: slots
    live: u32,     // index into `ints` of the live count
    n: u32,        // the codebook width C (slots per beam)
    keep: u32,     // how many to keep (K+, K' or N)
    a: u32,        // act offset: slot keys (select_candidates), pool cums (select_beams)
    b: u32,        // act offset: PRM scores (select_beams)
    o: u32,        // act offset of the kept keys / cums
    i0: u32,       // ints offset: slot nodes / pool nodes
    i1: u32,       // ints offset: kept nodes
    i2: u32,       // ints offset: pool parents
    count: u32,    // ints offset where a kept count is written
    err: u32,      // ints offset of the request's error flag
    seen: u32,     // ints offset of the request's seen-leaf list (count, then sorted leaves)
    t_code: u32,   // trie offset of node_code
    level: u32,    // the search level (the decoder's last token)
    width: u32,    // prefix codes per beam (L - 1); 0 at the last level of select_beams
    prm: u32,      // 1 = rank by the PRM score mixed with the cumulative log-prob
    mix: f32,      // weight of the cumulative log-prob in the key
    u_in: u32,     // ints offset of unseen-leaf counts read
    u_out: u32,    // ints offset of unseen-leaf counts written
    descend: u32,  // dec_step: levels from the children to the leaves
    need: u32,     // select_beams: N before the last level (the full-feed rule), else 0
    x0: u32,       // ints offset of the prefixes read (select_beams: the parents')
    g0: u32,       // ints offset of the prefixes written (select_beams)
    parent: u32,   // ints offset of each beam's parent beam (select_beams writes, dec_step reads)
    // the stage kernels
    layer: u32,    // enc_layer: which layer
    search: u32,   // dec_step: 1 = device search (cache from the parent, expand), 0 = whole prefix
    cb: u32,       // dec_step: codes >= cb get NEG (the level's codebook)
    codes: u32,    // ints offset of the history's codes [H, L] (offset by level * C)
    mask: u32,     // act offset of the history's mask [H] (1 = real)
    ex: u32,       // act offset of the encoder's residual stream [H, D]
    qkv: u32,      // act offset of the encoder's q/k/v, two sets of [H, 3 HD]
    cross: u32,    // act offset of the memory's keys and values per decoder layer
    pkv: u32,      // act offset of the memory's keys and values for the PRM
    cache: u32,    // act offset of the decoder's key/value caches, two sets
    cache_set: u32,// floats per cache set (beams x BEAM_CACHE)
    logp: u32,     // act offset of the log-probs [beams, C]
    cum: u32,      // act offset of the beams' cumulative log-probs
    beam: u32,     // ints offset of the beams' nodes
    nodes: u32,    // ints offset of the PRM's candidate nodes
    scores: u32,   // act offset of the PRM's scores
}

//!WTS_DECL
@group(0) @binding(1) var<storage, read> aux: array<f32>;
@group(0) @binding(2) var<storage, read> trie: array<u32>;
@group(0) @binding(3) var<storage, read> desc: array<u32>;
@group(1) @binding(0) var<storage, read_write> act: array<f32>;
@group(1) @binding(1) var<storage, read_write> ints: array<i32>;
@group(1) @binding(2) var<uniform> p: Params;

// element i of the weight arena, dequantized but not yet scaled
fn wraw(i: u32) -> f32 {
//!WRAW
}

// ---- the workgroup's state ----------------------------------------------------------

// One token's activations: the residual stream x [D], its normalised copy [D], a query
// [QW], an attention output [QW], a slice of FF hidden units [FC], a tile of attention
// scores [ST].
const S_X: u32 = 0u;
const S_N: u32 = D;
const S_Q: u32 = 2u * D;
const S_A: u32 = 2u * D + QW;
const S_F: u32 = 2u * D + 2u * QW;
const S_S: u32 = 2u * D + 2u * QW + FC;
var<workgroup> sm: array<f32, SM>;
var<workgroup> red: array<f32, 64>;
var<workgroup> wu0: u32;
var<workgroup> wu1: u32;

var<private> tid: u32;       // local invocation index
var<private> sg_i: u32;      // subgroup invocation id (SUBGROUP variant)
var<private> sg_s: u32;      // subgroup size (SUBGROUP variant)

// (the request's first real history row ints[MEM_FROM], the count ints[slot]), read by one
// invocation and shared as workgroup-uniform values (barriers may depend on them)
fn load_uniforms(slot: u32) -> vec2<u32> {
    if (tid == 0u) {
        wu0 = u32(ints[MEM_FROM]);
        wu1 = u32(ints[slot]);
    }
    return vec2<u32>(workgroupUniformLoad(&wu0), workgroupUniformLoad(&wu1));
}

//!REDUCE

// ---- weights --------------------------------------------------------------------------

struct Wd {
    off: u32,
    sc: u32,
    ss: u32,
}

fn wd(i: u32) -> Wd {
    return Wd(desc[i], desc[i + 1u], desc[i + 2u]);
}

// sm[src .. src + k] . W[:, col] for W [k, n] row-major, times the column's scale
fn dotcol(src: u32, k: u32, w: Wd, n: u32, col: u32) -> f32 {
    var acc = 0.0;
    for (var i = 0u; i < k; i++) {
        acc += sm[src + i] * wraw(w.off + i * n + col);
    }
    return acc * aux[w.sc + col * w.ss];
}

// row `row` of an embedding table [rows, D] with per-row scales, element j
fn emb_row(w: Wd, row: u32, j: u32) -> f32 {
    return wraw(w.off + row * D + j) * aux[w.sc + row * w.ss];
}

// row `row` of a position table [rows, D] with per-column scales, element j
fn pos_row(w: Wd, row: u32, j: u32) -> f32 {
    return wraw(w.off + row * D + j) * aux[w.sc + j * w.ss];
}

// ---- the layer pieces (call in uniform control flow; each ends with a barrier) ---------

// sm[dst..] = rmsnorm(sm[src..], gain aux[g..]) over D values
fn rmsnorm(src: u32, dst: u32, g: u32) {
    var s = 0.0;
    for (var i = tid; i < D; i += WG) {
        let v = sm[src + i];
        s += v * v;
    }
    let r = 1.0 / sqrt(wg_sum(s) / f32(D) + EPS);
    for (var i = tid; i < D; i += WG) {
        sm[dst + i] = sm[src + i] * r * aux[g + i];
    }
    workgroupBarrier();
}

// x += sm[src .. src + k] @ W (W [k, D]): an attention output's projection
fn add_proj(src: u32, k: u32, w: Wd) {
    for (var j = tid; j < D; j += WG) {
        sm[S_X + j] += dotcol(src, k, w, D, j);
    }
    workgroupBarrier();
}

// sm[S_Q ..][..n] = normed x @ W (W [D, n])
fn query(w: Wd, n: u32) {
    for (var j = tid; j < n; j += WG) {
        sm[S_Q + j] = dotcol(S_N, D, w, n, j);
    }
    workgroupBarrier();
}

// x += relu(normed x @ w1) @ w2 (w1 [D, f], w2 [f, D]), FC hidden units at a time
fn ffn(w1: Wd, w2: Wd, f: u32) {
    for (var c0 = 0u; c0 < f; c0 += FC) {
        let n = min(FC, f - c0);
        for (var j = tid; j < n; j += WG) {
            sm[S_F + j] = max(dotcol(S_N, D, w1, f, c0 + j), 0.0);
        }
        workgroupBarrier();
        for (var j = tid; j < D; j += WG) {
            var acc = 0.0;
            for (var i = 0u; i < n; i++) {
                acc += sm[S_F + i] * wraw(w2.off + (c0 + i) * D + j);
            }
            sm[S_X + j] += acc * aux[w2.sc + j * w2.ss];
        }
        workgroupBarrier();
    }
}

// Attention of the query sm[q ..][..heads * DH] over keys k0..k1, key s at act[kb + s * ld]
// and its value at act[vb + s * ld] (head h at + h * DH), with the history mask's NEG on
// masked keys when `masked`; the output to sm[o ..]. The keys go in tiles of ST / heads
// with an online softmax, so any number of keys fits; a masked key's weight is exactly 0,
// as in the graphs.
fn attend(q: u32, kb: u32, vb: u32, ld: u32, k0: u32, k1: u32, heads: u32, masked: bool, o: u32) {
    let t = ST / heads;
    let width = heads * DH;
    var m: array<f32, OPT>;
    var l: array<f32, OPT>;
    var acc: array<f32, OPT>;
    for (var z = 0u; z < OPT; z++) {
        m[z] = -3.0e38;
        l[z] = 0.0;
        acc[z] = 0.0;
    }
    for (var s0 = k0; s0 < k1; s0 += t) {
        let n = min(t, k1 - s0);
        for (var e = tid; e < heads * n; e += WG) {
            let h = e / n;
            let j = e % n;
            let kr = kb + (s0 + j) * ld + h * DH;
            var dot = 0.0;
            for (var i = 0u; i < DH; i++) {
                dot += sm[q + h * DH + i] * act[kr + i];
            }
            var x = dot * SCALE;
            if (masked) {
                x += (1.0 - act[p.mask + s0 + j]) * NEG;
            }
            sm[S_S + h * t + j] = x;
        }
        workgroupBarrier();
        for (var z = 0u; z < OPT; z++) {
            let e = tid + z * WG;
            if (e < width) {
                let h = e / DH;
                let sc = S_S + h * t;
                var mt = m[z];
                for (var j = 0u; j < n; j++) {
                    mt = max(mt, sm[sc + j]);
                }
                let corr = exp(m[z] - mt);
                var lz = l[z] * corr;
                var az = acc[z] * corr;
                let vr = vb + s0 * ld + e;
                for (var j = 0u; j < n; j++) {
                    let w = exp(sm[sc + j] - mt);
                    lz += w;
                    az += w * act[vr + j * ld];
                }
                m[z] = mt;
                l[z] = lz;
                acc[z] = az;
            }
        }
        workgroupBarrier();
    }
    for (var z = 0u; z < OPT; z++) {
        let e = tid + z * WG;
        if (e < width) {
            sm[o + e] = acc[z] / l[z];
        }
    }
    workgroupBarrier();
}

// ---- the encoder: one workgroup per history row ----------------------------------------
// The request's leading padding rows (before ints[MEM_FROM]) are skipped: every attention
// masks them (weight exactly 0) and starts its keys at the first real row. Layer i's q/k/v
// are in set i % 2, so a dispatch reads one set while it writes the other.

fn enc_qkv_at(qs: u32, r: u32) -> u32 {
    return p.qkv + qs * H * 3u * HD + r * 3u * HD;
}

// layer `layer`'s q/k/v of row r from x (in sm), into set `qs`
fn enc_qkv(r: u32, layer: u32, qs: u32) {
    let base = G_ENC + layer * E_STRIDE;
    rmsnorm(S_X, S_N, desc[base + E_N1]);
    let o = enc_qkv_at(qs, r);
    for (var e = tid; e < 3u * HD; e += WG) {
        let z = e / HD;
        act[o + e] = dotcol(S_N, D, wd(base + E_WQ + 3u * z), HD, e % HD);
    }
}

// the memory row r = enc_norm(x), and from it the keys and values of every decoder
// layer's cross-attention and of the PRM's
fn enc_memory(r: u32) {
    rmsnorm(S_X, S_N, desc[G_ENC_NORM]);
    for (var e = tid; e < DEC_LAYERS * 2u * HD; e += WG) {
        let j = e / (2u * HD);
        let z = (e / HD) % 2u;
        let col = e % HD;
        let w = wd(G_DEC + j * D_STRIDE + D_CK + 3u * z);
        act[p.cross + j * 2u * H * HD + z * H * HD + r * HD + col] = dotcol(S_N, D, w, HD, col);
    }
    for (var e = tid; e < 2u * PD; e += WG) {
        // max(PD, 1): a dense PRM has PD = 0 (no iteration), and naga refuses / 0
        let z = e / max(PD, 1u);
        let col = e % max(PD, 1u);
        act[p.pkv + z * H * PD + r * PD + col] = dotcol(S_N, D, wd(G_PRM_WK + 3u * z), PD, col);
    }
    if (DENSE_PRM && r == H - 1u) {
        // the dense PRM's user state u = memory[H - 1] * mask[H - 1] @ w + b, at pkv
        let m = act[p.mask + r];
        let w = wd(G_PRM_DW);
        let b = desc[G_PRM_DB];
        for (var j = tid; j < D; j += WG) {
            act[p.pkv + j] = dotcol(S_N, D, w, D, j) * m + aux[b + j];
        }
    }
}

// row r's token (the sum of its item's input columns' embeddings: its level codes, and its
// item with an item column; and position r), then layer
// 0's q/k/v (or, without encoder layers, the memory)
@compute @workgroup_size(64)
fn enc_embed(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32 /*!SG_ARGS*/) {
    tid = li;
    /*!SG_INIT*/
    let r = wg.x;
    let first_row = load_uniforms(MEM_FROM).x;
    if (r < first_row) {
        return;
    }
    let emb = wd(G_ENC_EMB);
    let pos = wd(G_ENC_POS);
    for (var j = tid; j < D; j += WG) {
        var s = 0.0;
        for (var l = 0u; l < ENC_COLS; l++) {
            s += emb_row(emb, u32(ints[p.codes + r * ENC_COLS + l]), j);
        }
        s += pos_row(pos, r, j);
        sm[S_X + j] = s;
        act[p.ex + r * D + j] = s;
    }
    workgroupBarrier();
    if (ENC_LAYERS == 0u) {
        enc_memory(r);
    } else {
        enc_qkv(r, 0u, 0u);
    }
}

// encoder layer p.layer for row r: attention over the rows' keys (rows <= r when causal),
// the output projection, the FFN; then the next layer's q/k/v, or after the last layer the
// memory's keys and values
@compute @workgroup_size(64)
fn enc_layer(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32 /*!SG_ARGS*/) {
    tid = li;
    /*!SG_INIT*/
    let r = wg.x;
    let first_row = load_uniforms(MEM_FROM).x;
    if (r < first_row) {
        return;
    }
    let layer = p.layer;
    let qs = layer % 2u;
    let base = G_ENC + layer * E_STRIDE;
    let row = enc_qkv_at(qs, 0u);
    for (var j = tid; j < HD; j += WG) {
        sm[S_Q + j] = act[row + r * 3u * HD + j];
    }
    for (var j = tid; j < D; j += WG) {
        sm[S_X + j] = act[p.ex + r * D + j];
    }
    workgroupBarrier();
    var k1 = H;
    if (CAUSAL) {
        k1 = r + 1u;
    }
    attend(S_Q, row + HD, row + 2u * HD, 3u * HD, first_row, k1, HEADS, true, S_A);
    add_proj(S_A, HD, wd(base + E_WO));
    rmsnorm(S_X, S_N, desc[base + E_N2]);
    ffn(wd(base + E_W1), wd(base + E_W2), FF);
    if (layer + 1u < ENC_LAYERS) {
        for (var j = tid; j < D; j += WG) {
            act[p.ex + r * D + j] = sm[S_X + j];
        }
        enc_qkv(r, layer + 1u, 1u - qs);
    } else {
        enc_memory(r);
    }
}

// ---- the decoder: one workgroup per beam ------------------------------------------------
// Beam b's key/value cache: per decoder layer, L token rows of [k HD | v HD]; two sets (the
// level's parity), since the beams of level t are written from their parents at t - 1.

const BEAM_CACHE: u32 = DEC_LAYERS * L * 2u * HD;

// decoder token s of beam b through every layer, its keys and values into cache `cache`
fn dec_token(b: u32, s: u32, cache: u32, first_row: u32) {
    let pos = wd(G_DEC_POS);
    let w = max(L - 1u, 1u);
    for (var j = tid; j < D; j += WG) {
        var v: f32;
        if (s == 0u) {
            v = pos_row(wd(G_DEC_BOS), 0u, j);
        } else {
            v = emb_row(wd(G_DEC_EMB), u32(ints[p.x0 + b * w + s - 1u]), j);
        }
        sm[S_X + j] = v + pos_row(pos, s, j);
    }
    workgroupBarrier();
    for (var layer = 0u; layer < DEC_LAYERS; layer++) {
        let base = G_DEC + layer * D_STRIDE;
        let lc = cache + layer * L * 2u * HD;
        rmsnorm(S_X, S_N, desc[base + D_N1]);
        for (var e = tid; e < 3u * HD; e += WG) {
            let z = e / HD;
            let col = e % HD;
            let v = dotcol(S_N, D, wd(base + D_SQ + 3u * z), HD, col);
            if (z == 0u) {
                sm[S_Q + col] = v;
            } else {
                act[lc + s * 2u * HD + (z - 1u) * HD + col] = v;
            }
        }
        storageBarrier();
        workgroupBarrier();
        attend(S_Q, lc, lc + HD, 2u * HD, 0u, s + 1u, HEADS, false, S_A);
        add_proj(S_A, HD, wd(base + D_SO));
        rmsnorm(S_X, S_N, desc[base + D_N2]);
        query(wd(base + D_CQ), HD);
        let mem = p.cross + layer * 2u * H * HD;
        attend(S_Q, mem, mem + H * HD, HD, first_row, H, HEADS, true, S_A);
        add_proj(S_A, HD, wd(base + D_CO));
        rmsnorm(S_X, S_N, desc[base + D_N3]);
        ffn(wd(base + D_W1), wd(base + D_W2), FF);
    }
}

// Level p.level's decoder step for beam b: its new token (with p.search: the parent's
// cache copied, then the one token; without: the whole prefix, tokens 0..=level, from the
// prefix codes ints[x0 + b * (L - 1) ..]) through every layer, the head of the level and
// the log-softmax into act[logp + b * C ..] (codes >= cb get NEG). With p.search, then the
// trie expansion of the beam (node ints[beam + b], cum act[cum + b]): slot b * C + j gets
// its j-th child, if it exists and has an unseen leaf under it: key = cum + logp[code] at
// act[a + slot], node at ints[i0 + slot], unseen count at ints[u_out + slot]; any other slot
// node -1. Beams past the live count write empty slots and stop.
@compute @workgroup_size(64)
fn dec_step(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32 /*!SG_ARGS*/) {
    tid = li;
    /*!SG_INIT*/
    let b = wg.x;
    let u = load_uniforms(LIVE_BEAMS);
    let live = u.y;
    let t = p.level;
    let search = p.search == 1u;
    let slots = b * C;
    if (b >= live) {
        if (search) {
            for (var j = tid; j < C; j += WG) {
                act[p.a + slots + j] = 0.0;
                ints[p.i0 + slots + j] = -1;
                ints[p.u_out + slots + j] = 0;
            }
        }
        return;
    }
    let cache = p.cache + (t % 2u) * p.cache_set + b * BEAM_CACHE;
    var first = 0u;
    if (search && t > 0u) {
        // the parent's rows 0..t-1, from the other set
        first = t;
        let parent = u32(ints[p.parent + b]);
        let src = p.cache + ((t - 1u) % 2u) * p.cache_set + parent * BEAM_CACHE;
        for (var e = tid; e < DEC_LAYERS * t * 2u * HD; e += WG) {
            let layer = e / (t * 2u * HD);
            let at = layer * L * 2u * HD + e % (t * 2u * HD);
            act[cache + at] = act[src + at];
        }
        storageBarrier();
    }
    for (var s = first; s <= t; s++) {
        dec_token(b, s, cache, u.x);
    }
    // the head of level t ([L, D, C]) on the last token, then the log-softmax
    rmsnorm(S_X, S_N, desc[G_DEC_NORM]);
    let hw = wd(G_HEAD);
    let head = Wd(hw.off + t * D * C, hw.sc + hw.ss * t * C, hw.ss);
    let row = p.logp + b * C;
    var mx = -3.0e38;
    for (var c = tid; c < C; c += WG) {
        var v = dotcol(S_N, D, head, C, c);
        if (c >= p.cb) {
            v += NEG;
        }
        act[row + c] = v;
        mx = max(mx, v);
    }
    mx = wg_max(mx);
    var se = 0.0;
    for (var c = tid; c < C; c += WG) {
        se += exp(act[row + c] - mx);
    }
    // (x - max) - ln z: equal logits give bit-equal log-probs in every row, so exact ties
    // stay exact and the search's tie-break decides (the CPU engines' order too)
    let ln_z = log(wg_sum(se));
    for (var c = tid; c < C; c += WG) {
        act[row + c] = (act[row + c] - mx) - ln_z;
    }
    if (!search) {
        return;
    }
    storageBarrier();
    let node = u32(ints[p.beam + b]);
    let cum = act[p.cum + b];
    let c0 = trie[node];
    let nc = trie[node + 1u] - c0;
    for (var j = tid; j < C; j += WG) {
        var nd = -1;
        var key = 0.0;
        var left = 0u;
        if (j < nc) {
            let child = c0 + j;
            left = unseen(child, p.descend);
            if (left > 0u) {
                let lp = act[row + trie[p.t_code + child]];
                if (nan_or_pos_inf(lp)) {
                    ints[p.err] = 1;
                }
                nd = i32(child);
                key = cum + max(lp, LOGP_FLOOR);
            }
        }
        act[p.a + slots + j] = key;
        ints[p.i0 + slots + j] = nd;
        ints[p.u_out + slots + j] = i32(left);
    }
}

// ---- the PRM: one workgroup per candidate -----------------------------------------------

// The parent of trie node x >= 1: the last node q with first_child[q] <= x (first_child is
// strictly increasing over inner nodes, and every leaf's is the node count, above x).
fn trie_parent(x: u32) -> u32 {
    var lo = 0u;
    var hi = p.t_code - 1u; // the node count (node_code starts after first_child[nodes + 1])
    while (hi - lo > 1u) {
        let mid = lo + (hi - lo) / 2u;
        if (trie[mid] <= x) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// The score of candidate node ints[nodes + r] into act[scores + r]. Its query is its row
// of the node table or, with `model.prm_query: "path"`, the sum of its path rows (row
// l * C + code of its level-l ancestor for each level above it, the padding row L * C for
// each level below, in level order, as the CPU engines sum them); then attention over the
// memory, the FFN and the two-layer output head.
@compute @workgroup_size(64)
fn prm_score(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32 /*!SG_ARGS*/) {
    tid = li;
    /*!SG_INIT*/
    let r = wg.x;
    let u = load_uniforms(LIVE_NODES);
    if (r >= u.y) {
        return;
    }
    let node = u32(ints[p.nodes + r]);
    let qt = wd(G_PRM_Q);
    if (DENSE_PRM) {
        // <u, node row> + node bias (u: enc_memory, at pkv)
        var s = 0.0;
        for (var j = tid; j < D; j += WG) {
            s += act[p.pkv + j] * emb_row(qt, node, j);
        }
        let score = wg_sum(s) + aux[desc[G_PRM_NB] + node];
        if (tid == 0u) {
            act[p.scores + r] = score;
        }
        return;
    }
    if (PATH_QUERY) {
        var rows: array<u32, 6>;
        for (var l = 0u; l < L; l++) {
            rows[l] = L * C;
        }
        var depth = 0u;
        var x = node;
        while (x != 0u && depth < L) {
            x = trie_parent(x);
            depth++;
        }
        x = node;
        for (var l = depth; l > 0u; l--) {
            rows[l - 1u] = (l - 1u) * C + trie[p.t_code + x];
            x = trie_parent(x);
        }
        for (var j = tid; j < D; j += WG) {
            var s = 0.0;
            for (var l = 0u; l < L; l++) {
                s += emb_row(qt, rows[l], j);
            }
            sm[S_X + j] = s;
        }
    } else {
        for (var j = tid; j < D; j += WG) {
            sm[S_X + j] = emb_row(qt, node, j);
        }
    }
    workgroupBarrier();
    rmsnorm(S_X, S_N, desc[G_PRM_N1]);
    query(wd(G_PRM_WQ), PD);
    attend(S_Q, p.pkv, p.pkv + H * PD, PD, u.x, H, PHEADS, true, S_A);
    add_proj(S_A, PD, wd(G_PRM_WO));
    rmsnorm(S_X, S_N, desc[G_PRM_N2]);
    ffn(wd(G_PRM_W1), wd(G_PRM_W2), PFF);
    rmsnorm(S_X, S_N, desc[G_PRM_N3]);
    let o1 = wd(G_PRM_O1);
    let b1 = desc[G_PRM_B1];
    let o2 = wd(G_PRM_O2);
    var s = 0.0;
    for (var j = tid; j < D; j += WG) {
        let hj = max(dotcol(S_N, D, o1, D, j) + aux[b1 + j], 0.0);
        s += hj * wraw(o2.off + j);
    }
    let score = wg_sum(s) * aux[o2.sc] + aux[desc[G_PRM_B2]];
    if (tid == 0u) {
        act[p.scores + r] = score;
    }
}

// The search kernels (exact top-k, beam update, the seen-leaf counts) are in search.wgsl,
// which the host appends to this file (src/backend/gpu/shader.rs).
