// promise-rt GPU kernels: the encoder, decoder and PRM of models/train/model.py.
//
// Activations are f32 in one arena (`act`); every dispatch reads its offsets, widths and
// weight descriptors from a 256-byte `Params` block (dynamic uniform offset), so a whole
// forward pass is a static list of dispatches built once per session.
//
// Weights stay in the bundle's storage format in one arena (`wts`): f32, f16 or int8,
// dequantized here on load with f32 accumulation. int8 carries one f32 scale per output
// column (matmul weights, position tables) or per row (gathered embedding tables), kept
// in `aux` with the rank-1 weights (norm gains, biases); a descriptor (offset, scale
// offset, scale stride) addresses each tensor, and f32/f16 tensors point their scale at a
// constant 1.0 with stride 0.
//
// Lines starting with `//!` are replaced by the host (src/backend/gpu/shader.rs) to pick
// the weight format and whether SHADER_F16 / SUBGROUP are used.

//!ENABLES

const NONE: u32 = 0xffffffffu;
const NEG: f32 = -1e9;
const WG: u32 = 64u;

struct Params {
    rows: u32,     // rows (tokens, beams or nodes) this dispatch is sized for
    live: u32,     // index into `ints` of the live count, or NONE (= rows)
    live_mul: u32, // live rows = ints[live] * live_mul
    n: u32,        // output width
    k: u32,        // reduction width / gathers per row
    a: u32,        // input offset in act
    lda: u32,      // input row stride
    o: u32,        // output offset in act
    ldo: u32,      // output row stride
    b: u32,        // second input (attention keys)
    c: u32,        // third input (attention values)
    ldk: u32,      // key/value row stride
    flags: u32,    // 1 relu, 2 accumulate into the output, 4 add bias aux[x0 + col]
    w0: u32, s0: u32, ss0: u32, // weight 0: first element, scale offset, scale stride
    w1: u32, s1: u32, ss1: u32, // weight 1
    w2: u32, s2: u32, ss2: u32, // weight 2
    x0: u32,       // aux offset of the bias
    g0: u32,       // aux offset of an RMSNorm gain applied to A's rows first, or NONE
    i0: u32,       // ints offset of the input ids
    heads: u32,
    dh: u32,
    tq: u32,       // tokens (queries) per row
    skv: u32,      // keys per row
    kvrow: u32,    // key rows per batch row (0 = keys shared by every row)
    mask: u32,     // act offset of the key mask (1 = real), or NONE
    causal: u32,   // 1 = query t sees keys 0..=t
    cb: u32,       // log_softmax: codes >= cb get NEG (the level's codebook)
    scale: f32,    // attention: 1/sqrt(dh)
    eps: f32,      // rmsnorm
    // the search kernels (expand, select_candidates, select_beams)
    i1: u32,       // ints offset of a second id array
    i2: u32,       // ints offset of a third id array
    count: u32,    // ints offset where a kept count is written
    keep: u32,     // how many to keep (K+, K' or N)
    err: u32,      // ints offset of the request's error flag
    seen: u32,     // ints offset of the request's seen-leaf list (count, then sorted leaves)
    t_code: u32,   // trie offset of node_code
    level: u32,    // the search level
    width: u32,    // prefix codes per beam (L - 1)
    prm: u32,      // 1 = rank by the PRM score mixed with the cumulative log-prob
    mix: f32,      // weight of the cumulative log-prob in the key
    u_in: u32,     // ints offset of unseen-leaf counts read
    u_out: u32,    // ints offset of unseen-leaf counts written
    descend: u32,  // expand: levels from the children to the leaves
    need: u32,     // select_beams: N before the last level (the full-feed rule), else 0
}

//!WTS_DECL
@group(0) @binding(1) var<storage, read> aux: array<f32>;
@group(1) @binding(0) var<storage, read_write> act: array<f32>;
@group(0) @binding(2) var<storage, read> trie: array<u32>;
@group(1) @binding(1) var<storage, read_write> ints: array<i32>;
@group(1) @binding(2) var<uniform> p: Params;

// element i of the weight arena, dequantized but not yet scaled
fn wraw(i: u32) -> f32 {
//!WRAW
}

