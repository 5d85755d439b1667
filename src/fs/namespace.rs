//! The namespace operations: lookup and getattr, create/mknod/mkdir/symlink, link,
//! unlink/rmdir (with inactivation left to the inode cache in mod.rs), rename (NOREPLACE,
//! EXCHANGE), readlink and readdir.

use super::*;

impl Fs {
    pub(super) fn dir_lookup(&self, dir: &Inode, name: &[u8]) -> Result<Option<dir::Found>> {
        let d = dir.ilock_shared();
        if d.freed {
            return err(libc::ESTALE);
        }
        if !d.di.is_dir() {
            return err(libc::ENOTDIR);
        }
        dir::lookup(&mut DevReader { mp: &self.mp }, &d, name)
    }

    /// `iget` for the inode a directory entry names. A free inode there is corruption (the
    /// directory and the inode disagree), unless the entry changed meanwhile (a racing
    /// unlink), which the caller sees as ENOENT.
    pub(super) fn iget_entry(&self, dir: &Inode, name: &[u8], ino: Ino) -> Result<Arc<Inode>> {
        match self.iget(ino) {
            Err(FsError::Errno(libc::ESTALE)) => match self.dir_lookup(dir, name)? {
                Some(f) if f.ino == ino => Err(FsError::corrupt(format!(
                    "directory {}: entry \"{}\" names inode {ino}, which is free",
                    dir.ino,
                    String::from_utf8_lossy(name)
                ))),
                _ => err(libc::ENOENT),
            },
            r => r,
        }
    }

