//! The DAX layer: how file ranges become device blocks a program may use directly.
//!
//! Owns the fault path today (`iomap`: map a file block, allocate a range's holes), used
//! by every write path of fs/ and by directory growth. Next here: layout leases (a lease
//! per mapped range, broken under MMAPLOCK exclusive by truncate, punch and collapse before
//! the layout changes) in `lease.rs`, and the client protocol's messages in `protocol.rs`;
//! the server that answers them calls fs/ and so sits beside fuse.rs, above fs.
//!
//! May call: `error`, `format`, `pmem`, `log`, `space`, `inode`. Never dir, xattr or fs.

pub mod iomap;

pub use iomap::{alloc_holes, dev_off, write_resblks};