fn live_rows() -> u32 {
    if (p.live == NONE) {
        return p.rows;
    }
    return min(p.rows, u32(ints[p.live]) * p.live_mul);
}

// ---- embeddings --------------------------------------------------------------------

// encoder token r (one per history item) = sum over the k levels of the code embedding
// (table w0 [L*C, n], per-row scale; ids already offset by level*C) + position w1 [r].
@compute @workgroup_size(64)
fn embed_enc(@builtin(global_invocation_id) g: vec3<u32>) {
    let j = g.x;
    let r = g.y;
    if (j >= p.n || r >= p.rows) {
        return;
    }
    var s = 0.0;
    for (var l = 0u; l < p.k; l++) {
        let id = u32(ints[p.i0 + r * p.k + l]);
        s += wraw(p.w0 + id * p.n + j) * aux[p.s0 + id * p.ss0];
    }
    s += wraw(p.w1 + r * p.n + j) * aux[p.s1 + j * p.ss1];
    act[p.o + r * p.ldo + j] = s;
}

// decoder token t of beam b (row r = b * tq + t): BOS (w1) at t = 0, else the embedding of
// the beam's level-(t-1) code (table w0, ids offset by level*C, k ids per beam), plus the
// position w2 [t].
@compute @workgroup_size(64)
fn embed_dec(@builtin(global_invocation_id) g: vec3<u32>) {
    let j = g.x;
    let r = g.y;
    if (j >= p.n || r >= live_rows()) {
        return;
    }
    let t = r % p.tq;
    let b = r / p.tq;
    var s: f32;
    if (t == 0u) {
        s = wraw(p.w1 + j) * aux[p.s1 + j * p.ss1];
    } else {
        let id = u32(ints[p.i0 + b * p.k + t - 1u]);
        s = wraw(p.w0 + id * p.n + j) * aux[p.s0 + id * p.ss0];
    }
    s += wraw(p.w2 + t * p.n + j) * aux[p.s2 + j * p.ss2];
    act[p.o + r * p.ldo + j] = s;
}

// PRM query r = node embedding of ints[i0 + r] (table w0, per-row scale).
@compute @workgroup_size(64)
fn embed_prm(@builtin(global_invocation_id) g: vec3<u32>) {
    let j = g.x;
    let r = g.y;
    if (j >= p.n || r >= live_rows()) {
        return;
    }
    let id = u32(ints[p.i0 + r]);
    act[p.o + r * p.ldo + j] = wraw(p.w0 + id * p.n + j) * aux[p.s0 + id * p.ss0];
}

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

// PRM query r with `model.prm_query: "path"`: the sum of the path rows of node ints[i0 + r]
// (table w0, per-row scale): row l * cb + code of its level-l ancestor for each level above
// it, the padding row k * cb for each of the k levels below (k = L, the levels), in level
// order, as the CPU engines sum them.
@compute @workgroup_size(64)
fn embed_prm_path(@builtin(global_invocation_id) g: vec3<u32>) {
    let j = g.x;
    let r = g.y;
    if (j >= p.n || r >= live_rows()) {
        return;
    }
    var rows: array<u32, 6>;
    let pad = p.k * p.cb;
    for (var l = 0u; l < p.k; l++) {
        rows[l] = pad;
    }
    var depth = 0u;
    var x = u32(ints[p.i0 + r]);
    while (x != 0u && depth < p.k) {
        x = trie_parent(x);
        depth++;
    }
    x = u32(ints[p.i0 + r]);
    for (var l = depth; l > 0u; l--) {
        rows[l - 1u] = (l - 1u) * p.cb + trie[p.t_code + x];
        x = trie_parent(x);
    }
    var s = 0.0;
    for (var l = 0u; l < p.k; l++) {
        s += wraw(p.w0 + rows[l] * p.n + j) * aux[p.s0 + rows[l] * p.ss0];
    }
    act[p.o + r * p.ldo + j] = s;
}

// ---- workgroup reductions (subgroup or shared-memory version spliced in) -------------

var<workgroup> red: array<f32, 64>;

//!REDUCE

