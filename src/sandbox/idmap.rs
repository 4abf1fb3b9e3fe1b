//! uid/gid mapping of the sandbox's user namespace: choosing a mode, and writing the maps.
//!
//! Three modes, chosen once per [`crate::sandbox::UserNsSandbox`]:
//! - [`IdMapping::Identity`] when kiln runs as root: every id maps to itself, so the step's ids
//!   are the host's ids and nothing needs translating (written directly to /proc). Root inside a
//!   user namespace (a rootless container) mirrors its own ranges instead of the full 2³² ids.
//! - [`IdMapping::Subordinate`] for an unprivileged caller with `/etc/subuid` and `/etc/subgid`
//!   entries and `newuidmap`/`newgidmap` on the search path: 0 → the caller, 1.. → the
//!   subordinate ranges in file order, as buildah and podman do. The helpers' exit status is
//!   checked (youki's libcontainer ignores it).
//! - [`IdMapping::Single`] otherwise: only 0 → the caller exists; `setgroups` is denied.
use super::error::{Result, SandboxError, SandboxWarning};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

/// One contiguous range of a uid or gid map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id on the host.
    pub outside: u32,
    /// Number of ids.
    pub count: u32,
}

/// How the sandbox's user namespace maps ids to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMapping {
    /// Real root: every id maps to itself.
    Identity,
    /// Full range via `newuidmap`/`newgidmap`.
    Subordinate {
        /// The uid map (first range is 0 → the caller).
        uid: Vec<IdRange>,
        /// The gid map.
        gid: Vec<IdRange>,
        /// The `newuidmap` binary.
        newuidmap: PathBuf,
        /// The `newgidmap` binary.
        newgidmap: PathBuf,
    },
    /// Only the caller, as 0.
    Single {
        /// The caller's host uid.
        uid: u32,
        /// The caller's host gid.
        gid: u32,
    },
}

impl IdMapping {
    /// Chooses the mapping for the current process. `search_path` is where to look for
    /// `newuidmap`/`newgidmap` (a `PATH`-style list); the files are read from `etc`
    /// (normally `/etc`). Falling back to single-id mode returns a warning, not an error.
    pub fn detect(search_path: &OsStr, etc: &Path) -> (IdMapping, Option<SandboxWarning>) {
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        if uid == 0 {
            return (IdMapping::Identity, None);
        }
        let user = user_name(uid).unwrap_or_else(|| uid.to_string());
        let subuid = std::fs::read_to_string(etc.join("subuid")).unwrap_or_default();
        let subgid = std::fs::read_to_string(etc.join("subgid")).unwrap_or_default();
        let single = |missing| {
            let warning = SandboxWarning::SingleIdMode {
                user: user.clone(),
                missing,
                free_start: free_subordinate_start(&subuid, &subgid, uid, gid),
            };
            (IdMapping::Single { uid, gid }, Some(warning))
        };
        let (Some(newuidmap), Some(newgidmap)) = (
            find_program(search_path, "newuidmap"),
            find_program(search_path, "newgidmap"),
        ) else {
            return single("`newuidmap`/`newgidmap` not found on PATH");
        };
        let uid_ranges = subordinate_ranges(&subuid, &user, uid);
        let gid_ranges = subordinate_ranges(&subgid, &user, uid);
        if uid_ranges.is_empty() {
            return single("no entry for the calling user in /etc/subuid");
        }
        if gid_ranges.is_empty() {
            return single("no entry for the calling user in /etc/subgid");
        }
        let mapping = IdMapping::Subordinate {
            uid: full_map(uid, &uid_ranges),
            gid: full_map(gid, &gid_ranges),
            newuidmap,
            newgidmap,
        };
        (mapping, None)
    }

    /// Whether only id 0 exists in the namespace.
    pub fn is_single(&self) -> bool {
        matches!(self, IdMapping::Single { .. })
    }

    /// Whether the uid `ns_uid` and gid `ns_gid` exist inside the namespace.
    pub fn contains(&self, ns_uid: u32, ns_gid: u32) -> bool {
        let within = |ranges: &[IdRange], id: u32| {
            ranges
                .iter()
                .any(|r| id >= r.inside && id - r.inside < r.count)
        };
        match self {
            IdMapping::Identity => true,
            IdMapping::Single { .. } => ns_uid == 0 && ns_gid == 0,
            IdMapping::Subordinate { uid, gid, .. } => within(uid, ns_uid) && within(gid, ns_gid),
        }
    }

