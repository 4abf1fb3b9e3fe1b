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

/// Resolves `spec`; the error names what could not be found and where it was looked up.
pub fn resolve_owner(index: &FsIndex, spec: &str) -> Result<Owner, OwnerError> {
    let passwd = index.get(b"etc/passwd").and_then(|n| n.content.as_deref());
    let group = index.get(b"etc/group").and_then(|n| n.content.as_deref());
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(OwnerError::Invalid { spec: spec.into() });
    }
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
