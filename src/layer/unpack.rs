//! Applying a layer's tar stream to a directory, as the OCI image spec's "Applying Changesets"
//! says, without ever writing or following a link outside that directory.
//!
//! Every path is resolved with [`crate::inroot`] (`openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`,
//! or its checked walk on kernels without it) against a file descriptor of the root, so `..`, absolute symlinks and symlinked parents all stay inside it; the
//! last component is created with `*at` calls that do not follow links (`O_NOFOLLOW`, `O_EXCL`).
//! Members whose path climbs out of the root are refused. Whiteouts (`.wh.NAME`) delete from the
//! layers below; an opaque marker (`.wh..wh..opq`) empties its directory of everything this layer
//! did not itself create. Directory modes and times are applied last, deepest first, so a
//! read-only directory can still be filled and its mtime is the one recorded; they are set through
//! a descriptor opened without following links, so a directory the layer later replaced by a
//! symlink is skipped rather than followed.
//!
//! Hostile streams: the tar is read through [`TarGuard`], which refuses PAX and GNU long-name
//! members over 1 MiB and absurd sparse maps before they are buffered; a member whose data ends
//! early is an error naming it (its partial file removed), never a short file; runs of zeros in a
//! file are written as holes, so a decompression bomb of zeros costs neither memory nor disk;
//! member types the OCI spec does not know are refused. Device nodes are created when the caller
//! may (root), else listed in [`UnpackReport::skipped_devices`].
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawMode, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::entry::path_components;
use super::tar::TarGuard;
use super::Error;

/// How to apply a layer.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnpackOptions {
    /// Set owners from the tar (needs root, or a user namespace with the ids mapped).
    pub ownership: bool,
}

/// What applying a layer did.
#[derive(Debug, Clone, Default)]
pub struct UnpackReport {
    /// Members applied (whiteouts included).
    pub entries: u64,
    /// Device nodes that could not be created (no privilege); listed, not fatal.
    pub skipped_devices: Vec<String>,
    /// Without `ownership`: the paths whose tar owner is not 0:0, with that owner, so a
    /// rootless caller can set them from inside a user namespace.
    pub owners: Vec<(Vec<u8>, u32, u32)>,
}

struct DirMeta {
    path: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

/// A member's path for an error message: lossily decoded, and cut after 512 bytes (a hostile
/// path may be a megabyte long).
fn shown(member: &[u8]) -> String {
    const MAX: usize = 512;
    if member.len() <= MAX {
        return String::from_utf8_lossy(member).into_owned();
    }
    format!(
        "{}…({} bytes)",
        String::from_utf8_lossy(&member[..MAX]),
        member.len()
    )
}

fn bad(member: &[u8], reason: impl Into<String>) -> Error {
    Error::Unpack {
        member: shown(member),
        reason: reason.into(),
    }
}

fn io(member: &[u8], e: impl Into<io::Error>) -> Error {
    Error::UnpackIo {
        member: shown(member),
        source: e.into(),
    }
}

/// Opens directory `comps` below `root`, creating missing directories (mode 0755).
fn open_dir(
    root: &OwnedFd,
    comps: &[&[u8]],
    member: &[u8],
    created: &mut HashSet<Vec<u8>>,
) -> Result<OwnedFd, Error> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut cur = crate::inroot::open(root, ".", flags).map_err(|e| io(member, e))?;
    let mut prefix: Vec<u8> = Vec::new();
    for c in comps {
        if !prefix.is_empty() {
            prefix.push(b'/');
        }
        prefix.extend_from_slice(c);
        let p = OsStr::from_bytes(&prefix);
        cur = match crate::inroot::open(root, p, flags) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(&cur, OsStr::from_bytes(c), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io(member, e)),
                }
                created.insert(prefix.clone());
                crate::inroot::open(root, p, flags).map_err(|e| io(member, e))?
            }
            Err(Errno::NOTDIR) => {
                return Err(bad(
                    member,
                    format!(
                        "parent `{}` is not a directory",
                        String::from_utf8_lossy(&prefix)
                    ),
                ))
            }
            Err(e) => return Err(io(member, e)),
        };
    }
    Ok(cur)
}

/// Removes `name` in `dir`, recursively if it is a directory. Never follows symlinks.
fn remove_all(dir: &OwnedFd, name: &OsStr) -> io::Result<()> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
            let sub = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            // Make sure we may delete inside it even if the layer made it read-only.
            let _ = rustix::fs::fchmod(&sub, Mode::from_raw_mode(0o700));
            empty_dir(&sub, &HashSet::new(), b"")?;
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
        }
        Ok(_) => rustix::fs::unlinkat(dir, name, AtFlags::empty())?,
    }
    Ok(())
}

