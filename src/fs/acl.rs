//! POSIX ACLs, as XFS keeps them: `system.posix_acl_access` and `system.posix_acl_default`
//! are attributes of the inode's attribute fork (xattr.rs, attribute-tree filesystems
//! only), stored in the kernel's xattr form (a version-2 header, then entries of tag u16,
//! permissions u16, id u32).
//!
//! The kernel enforces them: with FUSE_POSIX_ACL (fuse.rs) it turns on default
//! permissions, reads an inode's ACLs through getxattr and caches them. The filesystem
//! keeps the rest, as fs/posix_acl.c does for a kernel filesystem:
//! - an access ACL that is set gives the mode its permission bits (owner, mask or group,
//!   other); one that says no more than the mode is not stored (posix_acl_update_mode);
//! - chmod rewrites the stored access ACL's owner, mask (or group) and other entries
//!   (posix_acl_chmod);
//! - a new inode under a directory with a default ACL gets that ACL, masked by the
//!   create mode, as its access ACL (when it says more than the mode), and a new
//!   directory also as its default ACL; the umask then does not apply. Without a default
//!   ACL the umask does (the kernel sends it unapplied: FUSE_DONT_MASK).
//!
//! Values are checked as posix_acl_valid does: EINVAL when malformed.

use super::*;

pub const ACL_ACCESS: &[u8] = b"system.posix_acl_access";
pub const ACL_DEFAULT: &[u8] = b"system.posix_acl_default";

const XATTR_VERSION: u32 = 2;
const HDR: usize = 4;
const ENTRY: usize = 8;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AclEntry {
    pub tag: u16,
    pub perm: u16,
    pub id: u32,
}

/// Decode and validate an ACL value. `None`: no entries (the kernel's "no ACL").
pub fn parse(v: &[u8]) -> Result<Option<Vec<AclEntry>>> {
    if v.len() < HDR || !(v.len() - HDR).is_multiple_of(ENTRY) || get_u32(v, 0) != XATTR_VERSION {
        return err(libc::EINVAL);
    }
    let entries: Vec<AclEntry> = v[HDR..]
        .chunks(ENTRY)
        .map(|e| AclEntry {
            tag: get_u16(e, 0),
            perm: get_u16(e, 2),
            id: get_u32(e, 4),
        })
        .collect();
    if entries.is_empty() {
        return Ok(None);
    }
    if !valid(&entries) {
        return err(libc::EINVAL);
    }
    Ok(Some(entries))
}

/// posix_acl_valid: owner, named users, group, named groups, mask, other, in that order;
/// one each of owner, group and other; a mask when there are named entries.
fn valid(entries: &[AclEntry]) -> bool {
    // 1: expect owner; 2: users; 3: groups; 4: after the mask; 0: done.
    let (mut state, mut needs_mask) = (1, false);
    for e in entries {
        if e.perm & !7 != 0 {
            return false;
        }
        state = match (e.tag, state) {
            (USER_OBJ, 1) => 2,
            (USER, 2) | (GROUP, 3) if e.id != UNDEFINED_ID => {
                needs_mask = true;
                state
            }
            (GROUP_OBJ, 2) => 3,
            (MASK, 3) => 4,
            (OTHER, 4) => 0,
            (OTHER, 3) if !needs_mask => 0,
            _ => return false,
        };
    }
    state == 0
}

pub fn encode(entries: &[AclEntry]) -> Vec<u8> {
    let mut v = vec![0u8; HDR + ENTRY * entries.len()];
    put_u32(&mut v, 0, XATTR_VERSION);
    for (i, e) in entries.iter().enumerate() {
        let o = HDR + ENTRY * i;
        put_u16(&mut v, o, e.tag);
        put_u16(&mut v, o + 2, e.perm);
        let id = match e.tag {
            USER | GROUP => e.id,
            _ => UNDEFINED_ID,
        };
        put_u32(&mut v, o + 4, id);
    }
    v
}

/// The permission bits an ACL gives the mode, and whether the mode says it all
/// (posix_acl_equiv_mode).
pub fn equiv_mode(entries: &[AclEntry]) -> (u32, bool) {
    let (mut mode, mut equiv) = (0u32, true);
    for e in entries {
        let p = (e.perm & 7) as u32;
        match e.tag {
            USER_OBJ => mode |= p << 6,
            GROUP_OBJ => mode |= p << 3,
            OTHER => mode |= p,
            MASK => {
                mode = (mode & !0o070) | p << 3;
                equiv = false;
            }
            _ => equiv = false,
        }
    }
    (mode, equiv)
}

