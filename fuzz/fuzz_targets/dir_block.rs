#![no_main]
//! `daxfs::fuzzing::dir_block` (see src/fuzzing.rs).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::fuzzing::dir_block(data));
