#![no_main]
//! `daxfs::fuzzing::btree_node` (see src/fuzzing.rs).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::fuzzing::btree_node(data));
