//! mkfs: lay out a fresh filesystem. API SKETCH, body being written.
use crate::device::Device;
use crate::error::Result;

#[derive(Debug, Clone, Default)]
pub struct MkfsOptions {
    pub label: Option<String>,
    /// Overwrite an existing daxfs image.
    pub force: bool,
}

/// Format `dev`. Refuses a device too small for the format, and an existing daxfs image
/// unless `opts.force`. Returns a one-paragraph summary of the geometry.
#[allow(unused_variables)]
pub fn mkfs(dev: &Device, opts: &MkfsOptions) -> Result<String> {
    unimplemented!()
}

/// `daxfs mkfs IMAGE --size SIZE`: create or resize the file, then format it. Refuses (and
/// changes nothing) when the file already holds a daxfs image and `opts.force` is false.
#[allow(unused_variables)]
pub fn mkfs_image(path: &std::path::Path, size: u64, opts: &MkfsOptions) -> std::result::Result<String, String> {
    unimplemented!()
}