    /// The host uid of namespace uid `ns_uid`, if mapped.
    pub fn host_uid(&self, ns_uid: u32) -> Option<u32> {
        match self {
            IdMapping::Identity => Some(ns_uid),
            IdMapping::Single { uid, .. } => (ns_uid == 0).then_some(*uid),
            IdMapping::Subordinate { uid, .. } => to_outside(uid, ns_uid),
        }
    }

    /// The host gid of namespace gid `ns_gid`, if mapped.
    pub fn host_gid(&self, ns_gid: u32) -> Option<u32> {
        match self {
            IdMapping::Identity => Some(ns_gid),
            IdMapping::Single { gid, .. } => (ns_gid == 0).then_some(*gid),
            IdMapping::Subordinate { gid, .. } => to_outside(gid, ns_gid),
        }
    }

    /// Writes the maps of process `pid`, which has just unshared its user namespace.
    pub(crate) fn write(&self, pid: u32) -> Result<()> {
        let proc = PathBuf::from(format!("/proc/{pid}"));
        match self {
            IdMapping::Identity => {
                write_proc(&proc.join("uid_map"), &identity_of("uid_map"))?;
                write_proc(&proc.join("gid_map"), &identity_of("gid_map"))
            }
            IdMapping::Single { uid, gid } => {
                // An unprivileged process may only map its own ids, and only after giving up
                // setgroups (user_namespaces(7), "Interaction with system calls changing ...").
                write_proc(&proc.join("setgroups"), "deny")?;
                write_proc(&proc.join("uid_map"), &format!("0 {uid} 1\n"))?;
                write_proc(&proc.join("gid_map"), &format!("0 {gid} 1\n"))
            }
            IdMapping::Subordinate {
                uid,
                gid,
                newuidmap,
                newgidmap,
            } => {
                run_map_helper(newuidmap, "uid", pid, uid)?;
                run_map_helper(newgidmap, "gid", pid, gid)
            }
        }
    }
}

/// The identity map of every id kiln itself has: `0 0 4294967295` for real root, and for root
/// inside a user namespace (kiln in a rootless container) each of its ranges mapped to itself,
/// since a child namespace can only map ids its parent has.
fn identity_of(file: &str) -> String {
    let own = std::fs::read_to_string(Path::new("/proc/self").join(file)).unwrap_or_default();
    let map: String = own
        .lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let (inside, _outside, count) = (f.next()?, f.next()?, f.next()?);
            Some(format!("{inside} {inside} {count}\n"))
        })
        .collect();
    if map.is_empty() {
        "0 0 4294967295\n".to_owned()
    } else {
        map
    }
}

fn to_outside(ranges: &[IdRange], id: u32) -> Option<u32> {
    ranges
        .iter()
        .find(|r| id >= r.inside && id - r.inside < r.count)
        .map(|r| r.outside + (id - r.inside))
}

fn write_proc(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| SandboxError::IdMapWrite {
        path: path.to_owned(),
        source,
    })
}

