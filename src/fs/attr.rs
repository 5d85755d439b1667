//! Attributes: setattr (mode, owner, size through `truncate`, times; chmod keeps an access
//! ACL in step), kill_suid (also after an unprivileged fallocate), the extended attributes
//! (including the daxfs control xattrs: stats, error tags) and the inode flags (chattr:
//! immutable, append-only, sync, noatime, nodump, DAX). Who may change the flags is decided
//! here; what the immutable and append-only flags forbid is checked by each operation, under
//! the ILOCK it changes the inode with (`check_mutable`, `check_not_append_only` in mod.rs).

use super::*;

impl Fs {
    pub fn setattr(&self, ino: Ino, set: &SetAttr, cred: &Cred) -> Result<Attr> {
        self.mp.check_writable()?;
        let inode = self.iget(ino)?;
        check_setattr_allowed(&inode.ilock_shared(), set)?;
        if let Some(size) = set.size {
            match inode.ilock_shared().di.kind() {
                FileKind::File => {}
                FileKind::Dir => return err(libc::EISDIR),
                // A symlink, fifo, device or socket has no data to size (the kernel never
                // asks; a client that does gets what truncate(2) gives).
                _ => return err(libc::EINVAL),
            }
            self.truncate(&inode, size, false)?;
        }
        let mut tx = self.mp.trans(0)?;
        let mut d = inode.ilock_excl();
        let now = inode::now();
        if let Some(mode) = set.mode {
            let mut mode = mode & 0o7777;
            if cred.uid != 0 && !in_group(cred, d.di.gid) && set.gid.is_none() {
                mode &= !libc::S_ISGID;
            }
            // The ACL first: a damaged one fails the chmod before anything changed.
            self.chmod_acl(&mut tx, &mut d, mode)?;
            d.di.mode = (d.di.mode & libc::S_IFMT) | mode;
        }
        if let Some(uid) = set.uid {
            d.di.uid = uid;
        }
        if let Some(gid) = set.gid {
            d.di.gid = gid;
        }
        // The filesystem kills set-id bits (FUSE handle_killpriv_v2): on chown of a
        // non-directory, and when an unprivileged caller truncates, as Linux does.
        let chown = set.uid.is_some() || set.gid.is_some();
        let unpriv_truncate = set.size.is_some() && cred.uid != 0;
        if (chown || unpriv_truncate) && !d.di.is_dir() && set.mode.is_none() {
            d.di.mode = without_setid(d.di.mode);
        }
        let ts = |t: SetTime| match t {
            SetTime::Now => now,
            SetTime::At(t) => t,
        };
        if let Some(t) = set.atime {
            d.di.atime = ts(t);
        }
        if let Some(t) = set.mtime {
            d.di.mtime = ts(t);
        }
        d.di.ctime = set.ctime.unwrap_or(now);
        bmap::sync_inode(&mut tx, &mut d)?;
        let a = attr_of(&d);
        tx.commit()?;
        drop(d);
        Ok(a)
    }

