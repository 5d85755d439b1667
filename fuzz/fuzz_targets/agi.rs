#![no_main]
//! `daxfs::testing::fuzzing::agi` (see src/testing/fuzzing.rs).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::testing::fuzzing::agi(data));