/// chmod: owner, mask (else group) and other entries follow the new mode
/// (posix_acl_chmod).
pub fn chmod(entries: &mut [AclEntry], mode: u32) {
    let has_mask = entries.iter().any(|e| e.tag == MASK);
    for e in entries.iter_mut() {
        match e.tag {
            USER_OBJ => e.perm = ((mode >> 6) & 7) as u16,
            OTHER => e.perm = (mode & 7) as u16,
            MASK => e.perm = ((mode >> 3) & 7) as u16,
            GROUP_OBJ if !has_mask => e.perm = ((mode >> 3) & 7) as u16,
            _ => {}
        }
    }
}

/// Inheritance: the default ACL masked by the create mode, and the mode masked by it
/// (posix_acl_create_masq). Returns whether the ACL says more than the mode.
pub fn create_masq(entries: &mut [AclEntry], mode: &mut u32) -> bool {
    let mut m = *mode & 0o777;
    let mut not_equiv = false;
    let has_mask = entries.iter().any(|e| e.tag == MASK);
    for e in entries.iter_mut() {
        let p = e.perm as u32;
        match e.tag {
            USER_OBJ => {
                e.perm = (p & (m >> 6)) as u16;
                m &= (e.perm as u32) << 6 | !0o700;
            }
            OTHER => {
                e.perm = (p & m) as u16;
                m &= e.perm as u32 | !0o007;
            }
            MASK | GROUP_OBJ if (e.tag == MASK) == has_mask => {
                e.perm = (p & (m >> 3)) as u16;
                m &= (e.perm as u32) << 3 | !0o070;
            }
            _ => {}
        }
        if matches!(e.tag, USER | GROUP | MASK) {
            not_equiv = true;
        }
    }
    *mode = (*mode & !0o777) | (m & 0o777);
    not_equiv
}

/// What a new inode inherits under `dd`: its mode (the default ACL's mask, else the
/// umask, applied) and the ACL attributes it starts with.
pub(super) fn inherit(
    tx: &mut Trans,
    dd: &InodeData,
    mode: &mut u32,
    umask: u32,
    is_dir: bool,
) -> Result<Vec<(&'static [u8], Vec<u8>)>> {
    let default = match xattr::get(tx, dd, ACL_DEFAULT) {
        Ok(v) => parse(&v)?,
        Err(e) if e.errno() == libc::ENODATA => None,
        Err(e) => return Err(e),
    };
    let Some(default) = default else {
        *mode &= !(umask & 0o777);
        return Ok(Vec::new());
    };
    let mut access = default.clone();
    let mut out = Vec::new();
    if create_masq(&mut access, mode) {
        out.push((ACL_ACCESS, encode(&access)));
    }
    if is_dir {
        out.push((ACL_DEFAULT, encode(&default)));
    }
    Ok(out)
}

impl Fs {
    /// Are ACLs kept here (an attribute-tree filesystem)? fuse.rs asks the kernel for
    /// FUSE_POSIX_ACL only then.
    pub fn acls_supported(&self) -> bool {
        self.mp.sb.incompat & INCOMPAT_ATTR_TREE != 0
    }

    /// setxattr of an ACL name: validate, keep the mode in step, store or drop it.
    pub(super) fn set_acl(
        &self,
        inode: &Inode,
        name: &[u8],
        value: &[u8],
        flags: XattrFlags,
    ) -> Result<()> {
        let acl = parse(value)?;
        let mut tx = self.mp.trans(xattr::set_resblks(value.len()))?;
        let mut d = inode.ilock_excl();
        if name == ACL_DEFAULT && !d.di.is_dir() {
            return err(libc::EACCES);
        }
        let mut store = acl.as_ref().map(|a| encode(a));
        if name == ACL_ACCESS
            && let Some(a) = &acl
        {
            let (bits, equiv) = equiv_mode(a);
            d.di.mode = (d.di.mode & !0o777) | bits;
            if equiv {
                store = None;
            }
        }
        let had = match xattr::get(&mut tx, &d, name) {
            Ok(_) => true,
            Err(e) if e.errno() == libc::ENODATA => false,
            Err(e) => return Err(e),
        };
        if had && flags.create {
            return err(libc::EEXIST);
        }
        if !had && flags.replace {
            return err(libc::ENODATA);
        }
        match store {
            Some(v) => xattr::set(&mut tx, &mut d, name, &v, false, false)?,
            None if had => xattr::remove(&mut tx, &mut d, name)?,
            None => {}
        }
        d.di.ctime = inode::now();
        bmap::sync_inode(&mut tx, &mut d)?;
        let r = tx.commit();
        drop(d);
        r
    }

