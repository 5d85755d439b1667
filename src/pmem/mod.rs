//! The persistent-memory layer: the mapped device and the only way to reach it.
//!
//! Owns the device backends (image file, device-DAX, memfd), the persistence primitives
//! every store and every durability point goes through (`write`/`zero`/`store_u64`,
//! `flush`, `fence`), the tracing backend the crash checker replays, and the error tags
//! (XFS's errortag) that make device operations fail on demand.
//! Also the image locks: one writer per image, and who serves a mounted image.
//!
//! May call: `error`, and `format` for the block size (device sizes are whole blocks).
//! Everything above reaches the media through here.

pub mod device;
pub mod errtag;
pub mod imagelock;
