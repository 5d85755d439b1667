//! daxfs-client: direct access to the data of files on a daxfs mount.
//!
//! `proto` is the control-channel protocol (shared with the daemon, which depends on this
//! crate for it); `client` the library (Rust API); `capi` the C ABI of include/daxfs.h.
//! See README.md, "Direct access (client library)", for the trust model and the socket.

pub mod capi;
pub mod client;
pub mod persist;
pub mod proto;
pub mod sys;

pub use client::{Client, Error, File, Mapping, Mode, Pin, Result};
