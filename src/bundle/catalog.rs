//! `catalog.bin`: the item <-> SID table and the prefix trie, read in place from the
//! bundle's bytes. The byte layout is documented once, in `models/README.md`; this module
//! validates it completely in `Catalog::parse`, after which no accessor can fail.
//!
//! Node ids are breadth-first: root = 0, then every depth-1 prefix in code order, then
//! depth 2, ...; the children of a node are a contiguous node range sorted by code.

use std::ops::Range;
use std::sync::Arc;

use super::Bytes;
use crate::error::{err, Result};

/// Magic bytes at offset 0.
pub const MAGIC: &[u8; 8] = b"PRMCATLG";
/// The catalog format version this runtime reads.
pub const VERSION: u32 = 1;
/// Written as a little-endian u32 at offset 12; reads back differently on a byte-swapped file.
pub const BYTE_ORDER_MARK: u32 = 0x0A0B_0C0D;
/// Largest number of SID levels a catalog (and the search) supports.
pub const MAX_LEVELS: usize = 6;
const HEADER_BYTES: usize = 64;

/// Offsets (in bytes from the start of the file) of the six sections.
#[derive(Clone, Copy, Debug)]
struct Sections {
    level_start: usize, // u32[levels + 2]
    first_child: usize, // u32[num_nodes + 1]
    node_code: usize,   // u16[num_nodes]
    leaf_item: usize,   // u32[num_items]
    item_leaf: usize,   // u32[num_items]
    item_codes: usize,  // u16[num_items * levels]
    end: usize,
}

fn align8(x: usize) -> usize {
    (x + 7) & !7
}

impl Sections {
    fn layout(levels: usize, nodes: usize, items: usize) -> Option<Sections> {
        let level_start = HEADER_BYTES;
        let first_child = align8(level_start.checked_add((levels + 2) * 4)?);
        let node_code = align8(first_child.checked_add(nodes.checked_add(1)?.checked_mul(4)?)?);
        let leaf_item = align8(node_code.checked_add(nodes.checked_mul(2)?)?);
        let item_leaf = align8(leaf_item.checked_add(items.checked_mul(4)?)?);
        let item_codes = align8(item_leaf.checked_add(items.checked_mul(4)?)?);
        let end = align8(item_codes.checked_add(items.checked_mul(levels)?.checked_mul(2)?)?);
        Some(Sections {
            level_start,
            first_child,
            node_code,
            leaf_item,
            item_leaf,
            item_codes,
            end,
        })
    }
}

/// A validated view of `catalog.bin`. Cheap to clone (shares the bytes).
#[derive(Clone)]
pub struct Catalog {
    bytes: Arc<Bytes>,
    levels: usize,
    num_nodes: usize,
    num_items: usize,
    codebook: [u32; MAX_LEVELS],
    s: Sections,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("levels", &self.levels)
            .field("num_nodes", &self.num_nodes)
            .field("num_items", &self.num_items)
            .finish()
    }
}

#[inline]
fn rd_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}
#[inline]
fn rd_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// The exact size of a `catalog.bin` for these counts (`None` on overflow): checked
/// against the manifest before the file is read.
pub(crate) fn expected_len(levels: usize, nodes: usize, items: usize) -> Option<u64> {
    Sections::layout(levels, nodes, items).map(|s| s.end as u64)
}