    /// Look up `name` in `parent`; takes one lookup reference on the result (FUSE nlookup).
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        if name.len() > NAME_LEN_MAX {
            return err(libc::ENAMETOOLONG);
        }
        if name == b"." {
            // The kernel decoding a file handle (name_to_handle_at, NFS export) of an
            // inode it no longer caches: `parent` is the handle's number, any file type.
            let inode = self.iget_untrusted(parent)?;
            let a = attr_of(&inode.ilock_shared());
            self.take_lookup_ref(&inode, None);
            return Ok(a);
        }
        let dir = self.iget(parent)?;
        let found = if name == b".." {
            let p = dir.ilock_shared().di.parent;
            if parent == self.root_ino() { parent } else { p }
        } else {
            self.dir_lookup(&dir, name)?
                .ok_or(FsError::Errno(libc::ENOENT))?
                .ino
        };
        let inode = if name == b".." {
            self.iget(found)?
        } else {
            self.iget_entry(&dir, name, found)?
        };
        let d = inode.ilock_shared();
        let a = attr_of(&d);
        self.take_lookup_ref(&inode, (name != b"..").then_some((parent, name)));
        Ok(a)
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        let inode = self.iget(ino)?;
        let d = inode.ilock_shared();
        if d.freed {
            return err(libc::ESTALE);
        }
        Ok(attr_of(&d))
    }

    /// Create an inode named `name` in `parent` (files, fifos, sockets, devices, dirs,
    /// symlinks). `mode` includes the type bits; `umask` applies to it unless the parent
    /// has a default ACL, which is inherited instead (acl.rs).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u32,
        cred: &Cred,
        target: Option<&[u8]>,
    ) -> Result<Attr> {
        check_name(name)?;
        let Some(kind) = inode::kind_of(mode) else {
            return err(libc::EINVAL);
        };
        let dir = self.iget(parent)?;
        let symlink_blocks = target.map_or(0, |t| (t.len() > INODE_LITERAL_LEN) as u64);
        // An inherited ACL starts an attribute fork: a leaf and an index root.
        let acl_blocks = if self.acls_supported() { 2 } else { 0 };
        let mut tx = self
            .mp
            .trans(ialloc::IALLOC_RESBLKS + dir::ADD_RESBLKS + symlink_blocks + acl_blocks)?;
        let mut dd = dir.ilock_excl();
        if dd.freed || dd.di.nlink == 0 {
            return err(libc::ENOENT);
        }
        if !dd.di.is_dir() {
            return err(libc::ENOTDIR);
        }
        if dir::lookup(&mut tx, &dd, name)?.is_some() {
            return err(libc::EEXIST);
        }
        // An append-only directory takes new entries; an immutable one none.
        check_mutable(&dd)?;
        let is_dir = kind == FileKind::Dir;
        if is_dir && dd.di.nlink >= LINK_MAX {
            return err(libc::EMLINK);
        }
        // Before anything changes: a damaged default ACL fails the create cleanly.
        let mut mode = mode;
        let inherited = if target.is_none() && self.acls_supported() {
            acl::inherit(&mut tx, &dd, &mut mode, umask, is_dir)?
        } else {
            mode &= !(umask & 0o777);
            Vec::new()
        };
        let inode = self.alloc_child(&mut tx, &dd, parent, mode, rdev, cred)?;
        let ino = inode.ino;
        let now = inode.ilock_shared().di.ctime;
        {
            let mut nd = inode.ilock_excl();
            if let Some(t) = target {
                nd.di.size = t.len() as u64;
                if t.len() <= INODE_LITERAL_LEN {
                    nd.di.format = FMT_LOCAL;
                    nd.di.local = t.to_vec();
                } else {
                    dax::alloc_holes(&mut tx, &mut nd, 0, 1, false, &mut |mp, blk, _, _| {
                        let mut b = [0u8; BLOCK_SIZE];
                        b[..t.len()].copy_from_slice(t);
                        mp.dev.write(blk * BS, &b);
                        mp.dev.flush(blk * BS, BS);
                        // Durable before the commit record that maps the block can be
                        // (on an image file the force orders it: log/force.rs).
                        mp.order_before_commit();
                    })?;
                }
            }
            for (n, v) in &inherited {
                xattr::set(&mut tx, &mut nd, n, v, false, false)?;
            }
            bmap::sync_inode(&mut tx, &mut nd)?;
        }
        dir::add(&mut tx, &mut dd, name, ino, inode::ftype_of(kind))?;
        if is_dir {
            dd.di.nlink += 1;
        }
        dd.di.mtime = now;
        dd.di.ctime = now;
        bmap::sync_inode(&mut tx, &mut dd)?;
        tx.commit()?;
        self.take_lookup_ref(&inode, Some((parent, name)));
        let a = attr_of(&inode.ilock_shared());
        {
            let mut cache = self.icache.lock().unwrap();
            self.cache_insert(&mut cache, inode);
        }
        Ok(a)
    }

    /// Allocate and set up the inode of a new entry of `dd` (directory `parent`) in `tx`:
    /// owner, group (setgid directories), inherited flags, DAX policy. The caller fills
    /// it in, syncs it and adds the entry.
    pub(super) fn alloc_child(
        &self,
        tx: &mut Trans,
        dd: &InodeData,
        parent: Ino,
        mode: u32,
        rdev: u32,
        cred: &Cred,
    ) -> Result<Arc<Inode>> {
        let Some(kind) = inode::kind_of(mode) else {
            return err(libc::EINVAL);
        };
        let is_dir = kind == FileKind::Dir;
        // Files go near their directory; directories are spread over the AGs (XFS's
        // inode64 rotor), so work in different directories takes different AG locks.
        let hint_ag = if is_dir {
            (self.mp.ag_rotor.fetch_add(1, Ordering::Relaxed) % self.mp.sb.ag_count as u64) as u32
        } else {
            self.mp.ag_of(self.mp.ino_block(parent))
        };
        let ino = ialloc::ialloc(tx, hint_ag)?;
        let now = inode::now();
        let mut mode = mode;
        let gid = if dd.di.mode & libc::S_ISGID != 0 {
            if is_dir {
                mode |= libc::S_ISGID;
            }
            dd.di.gid
        } else {
            cred.gid
        };
        let mut di = DiskInode {
            ino,
            mode,
            uid: cred.uid,
            gid,
            nlink: if is_dir { 2 } else { 1 },
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            btime: now,
            rdev: rdev as u64,
            flags: (dd.di.flags & DIFLAG_INHERITED)
                | if self.opts.dax == DaxMode::Always || (dd.di.flags & DIFLAG_DAX != 0 && is_dir) {
                    DIFLAG_DAX
                        & if self.opts.dax == DaxMode::Never {
                            0
                        } else {
                            u64::MAX
                        }
                } else {
                    0
                },
            generation: self.generation.fetch_add(1, Ordering::Relaxed) as u32,
            parent: if is_dir { parent } else { 0 },
            format: FMT_EXTENTS,
            ..Default::default()
        };
        if kind == FileKind::File
            && dd.di.flags & DIFLAG_DAX != 0
            && self.opts.dax != DaxMode::Never
        {
            di.flags |= DIFLAG_DAX;
        }
        if is_dir && self.mp.sb.incompat & INCOMPAT_SHORTFORM_DIRS != 0 {
            di.format = FMT_LOCAL; // no entries yet, no blocks (dir.rs)
        }
        // A new in-core inode: past the budget, reclaim first. Inside the transaction this
        // is NOFS reclaim (clean, unreferenced inodes only; trylocks).
        let growth = self.table_growth(&self.icache.lock().unwrap());
        self.mp
            .mem
            .allocating(INODE_BYTES + growth, AllocContext::Full);
        let inode = Arc::new(self.new_inode(di, ExtentMap::new(), AllocContext::Full));
        Ok(inode)
    }

    /// Regular files, fifos, sockets and device nodes. Takes a lookup reference.
    pub fn mknod(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        rdev: u32,
        cred: &Cred,
    ) -> Result<Attr> {
        self.mknod_umask(parent, name, mode, 0, rdev, cred)
    }

    /// mknod with the caller's umask not yet applied (FUSE_DONT_MASK): it applies unless
    /// the directory has a default ACL.
    pub fn mknod_umask(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        umask: u32,
        rdev: u32,
        cred: &Cred,
    ) -> Result<Attr> {
        let (mode, rdev) = match mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK | libc::S_IFCHR | libc::S_IFBLK => {
                (mode, rdev)
            }
            0 => (mode | libc::S_IFREG, 0),
            _ => return err(libc::EINVAL),
        };
        self.create(parent, name, mode, umask, rdev, cred, None)
    }

    pub fn mkdir(&self, parent: Ino, name: &[u8], mode: u32, cred: &Cred) -> Result<Attr> {
        self.mkdir_umask(parent, name, mode, 0, cred)
    }

    /// mkdir with the umask not yet applied (see `mknod_umask`).
    pub fn mkdir_umask(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        umask: u32,
        cred: &Cred,
    ) -> Result<Attr> {
        let mode = (mode & 0o7777) | libc::S_IFDIR;
        self.create(parent, name, mode, umask, 0, cred, None)
    }

    pub fn symlink(&self, parent: Ino, name: &[u8], target: &[u8], cred: &Cred) -> Result<Attr> {
        if target.is_empty() {
            return err(libc::ENOENT);
        }
        if target.len() > SYMLINK_LEN_MAX {
            return err(libc::ENAMETOOLONG);
        }
        self.create(
            parent,
            name,
            libc::S_IFLNK | 0o777,
            0,
            0,
            cred,
            Some(target),
        )
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        let inode = self.iget(ino)?;
        let d = inode.ilock_shared();
        if d.di.kind() != FileKind::Symlink {
            return err(libc::EINVAL);
        }
        if d.di.format == FMT_LOCAL {
            return Ok(d.di.local.clone());
        }
        let len = d.di.size as usize;
        crate::ensure_sane!(
            len <= SYMLINK_LEN_MAX,
            "symlink {ino}: target length {len} too long"
        );
        let Some(e) = d.map.find(0) else {
            return Err(FsError::corrupt(format!(
                "symlink {ino}: remote target block is not mapped"
            )));
        };
        let mut buf = vec![0u8; len];
        self.mp.dev.read(dax::dev_off(&e, 0), &mut buf);
        Ok(buf)
    }

    pub fn link(&self, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Attr> {
        check_name(newname)?;
        let inode = self.iget(ino)?;
        let dir = self.iget(newparent)?;
        let mut tx = self.mp.trans(dir::ADD_RESBLKS)?;
        let mut locks = inode::lock_excl_many(&[&inode, &dir]);
        {
            let dd = g(&mut locks, newparent);
            if !dd.di.is_dir() {
                return err(libc::ENOTDIR);
            }
            if dir::lookup(&mut tx, dd, newname)?.is_some() {
                return err(libc::EEXIST);
            }
            check_mutable(dd)?;
        }
        {
            let c = g(&mut locks, ino);
            if c.di.is_dir() {
                return err(libc::EPERM);
            }
            // vfs_link: no new name for an immutable or append-only inode.
            check_not_append_only(c)?;
            if c.di.nlink == 0 || c.freed {
                return err(libc::ENOENT);
            }
            if c.di.nlink >= LINK_MAX {
                return err(libc::EMLINK);
            }
        }
        let dd = g(&mut locks, newparent);
        if dd.di.nlink == 0 {
            return err(libc::ENOENT);
        }
        let now = inode::now();
        let ftype = inode::ftype_of(g(&mut locks, ino).di.kind());
        let dd = g(&mut locks, newparent);
        dir::add(&mut tx, dd, newname, ino, ftype)?;
        dd.di.mtime = now;
        dd.di.ctime = now;
        bmap::sync_inode(&mut tx, dd)?;
        let c = g(&mut locks, ino);
        c.di.nlink += 1;
        c.di.ctime = now;
        bmap::sync_inode(&mut tx, c)?;
        let a = attr_of(c);
        tx.commit()?;
        drop(locks);
        self.take_lookup_ref(&inode, Some((newparent, newname)));
        Ok(a)
    }

    pub fn unlink(&self, parent: Ino, name: &[u8]) -> Result<()> {
        self.remove(parent, name, false)
    }

    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<()> {
        if name == b"." {
            return err(libc::EINVAL);
        }
        if name == b".." {
            return err(libc::ENOTEMPTY);
        }
        self.remove(parent, name, true)
    }

    pub(super) fn remove(&self, parent: Ino, name: &[u8], want_dir: bool) -> Result<()> {
        if name.len() > NAME_LEN_MAX {
            return err(libc::ENAMETOOLONG);
        }
        let dir = self.iget(parent)?;
        for _ in 0..100 {
            // Find the child unlocked, then lock both in inode order and make sure the name
            // still names it: another transaction may have changed the directory meanwhile.
            let found = self
                .dir_lookup(&dir, name)?
                .ok_or(FsError::Errno(libc::ENOENT))?;
            let child = self.iget_entry(&dir, name, found.ino)?;
            if self.remove_locked(&dir, &child, name, found, want_dir)? {
                drop(child);
                self.maybe_evict(found.ino);
                return Ok(());
            }
        }
        err(libc::EAGAIN)
    }

    /// The body of unlink/rmdir once the child is known. Ok(false): the name moved on
    /// before the locks were taken; look again.
    pub(super) fn remove_locked(
        &self,
        dir: &Inode,
        child: &Inode,
        name: &[u8],
        found: dir::Found,
        want_dir: bool,
    ) -> Result<bool> {
        let (parent, cino) = (dir.ino, child.ino);
        let mut tx = self
            .mp
            .trans_remove(dir::ADD_RESBLKS + BTREE_LEVELS_MAX as u64)?;
        let mut locks = inode::lock_excl_many(&[dir, child]);
        if dir::lookup(&mut tx, g(&mut locks, parent), name)? != Some(found) {
            return Ok(false);
        }
        let c = g(&mut locks, cino);
        if want_dir && !c.di.is_dir() {
            return err(libc::ENOTDIR);
        }
        if !want_dir && c.di.is_dir() {
            return err(libc::EISDIR);
        }
        // may_delete: neither an immutable or append-only child nor an entry of an
        // immutable or append-only directory goes.
        check_not_append_only(c)?;
        check_not_append_only(g(&mut locks, parent))?;
        let c = g(&mut locks, cino);
        if want_dir && c.di.dir_entries != 0 {
            return err(libc::ENOTEMPTY);
        }
        if want_dir || c.di.nlink <= 1 {
            // The child goes on its AG's unlinked list: lock that AG before the directory
            // change, which may allocate (the AG lock order, trans.rs).
            tx.pin_ag(self.mp.ag_of(self.mp.ino_block(cino)))?;
        }
        let now = inode::now();
        let dd = g(&mut locks, parent);
        dir::remove(&mut tx, dd, name, found)?;
        if want_dir {
            dd.di.nlink = dd.di.nlink.saturating_sub(1);
        }
        dd.di.mtime = now;
        dd.di.ctime = now;
        bmap::sync_inode(&mut tx, dd)?;
        let c = g(&mut locks, cino);
        c.di.nlink = if want_dir {
            0
        } else {
            c.di.nlink.saturating_sub(1)
        };
        c.di.ctime = now;
        if c.di.nlink == 0 {
            ialloc::unlinked_add(&mut tx, cino)?;
        }
        bmap::sync_inode(&mut tx, g(&mut locks, cino))?;
        tx.commit()?;
        drop(locks);
        Ok(true)
    }

    /// Is `ancestor` on the path from `ino` up to the root? (rename loop check; the
    /// caller holds the rename lock, so no directory moves meanwhile)
    pub(super) fn is_ancestor(&self, ancestor: Ino, ino: Ino) -> Result<bool> {
        let mut cur = ino;
        for _ in 0..1_000_000 {
            if cur == ancestor {
                return Ok(true);
            }
            if cur == self.root_ino() {
                return Ok(false);
            }
            let next = self.iget(cur)?.ilock_shared().di.parent;
            crate::ensure_sane!(
                next != 0 && next != cur,
                "directory {cur}: bad parent pointer {next}"
            );
            cur = next;
        }
        Err(FsError::corrupt(format!(
            "directory {ino}: parent chain does not reach the root"
        )))
    }

    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: RenameFlags,
    ) -> Result<()> {
        self.rename_as(parent, name, newparent, newname, flags, &Cred::default())
    }

    /// `rename` on behalf of `cred`, who owns the whiteout RENAME_WHITEOUT leaves at the
    /// source name: a character device 0/0, made in the same transaction (what overlayfs
    /// needs of its upper layer).
    pub fn rename_as(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: RenameFlags,
        cred: &Cred,
    ) -> Result<()> {
        if flags.exchange && (flags.whiteout || flags.noreplace) {
            return err(libc::EINVAL);
        }
        check_name(newname)?;
        if name.len() > NAME_LEN_MAX {
            return err(libc::ENAMETOOLONG);
        }
        // Renames are one at a time (the VFS's s_vfs_rename_mutex): the loop check walks
        // parent pointers that only a rename changes.
        let _rename = self.rename_lock.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..100 {
            if let Some(orphan) = self.rename_once(parent, name, newparent, newname, flags, cred)? {
                if let Some(o) = orphan {
                    self.maybe_evict(o);
                }
                return Ok(());
            }
        }
        err(libc::EAGAIN)
    }

    /// One attempt at a rename. Ok(None): an entry changed between the unlocked lookups
    /// and taking the locks; try again. Ok(Some(victim)): done, and the inode that lost
    /// its last link, if any.
    pub(super) fn rename_once(
        &self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: RenameFlags,
        cred: &Cred,
    ) -> Result<Option<Option<Ino>>> {
        let sdir = self.iget(parent)?;
        let ddir = self.iget(newparent)?;
        let whiteout_blks = if flags.whiteout {
            ialloc::IALLOC_RESBLKS
        } else {
            0
        };
        let mut tx = self
            .mp
            .trans_remove(2 * dir::ADD_RESBLKS + BTREE_LEVELS_MAX as u64 + whiteout_blks)?;
        let src = self
            .dir_lookup(&sdir, name)?
            .ok_or(FsError::Errno(libc::ENOENT))?;
        let dst = self.dir_lookup(&ddir, newname)?;
        if parent == newparent && name == newname {
            return Ok(Some(None));
        }
        if flags.exchange && dst.is_none() {
            return err(libc::ENOENT);
        }
        if flags.noreplace && dst.is_some() {
            return err(libc::EEXIST);
        }
        if dst.is_some_and(|d| d.ino == src.ino) && !flags.exchange {
            return Ok(Some(None)); // two links to one inode: POSIX says do nothing
        }
        let sino = self.iget_entry(&sdir, name, src.ino)?;
        let dino = dst
            .map(|d| self.iget_entry(&ddir, newname, d.ino))
            .transpose()?;
        let s_is_dir = src.ftype == FT_DIR;
        let d_is_dir = dst.is_some_and(|d| d.ftype == FT_DIR);
        if let Some(dst) = dst {
            if !flags.exchange {
                if s_is_dir && !d_is_dir {
                    return err(libc::ENOTDIR);
                }
                if !s_is_dir && d_is_dir {
                    return err(libc::EISDIR);
                }
                if d_is_dir && dino.as_ref().unwrap().ilock_shared().di.dir_entries != 0 {
                    return err(libc::ENOTEMPTY);
                }
            }
            if flags.exchange
                && d_is_dir
                && parent != newparent
                && self.is_ancestor(dst.ino, parent)?
            {
                return err(libc::EINVAL);
            }
        }
        if s_is_dir && parent != newparent && self.is_ancestor(src.ino, newparent)? {
            return err(libc::EINVAL);
        }
        let mut all: Vec<&Inode> = vec![&sdir, &ddir, &sino];
        if let Some(d) = &dino {
            all.push(d);
        }
        let mut locks = inode::lock_excl_many(&all);
        if dir::lookup(&mut tx, g(&mut locks, parent), name)? != Some(src)
            || dir::lookup(&mut tx, g(&mut locks, newparent), newname)? != dst
        {
            return Ok(None);
        }
        if let Some(d) = dst.filter(|_| d_is_dir && !flags.exchange)
            && g(&mut locks, d.ino).di.dir_entries != 0
        {
            return err(libc::ENOTEMPTY);
        }
        check_rename_allowed(&mut locks, parent, src.ino, newparent, dst.map(|d| d.ino))?;
        if let Some(d) = dst.filter(|_| !flags.exchange) {
            // The victim may go on its AG's unlinked list: lock that AG before the
            // directory changes allocate (the AG lock order, trans.rs).
            tx.pin_ag(self.mp.ag_of(self.mp.ino_block(d.ino)))?;
        }
        let now = inode::now();
        let moves_dir_across = s_is_dir && parent != newparent;
        if moves_dir_across && !d_is_dir && g(&mut locks, newparent).di.nlink >= LINK_MAX {
            return err(libc::EMLINK);
        }
        let s_ft = src.ftype;
        let mut orphan = None;
        // The whiteout's inode, before any entry changes (its allocation may fail).
        let whiteout = if flags.whiteout {
            let mode = libc::S_IFCHR; // WHITEOUT_MODE: no permission bits, rdev 0/0
            let wh = self.alloc_child(&mut tx, g(&mut locks, parent), parent, mode, 0, cred)?;
            bmap::sync_inode(&mut tx, &mut wh.ilock_excl())?;
            Some(wh)
        } else {
            None
        };
        if flags.exchange {
            let dst = dst.unwrap();
            dir::retarget(&mut tx, g(&mut locks, parent), src, dst.ino, dst.ftype)?;
            dir::retarget(&mut tx, g(&mut locks, newparent), dst, src.ino, s_ft)?;
            if parent != newparent {
                if s_is_dir {
                    g(&mut locks, src.ino).di.parent = newparent;
                    dec_nlink(g(&mut locks, parent));
                    g(&mut locks, newparent).di.nlink += 1;
                }
                if d_is_dir {
                    g(&mut locks, dst.ino).di.parent = parent;
                    dec_nlink(g(&mut locks, newparent));
                    g(&mut locks, parent).di.nlink += 1;
                }
            }
            g(&mut locks, dst.ino).di.ctime = now;
        } else {
            match dst {
                Some(dst) => {
                    dir::retarget(&mut tx, g(&mut locks, newparent), dst, src.ino, s_ft)?;
                    let v = g(&mut locks, dst.ino);
                    v.di.nlink = if d_is_dir {
                        0
                    } else {
                        v.di.nlink.saturating_sub(1)
                    };
                    v.di.ctime = now;
                    if v.di.nlink == 0 {
                        orphan = Some(dst.ino);
                        ialloc::unlinked_add(&mut tx, dst.ino)?;
                    }
                    if d_is_dir {
                        dec_nlink(g(&mut locks, newparent));
                    }
                }
                None => dir::add(&mut tx, g(&mut locks, newparent), newname, src.ino, s_ft)?,
            }
            match &whiteout {
                Some(wh) => dir::retarget(&mut tx, g(&mut locks, parent), src, wh.ino, FT_CHR)?,
                None => dir::remove(&mut tx, g(&mut locks, parent), name, src)?,
            }
            if moves_dir_across {
                g(&mut locks, src.ino).di.parent = newparent;
                dec_nlink(g(&mut locks, parent));
                g(&mut locks, newparent).di.nlink += 1;
            }
        }
        g(&mut locks, src.ino).di.ctime = now;
        for ino in [parent, newparent] {
            let d = g(&mut locks, ino);
            d.di.mtime = now;
            d.di.ctime = now;
        }
        for (_, d) in locks.iter_mut() {
            bmap::sync_inode(&mut tx, d)?;
        }
        tx.commit()?;
        drop(locks);
        drop(dino);
        if let Some(wh) = whiteout {
            let mut cache = self.icache.lock().unwrap();
            self.cache_insert(&mut cache, wh);
        }
        // The kernel moved its dentries: so do the names it would be asked to forget.
        self.dentry_moved(src.ino, newparent, newname);
        if let (true, Some(dst)) = (flags.exchange, dst) {
            self.dentry_moved(dst.ino, parent, name);
        }
        Ok(Some(orphan))
    }

    // ------------------------------------------------------------------------------------
    // Attributes.

    /// List `ino` from `cookie` (0 = start). `add` returns true when the reply buffer is
    /// full; the entry it refused is given again at the next call.
    pub fn readdir(
        &self,
        ino: Ino,
        cookie: u64,
        add: &mut dyn FnMut(&DirEntry) -> bool,
    ) -> Result<()> {
        let inode = self.iget(ino)?;
        let d = inode.ilock_shared();
        if !d.di.is_dir() {
            return err(libc::ENOTDIR);
        }
        if cookie == 0
            && add(&DirEntry {
                ino,
                kind: FileKind::Dir,
                name: b".".to_vec(),
                next: 1,
            })
        {
            return Ok(());
        }
        if cookie <= 1 {
            let parent = if ino == self.root_ino() {
                ino
            } else {
                d.di.parent
            };
            if add(&DirEntry {
                ino: parent,
                kind: FileKind::Dir,
                name: b"..".to_vec(),
                next: 2,
            }) {
                return Ok(());
            }
        }
        let start = cookie.saturating_sub(2);
        let mut bad = None;
        dir::list(
            &mut DevReader { mp: &self.mp },
            &d,
            start,
            &mut |dataptr, eino, ft, name| {
                let Some(kind) = inode::kind_of_ftype(ft) else {
                    bad = Some(ft);
                    return true;
                };
                add(&DirEntry {
                    ino: eino,
                    kind,
                    name: name.to_vec(),
                    next: dataptr + 3,
                })
            },
        )?;
        if let Some(ft) = bad {
            return Err(FsError::corrupt(format!(
                "directory {ino}: entry with file type {ft}"
            )));
        }
        Ok(())
    }

    /// `readdir` with each entry's attributes (FUSE READDIRPLUS), so that the kernel fills
    /// its dentry and attribute caches from the listing and a stat of a listed name asks
    /// nothing more. `add` returns true when the reply buffer is full; the entry it refused
    /// is given again at the next call. Every entry `add` accepts other than "." and ".."
    /// takes one lookup reference, as a LOOKUP does: the kernel counts one for each (and
    /// forgets it as it forgets a looked-up one); for "." and ".." it counts none.
    ///
    /// Entries are listed in batches with the directory locked, then their inodes read with
    /// it unlocked (as `lookup` reads an entry's inode after its `dir_lookup`), so the
    /// inode reads never nest inside the directory's lock. An entry removed meanwhile is
    /// left out, as if the listing came after the unlink.
    pub fn readdirplus(
        &self,
        ino: Ino,
        cookie: u64,
        add: &mut dyn FnMut(&DirEntry, &Attr) -> bool,
    ) -> Result<()> {
        const BATCH: usize = 64;
        let dir = self.iget(ino)?;
        let mut cookie = cookie;
        let mut added = 0usize;
        loop {
            let mut batch: Vec<DirEntry> = Vec::with_capacity(BATCH);
            self.readdir(ino, cookie, &mut |e| {
                if batch.len() == BATCH {
                    return true;
                }
                batch.push(e.clone());
                false
            })?;
            let more = batch.len() == BATCH;
            for e in &batch {
                let (a, inode) = if e.name == b"." || e.name == b".." {
                    // The kernel links neither; the attributes only give the entry its
                    // type and number.
                    let a = match self.getattr(e.ino) {
                        Ok(a) => a,
                        Err(_) => self.getattr(ino)?,
                    };
                    (Attr { ino: e.ino, ..a }, None)
                } else {
                    match self.iget_entry(&dir, &e.name, e.ino) {
                        Ok(inode) => {
                            let d = inode.ilock_shared();
                            if d.freed {
                                continue;
                            }
                            let a = attr_of(&d);
                            drop(d);
                            (a, Some(inode))
                        }
                        Err(FsError::Errno(libc::ENOENT)) => continue,
                        // A listing already under way ends where the error is; the next
                        // call starts there and reports it.
                        Err(_) if added > 0 => return Ok(()),
                        Err(err) => return Err(err),
                    }
                };
                if add(e, &a) {
                    return Ok(());
                }
                added += 1;
                if let Some(inode) = inode {
                    self.take_lookup_ref(&inode, Some((ino, &e.name)));
                }
            }
            if !more {
                return Ok(());
            }
            cookie = batch[BATCH - 1].next;
        }
    }
}

/// may_delete for each name a rename removes, as the VFS checks: the source leaves its
/// directory (neither may be immutable or append-only); a replaced or exchanged target
/// leaves the other (the same); a new name needs a directory that is not immutable.
fn check_rename_allowed(
    locks: &mut [(Ino, IlockExcl<'_>)],
    parent: Ino,
    src: Ino,
    newparent: Ino,
    dst: Option<Ino>,
) -> Result<()> {
    check_not_append_only(g(locks, parent))?;
    check_not_append_only(g(locks, src))?;
    check_mutable(g(locks, newparent))?;
    if let Some(d) = dst {
        check_not_append_only(g(locks, newparent))?;
        check_not_append_only(g(locks, d))?;
    }
    Ok(())
}
