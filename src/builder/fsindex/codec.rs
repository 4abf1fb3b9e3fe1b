//! The index's persistent encoding, for the per-base index cache (`super::super::snapshots`):
//! length-prefixed, versioned by its first line, checked when read back.
use std::collections::BTreeMap;
use std::sync::Arc;

use super::{FsIndex, Node, NodeKind, ENCODING_MAGIC};

impl FsIndex {
    /// The index as bytes, for the persistent per-base cache ([`FsIndex::decode`] reads them).
    /// A simple length-prefixed format; its first line names the version.
    pub fn encode(&self) -> Vec<u8> {
        fn bytes(out: &mut Vec<u8>, b: &[u8]) {
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
            out.extend_from_slice(b);
        }
        let mut out = Vec::with_capacity(self.nodes.len() * 64);
        out.extend_from_slice(ENCODING_MAGIC);
        out.extend_from_slice(&(self.nodes.len() as u64).to_le_bytes());
        for (path, n) in &self.nodes {
            bytes(&mut out, path);
            match &n.kind {
                NodeKind::File => out.push(0),
                NodeKind::Dir => out.push(1),
                NodeKind::Symlink(t) => {
                    out.push(2);
                    bytes(&mut out, t);
                }
                NodeKind::Special => out.push(3),
            }
            out.extend_from_slice(&n.mode.to_le_bytes());
            out.extend_from_slice(&n.uid.to_le_bytes());
            out.extend_from_slice(&n.gid.to_le_bytes());
            out.extend_from_slice(&n.size.to_le_bytes());
            out.extend_from_slice(&n.mtime.to_le_bytes());
            for opt in [n.content(), n.link_of()] {
                match opt {
                    None => out.push(0),
                    Some(b) => {
                        out.push(1);
                        bytes(&mut out, b);
                    }
                }
            }
            out.push(u8::from(n.linked));
            out.extend_from_slice(&(n.xattrs().len() as u32).to_le_bytes());
            for (k, v) in n.xattrs() {
                bytes(&mut out, k.as_bytes());
                bytes(&mut out, v);
            }
        }
        out
    }

    /// Reads what [`FsIndex::encode`] wrote; `None` for anything else (another version, a
    /// truncated or corrupt file), which callers treat as a cache miss.
    pub fn decode(data: &[u8]) -> Option<FsIndex> {
        struct Reader<'a>(&'a [u8]);
        impl<'a> Reader<'a> {
            fn take(&mut self, n: usize) -> Option<&'a [u8]> {
                if self.0.len() < n {
                    return None;
                }
                let (a, b) = self.0.split_at(n);
                self.0 = b;
                Some(a)
            }
            fn u8(&mut self) -> Option<u8> {
                Some(self.take(1)?[0])
            }
            fn u32(&mut self) -> Option<u32> {
                Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
            }
            fn u64(&mut self) -> Option<u64> {
                Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
            }
            fn bytes(&mut self) -> Option<&'a [u8]> {
                let n = self.u32()? as usize;
                self.take(n)
            }
            fn opt(&mut self) -> Option<Option<&'a [u8]>> {
                match self.u8()? {
                    0 => Some(None),
                    1 => Some(Some(self.bytes()?)),
                    _ => None,
                }
            }
        }
        let mut r = Reader(data.strip_prefix(ENCODING_MAGIC)?);
        let count = r.u64()?;
        let mut nodes = BTreeMap::new();
        for _ in 0..count {
            let path = r.bytes()?.to_vec();
            let kind = match r.u8()? {
                0 => NodeKind::File,
                1 => NodeKind::Dir,
                2 => NodeKind::Symlink(r.bytes()?.to_vec()),
                3 => NodeKind::Special,
                _ => return None,
            };
            let mode = r.u32()?;
            let owner = (r.u32()?, r.u32()?);
            let (size, mtime) = (r.u64()?, r.u64()? as i64);
            let content = r.opt()?.map(Arc::from);
            let link_of = r.opt()?.map(<[u8]>::to_vec);
            let mut node = Node::new(kind, mode, owner, size, mtime).with_content(content);
            if let Some(t) = link_of {
                node.set_link_of(t);
            }
            node.linked = r.u8()? != 0;
            let mut xattrs = Vec::new();
            for _ in 0..r.u32()? {
                let k = String::from_utf8(r.bytes()?.to_vec()).ok()?;
                xattrs.push((k, r.bytes()?.to_vec()));
            }
            let node = node.with_xattrs(xattrs);
            nodes.insert(path, node);
        }
        r.0.is_empty().then_some(FsIndex { nodes })
    }
}