    /// Clear setuid/setgid after a write or O_TRUNC open by an unprivileged caller (the
    /// kernel leaves this to the filesystem: handle_killpriv_v2).
    /// Returns whether the mode changed (the kernel's cached attributes are then stale).
    pub fn kill_suid(&self, ino: Ino) -> Result<bool> {
        let inode = self.iget(ino)?;
        if inode.ilock_shared().di.mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
            return Ok(false);
        }
        let mut tx = self.mp.trans(0)?;
        let mut d = inode.ilock_excl();
        let mode = without_setid(d.di.mode);
        if mode == d.di.mode {
            return Ok(false);
        }
        d.di.mode = mode;
        d.di.ctime = inode::now();
        bmap::sync_inode(&mut tx, &mut d)?;
        tx.commit()?;
        drop(d);
        Ok(true)
    }

    /// fallocate(2) on behalf of `cred`: every mode changes the file's data or layout, so
    /// an unprivileged caller (no CAP_FSETID: FUSE tells the uid only, so uid != 0) loses
    /// the set-id bits as the kernel's `file_remove_privs` does (FUSE's fallocate request
    /// has no kill flag, unlike write). The bits go only after the operation succeeded.
    /// Returns whether the mode changed (the kernel's cached attributes are then stale).
    pub fn fallocate_as(
        &self,
        ino: Ino,
        off: u64,
        len: u64,
        mode: i32,
        cred: &Cred,
    ) -> Result<bool> {
        self.fallocate(ino, off, len, mode)?;
        if cred.uid == 0 {
            return Ok(false);
        }
        self.kill_suid(ino)
    }

    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: XattrFlags) -> Result<()> {
        if name == STATS_XATTR {
            return err(libc::EPERM);
        }
        if ino == self.root_ino()
            && let Some(tag) = name.strip_prefix(ERRTAG_XATTR)
        {
            let tag = std::str::from_utf8(tag).ok().and_then(ErrorTag::from_name);
            let freq = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok());
            let (Some(tag), Some(freq)) = (tag, freq) else {
                return err(libc::EINVAL);
            };
            log::warn!("error tag {} set to {freq}", tag.name());
            self.mp.dev.errtags.set(tag, freq);
            return Ok(());
        }
        let inode = self.iget(ino)?;
        if (name == acl::ACL_ACCESS || name == acl::ACL_DEFAULT) && self.acls_supported() {
            return self.set_acl(&inode, name, value, flags);
        }
        let mut tx = self.mp.trans(xattr::set_resblks(value.len()))?;
        let mut d = inode.ilock_excl();
        check_not_append_only(&d)?;
        xattr::set(&mut tx, &mut d, name, value, flags.create, flags.replace)?;
        d.di.ctime = inode::now();
        bmap::sync_inode(&mut tx, &mut d)?;
        let r = tx.commit();
        drop(d);
        r
    }

    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        if ino == self.root_ino() && name == STATS_XATTR {
            return Ok(self.stats().into_bytes());
        }
        if ino == self.root_ino()
            && let Some(tag) = name.strip_prefix(ERRTAG_XATTR)
        {
            return match std::str::from_utf8(tag).ok().and_then(ErrorTag::from_name) {
                Some(t) => Ok(self.mp.dev.errtags.get(t).to_string().into_bytes()),
                None => err(libc::ENODATA),
            };
        }
        let inode = self.iget(ino)?;
        let d = inode.ilock_shared();
        xattr::get(&mut DevReader { mp: &self.mp }, &d, name)
    }

    /// Names, each NUL-terminated, as listxattr(2) returns them.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let inode = self.iget(ino)?;
        let d = inode.ilock_shared();
        xattr::list(&mut DevReader { mp: &self.mp }, &d)
    }

    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        let inode = self.iget(ino)?;
        let mut tx = self.mp.trans_remove(0)?;
        let mut d = inode.ilock_excl();
        check_not_append_only(&d)?;
        xattr::remove(&mut tx, &mut d, name)?;
        d.di.ctime = inode::now();
        bmap::sync_inode(&mut tx, &mut d)?;
        let r = tx.commit();
        drop(d);
        r
    }

    // ------------------------------------------------------------------------------------
    // Space management.

    /// FS_IOC_FSSETXATTR's DAX flag alone (the other flags stay), as root.
    pub fn set_dax_flag(&self, ino: Ino, dax: bool) -> Result<()> {
        let flags = InodeFlags {
            dax,
            ..self.getattr(ino)?.flags
        };
        self.set_flags(ino, flags, &Cred::default())
    }

    /// FS_IOC_SETFLAGS / FS_IOC_FSSETXATTR: the inode's flags become `flags`. The owner
    /// or root may change them; the immutable and append-only flags only a caller with
    /// CAP_LINUX_IMMUTABLE; an immutable inode only by clearing its immutable flag (ext4's
    /// rule). Files and directories only (ENOTTY: the ioctl reaches no inode of another
    /// kind). On an image without INCOMPAT_INODE_FLAGS only the DAX flag exists.
    pub fn set_flags(&self, ino: Ino, flags: InodeFlags, cred: &Cred) -> Result<()> {
        self.mp.check_writable()?;
        let inode = self.iget(ino)?;
        let io = inode.iolock_excl();
        let (was, owner, kind) = {
            let d = inode.ilock_shared();
            (d.di.flags, d.di.uid, d.di.kind())
        };
        let now_flags = flags.to_di();
        check_flags_change(was, now_flags, owner, kind, cred)?;
        if now_flags & DIFLAG_FEATURE != 0 && self.mp.sb.incompat & INCOMPAT_INODE_FLAGS == 0 {
            log::warn!(
                "inode {ino}: this image was made without the inode-flags feature; \
                 only the DAX flag can be set (mkfs a new image for chattr +i/+a/+S/+A/+d)"
            );
            return err(libc::EOPNOTSUPP);
        }
        // A file that stops being DAX may no longer be mapped by clients; one that becomes
        // immutable or append-only may no longer be stored into by them.
        let frozen = |f: u64| f & (DIFLAG_IMMUTABLE | DIFLAG_APPEND) != 0;
        if self.is_dax(was) && (!self.is_dax(now_flags) || (frozen(now_flags) && !frozen(was))) {
            self.break_layouts(&inode, &io, 0, u64::MAX)?;
        }
        let mut tx = self.mp.trans(0)?;
        let mut d = inode.ilock_excl();
        if now_flags != d.di.flags {
            d.di.flags = now_flags;
            d.di.ctime = inode::now();
            bmap::sync_inode(&mut tx, &mut d)?;
        }
        let r = tx.commit();
        drop(d);
        r
    }

    // ------------------------------------------------------------------------------------
    // Whole filesystem.
}

/// The rules of `Fs::set_flags` that need only the old and new flags and the caller.
fn check_flags_change(was: u64, now: u64, owner: u32, kind: FileKind, cred: &Cred) -> Result<()> {
    if !matches!(kind, FileKind::File | FileKind::Dir) {
        return err(libc::ENOTTY);
    }
    if cred.uid != 0 && cred.uid != owner {
        return err(libc::EPERM);
    }
    let guarded = DIFLAG_IMMUTABLE | DIFLAG_APPEND;
    if (was ^ now) & guarded != 0 && !cred.may_set_immutable() {
        return err(libc::EPERM);
    }
    if was & now & DIFLAG_IMMUTABLE != 0 && was != now {
        return err(libc::EPERM);
    }
    Ok(())
}

/// EPERM for a setattr that an immutable or append-only inode forbids (the VFS's
/// notify_change rules): an immutable inode takes no change; an append-only one no mode,
/// owner, size or explicit time (touch's "now" is allowed).
fn check_setattr_allowed(d: &InodeData, set: &SetAttr) -> Result<()> {
    check_mutable(d)?;
    let explicit_time = |t: Option<SetTime>| matches!(t, Some(SetTime::At(_)));
    let forbidden_if_append = set.mode.is_some()
        || set.uid.is_some()
        || set.gid.is_some()
        || set.size.is_some()
        || explicit_time(set.atime)
        || explicit_time(set.mtime);
    if forbidden_if_append {
        check_not_append_only(d)?;
    }
    Ok(())
}
