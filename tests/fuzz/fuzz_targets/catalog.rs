//! catalog.bin parser: any bytes either fail validation with an error or give a catalog
//! whose every accessor works (no panic, no out-of-bounds).
#![no_main]
use libfuzzer_sys::fuzz_target;
use promise_rt::Catalog;

fuzz_target!(|data: &[u8]| {
    if let Ok(cat) = Catalog::from_bytes(data.to_vec()) {
        for node in 0..cat.num_nodes() as u32 {
            for child in cat.children(node) {
                let _ = cat.node_code(child);
                let _ = cat.child_with_code(node, cat.node_code(child));
            }
            if cat.is_leaf(node) {
                let item = cat.leaf_item(node);
                assert_eq!(cat.item_leaf(item), node);
            }
        }
        for item in 0..cat.num_items() as u32 {
            for l in 0..cat.levels() {
                assert!((cat.item_code(item, l) as usize) < cat.codebook(l));
            }
        }
    }
});