/// Removes every child of `dir` except those whose path (`prefix/child`) is in `keep`.
fn empty_dir(dir: &OwnedFd, keep: &HashSet<Vec<u8>>, prefix: &[u8]) -> io::Result<()> {
    let dup = rustix::fs::openat(
        dir,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(&dup)? {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(n.to_vec());
        }
    }
    for n in names {
        let mut p = prefix.to_vec();
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(&n);
        if !keep.contains(&p) {
            remove_all(dir, OsStr::from_bytes(&n))?;
        }
    }
    Ok(())
}

/// Applies the uncompressed layer tar read from `layer` to the directory `root`.
pub fn apply_layer(
    layer: impl Read,
    root: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackReport, Error> {
    let root_fd: OwnedFd = File::open(root)
        .map_err(|source| Error::Read {
            path: root.to_path_buf(),
            source,
        })?
        .into();
    let mut report = UnpackReport::default();
    let mut created: HashSet<Vec<u8>> = HashSet::new();
    // One record per directory path (a later entry for the same path wins), so a stream that
    // repeats one member cannot grow these without bound.
    let mut dirs: HashMap<Vec<u8>, DirMeta> = HashMap::new();
    let mut owners: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut archive = tar::Archive::new(TarGuard::new(layer));
    let entries = archive.entries().map_err(|e| Error::InvalidTar {
        position: "at its start".into(),
        reason: e.to_string(),
    })?;
    let mut last: Option<Vec<u8>> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::InvalidTar {
            position: match &last {
                Some(m) => format!("after member `{}`", shown(m)),
                None => "at its start".into(),
            },
            reason: e.to_string(),
        })?;
        let member = entry.path_bytes().into_owned();
        last = Some(member.clone());
        let comps = path_components(&member)
            .ok_or_else(|| bad(&member, "path climbs out of the root (`..`)"))?;
        let Some((name, parents)) = comps.split_last() else {
            continue;
        };
        let name = name.to_vec();
        let clean: Vec<u8> = comps.join(&b'/');
        let parent_path: Vec<u8> = parents.join(&b'/');
        let parent = open_dir(&root_fd, parents, &member, &mut created)?;
        report.entries += 1;

        if let Some(target) = name.strip_prefix(b".wh.") {
            if target == b".wh..opq" {
                empty_dir(&parent, &created, &parent_path).map_err(|e| io(&member, e))?;
            } else if target.is_empty() || target == b"." || target == b".." {
                return Err(bad(&member, "whiteout of an invalid name"));
            } else {
                remove_all(&parent, OsStr::from_bytes(target)).map_err(|e| io(&member, e))?;
            }
            continue;
        }

        let h = entry.header().clone();
        let et = h.entry_type();
        match et {
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::GNUSparse
            | tar::EntryType::Directory
            | tar::EntryType::Symlink
            | tar::EntryType::Link
            | tar::EntryType::Fifo
            | tar::EntryType::Char
            | tar::EntryType::Block => {}
            // A global PAX header (`git archive` writes one) describes no file.
            tar::EntryType::XGlobalHeader => continue,
            other => {
                return Err(bad(
                    &member,
                    format!(
                        "unsupported member type `{}`",
                        (other.as_byte() as char).escape_default()
                    ),
                ))
            }
        }
        let mode = h.mode().map_err(|e| bad(&member, e.to_string()))? & 0o7777;
        let uid = h.uid().map_err(|e| bad(&member, e.to_string()))? as u32;
        let gid = h.gid().map_err(|e| bad(&member, e.to_string()))? as u32;
        let mtime = h.mtime().map_err(|e| bad(&member, e.to_string()))? as i64;
        let os_name = OsStr::from_bytes(&name);

        // What is there already: a directory stays when a directory is applied over it.
        let existing = match rustix::fs::statat(&parent, os_name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
            Err(Errno::NOENT) => None,
            Err(e) => return Err(io(&member, e)),
        };
        let keep_dir = et == tar::EntryType::Directory && existing == Some(FileType::Directory);
        if existing.is_some() && !keep_dir {
            remove_all(&parent, os_name).map_err(|e| io(&member, e))?;
        }
        created.insert(clean.clone());
        if !opts.ownership && et != tar::EntryType::Link {
            // The last member for a path decides its owner.
            match owners.get(&clean) {
                Some(&i) => report.owners[i] = (clean.clone(), uid, gid),
                None if (uid, gid) != (0, 0) => {
                    owners.insert(clean.clone(), report.owners.len());
                    report.owners.push((clean.clone(), uid, gid));
                }
                None => {}
            }
        }

        match et {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let fd = rustix::fs::openat(
                    &parent,
                    os_name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| io(&member, e))?;
                let mut f = File::from(fd);
                let want = entry.size();
                let copied = copy_sparse(&mut entry, &mut f).and_then(|n| {
                    if n == want {
                        Ok(())
                    } else {
                        Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            format!("the layer ends inside this file ({n} of {want} bytes)"),
                        ))
                    }
                });
                if let Err(e) = copied {
                    // Nothing half-written: the partial file goes.
                    drop(f);
                    let _ = rustix::fs::unlinkat(&parent, os_name, AtFlags::empty());
                    return Err(io(&member, e));
                }
                let attrs = Attrs {
                    mode,
                    uid,
                    gid,
                    mtime,
                };
                finish_attrs(&parent, os_name, &f, attrs, opts, &member)?;
                set_xattrs(&mut entry, &f);
            }
            tar::EntryType::Directory => {
                if !keep_dir {
                    rustix::fs::mkdirat(&parent, os_name, Mode::from_raw_mode(0o755))
                        .map_err(|e| io(&member, e))?;
                }
                let d = rustix::fs::openat(
                    &parent,
                    os_name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io(&member, e))?;
                set_xattrs(&mut entry, &File::from(d));
                dirs.insert(
                    clean.clone(),
                    DirMeta {
                        path: clean,
                        mode,
                        uid,
                        gid,
                        mtime,
                    },
                );
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad(&member, "symlink without a target"))?
                    .into_owned();
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &parent, os_name)
                    .map_err(|e| io(&member, e))?;
                if opts.ownership {
                    rustix::fs::chownat(
                        &parent,
                        os_name,
                        Some(uid_of(uid)),
                        Some(gid_of(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| io(&member, e))?;
                }
                set_time(&parent, os_name, mtime, &member)?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| bad(&member, "hard link without a target"))?
                    .into_owned();
                let tc = path_components(&target)
                    .ok_or_else(|| bad(&member, "hard link target climbs out of the root"))?;
                if tc.is_empty() {
                    return Err(bad(&member, "hard link to the root"));
                }
                let tpath = tc.join(&b'/');
                let src = crate::inroot::open(
                    &root_fd,
                    OsStr::from_bytes(&tpath),
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                )
                .map_err(|e| {
                    bad(
                        &member,
                        format!(
                            "hard link target `{}`: {e}",
                            String::from_utf8_lossy(&tpath)
                        ),
                    )
                })?;
                let st = rustix::fs::fstat(&src).map_err(|e| io(&member, e))?;
                if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    return Err(bad(&member, "hard link to a directory"));
                }
                // linkat through /proc follows the O_PATH descriptor, not a path that could be swapped.
                let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&src));
                rustix::fs::linkat(
                    rustix::fs::CWD,
                    proc_path.as_str(),
                    &parent,
                    os_name,
                    AtFlags::SYMLINK_FOLLOW,
                )
                .or_else(|_| rustix::fs::linkat(&src, "", &parent, os_name, AtFlags::EMPTY_PATH))
                .map_err(|e| io(&member, e))?;
            }
            tar::EntryType::Fifo | tar::EntryType::Char | tar::EntryType::Block => {
                let (ft, dev) = match et {
                    tar::EntryType::Fifo => (FileType::Fifo, 0),
                    t => {
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let ft = if t == tar::EntryType::Char {
                            FileType::CharacterDevice
                        } else {
                            FileType::BlockDevice
                        };
                        (ft, rustix::fs::makedev(major, minor))
                    }
                };
                match rustix::fs::mknodat(
                    &parent,
                    os_name,
                    ft,
                    Mode::from_raw_mode(mode as RawMode),
                    dev,
                ) {
                    Ok(()) => {}
                    Err(Errno::PERM) if ft != FileType::Fifo => {
                        let p = String::from_utf8_lossy(&clean).into_owned();
                        if !report.skipped_devices.contains(&p) {
                            report.skipped_devices.push(p);
                        }
                        continue;
                    }
                    Err(e) => return Err(io(&member, e)),
                }
                let f = rustix::fs::openat(
                    &parent,
                    os_name,
                    OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| io(&member, e))?;
                let _ = f;
                if opts.ownership {
                    rustix::fs::chownat(
                        &parent,
                        os_name,
                        Some(uid_of(uid)),
                        Some(gid_of(gid)),
                        AtFlags::SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| io(&member, e))?;
                }
                rustix::fs::chmodat(
                    &parent,
                    os_name,
                    Mode::from_raw_mode(mode as RawMode),
                    AtFlags::empty(),
                )
                .map_err(|e| io(&member, e))?;
                set_time(&parent, os_name, mtime, &member)?;
            }
            _ => {} // refused or skipped above
        }
    }
    // Directories last, deepest first: modes may remove our write permission, and adding
    // children changed their mtimes. Each is opened without following links: a directory that a
    // later member replaced (by a symlink to anywhere, a file) or removed is left alone.
    let mut dirs: Vec<DirMeta> = dirs.into_values().collect();
    dirs.sort_by(|a, b| b.path.len().cmp(&a.path.len()).then(a.path.cmp(&b.path)));
    for d in dirs {
        let Some(fd) = open_existing_dir(&root_fd, &d.path).map_err(|e| io(&d.path, e))? else {
            continue;
        };
        if opts.ownership {
            rustix::fs::fchown(&fd, Some(uid_of(d.uid)), Some(gid_of(d.gid)))
                .map_err(|e| io(&d.path, e))?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode as RawMode))
            .map_err(|e| io(&d.path, e))?;
        let t = Timespec {
            tv_sec: d.mtime,
            tv_nsec: 0,
        };
        rustix::fs::futimens(
            &fd,
            &Timestamps {
                last_access: t,
                last_modification: t,
            },
        )
        .map_err(|e| io(&d.path, e))?;
    }
    Ok(report)
}

