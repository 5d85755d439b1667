#![no_main]
//! `daxfs::fuzzing::superblock` (see src/fuzzing.rs).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::fuzzing::superblock(data));
