//! The app's item ids: `ids.bin`, an optional table of one external id (a UTF-8 string)
//! per catalog item, so that callers speak their own ids (models/README.md, "Item ids").
//!
//! Layout, little-endian: magic `PRMIDS\0\0`, u32 version (1), u32 count (the manifest's
//! `num_items`), u64 blob length, `count + 1` u32 offsets into the blob (the first 0, the
//! last the blob's length, each id `offsets[i]..offsets[i + 1]`), then the blob. Checked
//! once at open: the sizes against the manifest before a byte is read, every id 1..=256
//! bytes of valid UTF-8 without control characters, no id twice. A table sorted by id is
//! built at load, so a lookup is a binary search that allocates nothing.

use crate::alloc::with_capacity;
use crate::error::{err, escape, Result};

/// Magic of `ids.bin`.
pub const IDS_MAGIC: &[u8; 8] = b"PRMIDS\0\0";
/// Version of the `ids.bin` layout.
pub const IDS_VERSION: u32 = 1;
/// The longest external id, in bytes.
pub const MAX_ID_BYTES: usize = 256;
const HEADER: usize = 24;

/// The most bytes an `ids.bin` of `items` ids can take (the size check before reading).
pub fn max_len(items: usize) -> u64 {
    HEADER as u64 + 4 * (items as u64 + 1) + (MAX_ID_BYTES as u64) * items as u64
}

/// Why an external id is malformed, or `None` when it is well formed (1..=256 bytes, no
/// control character). The same rule for the table and for a caller's history.
pub fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("is empty".into());
    }
    if id.len() > MAX_ID_BYTES {
        return Some(format!(
            "is {} bytes, at most {MAX_ID_BYTES} allowed",
            id.len()
        ));
    }
    if let Some(c) = id.chars().find(|c| c.is_control()) {
        return Some(format!("holds the control character U+{:04X}", c as u32));
    }
    None
}

