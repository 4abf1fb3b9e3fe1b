//! Image names in the store: `index.json` entries annotated with `org.opencontainers.image.ref.name`.
use crate::oci::{self, Descriptor, ANNOTATION_REF_NAME};

use super::{lock, read_index, write_atomic, Error, Result, Store};

/// Checks an image name and adds `:latest` when it has neither a tag nor a digest.
///
/// Names keep the form the user gave (`app`, `registry.local:5000/team/app:1.0`); the registry
/// module applies Docker's `docker.io/library/` normalisation when it talks to a registry.
pub fn normalize_name(name: &str) -> Result<String> {
    let bad = |reason| Error::InvalidName {
        name: name.to_string(),
        reason,
    };
    if name.is_empty() || name.len() > 255 {
        return Err(bad("must be 1 to 255 characters"));
    }
    let (repo, digest) = match name.split_once('@') {
        Some((r, d)) => {
            d.parse::<oci::Digest>()
                .map_err(|_| bad("the part after `@` is not a valid digest"))?;
            (r, true)
        }
        None => (name, false),
    };
    let last_slash = repo.rfind('/').map_or(0, |i| i + 1);
    let (path, tag) = match repo[last_slash..].rfind(':') {
        Some(i) => (&repo[..last_slash + i], Some(&repo[last_slash + i + 1..])),
        None => (repo, None),
    };
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.bytes().enumerate().all(|(i, b)| {
                b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
            });
        if !ok {
            return Err(bad(
                "a tag is 1 to 128 of [A-Za-z0-9_.-], not starting with `.` or `-`",
            ));
        }
    }
    for (i, comp) in path.split('/').enumerate() {
        let is_host = i == 0
            && path.contains('/')
            && (comp.contains('.') || comp.contains(':') || comp == "localhost");
        // A host's `:PORT` is digits (`foo:/tmp/x` is not a registry `foo:` and a path).
        let port_ok = || {
            let after_host = match comp.strip_prefix('[') {
                Some(v6) => v6.split_once(']').map_or("x", |(_, rest)| rest),
                None => comp.split_once(':').map_or("", |(h, _)| &comp[h.len()..]),
            };
            after_host.is_empty()
                || after_host
                    .strip_prefix(':')
                    .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        };
        let ok = !comp.is_empty()
            && if is_host {
                comp.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
                    && port_ok()
            } else {
                comp.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
                    && comp.as_bytes()[0].is_ascii_alphanumeric()
            };
        if !ok {
            return Err(bad("repository components are lower-case letters, digits and `._-`, starting with a letter or digit"));
        }
    }
    Ok(if tag.is_none() && !digest {
        format!("{name}:latest")
    } else {
        name.to_string()
    })
}

fn with_index<T>(store: &Store, f: impl FnOnce(&mut oci::Index) -> T) -> Result<T> {
    let _guard = lock::open_lock(&store.root().join("index.lock"), true)?;
    let mut index = read_index(store.root())?;
    let out = f(&mut index);
    index.manifests.sort_by(|a, b| {
        a.ref_name()
            .cmp(&b.ref_name())
            .then(a.digest.cmp(&b.digest))
    });
    let path = store.root().join("index.json");
    write_atomic(&store.tmp_dir(), &path, &oci::to_canonical_json(&index))?;
    Ok(out)
}

pub(super) fn tag(store: &Store, name: &str, descriptor: &Descriptor) -> Result<()> {
    let name = normalize_name(name)?;
    if !store.contains(&descriptor.digest) {
        return Err(Error::BlobNotFound {
            digest: descriptor.digest.clone(),
            root: store.root().to_path_buf(),
        });
    }
    let mut d = descriptor.clone();
    d.annotations
        .insert(ANNOTATION_REF_NAME.to_string(), name.clone());
    with_index(store, |index| {
        index
            .manifests
            .retain(|m| m.ref_name() != Some(name.as_str()));
        index.manifests.push(d);
    })
}

pub(super) fn resolve(store: &Store, name: &str) -> Result<Descriptor> {
    let name = normalize_name(name)?;
    let index = read_index(store.root())?;
    index
        .manifests
        .into_iter()
        .find(|m| m.ref_name() == Some(name.as_str()))
        .ok_or_else(|| Error::NameNotFound {
            name,
            root: store.root().to_path_buf(),
        })
}

pub(super) fn untag(store: &Store, name: &str) -> Result<bool> {
    let name = normalize_name(name)?;
    with_index(store, |index| {
        let before = index.manifests.len();
        index
            .manifests
            .retain(|m| m.ref_name() != Some(name.as_str()));
        before != index.manifests.len()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_get_latest_and_bad_names_fail() {
        assert_eq!(normalize_name("app").unwrap(), "app:latest");
        assert_eq!(
            normalize_name("localhost:5000/a/b").unwrap(),
            "localhost:5000/a/b:latest"
        );
        assert_eq!(normalize_name("a/b:1.0").unwrap(), "a/b:1.0");
        for bad in [
            "",
            "App",
            "a//b",
            "a:",
            "a:-x",
            "a@sha256:zz",
            "-a",
            "foo:/tmp/x",
            "h:5x/a",
        ] {
            assert!(normalize_name(bad).is_err(), "{bad}");
        }
    }
}