fn run_map_helper(program: &Path, kind: &'static str, pid: u32, ranges: &[IdRange]) -> Result<()> {
    let mut cmd = Command::new(program);
    cmd.arg(pid.to_string());
    for r in ranges {
        cmd.args([
            r.inside.to_string(),
            r.outside.to_string(),
            r.count.to_string(),
        ]);
    }
    let output = cmd.output().map_err(|source| SandboxError::Io {
        action: "run",
        path: program.to_owned(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    let uid = rustix::process::geteuid().as_raw();
    Err(SandboxError::IdMapHelper {
        program: program.to_owned(),
        kind,
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        user: user_name(uid).unwrap_or_else(|| uid.to_string()),
    })
}

/// How a rootless container of the calling user sees host files (`podman unshare`): the uid and
/// gid maps 0 → the caller, 1.. → its `/etc/subuid` and `/etc/subgid` ranges in file order
/// (only 0 → the caller when it has none); `None` when the caller is root, who sees every id as
/// it is. Reads the files from `etc` (normally `/etc`); needs no `newuidmap`.
pub fn caller_view(etc: &Path) -> Option<(Vec<IdRange>, Vec<IdRange>)> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    if uid == 0 {
        return None;
    }
    let user = user_name(uid).unwrap_or_else(|| uid.to_string());
    let subuid = std::fs::read_to_string(etc.join("subuid")).unwrap_or_default();
    let subgid = std::fs::read_to_string(etc.join("subgid")).unwrap_or_default();
    Some((
        full_map(uid, &subordinate_ranges(&subuid, &user, uid)),
        full_map(gid, &subordinate_ranges(&subgid, &user, uid)),
    ))
}

/// The first id of a 65536-id range to suggest for `usermod --add-subuids/--add-subgids`: at
/// least 100000 (shadow's `SUB_UID_MIN`), after every range already in `subuid` and `subgid`
/// (`/etc/subuid`-format text, every user's), and not holding the caller's own uid or gid.
pub(crate) fn free_subordinate_start(subuid: &str, subgid: &str, uid: u32, gid: u32) -> u64 {
    const COUNT: u64 = 65536;
    let mut taken: Vec<(u64, u64)> = [subuid, subgid]
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|line| {
            let mut parts = line.trim().split(':');
            let _ = parts.next()?;
            let start: u64 = parts.next()?.parse().ok()?;
            let count: u64 = parts.next()?.parse().ok()?;
            Some((start, start + count))
        })
        .collect();
    taken.push((u64::from(uid), u64::from(uid) + 1));
    taken.push((u64::from(gid), u64::from(gid) + 1));
    let mut start = 100_000u64;
    // Move past every overlapping range until none overlaps (at most once per range).
    while let Some(&(_, end)) = taken.iter().find(|&&(s, e)| s < start + COUNT && start < e) {
        start = end;
    }
    start
}

/// The map: 0 → `own`, then the subordinate ranges from 1 upwards.
fn full_map(own: u32, subordinate: &[(u32, u32)]) -> Vec<IdRange> {
    let mut map = vec![IdRange {
        inside: 0,
        outside: own,
        count: 1,
    }];
    let mut next = 1u32;
    for &(start, count) in subordinate {
        let count = count.min(u32::MAX - next);
        if count == 0 {
            break;
        }
        map.push(IdRange {
            inside: next,
            outside: start,
            count,
        });
        next += count;
    }
    map
}

/// The `start:count` ranges of `/etc/subuid`-format `text` for `user` (by name or by uid).
pub(crate) fn subordinate_ranges(text: &str, user: &str, uid: u32) -> Vec<(u32, u32)> {
    let uid = uid.to_string();
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().split(':');
            let (name, start, count) = (parts.next()?, parts.next()?, parts.next()?);
            if name != user && name != uid {
                return None;
            }
            Some((start.parse().ok()?, count.parse().ok()?))
        })
        .filter(|&(_, count): &(u32, u32)| count > 0)
        .collect()
}

/// The first executable `name` in a `PATH`-style list.
pub(crate) fn find_program(search_path: &OsStr, name: &str) -> Option<PathBuf> {
    std::env::split_paths(search_path)
        .map(|dir| dir.join(name))
        .find(|p| rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok() && p.is_file())
}

/// The login name of `uid` from the password database.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is plain data; zeroed is a valid initial value for getpwuid_r to fill.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the sizes given; getpwuid_r writes only into them.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points at a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// The search path for the id-map helpers: the given one, else the process's `PATH`.
pub(crate) fn search_path_or_env(given: Option<&OsStr>) -> OsString {
    given
        .map(OsStr::to_owned)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| OsString::from("/usr/bin:/bin"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_match_by_name_or_uid() {
        let text = "alice:100000:65536\nbob:165536:65536\n1000:300000:10\nbad line\n";
        assert_eq!(
            subordinate_ranges(text, "alice", 1000),
            vec![(100000, 65536), (300000, 10)]
        );
        assert_eq!(subordinate_ranges(text, "carol", 1001), vec![]);
    }

    #[test]
    fn the_suggested_subordinate_range_overlaps_no_range_and_not_the_caller() {
        assert_eq!(free_subordinate_start("", "", 1000, 1000), 100_000);
        // The caller's own uid inside the default range: the range starts after it.
        assert_eq!(free_subordinate_start("", "", 120_000, 1000), 120_001);
        // Every user's ranges count, from both files.
        let subuid = "alice:100000:65536\nbob:165536:65536\n";
        let subgid = "carol:231072:10\n";
        assert_eq!(free_subordinate_start(subuid, subgid, 1000, 1000), 231_082);
    }

    #[test]
    fn full_map_starts_with_the_caller_as_root() {
        let map = full_map(1000, &[(100000, 65536)]);
        assert_eq!(
            map[0],
            IdRange {
                inside: 0,
                outside: 1000,
                count: 1
            }
        );
        assert_eq!(
            map[1],
            IdRange {
                inside: 1,
                outside: 100000,
                count: 65536
            }
        );
        let m = IdMapping::Subordinate {
            uid: map.clone(),
            gid: map,
            newuidmap: "x".into(),
            newgidmap: "y".into(),
        };
        assert_eq!(m.host_uid(1000), Some(100999));
        assert_eq!(m.host_uid(0), Some(1000));
        assert_eq!(m.host_uid(70000), None);
        assert!(m.contains(1000, 1000));
        assert!(!m.contains(65537, 0));
    }
}