impl Catalog {
    /// Validate every field, offset and index of the catalog once.
    pub(crate) fn parse(bytes: Arc<Bytes>) -> Result<Catalog> {
        let b: &[u8] = &bytes;
        if b.len() < HEADER_BYTES {
            return Err(err!(
                Catalog,
                "catalog.bin is {} bytes, expected at least the {HEADER_BYTES}-byte header",
                b.len()
            ));
        }
        if &b[0..8] != MAGIC {
            return Err(err!(
                Catalog,
                "catalog.bin starts with {:?}, expected the magic {:?}",
                &b[0..8],
                std::str::from_utf8(MAGIC).unwrap_or("")
            ));
        }
        let version = rd_u32(b, 8);
        if version != VERSION {
            return Err(err!(
                Catalog,
                "catalog.bin has format version {version}, this runtime reads version {VERSION}"
            ));
        }
        let bom = rd_u32(b, 12);
        if bom != BYTE_ORDER_MARK {
            return Err(err!(Catalog, "catalog.bin byte-order mark is {bom:#010x}, expected {BYTE_ORDER_MARK:#010x} (little-endian)"));
        }
        let num_items = rd_u32(b, 16) as usize;
        let levels = rd_u32(b, 20) as usize;
        let num_nodes = rd_u32(b, 24) as usize;
        let header = rd_u32(b, 28) as usize;
        if header != HEADER_BYTES {
            return Err(err!(
                Catalog,
                "catalog.bin header size is {header}, expected {HEADER_BYTES}"
            ));
        }
        if levels == 0 || levels > MAX_LEVELS {
            return Err(err!(
                Catalog,
                "catalog.bin has {levels} SID levels, expected 1..={MAX_LEVELS}"
            ));
        }
        if num_items == 0 {
            return Err(err!(Catalog, "catalog.bin has no items"));
        }
        if num_nodes < levels + 1 || num_nodes > u32::MAX as usize - 1 {
            return Err(err!(
                Catalog,
                "catalog.bin has {num_nodes} trie nodes, expected at least levels + 1 = {}",
                levels + 1
            ));
        }
        let mut codebook = [0u32; MAX_LEVELS];
        for (l, c) in codebook.iter_mut().enumerate() {
            *c = rd_u32(b, 32 + 4 * l);
            if l < levels && (*c == 0 || *c > 0xFFFF) {
                return Err(err!(
                    Catalog,
                    "catalog.bin codebook size of level {} is {}, expected 1..=65535",
                    l + 1,
                    *c
                ));
            }
            if l >= levels && *c != 0 {
                return Err(err!(
                    Catalog,
                    "catalog.bin codebook size of unused level {} is {}, expected 0",
                    l + 1,
                    *c
                ));
            }
        }
        let total = u64::from_le_bytes(b[56..64].try_into().expect("8 bytes")) as usize;
        let s = Sections::layout(levels, num_nodes, num_items).ok_or_else(|| {
            err!(
                Catalog,
                "catalog.bin section sizes overflow ({num_nodes} nodes, {num_items} items)"
            )
        })?;
        if total != s.end || b.len() != s.end {
            return Err(err!(Catalog, "catalog.bin is {} bytes and declares {total}, expected {} for {levels} levels, {num_nodes} nodes, {num_items} items", b.len(), s.end));
        }
        let cat = Catalog {
            bytes: bytes.clone(),
            levels,
            num_nodes,
            num_items,
            codebook,
            s,
        };
        cat.validate_trie()?;
        Ok(cat)
    }

