//! Cache keys: a sha256 chain over parent key, canonical step encoding and input digests.
//! The full list of inputs is in the [`crate::plan`] module doc.
use super::{BuildPlan, StageId};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The parent of every stage's base key.
pub const ROOT: &str = "kiln-cache-v1";

/// The digest the planner hashes for content only a builder can see.
pub const UNRESOLVED: &str = "unresolved";

/// Content a key depends on, beyond the step's own encoding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Input {
    /// Files of the build context: the digest of these paths' contents after `.dockerignore`
    /// and `excludes`.
    Context {
        /// Source paths as expanded.
        paths: Vec<String>,
        /// `--exclude` patterns.
        excludes: Vec<String>,
    },
    /// Another stage: its final cache key (resolved by the planner).
    Stage {
        /// The stage.
        stage: StageId,
    },
    /// An image or named context: its resolved manifest digest.
    Image {
        /// The reference.
        reference: String,
        /// The platform it is pulled for.
        platform: String,
    },
    /// A URL source of ADD: the digest of the downloaded bytes.
    Url {
        /// The URL.
        url: String,
    },
    /// A git source of ADD: the commit.
    Git {
        /// The repository URL with ref.
        url: String,
    },
}

/// `sha256("kiln-cache-v1\n" + parent + "\n" + encoding + "\n" + input digests joined by "\n")`.
pub fn chain(parent: &str, encoding: &str, inputs: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(ROOT.as_bytes());
    h.update(b"\n");
    h.update(parent.as_bytes());
    h.update(b"\n");
    h.update(encoding.as_bytes());
    for i in inputs {
        h.update(b"\n");
        h.update(i.as_bytes());
    }
    let out = h.finalize();
    let mut s = String::with_capacity(64);
    for b in out.iter() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl BuildPlan {
    /// Recomputes every key in build order. `resolve` gives the digest of an external input
    /// (context files, image, URL, git); `None` hashes [`UNRESOLVED`]. Stage inputs are
    /// resolved to the other stage's final key.
    pub fn rekey(&mut self, resolve: &dyn Fn(&Input) -> Option<String>) {
        let mut finals: BTreeMap<StageId, String> = BTreeMap::new();
        for id in self.order.clone() {
            let Some(stage) = self.stages.iter_mut().find(|s| s.id == id) else {
                continue;
            };
            let digest = |i: &Input, finals: &BTreeMap<StageId, String>| match i {
                Input::Stage { stage } => finals
                    .get(stage)
                    .cloned()
                    .unwrap_or_else(|| UNRESOLVED.to_string()),
                other => resolve(other).unwrap_or_else(|| UNRESOLVED.to_string()),
            };
            let base_digests: Vec<String> = stage
                .base_inputs
                .iter()
                .map(|i| digest(i, &finals))
                .collect();
            let base_encoding = base_encoding(&stage.base, &stage.platform.to_string());
            stage.base_key = chain(ROOT, &base_encoding, &base_digests);
            let mut parent = stage.base_key.clone();
            for step in &mut stage.steps {
                let d: Vec<String> = step.inputs.iter().map(|i| digest(i, &finals)).collect();
                step.cache_key = chain(&parent, &step.encoding, &d);
                parent = step.cache_key.clone();
            }
            finals.insert(id, parent);
        }
    }
}

/// The encoding of a stage's base.
pub(crate) fn base_encoding(base: &super::Base, platform: &str) -> String {
    #[derive(Serialize)]
    struct B<'a> {
        base: &'a super::Base,
        platform: &'a str,
    }
    serde_json::to_string(&B { base, platform }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_depends_on_every_part() {
        let k = chain("p", "e", &["d".into()]);
        assert_eq!(k.len(), 64);
        assert_ne!(k, chain("q", "e", &["d".into()]));
        assert_ne!(k, chain("p", "f", &["d".into()]));
        assert_ne!(k, chain("p", "e", &["x".into()]));
        assert_eq!(k, chain("p", "e", &["d".into()]));
    }
}
