#![no_main]
//! `daxfs::fuzzing::xattr_block` (see src/fuzzing.rs).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::fuzzing::xattr_block(data));