/// A validated id table with its sorted index.
#[derive(Debug)]
pub struct ItemIds {
    /// `[count + 1]` offsets into `blob`: id `i` is `blob[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<u32>,
    blob: Vec<u8>,
    /// Item indices sorted by their id's bytes.
    sorted: Vec<u32>,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl ItemIds {
    /// Parse and check `bytes` (the whole `ids.bin`) against the catalog's `items`.
    pub fn parse(bytes: &[u8], items: usize, name: &str) -> Result<ItemIds> {
        let name = escape(name);
        if bytes.len() < HEADER {
            return Err(err!(
                Catalog,
                "{name} is {} bytes, shorter than its {HEADER}-byte header",
                bytes.len()
            ));
        }
        if &bytes[..8] != IDS_MAGIC {
            return Err(err!(
                Catalog,
                "{name} does not start with the ids.bin magic"
            ));
        }
        let version = u32_at(bytes, 8);
        if version != IDS_VERSION {
            return Err(err!(
                Catalog,
                "{name} has layout version {version}, this runtime reads {IDS_VERSION}"
            ));
        }
        let count = u32_at(bytes, 12) as usize;
        if count != items {
            return Err(err!(
                Catalog,
                "{name} holds {count} ids, the catalog has {items} items"
            ));
        }
        let blob_len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
        let table = 4 * (count + 1);
        let want = (HEADER + table) as u64 + blob_len;
        if want != bytes.len() as u64 {
            return Err(err!(
                Catalog,
                "{name} is {} bytes, its header ({count} ids, a {blob_len}-byte blob) says {want}",
                bytes.len()
            ));
        }
        let blob = &bytes[HEADER + table..];
        let mut offsets = with_capacity(count + 1, "the id offsets")?;
        offsets.extend((0..=count).map(|i| u32_at(bytes, HEADER + 4 * i)));
        if offsets[0] != 0 || offsets[count] as usize != blob.len() {
            return Err(err!(
                Catalog,
                "{name}: the id offsets run {}..{}, expected 0..{} (the blob)",
                offsets[0],
                offsets[count],
                blob.len()
            ));
        }
        for i in 0..count {
            let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
            if end <= start || end > blob.len() || end - start > MAX_ID_BYTES {
                return Err(err!(
                    Catalog,
                    "{name}: id {i} spans bytes {start}..{end} of a {}-byte blob (each id is \
                     1..={MAX_ID_BYTES} bytes, in order)",
                    blob.len()
                ));
            }
            let id = std::str::from_utf8(&blob[start..end])
                .map_err(|_| err!(Catalog, "{name}: id {i} is not valid UTF-8"))?;
            if let Some(why) = id_problem(id) {
                return Err(err!(Catalog, "{name}: id {i} ({:?}) {why}", escape(id)));
            }
        }
        let mut copy = with_capacity(blob.len(), "the id table")?;
        copy.extend_from_slice(blob);
        let mut sorted = with_capacity(count, "the sorted id index")?;
        sorted.extend(0..count as u32);
        let mut ids = ItemIds {
            offsets,
            blob: copy,
            sorted: Vec::new(),
        };
        sorted.sort_unstable_by(|&a, &b| ids.bytes(a).cmp(ids.bytes(b)));
        if let Some(w) = sorted
            .windows(2)
            .find(|w| ids.bytes(w[0]) == ids.bytes(w[1]))
        {
            return Err(err!(
                Catalog,
                "{name}: items {} and {} have the same id {:?}",
                w[0].min(w[1]),
                w[0].max(w[1]),
                escape(ids.get(w[0]))
            ));
        }
        ids.sorted = sorted;
        Ok(ids)
    }

    fn bytes(&self, item: u32) -> &[u8] {
        let i = item as usize;
        &self.blob[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// How many ids (the catalog's items).
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether the table is empty (a catalog always has items, so never after open).
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// The external id of catalog item `item`. Panics when `item` is out of range, like
    /// slice indexing: every index the runtime returns is in range.
    pub fn get(&self, item: u32) -> &str {
        // checked UTF-8 at parse time
        std::str::from_utf8(self.bytes(item)).unwrap_or_default()
    }

    /// The catalog item whose id is `id`, by binary search (no allocation).
    pub fn lookup(&self, id: &[u8]) -> Option<u32> {
        self.sorted
            .binary_search_by(|&i| self.bytes(i).cmp(id))
            .ok()
            .map(|k| self.sorted[k])
    }
}

/// Encode `ids` as an `ids.bin` (the exporter's layout; tools and tests).
pub fn encode(ids: &[&str]) -> Vec<u8> {
    let blob_len: usize = ids.iter().map(|s| s.len()).sum();
    let mut out = Vec::with_capacity(HEADER + 4 * (ids.len() + 1) + blob_len);
    out.extend_from_slice(IDS_MAGIC);
    out.extend_from_slice(&IDS_VERSION.to_le_bytes());
    out.extend_from_slice(&(ids.len() as u32).to_le_bytes());
    out.extend_from_slice(&(blob_len as u64).to_le_bytes());
    let mut at = 0u32;
    out.extend_from_slice(&at.to_le_bytes());
    for s in ids {
        at += s.len() as u32;
        out.extend_from_slice(&at.to_le_bytes());
    }
    for s in ids {
        out.extend_from_slice(s.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_lookup() {
        let ids = ["sku-7", "ä-1", "sku-10", "a"];
        let t = ItemIds::parse(&encode(&ids), 4, "ids.bin").unwrap();
        for (i, s) in ids.iter().enumerate() {
            assert_eq!(t.get(i as u32), *s);
            assert_eq!(t.lookup(s.as_bytes()), Some(i as u32));
        }
        assert_eq!(t.lookup(b"sku-1"), None);
        assert_eq!(t.lookup(b""), None);
    }

    #[test]
    fn bad_tables_are_refused() {
        let bad = |b: Vec<u8>, n: usize, what: &str| {
            let e = ItemIds::parse(&b, n, "ids.bin").unwrap_err();
            assert_eq!(e.code(), crate::ErrorCode::Catalog, "{e}");
            assert!(e.to_string().contains(what), "{e} lacks {what}");
        };
        bad(encode(&["a", "b", "a"]), 3, "same id");
        bad(encode(&["a", "b"]), 3, "holds 2 ids");
        let long = "x".repeat(MAX_ID_BYTES + 1);
        bad(encode(&["a", &long]), 2, "id 1 spans");
        bad(encode(&["a", "b\n"]), 2, "control character");
        let mut b = encode(&["a", "bc"]);
        let n = b.len();
        b[n - 1] = 0xff;
        bad(b, 2, "not valid UTF-8");
        let b = encode(&["a", "bc"]);
        bad(b[..b.len() - 1].to_vec(), 2, "its header");
        bad(b[..10].to_vec(), 2, "shorter than");
        let mut b = encode(&["a", "bc"]);
        b[HEADER..HEADER + 4].copy_from_slice(&1u32.to_le_bytes()); // not from 0
        bad(b, 2, "offsets run");
        let mut b = encode(&["ab", "c"]);
        b[HEADER + 4..HEADER + 8].copy_from_slice(&0u32.to_le_bytes()); // an empty id
        bad(b, 2, "id 0 spans");
    }
}
