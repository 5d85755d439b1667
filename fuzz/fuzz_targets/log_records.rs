#![no_main]
//! `daxfs::fuzzing::log_records` (see src/fuzzing.rs).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::fuzzing::log_records(data));