    /// chmod to `mode` of an inode with an access ACL: rewrite its entries (same size, in
    /// place).
    pub(super) fn chmod_acl(&self, tx: &mut Trans, d: &mut InodeData, mode: u32) -> Result<()> {
        if d.di.attr_fmt != AFMT_TREE {
            return Ok(());
        }
        let mut acl = match xattr::get(tx, d, ACL_ACCESS) {
            Ok(v) => match parse(&v)? {
                Some(a) => a,
                None => return Ok(()),
            },
            Err(e) if e.errno() == libc::ENODATA => return Ok(()),
            Err(e) => return Err(e),
        };
        chmod(&mut acl, mode);
        xattr::set(tx, d, ACL_ACCESS, &encode(&acl), false, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(tag: u16, perm: u16, id: u32) -> AclEntry {
        AclEntry { tag, perm, id }
    }

    fn named() -> Vec<AclEntry> {
        vec![
            e(USER_OBJ, 7, UNDEFINED_ID),
            e(USER, 4, 65534),
            e(GROUP_OBJ, 5, UNDEFINED_ID),
            e(MASK, 5, UNDEFINED_ID),
            e(OTHER, 0, UNDEFINED_ID),
        ]
    }

    #[test]
    fn parse_validates_as_the_kernel() {
        let a = named();
        assert_eq!(parse(&encode(&a)).unwrap().unwrap(), a);
        assert_eq!(parse(&encode(&[])).unwrap(), None);
        let bad = |v: &[u8]| parse(v).unwrap_err().errno();
        assert_eq!(bad(b""), libc::EINVAL);
        assert_eq!(bad(&encode(&a)[..11]), libc::EINVAL);
        let mut v = encode(&a);
        v[0] = 1; // version
        assert_eq!(bad(&v), libc::EINVAL);
        // No mask with a named user; two owners; out of order; bad permission bits.
        let mut m = a.clone();
        m.remove(3);
        assert_eq!(bad(&encode(&m)), libc::EINVAL);
        let mut m = a.clone();
        m.insert(0, e(USER_OBJ, 7, 0));
        assert_eq!(bad(&encode(&m)), libc::EINVAL);
        let mut m = a.clone();
        m.swap(0, 2);
        assert_eq!(bad(&encode(&m)), libc::EINVAL);
        let mut m = a.clone();
        m[0].perm = 8;
        assert_eq!(bad(&encode(&m)), libc::EINVAL);
        // The three base entries alone are valid and equal to a mode.
        let base = [e(USER_OBJ, 6, 0), e(GROUP_OBJ, 4, 0), e(OTHER, 1, 0)];
        assert!(parse(&encode(&base)).unwrap().is_some());
        assert_eq!(equiv_mode(&base), (0o641, true));
    }

    #[test]
    fn mode_follows_the_mask_and_chmod_follows_the_mode() {
        let mut a = named();
        assert_eq!(equiv_mode(&a), (0o750, false));
        chmod(&mut a, 0o640);
        assert_eq!(a[0].perm, 6);
        assert_eq!(
            a[2].perm, 5,
            "group entry kept: the mask takes the group bits"
        );
        assert_eq!(a[3].perm, 4);
        assert_eq!(a[4].perm, 0);
        assert_eq!(a[1].perm, 4, "named entries kept");
    }

    #[test]
    fn create_masks_acl_and_mode() {
        let mut a = named();
        let mut mode = libc::S_IFREG | 0o666;
        assert!(create_masq(&mut a, &mut mode));
        assert_eq!(mode, libc::S_IFREG | 0o640);
        assert_eq!((a[0].perm, a[3].perm, a[4].perm), (6, 4, 0));
        let mut base = vec![e(USER_OBJ, 7, 0), e(GROUP_OBJ, 5, 0), e(OTHER, 5, 0)];
        let mut mode = libc::S_IFDIR | 0o777;
        assert!(!create_masq(&mut base, &mut mode));
        assert_eq!(mode, libc::S_IFDIR | 0o755);
    }
}
