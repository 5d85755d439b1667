//! check: read-only verification of every structure. API SKETCH, body being written.
use crate::device::Device;
use crate::error::Result;

#[derive(Debug, Default)]
pub struct CheckReport {
    /// Each inconsistency, in words. Empty: clean.
    pub problems: Vec<String>,
    /// Counts seen (inodes, directories, blocks used/free), one line.
    pub summary: String,
}

/// Verify the filesystem on `dev` without changing it (a dirty log is replayed in memory).
/// Err: the image cannot be read at all (not daxfs, unreadable superblock).
#[allow(unused_variables)]
pub fn check(dev: &Device) -> Result<CheckReport> {
    unimplemented!()
}

/// `daxfs info`: geometry, usage, features, log state, as text.
#[allow(unused_variables)]
pub fn info(dev: &Device) -> Result<String> {
    unimplemented!()
}
