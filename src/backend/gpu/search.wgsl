// The search kernels of the GPU backend; the host appends this file to kernels.wgsl (one
// WGSL module: the layer kernels and the search share constants and buffers).

// ---- the search: exact top-k, beam update -----------------------------------------------
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

fn nan_or_pos_inf(x: f32) -> bool {
    let b = bitcast<u32>(x);
    return (b & 0x7fffffffu) > 0x7f800000u || b == 0x7f800000u;
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
// ints[i1 + rank], cum act[o + rank], parent beam ints[parent + rank], prefix codes = the
// parent's (ints[x0 + parent * width ..]) and its own code at `level`, offset by level * C
// as the decoder reads them, to ints[g0 + rank * width ..]) or, at the last level (width =
// 0), the results (node ints[i1 + rank], key act[o + rank]). The last kept entry writes
// the kept count to ints[count]. Inputs: nodes ints[i0 + r], cums act[a + r], PRM scores
// act[b + r], parents ints[i2 + r], unseen counts ints[u_in + r].
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
        ints[p.parent + rank] = i32(parent);
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
