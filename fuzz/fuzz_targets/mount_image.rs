#![no_main]
//! `daxfs::fuzzing::mount_image` (see src/fuzzing.rs).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::fuzzing::mount_image(data));