// ---- matmul: out[r, col] (+)= act(norm(A[r, :]) . W[:, col] * scale[col] + bias[col]) --
// A workgroup computes 8 output columns x 4 rows; its 64 invocations split the reduction
// dimension k into 8 interleaved slices (invocation = slice * 8 + column), so each one
// runs k/8 steps instead of k (these layers are far too small to fill a GPU with one
// invocation per output: the serial loop's latency is the cost), then the 8 partial sums
// meet in workgroup memory.
// g.z picks one of up to three weights (w0, w1, w2) writing to consecutive output blocks
// of rows * ldo values: q, k and v (or a memory's k and v) in one dispatch.
// With g0 != NONE the rows of A are RMS-normalised with gain aux[g0..] on the fly (the
// layer's pre-norm), so no normalised copy is written.

const RB: u32 = 4u;
const MM_COLS: u32 = 8u;
const MM_SLICES: u32 = 8u;

var<workgroup> part: array<f32, 256>;   // [invocation][row] partial sums
var<workgroup> sq: array<f32, 256>;     // [invocation][row] partial sums of squares

@compute @workgroup_size(64)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let ci = lid % MM_COLS;
    let slice = lid / MM_COLS;
    let col = wg.x * MM_COLS + ci;
    let r0 = wg.y * RB;
    let rows = live_rows();
    if (r0 >= rows) {
        return; // uniform: the whole workgroup shares r0
    }
    let nr = min(RB, rows - r0);
    let in_range = col < p.n;
    var w = p.w0;
    var s = p.s0;
    var ss = p.ss0;
    if (wg.z == 1u) {
        w = p.w1;
        s = p.s1;
        ss = p.ss1;
    } else if (wg.z == 2u) {
        w = p.w2;
        s = p.s2;
        ss = p.ss2;
    }
    let norm = p.g0 != NONE;
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    var sqs = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var kk = slice; kk < p.k; kk += MM_SLICES) {
        var wv = 0.0;
        if (in_range) {
            wv = wraw(w + kk * p.n + col);
        }
        if (norm) {
            wv *= aux[p.g0 + kk];
        }
        for (var i = 0u; i < nr; i++) {
            let x = act[p.a + (r0 + i) * p.lda + kk];
            acc[i] += x * wv;
            sqs[i] += x * x;
        }
    }
    for (var i = 0u; i < RB; i++) {
        part[lid * RB + i] = acc[i];
        sq[lid * RB + i] = sqs[i];
    }
    workgroupBarrier();
    if (slice != 0u || !in_range) {
        return;
    }
    let sc = aux[s + col * ss];
    let out = p.o + wg.z * p.rows * p.ldo;
    for (var i = 0u; i < nr; i++) {
        var t = 0.0;
        var q = 0.0;
        for (var j = 0u; j < MM_SLICES; j++) {
            t += part[(j * MM_COLS + ci) * RB + i];
            q += sq[(j * MM_COLS + ci) * RB + i];
        }
        var v = t * sc;
        if (norm) {
            v *= 1.0 / sqrt(q / f32(p.k) + p.eps);
        }
        if ((p.flags & 4u) != 0u) {
            v += aux[p.x0 + col];
        }
        if ((p.flags & 1u) != 0u) {
            v = max(v, 0.0);
        }
        let y = out + (r0 + i) * p.ldo + col;
        if ((p.flags & 2u) != 0u) {
            act[y] += v;
        } else {
            act[y] = v;
        }
    }
}

// ---- attention: one invocation per (row, query, head), online softmax over the keys ----
// q at a + (row*tq + t)*lda + h*dh; keys/values of row b start at key row b*kvrow
// (kvrow = 0: one set shared by all rows, the encoder memory); bias = NEG where the key
// mask is 0, and keys after the query are skipped when causal (they get NEG in the graph,
// whose softmax weight is exactly 0 in f32).

const MAX_DH: u32 = 64u;

