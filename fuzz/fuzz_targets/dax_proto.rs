#![no_main]
//! `daxfs::fuzzing::dax_proto` (see src/fuzzing.rs): the direct-access protocol decoder.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::fuzzing::dax_proto(data));