    fn validate_trie(&self) -> Result<()> {
        let (l, n, m) = (self.levels, self.num_nodes, self.num_items);
        // One deref and one slice per table, not one per read: these loops walk every
        // node and item once, and are most of an open's time on a large catalog.
        let b: &[u8] = &self.bytes;
        let first_child = &b[self.s.first_child..self.s.first_child + 4 * (n + 1)];
        let codes = &b[self.s.node_code..self.s.node_code + 2 * n];
        let code_of = |i: usize| u16::from_le_bytes([codes[2 * i], codes[2 * i + 1]]);
        // level_start: [0] = 0, [1] = 1, strictly increasing, [L+1] = nodes, leaves = items
        let ls = |d: usize| self.level_start_raw(d) as usize;
        if ls(0) != 0 || ls(1) != 1 || ls(l + 1) != n {
            return Err(err!(
                Catalog,
                "catalog.bin level_start is [{}, {}, .., {}], expected [0, 1, .., {n}]",
                ls(0),
                ls(1),
                ls(l + 1)
            ));
        }
        for d in 1..=l {
            if ls(d + 1) <= ls(d) {
                return Err(err!(
                    Catalog,
                    "catalog.bin level {d} has no nodes (level_start not increasing)"
                ));
            }
        }
        if ls(l + 1) - ls(l) != m {
            return Err(err!(
                Catalog,
                "catalog.bin has {} leaves and {m} items, expected one leaf per item",
                ls(l + 1) - ls(l)
            ));
        }
        // first_child: CSR over depths; children of depth-d nodes are exactly depth d+1
        let fc = |i: usize| {
            let x = &first_child[4 * i..4 * i + 4];
            u32::from_le_bytes([x[0], x[1], x[2], x[3]]) as usize
        };
        for d in 0..l {
            if fc(ls(d)) != ls(d + 1) {
                return Err(err!(
                    Catalog,
                    "catalog.bin first child of the first depth-{d} node is {}, expected {}",
                    fc(ls(d)),
                    ls(d + 1)
                ));
            }
            for node in ls(d)..ls(d + 1) {
                if fc(node + 1) <= fc(node) {
                    return Err(err!(Catalog, "catalog.bin node {node} at depth {d} has no children (first_child {} -> {})", fc(node), fc(node + 1)));
                }
            }
            if fc(ls(d + 1)) != ls(d + 2) {
                return Err(err!(
                    Catalog,
                    "catalog.bin children of depth {d} end at {}, expected {}",
                    fc(ls(d + 1)),
                    ls(d + 2)
                ));
            }
        }
        for node in ls(l)..=n {
            if fc(node) != n {
                return Err(err!(
                    Catalog,
                    "catalog.bin leaf {node} has first_child {}, expected {n}",
                    fc(node)
                ));
            }
        }
        // node codes: root 0xFFFF, codes in range, strictly increasing among siblings
        if self.node_code(0) != 0xFFFF {
            return Err(err!(
                Catalog,
                "catalog.bin root code is {}, expected 65535",
                self.node_code(0)
            ));
        }
        for d in 0..l {
            let cb = self.codebook[d];
            for parent in ls(d)..ls(d + 1) {
                let mut prev: i64 = -1;
                for child in fc(parent)..fc(parent + 1) {
                    let c = code_of(child) as i64;
                    if c >= cb as i64 {
                        return Err(err!(Catalog, "catalog.bin node {child} has code {c}, expected < {cb} (codebook of level {})", d + 1));
                    }
                    if c <= prev {
                        return Err(err!(Catalog, "catalog.bin children of node {parent} are not in strictly increasing code order ({prev} then {c})"));
                    }
                    prev = c;
                }
            }
        }
        // leaf_item and item_leaf are inverse bijections, and the codes on the path from
        // each leaf up to the root are its item's SID. Leaves in order, each walking up
        // through a parent table built in one pass (the walks read the trie almost in
        // order); with each node's children strictly increasing this is the same as "the
        // item's codes lead to its leaf". The item-indexed tables are read at random: in
        // batches, a first pass touches the rows the batch needs with independent loads,
        // so their cache misses overlap instead of following one another (1M items: the
        // check went from most of the open to a fraction of it).
        let leaf_items = &b[self.s.leaf_item..self.s.leaf_item + 4 * m];
        let item_leaves = &b[self.s.item_leaf..self.s.item_leaf + 4 * m];
        let sids = &b[self.s.item_codes..self.s.item_codes + 2 * m * l];
        let first_leaf = ls(l);
        let mut parent = crate::alloc::zeros::<u32>(n, "the trie's parent table")?;
        for p in 0..first_leaf {
            parent[fc(p)..fc(p + 1)].fill(p as u32);
        }
        const BATCH: usize = 64;
        let mut items = [0usize; BATCH];
        for start in (0..m).step_by(BATCH) {
            let end = (start + BATCH).min(m);
            let mut touched = 0u8;
            for (slot, leaf) in items.iter_mut().zip(start..end) {
                let it = rd_u32(leaf_items, 4 * leaf) as usize;
                if it >= m {
                    return Err(err!(
                        Catalog,
                        "catalog.bin leaf {} maps to item {it}, expected < {m}",
                        first_leaf + leaf
                    ));
                }
                *slot = it;
                touched ^= item_leaves[4 * it] ^ sids[2 * it * l];
            }
            std::hint::black_box(touched);
            for (&item, leaf) in items.iter().zip(start..end) {
                let back = rd_u32(item_leaves, 4 * item) as usize;
                if back != first_leaf + leaf {
                    return Err(err!(Catalog, "catalog.bin item {item} maps to leaf {back}, expected {} (leaf_item and item_leaf disagree)", first_leaf + leaf));
                }
                let row = &sids[2 * item * l..2 * (item + 1) * l];
                let mut node = first_leaf + leaf;
                for d in (0..l).rev() {
                    let code = u16::from_le_bytes([row[2 * d], row[2 * d + 1]]);
                    let got = code_of(node);
                    if code != got {
                        return Err(err!(Catalog, "catalog.bin item {item} has code {code} at level {}, but its leaf {}'s ancestor {node} at that level has code {got}", d + 1, first_leaf + leaf));
                    }
                    node = parent[node] as usize;
                }
            }
        }
        Ok(())
    }

