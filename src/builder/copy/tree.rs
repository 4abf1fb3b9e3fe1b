//! Sources in another stage or an image: wildcard expansion and the items below a source,
//! read from the stage's metadata index and its files on disk.
use super::*;

/// Expands a source against a stage's index: wildcards per component, symlinks resolved.
pub(super) fn expand_tree(index: &FsIndex, src: &str) -> Result<Vec<(String, String)>, CopyError> {
    let rel = clean_rel(src.trim_start_matches('/')).unwrap_or_default();
    if !has_wildcard(&rel) {
        let resolved = String::from_utf8_lossy(&index.resolve(rel.as_bytes(), true)).into_owned();
        if !resolved.is_empty() && index.get(resolved.as_bytes()).is_none() {
            return Err(CopyError::NotInStage(src.to_string()));
        }
        return Ok(vec![(
            rel.rsplit('/').next().unwrap_or("").to_string(),
            resolved,
        )]);
    }
    let mut found: Vec<String> = vec![String::new()];
    for comp in rel.split('/') {
        let mut next = Vec::new();
        for base in &found {
            let dir = index.resolve(base.as_bytes(), true);
            for (k, _) in index.children(&dir) {
                let name = &k[if dir.is_empty() { 0 } else { dir.len() + 1 }..];
                if name.contains(&b'/') || !glob_match(comp.as_bytes(), name) {
                    continue;
                }
                let n = String::from_utf8_lossy(name);
                next.push(if base.is_empty() {
                    n.into_owned()
                } else {
                    format!("{base}/{n}")
                });
            }
        }
        found = next;
    }
    Ok(found
        .into_iter()
        .map(|p| {
            let r = String::from_utf8_lossy(&index.resolve(p.as_bytes(), true)).into_owned();
            (p.rsplit('/').next().unwrap_or("").to_string(), r)
        })
        .collect())
}

/// Whether every parent directory of `rel` below `rootfs` is a real directory, not a symlink:
/// a file the index lists is then read from inside the stage's root, never through a link
/// that the host would resolve outside it. `checked` remembers directories already seen.
pub(super) fn parents_are_directories(
    rootfs: &Path,
    rel: &[u8],
    checked: &mut std::collections::HashSet<Vec<u8>>,
) -> bool {
    let mut end = 0;
    while let Some(i) = rel[end..].iter().position(|&b| b == b'/') {
        end += i;
        let dir = &rel[..end];
        if !checked.contains(dir) {
            let p = rootfs.join(std::ffi::OsStr::from_bytes(dir));
            match std::fs::symlink_metadata(&p) {
                Ok(md) if md.is_dir() => {
                    checked.insert(dir.to_vec());
                }
                _ => return false,
            }
        }
        end += 1;
    }
    true
}

pub(super) fn tree_items(
    index: &FsIndex,
    rootfs: &Path,
    path: &str,
    excludes: &Ignore,
) -> Result<Vec<(String, Item)>, CopyError> {
    let mut checked = std::collections::HashSet::new();
    let mut check = |p: &[u8], n: &super::super::fsindex::Node| {
        if n.kind == NodeKind::File && !parents_are_directories(rootfs, p, &mut checked) {
            return Err(CopyError::Other(format!(
                "`/{}` in the source stage or image is reached through a symlink; refusing to read it from outside the stage's root",
                String::from_utf8_lossy(p)
            )));
        }
        Ok(())
    };
    let node_item = |p: &[u8], n: &super::super::fsindex::Node| Item {
        kind: match &n.kind {
            NodeKind::Dir => EntryKind::Dir,
            NodeKind::Symlink(t) => EntryKind::Symlink(t.clone()),
            NodeKind::File => EntryKind::File {
                size: n.size,
                source: FileSource::Path(rootfs.join(String::from_utf8_lossy(p).as_ref())),
            },
            NodeKind::Special => EntryKind::Fifo,
        },
        mode: n.mode,
        uid: n.uid,
        gid: n.gid,
        mtime: n.mtime,
        // Files of one hard-link group share a key, so the copy links them again.
        key: (n.kind == NodeKind::File && (n.linked || n.link_of().is_some())).then(|| {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            n.link_of().unwrap_or(p).hash(&mut h);
            (h.finish(), u64::MAX)
        }),
    };
    let mut out = Vec::new();
    let top = path.as_bytes();
    match index.get(top) {
        Some(n) => {
            check(top, n)?;
            out.push((String::new(), node_item(top, n)))
        }
        None if top.is_empty() => out.push((
            String::new(),
            Item {
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: 0,
                key: None,
            },
        )),
        None => return Ok(out),
    }
    if matches!(out[0].1.kind, EntryKind::Dir) {
        for (k, n) in index.children(top) {
            let rel = String::from_utf8_lossy(&k[if top.is_empty() { 0 } else { top.len() + 1 }..])
                .into_owned();
            if !excludes.patterns().is_empty() && excludes.matches(&rel) {
                continue;
            }
            check(k, n)?;
            out.push((rel, node_item(k, n)));
        }
    }
    Ok(out)
}