@compute @workgroup_size(64)
fn attention(@builtin(global_invocation_id) g: vec3<u32>) {
    let id = g.x;
    let h = id % p.heads;
    let qi = id / p.heads; // = row * tq + t
    let t = qi % p.tq;
    let b = qi / p.tq;
    if (qi >= live_rows() * p.tq) {
        return;
    }
    let q = p.a + qi * p.lda + h * p.dh;
    let kbase = b * p.kvrow;
    var nk = p.skv;
    if (p.causal == 1u) {
        nk = min(nk, t + 1u);
    }
    var m = -3.0e38;
    var l = 0.0;
    var acc: array<f32, MAX_DH>;
    for (var i = 0u; i < p.dh; i++) {
        acc[i] = 0.0;
    }
    for (var s = 0u; s < nk; s++) {
        let kr = (kbase + s) * p.ldk + h * p.dh;
        var dot = 0.0;
        for (var i = 0u; i < p.dh; i++) {
            dot += act[q + i] * act[p.b + kr + i];
        }
        var x = dot * p.scale;
        if (p.mask != NONE) {
            x += (1.0 - act[p.mask + s]) * NEG;
        }
        let m2 = max(m, x);
        let corr = exp(m - m2);
        let e = exp(x - m2);
        l = l * corr + e;
        for (var i = 0u; i < p.dh; i++) {
            acc[i] = acc[i] * corr + e * act[p.c + kr + i];
        }
        m = m2;
    }
    let y = p.o + qi * p.ldo + h * p.dh;
    for (var i = 0u; i < p.dh; i++) {
        act[y + i] = acc[i] / l;
    }
}

// ---- log-softmax over one level's codes: one workgroup per row -----------------------

@compute @workgroup_size(64)
fn log_softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lid: u32 /*!SG_ARGS*/) {
    let r = wg.x;
    if (r >= live_rows()) {
        return;
    }
    let x = p.a + r * p.lda;
    var mx = -3.0e38;
    for (var j = lid; j < p.n; j += WG) {
        mx = max(mx, masked(act[x + j], j));
    }
    mx = wg_max(mx, lid /*!SG_PASS*/);
    var se = 0.0;
    for (var j = lid; j < p.n; j += WG) {
        se += exp(masked(act[x + j], j) - mx);
    }
    se = wg_sum(se, lid /*!SG_PASS*/);
    let lse = mx + log(se);
    let y = p.o + r * p.ldo;
    for (var j = lid; j < p.n; j += WG) {
        act[y + j] = masked(act[x + j], j) - lse;
    }
}

fn masked(v: f32, j: u32) -> f32 {
    if (j >= p.cb) {
        return v + NEG;
    }
    return v;
}

// ---- the search: trie masking, exact top-k, beam update ------------------------------
//
// The same search as src/search/mod.rs (whose module docs define it), on the device: one
// submission per request. Order everywhere: higher key first in `f32::total_cmp` order
// (so -0.0 ranks below +0.0, as on the CPU), ties to the smaller node id (node ids are
// unique, so every kept entry has exactly one rank and the result is deterministic).
// `trie` holds, as u32: first_child [nodes + 1] at 0 (node n's children are
// first_child[n]..first_child[n + 1], in code order), node_code [nodes] at t_code.
// The request's seen leaves: ints[seen] = count s, ints[seen + 1 ..][..s] sorted ascending.

// f32 -> i32 monotone in `f32::total_cmp` order (the CPU search's): -0.0 < +0.0
fn total_order(x: f32) -> i32 {
    let b = bitcast<i32>(x);
    return b ^ ((b >> 31u) & 0x7fffffff);
}

