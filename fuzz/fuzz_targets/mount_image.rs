#![no_main]
//! `daxfs::testing::fuzzing::mount_image` (see src/testing/fuzzing.rs).

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| daxfs::testing::fuzzing::mount_image(data));
