#![no_main]
//! `daxfs::fuzzing::agf` (see src/fuzzing.rs).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::fuzzing::agf(data));