fn non_finite(x: f32) -> bool {
    // WGSL has no isnan/isinf, and compilers may fold `x != x`: test the exponent bits
    return (bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u;
}

// how many seen leaves are < x (binary search over the sorted list)
fn seen_below(x: u32) -> u32 {
    var lo = 0u;
    var hi = u32(ints[p.seen]);
    while (lo < hi) {
        let mid = (lo + hi) / 2u;
        if (u32(ints[p.seen + 1u + mid]) < x) {
            lo = mid + 1u;
        } else {
            hi = mid;
        }
    }
    return lo;
}

// unseen leaves under `node`, `descend` levels above the leaves: its leaves are the
// contiguous range reached by following first_child from node and node + 1
fn unseen(node: u32, descend: u32) -> u32 {
    var a = node;
    var b = node + 1u;
    for (var d = 0u; d < descend; d++) {
        a = trie[a];
        b = trie[b];
    }
    return (b - a) - (seen_below(b) - seen_below(a));
}

// Slot e = (beam i, child slot j) of rows x n (grid-stride, so any width fits the
// dispatch limit): the j-th child of live beam i, if it exists and has an unseen leaf
// under it, gets key = cum_i + logp[i, its code] at act[o + e], its node id at ints[i1 + e]
// and its unseen count at ints[u_out + e]; any other slot gets node -1.
// Reads: live beams ints[live], beam nodes ints[i0 + i], beam cums act[a + i], log-probs
// act[b + i * n + code]. Slot 0 zeroes the pool count ints[count] for select_candidates.
@compute @workgroup_size(64)
fn expand(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let total = p.rows * p.n;
    let live = u32(ints[p.live]);
    for (var e = g.x; e < total; e += nwg.x * 64u) {
        if (e == 0u) {
            ints[p.count] = 0;
        }
        let i = e / p.n;
        let j = e % p.n;
        var node = -1;
        var key = 0.0;
        var left = 0u;
        if (i < live) {
            let parent = u32(ints[p.i0 + i]);
            let child = trie[parent] + j;
            if (child < trie[parent + 1u]) {
                left = unseen(child, p.descend);
                if (left > 0u) {
                    let lp = act[p.b + i * p.n + trie[p.t_code + child]];
                    if (non_finite(lp)) {
                        ints[p.err] = 1;
                    }
                    node = i32(child);
                    key = act[p.a + i] + lp;
                }
            }
        }
        act[p.o + e] = key;
        ints[p.i1 + e] = node;
        ints[p.u_out + e] = i32(left);
    }
}

// The top `keep` of `rows` expanded slots by (key desc, node asc), found by one workgroup
// as a radix select over the 64-bit composite (key in total order, !node): 8 rounds of an
// 8-bit histogram, O(rows) work, whatever the codebook width. The kept slots go to the
// candidate pool in slot order: node ints[i1 + r], cum act[o + r], parent beam
// ints[i2 + r] (= e / n), unseen count ints[u_out + r]; the pool size to ints[count].
// (Pool order does not matter: select_beams ranks the pool by total order.) Inputs: keys
// act[a + e], nodes ints[i0 + e] (-1 = not a candidate), unseen counts ints[u_in + e].
// Thread 0 zeroes the next beam count ints[live] (select_beams sets it).
const SEL: u32 = 256u;
var<workgroup> hist: array<atomic<u32>, 256>;
var<workgroup> sel_state: array<u32, 2>; // the round's digit and remaining k
var<workgroup> sel_total: u32;

fn composite(e: u32) -> vec2<u32> {
    let hi = bitcast<u32>(total_order(act[p.a + e])) ^ 0x80000000u;
    return vec2<u32>(hi, ~u32(ints[p.i0 + e]));
}

@compute @workgroup_size(256)
fn select_candidates(@builtin(local_invocation_index) t: u32) {
    if (t == 0u) {
        ints[p.live] = 0;
        atomicStore(&hist[0], 0u);
    }
    workgroupBarrier();
    // how many valid slots
    var valid = 0u;
    for (var e = t; e < p.rows; e += SEL) {
        if (ints[p.i0 + e] >= 0) {
            valid++;
        }
    }
    atomicAdd(&hist[0], valid);
    workgroupBarrier();
    if (t == 0u) {
        sel_total = atomicLoad(&hist[0]);
    }
    let total = workgroupUniformLoad(&sel_total);
    // threshold: the keep-th largest composite (everything when total <= keep)
    var mask = vec2<u32>(0u, 0u);
    var want = vec2<u32>(0u, 0u);
    if (total > p.keep) {
        var k = p.keep;
        for (var round = 0u; round < 8u; round++) {
            workgroupBarrier();
            atomicStore(&hist[t], 0u);
            workgroupBarrier();
            let word = round / 4u;
            let shift = 24u - 8u * (round % 4u);
            for (var e = t; e < p.rows; e += SEL) {
                if (ints[p.i0 + e] >= 0) {
                    let c = composite(e);
                    if (all((c & mask) == want)) {
                        atomicAdd(&hist[(c[word] >> shift) & 255u], 1u);
                    }
                }
            }
            workgroupBarrier();
            if (t == 0u) {
                // the digit where the count from the top reaches k
                var d = 255u;
                loop {
                    let h = atomicLoad(&hist[d]);
                    if (h >= k || d == 0u) {
                        break;
                    }
                    k -= h;
                    d--;
                }
                sel_state[0] = d;
                sel_state[1] = k;
            }
            workgroupBarrier();
            let d = sel_state[0];
            k = sel_state[1];
            mask[word] |= 255u << shift;
            want[word] |= d << shift;
        }
    }
    // keep every valid slot at or above the threshold: exactly min(total, keep) of them
    workgroupBarrier();
    if (t == 0u) {
        atomicStore(&hist[0], 0u);
    }
    workgroupBarrier();
    for (var e = t; e < p.rows; e += SEL) {
        let node = ints[p.i0 + e];
        if (node >= 0) {
            let c = composite(e);
            if (c.x > want.x || (c.x == want.x && c.y >= want.y)) {
                let r = atomicAdd(&hist[0], 1u);
                ints[p.i1 + r] = node;
                act[p.o + r] = act[p.a + e];
                ints[p.i2 + r] = i32(e / p.n);
                ints[p.u_out + r] = ints[p.u_in + e];
            }
        }
    }
    if (t == 0u) {
        ints[p.count] = i32(min(total, p.keep));
    }
}

// the selection key of pool entry r: (1 - mix) * PRM + mix * cum with the PRM (PRM alone
// when mix = 0, as the CPU search computes it), cum without
fn pool_key(r: u32) -> f32 {
    let cum = act[p.a + r];
    if (p.prm == 0u) {
        return cum;
    }
    let s = act[p.b + r];
    if (non_finite(s)) {
        ints[p.err] = 2;
    }
    if (p.mix == 0.0) {
        return s;
    }
    return (1.0 - p.mix) * s + p.mix * cum;
}

// Thread r of the pool (size ints[live]): its rank by (key desc, node asc), and the unseen
// leaves of the entries ranked ahead of it. It is kept if its rank is below `keep`, or
// (the full-feed rule, `need` = N before the last level, 0 there) if the entries ahead
// hold fewer than `need` unseen leaves. Kept entries become the next beams (node
// ints[i1 + rank], cum act[o + rank], prefix codes = the parent's (ints[x0 + parent *
// width ..]) and its own code at `level`, offset by level * C as the decoder reads them,
// to ints[g0 + rank * width ..]) or, at the last level (width = 0), the results (node
// ints[i1 + rank], key act[o + rank]). The last kept entry writes the kept count to
// ints[count]. Inputs: nodes ints[i0 + r], cums act[a + r], PRM scores act[b + r],
// parents ints[i2 + r], unseen counts ints[u_in + r].
@compute @workgroup_size(64)
fn select_beams(@builtin(global_invocation_id) g: vec3<u32>) {
    let r = g.x;
    let m = u32(ints[p.live]);
    if (r >= m) {
        return;
    }
    let node = ints[p.i0 + r];
    let key = pool_key(r);
    let ko = total_order(key);
    var rank = 0u;
    var ahead = 0u;
    for (var f = 0u; f < m; f++) {
        let kf = total_order(pool_key(f));
        let nf = ints[p.i0 + f];
        if (kf > ko || (kf == ko && nf < node)) {
            rank++;
            ahead += u32(ints[p.u_in + f]);
        }
    }
    let kept = rank < p.keep || ahead < p.need;
    if (!kept) {
        return;
    }
    let mine = u32(ints[p.u_in + r]);
    let next_kept = rank + 1u < p.keep || ahead + mine < p.need;
    if (rank + 1u == m || !next_kept) {
        ints[p.count] = i32(rank + 1u);
    }
    ints[p.i1 + rank] = node;
    if (p.width == 0u) {
        act[p.o + rank] = key;
    } else {
        act[p.o + rank] = act[p.a + r];
        let parent = u32(ints[p.i2 + r]);
        for (var j = 0u; j < p.width; j++) {
            var id = ints[p.x0 + parent * p.width + j];
            if (j == p.level) {
                id = i32(trie[p.t_code + u32(node)] + p.level * p.n);
            } else if (j > p.level) {
                id = 0;
            }
            ints[p.g0 + rank * p.width + j] = id;
        }
    }
}
