#![no_main]
//! `daxfs::testing::fuzzing::dax_proto` (see src/testing/fuzzing.rs): the direct-access protocol decoder.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::testing::fuzzing::dax_proto(data));
