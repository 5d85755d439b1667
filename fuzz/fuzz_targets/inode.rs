#![no_main]
//! `daxfs::fuzzing::inode` (see src/fuzzing.rs).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::fuzzing::inode(data));
