//! Test machinery, apart from the filesystem: built only with the cargo feature
//! `testing`, so the shipped library and binary do not carry it. The integration tests,
//! the examples and the fuzz crate turn it on (Cargo.toml's self dev-dependency,
//! fuzz/Cargo.toml).
//!
//! - `crashsim`: turns a trace of the tracing device into the images a power cut could
//!   leave;
//! - `crashcheck`: runs workloads on the tracing device and checks every such image;
//! - `fuzzing`: one entry point per on-media parser, for `fuzz/` and the smoke test.
//!
//! May call anything: it sits above every layer, like a user of the library.

pub mod crashcheck;
pub mod crashsim;
pub mod fuzzing;