    fn level_start_raw(&self, d: usize) -> u32 {
        rd_u32(&self.bytes, self.s.level_start + 4 * d)
    }
    fn first_child_raw(&self, i: usize) -> u32 {
        rd_u32(&self.bytes, self.s.first_child + 4 * i)
    }

    /// Number of SID levels (trie depth).
    pub fn levels(&self) -> usize {
        self.levels
    }
    /// Number of items (leaves).
    pub fn num_items(&self) -> usize {
        self.num_items
    }
    /// Number of trie nodes, root included.
    pub fn num_nodes(&self) -> usize {
        self.num_nodes
    }
    /// Codebook size of `level` (0-based).
    pub fn codebook(&self, level: usize) -> usize {
        self.codebook[level] as usize
    }
    /// Node ids of depth `depth` (0 = root).
    pub fn depth_nodes(&self, depth: usize) -> Range<u32> {
        self.level_start_raw(depth)..self.level_start_raw(depth + 1)
    }
    /// Children of `node` (empty for a leaf), in increasing code order.
    #[inline]
    pub fn children(&self, node: u32) -> Range<u32> {
        let n = node as usize;
        self.first_child_raw(n)..self.first_child_raw(n + 1)
    }
    /// The code of `node` at its own level (65535 for the root).
    #[inline]
    pub fn node_code(&self, node: u32) -> u16 {
        rd_u16(&self.bytes, self.s.node_code + 2 * node as usize)
    }
    /// The child of `node` with `code`, if any (binary search over the sorted children).
    pub fn child_with_code(&self, node: u32, code: u16) -> Option<u32> {
        let r = self.children(node);
        let (mut lo, mut hi) = (r.start, r.end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let c = self.node_code(mid);
            if c == code {
                return Some(mid);
            }
            if c < code {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        None
    }
    /// The leaves under `node` (a contiguous node range: ids are breadth-first and every
    /// node's children are contiguous), `depth` being `node`'s depth (0 = root). O(levels).
    #[inline]
    pub fn leaf_range(&self, node: u32, depth: usize) -> Range<u32> {
        let (mut a, mut b) = (node as usize, node as usize + 1);
        for _ in depth..self.levels {
            a = self.first_child_raw(a) as usize;
            b = self.first_child_raw(b) as usize;
        }
        a as u32..b as u32
    }
    /// True if `node` is a leaf (depth == levels).
    #[inline]
    pub fn is_leaf(&self, node: u32) -> bool {
        node >= self.level_start_raw(self.levels)
    }
    /// The item of leaf `node`. `node` must be a leaf.
    #[inline]
    pub fn leaf_item(&self, node: u32) -> u32 {
        let leaf = (node - self.level_start_raw(self.levels)) as usize;
        rd_u32(&self.bytes, self.s.leaf_item + 4 * leaf)
    }
    /// The leaf node of `item` (`item < num_items`).
    #[inline]
    pub fn item_leaf(&self, item: u32) -> u32 {
        rd_u32(&self.bytes, self.s.item_leaf + 4 * item as usize)
    }
    /// The code of `item` at `level` (0-based).
    #[inline]
    pub fn item_code(&self, item: u32, level: usize) -> u16 {
        rd_u16(
            &self.bytes,
            self.s.item_codes + 2 * (item as usize * self.levels + level),
        )
    }
    /// The depth of `node` (0 = root), or `None` past the trie. O(levels).
    #[inline]
    pub fn depth(&self, node: u32) -> Option<usize> {
        if node as usize >= self.num_nodes {
            return None;
        }
        Some(
            (1..=self.levels)
                .take_while(|&d| self.level_start_raw(d) <= node)
                .count(),
        )
    }
    /// The parent of `node`, or `None` for the root and past the trie: the node one level
    /// up whose children hold it (binary search over that level's sorted `first_child`; no
    /// parent table, so nothing here grows with the catalog). O(levels + log nodes).
    pub fn parent(&self, node: u32) -> Option<u32> {
        match self.depth(node)? {
            0 => None,
            depth => Some(self.parent_at(node, depth)),
        }
    }
    /// [`parent`](Self::parent) of a node known to be at `depth >= 1`.
    fn parent_at(&self, node: u32, depth: usize) -> u32 {
        let r = self.depth_nodes(depth - 1);
        let (mut lo, mut hi) = (r.start, r.end);
        // the last p in r with first_child(p) <= node
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.first_child_raw(mid as usize) <= node {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }
    /// The PRM's path input of `node` (`model.prm_query: "path"`): for each level l, `l *
    /// width + code` of the node's level-l ancestor (itself at its own level), or `levels
    /// * width` (the padding row) below the node's depth. `out` holds `levels` values;
    /// `width` is at least every level's codebook.
    pub fn path_rows(&self, node: u32, width: usize, out: &mut [i64]) -> Result<()> {
        let depth = self.depth(node).ok_or_else(|| {
            err!(
                Backend,
                "node {node} is past the trie's {} nodes",
                self.num_nodes
            )
        })?;
        if out.len() != self.levels
            || self.codebook[..self.levels]
                .iter()
                .any(|&c| c as usize > width)
        {
            return Err(err!(
                Backend,
                "path of {} values at width {width}, expected {} values and a width of at least every codebook",
                out.len(),
                self.levels
            ));
        }
        out.fill((self.levels * width) as i64);
        let mut n = node;
        for d in (1..=depth).rev() {
            out[d - 1] = ((d - 1) * width + self.node_code(n) as usize) as i64;
            n = self.parent_at(n, d);
        }
        Ok(())
    }
}

/// Build the bytes of a `catalog.bin` for `sids` (one row of `codebook.len()` codes per
/// item, item id = row index). The same layout the Python exporter writes; used by tests,
/// fuzzing and tools that make synthetic catalogs. Errors if SIDs are not unique, a code
/// is out of its codebook, or the shape is unsupported.
pub fn build(sids: &[Vec<u16>], codebook: &[u32]) -> Result<Vec<u8>> {
    let levels = codebook.len();
    if levels == 0 || levels > MAX_LEVELS {
        return Err(err!(Catalog, "{levels} levels, expected 1..={MAX_LEVELS}"));
    }
    if sids.is_empty() {
        return Err(err!(Catalog, "no items"));
    }
    for (i, s) in sids.iter().enumerate() {
        if s.len() != levels {
            return Err(err!(
                Catalog,
                "item {i} has {} codes, expected {levels}",
                s.len()
            ));
        }
        if let Some(l) = (0..levels).find(|&l| s[l] as u32 >= codebook[l]) {
            return Err(err!(
                Catalog,
                "item {i} has code {} at level {}, expected < {}",
                s[l],
                l + 1,
                codebook[l]
            ));
        }
    }
    // per depth: sorted unique prefixes -> BFS node ids
    let mut depth_prefixes: Vec<Vec<&[u16]>> = vec![vec![&[][..]]];
    for d in 1..=levels {
        let mut ps: Vec<&[u16]> = sids.iter().map(|s| &s[..d]).collect();
        ps.sort();
        ps.dedup();
        depth_prefixes.push(ps);
    }
    if depth_prefixes[levels].len() != sids.len() {
        return Err(err!(
            Catalog,
            "SIDs are not unique ({} distinct for {} items)",
            depth_prefixes[levels].len(),
            sids.len()
        ));
    }
    let mut level_start = vec![0u32];
    for ps in &depth_prefixes {
        let last = *level_start.last().expect("non-empty");
        level_start.push(last + ps.len() as u32);
    }
    let num_nodes = *level_start.last().expect("non-empty") as usize;
    let node_of = |d: usize, p: &[u16]| -> u32 {
        level_start[d] + depth_prefixes[d].binary_search(&p).expect("prefix exists") as u32
    };
    let mut node_code = vec![0xFFFFu16; num_nodes];
    let mut counts = vec![0u32; num_nodes];
    for d in 1..=levels {
        for p in &depth_prefixes[d] {
            node_code[node_of(d, p) as usize] = p[d - 1];
            counts[node_of(d - 1, &p[..d - 1]) as usize] += 1;
        }
    }
    let mut first_child = vec![0u32; num_nodes + 1];
    first_child[0] = 1;
    for n in 0..num_nodes {
        first_child[n + 1] = first_child[n] + counts[n];
    }
    for fc in first_child.iter_mut().skip(level_start[levels] as usize) {
        *fc = num_nodes as u32;
    }
    let mut leaf_item = vec![0u32; sids.len()];
    let mut item_leaf = vec![0u32; sids.len()];
    for (i, s) in sids.iter().enumerate() {
        let leaf = node_of(levels, s);
        item_leaf[i] = leaf;
        leaf_item[(leaf - level_start[levels]) as usize] = i as u32;
    }
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    for v in [
        VERSION,
        BYTE_ORDER_MARK,
        sids.len() as u32,
        levels as u32,
        num_nodes as u32,
        HEADER_BYTES as u32,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for l in 0..MAX_LEVELS {
        out.extend_from_slice(&codebook.get(l).copied().unwrap_or(0).to_le_bytes());
    }
    out.extend_from_slice(&[0u8; 8]); // total, patched below
    let pad = |o: &mut Vec<u8>| o.resize(align8(o.len()), 0);
    for v in &level_start {
        out.extend_from_slice(&v.to_le_bytes());
    }
    pad(&mut out);
    for v in &first_child {
        out.extend_from_slice(&v.to_le_bytes());
    }
    pad(&mut out);
    for v in &node_code {
        out.extend_from_slice(&v.to_le_bytes());
    }
    pad(&mut out);
    for v in &leaf_item {
        out.extend_from_slice(&v.to_le_bytes());
    }
    pad(&mut out);
    for v in &item_leaf {
        out.extend_from_slice(&v.to_le_bytes());
    }
    pad(&mut out);
    for s in sids {
        for c in s {
            out.extend_from_slice(&c.to_le_bytes());
        }
    }
    pad(&mut out);
    let total = out.len() as u64;
    out[56..64].copy_from_slice(&total.to_le_bytes());
    Ok(out)
}

impl Catalog {
    /// Parse catalog bytes held in memory (validated exactly like a bundle's file).
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Catalog> {
        Catalog::parse(Arc::new(Bytes::Owned(bytes)))
    }
}
