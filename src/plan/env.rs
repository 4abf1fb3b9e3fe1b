//! Ordered environments with BuildKit's "set replaces in place, last definition wins" rule,
//! and Windows' case-insensitive names.
use crate::dockerfile::lex::Env;

/// An ordered list of variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VarList {
    pub(crate) entries: Vec<(String, String)>,
    /// Compare names case-insensitively (Windows targets).
    pub(crate) ci: bool,
}

impl VarList {
    pub(crate) fn new(ci: bool) -> VarList {
        VarList {
            entries: Vec::new(),
            ci,
        }
    }

    fn same(&self, a: &str, b: &str) -> bool {
        if self.ci {
            a.eq_ignore_ascii_case(b) || a.to_uppercase() == b.to_uppercase()
        } else {
            a == b
        }
    }

    /// Sets `k`, replacing an existing entry in place.
    pub(crate) fn set(&mut self, k: &str, v: &str) {
        let ci = self.ci;
        let pos = self.entries.iter().position(|(n, _)| {
            if ci {
                n.eq_ignore_ascii_case(k) || n.to_uppercase() == k.to_uppercase()
            } else {
                n == k
            }
        });
        match pos {
            Some(i) => self.entries[i].1 = v.to_string(),
            None => self.entries.push((k.to_string(), v.to_string())),
        }
    }

    /// Total bytes of names and values.
    pub(crate) fn size(&self) -> usize {
        self.entries.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    pub(crate) fn lookup(&self, k: &str) -> Option<&str> {
        self.entries
            .iter()
            .rev()
            .find(|(n, _)| self.same(n, k))
            .map(|(_, v)| v.as_str())
    }
}

impl Env for VarList {
    fn get(&self, name: &str) -> Option<&str> {
        self.lookup(name)
    }
}