/// Opens the directory at `path` below `root` (parents resolved inside the root, the last
/// component not followed); `None` if it is missing or no longer a directory.
fn open_existing_dir(root: &OwnedFd, path: &[u8]) -> io::Result<Option<OwnedFd>> {
    let comps = path_components(path).unwrap_or_default();
    let Some((name, parents)) = comps.split_last() else {
        return Ok(None);
    };
    let dir = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let mut parent_path = parents.join(&b'/');
    if parent_path.is_empty() {
        parent_path.push(b'.');
    }
    let parent = match crate::inroot::open(root, OsStr::from_bytes(&parent_path), dir) {
        Ok(fd) => fd,
        Err(Errno::NOENT | Errno::NOTDIR) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    match rustix::fs::openat(
        &parent,
        OsStr::from_bytes(name),
        dir | OFlags::NOFOLLOW,
        Mode::empty(),
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Copies a member's data, leaving holes where whole chunks are zeros (the file is sized at the
/// end). Returns the bytes copied.
fn copy_sparse(from: &mut impl Read, to: &mut File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom, Write};
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    let mut hole = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let chunk = &buf[..n];
        if chunk.iter().all(|&b| b == 0) {
            to.seek(SeekFrom::Current(n as i64))?;
            hole = true;
        } else {
            to.write_all(chunk)?;
            hole = false;
        }
        total += n as u64;
    }
    if hole {
        to.set_len(total)?;
    }
    Ok(total)
}

/// A member's mode, owner and mtime, as its tar header gives them.
#[derive(Clone, Copy)]
struct Attrs {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
}

fn finish_attrs(
    parent: &OwnedFd,
    name: &OsStr,
    f: &File,
    attrs: Attrs,
    opts: &UnpackOptions,
    member: &[u8],
) -> Result<(), Error> {
    let Attrs {
        mode,
        uid,
        gid,
        mtime,
    } = attrs;
    if opts.ownership {
        rustix::fs::fchown(f.as_fd(), Some(uid_of(uid)), Some(gid_of(gid)))
            .map_err(|e| io(member, e))?;
    }
    // After chown, which clears setuid/setgid bits.
    rustix::fs::fchmod(f.as_fd(), Mode::from_raw_mode(mode as RawMode))
        .map_err(|e| io(member, e))?;
    set_time(parent, name, mtime, member)
}

fn set_time(parent: &OwnedFd, name: &OsStr, mtime: i64, member: &[u8]) -> Result<(), Error> {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        parent,
        name,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| io(member, e))
}

/// Sets `SCHILY.xattr.*` PAX records; attributes the filesystem or our privileges refuse are
/// skipped (a rootless build cannot set `trusted.*` or `security.*`).
fn set_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>, f: &File) {
    let Ok(Some(exts)) = entry.pax_extensions() else {
        return;
    };
    for ext in exts.flatten() {
        if let Ok(k) = ext.key() {
            if let Some(name) = k.strip_prefix("SCHILY.xattr.") {
                let _ =
                    rustix::fs::fsetxattr(f.as_fd(), name, ext.value_bytes(), XattrFlags::empty());
            }
        }
    }
}

fn uid_of(id: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(id)
}

fn gid_of(id: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(id)
}
