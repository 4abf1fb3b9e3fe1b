//! Resolving `USER` and `--chown` specs (`name`, `uid`, `name:group`, `uid:gid`) through a stage's
//! `/etc/passwd` and `/etc/group`, as BuildKit does.
use super::fsindex::FsIndex;

/// A resolved owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

fn lookup(file: Option<&[u8]>, name: &str) -> Option<(u32, u32)> {
    let text = String::from_utf8_lossy(file?);
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            let id = f[2].parse().ok()?;
            let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
            return Some((id, gid));
        }
    }
    None
}

/// Why a `USER` or `--chown` spec cannot be resolved; names what was looked up where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// The spec has no user part.
    #[error("invalid user `{spec}`")]
    Invalid {
        /// The spec.
        spec: String,
    },
    /// A user name not in the stage's `/etc/passwd`.
    #[error("unable to find user `{user}`: no matching entries in /etc/passwd")]
    NoUser {
        /// The name.
        user: String,
    },
    /// A group name not in the stage's `/etc/group`.
    #[error("unable to find group `{group}`: no matching entries in /etc/group")]
    NoGroup {
        /// The name.
        group: String,
    },
}

/// The stage's `/etc/passwd` and `/etc/group` (when it has them) and `spec`'s user and group.
type Spec<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, &'a str, Option<&'a str>);

fn split_spec<'a>(index: &'a FsIndex, spec: &'a str) -> Result<Spec<'a>, OwnerError> {
    let passwd = index.get(b"etc/passwd").and_then(|n| n.content());
    let group = index.get(b"etc/group").and_then(|n| n.content());
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(OwnerError::Invalid { spec: spec.into() });
    }
    Ok((passwd, group, user, grp))
}

/// Resolves `spec`; the error names what could not be found and where it was looked up.
pub fn resolve_owner(index: &FsIndex, spec: &str) -> Result<Owner, OwnerError> {
    let (passwd, group, user, grp) = split_spec(index, spec)?;
    let (uid, primary) = match user.parse::<u32>() {
        Ok(id) => (id, lookup_by_uid(passwd, id).unwrap_or(id)),
        Err(_) => lookup(passwd, user).ok_or_else(|| OwnerError::NoUser { user: user.into() })?,
    };
    let gid = match grp {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(id) => id,
            Err(_) => lookup(group, g)
                .map(|(id, _)| id)
                .ok_or_else(|| OwnerError::NoGroup { group: g.into() })?,
        },
    };
    Ok(Owner { uid, gid })
}

/// Who a RUN step runs as, as BuildKit's executor resolves `USER` (runc's
/// `user.GetExecUser`, which differs from `--chown`'s lookup in two ways): a numeric uid with no
/// `/etc/passwd` entry keeps group 0 (not gid = uid), and without an explicit group the user
/// gets, as supplementary groups, every group whose `/etc/group` member list names it.
pub fn resolve_exec_user(index: &FsIndex, spec: &str) -> Result<ExecUser, OwnerError> {
    let (passwd, group, user, grp) = split_spec(index, spec)?;
    // (name, uid, gid) of the matching passwd line: by uid when numeric, else by name.
    let entry = passwd_lines(passwd).find(|(name, uid, _)| match user.parse::<u32>() {
        Ok(id) => *uid == id,
        Err(_) => *name == user,
    });
    let (uid, mut gid, name) = match (entry, user.parse::<u32>()) {
        (Some((name, uid, gid)), _) => (uid, gid, Some(name)),
        (None, Ok(id)) => (id, 0, None),
        (None, Err(_)) => return Err(OwnerError::NoUser { user: user.into() }),
    };
    let mut additional_gids = Vec::new();
    match grp {
        Some(g) => {
            gid = match group_lines(group).find(|(n, id, _)| match g.parse::<u32>() {
                Ok(want) => *id == want,
                Err(_) => *n == g,
            }) {
                Some((_, id, _)) => id,
                None => g
                    .parse()
                    .map_err(|_| OwnerError::NoGroup { group: g.into() })?,
            };
        }
        None => {
            if let Some(name) = name {
                additional_gids = group_lines(group)
                    .filter(|(_, _, members)| members.split(',').any(|m| m == name))
                    .map(|(_, id, _)| id)
                    .collect();
            }
        }
    }
    Ok(ExecUser {
        uid,
        gid,
        additional_gids,
    })
}

/// A RUN step's identity: user, primary group and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids, in `/etc/group` order.
    pub additional_gids: Vec<u32>,
}

/// `/etc/passwd` lines as (name, uid, gid); malformed lines are skipped.
fn passwd_lines(file: Option<&[u8]>) -> impl Iterator<Item = (String, u32, u32)> + '_ {
    let text = file.map(String::from_utf8_lossy).unwrap_or_default();
    let lines: Vec<(String, u32, u32)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)?.parse().ok()?,
            ))
        })
        .collect();
    lines.into_iter()
}

/// `/etc/group` lines as (name, gid, member list); malformed lines are skipped.
fn group_lines(file: Option<&[u8]>) -> impl Iterator<Item = (String, u32, String)> + '_ {
    let text = file.map(String::from_utf8_lossy).unwrap_or_default();
    let lines: Vec<(String, u32, String)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let members = f.get(3).copied().unwrap_or("").to_string();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?, members))
        })
        .collect();
    lines.into_iter()
}

fn lookup_by_uid(passwd: Option<&[u8]>, uid: u32) -> Option<u32> {
    let text = String::from_utf8_lossy(passwd?);
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse() == Ok(uid))
            .then(|| f[3].parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Entry;

    #[test]
    fn names_and_ids_resolve_like_buildkit() {
        let mut i = FsIndex::default();
        i.apply_entries(&[
            Entry::file(
                "etc/passwd",
                0o644,
                b"root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/app:/bin/sh\n".to_vec(),
            ),
            Entry::file(
                "etc/group",
                0o644,
                b"root:x:0:\nstaff:x:50:\napp:x:1001:\n".to_vec(),
            ),
        ]);
        assert_eq!(
            resolve_owner(&i, "app").unwrap(),
            Owner {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(
            resolve_owner(&i, "app:staff").unwrap(),
            Owner { uid: 1000, gid: 50 }
        );
        assert_eq!(
            resolve_owner(&i, "1000").unwrap(),
            Owner {
                uid: 1000,
                gid: 1001
            }
        );
        assert_eq!(
            resolve_owner(&i, "2000").unwrap(),
            Owner {
                uid: 2000,
                gid: 2000
            }
        );
        assert_eq!(resolve_owner(&i, "7:8").unwrap(), Owner { uid: 7, gid: 8 });
        assert!(resolve_owner(&i, "nobody")
            .unwrap_err()
            .to_string()
            .contains("nobody"));
        assert_eq!(
            resolve_owner(&i, "app:nogroup").unwrap_err(),
            OwnerError::NoGroup {
                group: "nogroup".into()
            }
        );
    }
}
