//! Cache keys: a sha256 chain over parent key, canonical step encoding and input digests.
//! The full list of inputs is in the [`crate::plan`] module doc.
use super::{BuildPlan, StageId};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The parent of every stage's base key.
pub const ROOT: &str = "kiln-cache-v1";

/// The digest hashed for content only a builder can see, when it gives none.
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
    /// Another stage: its final cache key (resolved by [`CacheKeys::compute`]).
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

/// The keys of one stage.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct StageKeys {
    /// The key the first step chains from: [`ROOT`] over the base encoding and the base's
    /// input digests (the image, or the parent stage's final key).
    pub base: String,
    /// Each step's key, in the stage's step order.
    pub steps: Vec<String>,
}

impl StageKeys {
    /// The key of the last step (the base key when the stage has no steps).
    pub fn final_key(&self) -> &str {
        self.steps.last().unwrap_or(&self.base)
    }
}

/// The cache keys of a plan, computed from the plan (never changed by it) and the digests of
/// its external inputs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct CacheKeys {
    /// By stage id, for every stage of the plan.
    pub stages: BTreeMap<StageId, StageKeys>,
}

impl CacheKeys {
    /// Every key, stage by stage in build order. `resolve` gives the digest of an external
    /// input (context files, image, URL, git); `None` hashes [`UNRESOLVED`] (so `&|_| None`
    /// gives the keys `kiln plan` shows). A stage input is the other stage's final key.
    pub fn compute(plan: &BuildPlan, resolve: &dyn Fn(&Input) -> Option<String>) -> CacheKeys {
        let mut keys = CacheKeys::default();
        for &id in &plan.order {
            let Some(stage) = plan.stage(id) else {
                continue;
            };
            let digest = |i: &Input| match i {
                Input::Stage { stage } => keys
                    .final_key(*stage)
                    .map_or_else(|| UNRESOLVED.to_string(), str::to_string),
                other => resolve(other).unwrap_or_else(|| UNRESOLVED.to_string()),
            };
            let base_digests: Vec<String> = stage.base_inputs.iter().map(digest).collect();
            let base_encoding = base_encoding(&stage.base, &stage.platform.to_string());
            let base = chain(ROOT, &base_encoding, &base_digests);
            let mut steps = Vec::with_capacity(stage.steps.len());
            let mut parent = base.clone();
            for step in &stage.steps {
                let d: Vec<String> = step.inputs.iter().map(digest).collect();
                let key = chain(&parent, &step.encoding, &d);
                parent.clone_from(&key);
                steps.push(key);
            }
            keys.stages.insert(id, StageKeys { base, steps });
        }
        keys
    }

    /// The keys of stage `id`.
    pub fn stage(&self, id: StageId) -> Option<&StageKeys> {
        self.stages.get(&id)
    }

    /// The key of step `index` (0-based, ONBUILD triggers included) of stage `id`.
    pub fn step(&self, id: StageId, index: usize) -> Option<&str> {
        self.stage(id)?.steps.get(index).map(String::as_str)
    }

    /// The final key of stage `id`: its last step's key, or its base key.
    pub fn final_key(&self, id: StageId) -> Option<&str> {
        self.stage(id).map(StageKeys::final_key)
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

/// Today's keys, pinned: a change of the key scheme shows up here (and must bump [`ROOT`]).
#[cfg(test)]
mod pinned {
    use super::super::{plan, BaseConfig, BaseResolver, PlanOptions, Platform};
    use super::*;
    use crate::dockerfile::Position;

    struct Node;

    impl BaseResolver for Node {
        type Error = std::convert::Infallible;
        fn resolve(
            &mut self,
            reference: &str,
            _: &Platform,
            _: Position,
        ) -> Result<Option<BaseConfig>, Self::Error> {
            Ok((reference == "node:20").then(|| BaseConfig {
                env: vec![("PATH".into(), "/usr/local/bin:/usr/bin".into())],
                working_dir: Some("/app".into()),
                onbuild: vec!["COPY . /app/".into(), "RUN npm install".into()],
                ..BaseConfig::default()
            }))
        }
    }

    fn digest(i: &Input) -> Option<String> {
        match i {
            Input::Context { paths, .. } => Some(format!("sha256:ctx-{}", paths.join(","))),
            Input::Url { url } => Some(format!("sha256:url-{url}")),
            Input::Image { reference, .. } => Some(format!("sha256:img-{reference}")),
            _ => None,
        }
    }

    /// `stage/step key` lines (`stage/base`, `stage/final`), unresolved and resolved.
    fn keys(src: &str, args: &[(&str, &str)]) -> Vec<String> {
        let ast = crate::dockerfile::parse(src).unwrap();
        let df = crate::dockerfile::instructions(&ast).unwrap();
        let mut opts = PlanOptions::default();
        for (k, v) in args {
            opts.build_args.insert(k.to_string(), v.to_string());
        }
        let p = plan(&df, &opts, &mut Node).unwrap();
        let mut out = Vec::new();
        for pass in 0..2 {
            let keys = match pass {
                0 => CacheKeys::compute(&p, &|_| None),
                _ => CacheKeys::compute(&p, &digest),
            };
            for s in &p.stages {
                let k = keys.stage(s.id).unwrap();
                out.push(format!("{pass} {}/base {}", s.id, k.base));
                for i in 0..s.steps.len() {
                    out.push(format!(
                        "{pass} {}/{i} {}",
                        s.id,
                        keys.step(s.id, i).unwrap()
                    ));
                }
                out.push(format!(
                    "{pass} {}/final {}",
                    s.id,
                    keys.final_key(s.id).unwrap()
                ));
            }
        }
        out
    }

    #[test]
    fn keys_are_the_pinned_ones() {
        let cases: &[(&str, &[(&str, &str)])] = &[
            // Multi-stage, a stage base, COPY --from a stage and an image.
            (
                "FROM alpine:3 AS a\nRUN make\nFROM a AS b\nENV X=1\nFROM scratch\nCOPY --from=b /out /out\nCOPY --from=busybox:1 /bin/sh /sh\n",
                &[],
            ),
            // Context, URL and git inputs; WORKDIR.
            (
                "FROM scratch\nWORKDIR /src\nCOPY a b ./\nADD https://example.com/f /f\nADD https://github.com/x/y.git /y\n",
                &[],
            ),
            // Global and stage ARGs, ENV, a build arg, an undeclared proxy arg, a mount.
            (
                "ARG V=1\nFROM alpine\nARG V\nENV E=$V\nRUN --mount=type=bind,source=s,target=/s echo\nCMD [\"x\"]\nENTRYPOINT e\n",
                &[("V", "2"), ("HTTP_PROXY", "http://p")],
            ),
            // ONBUILD triggers of a base config, planned after FROM.
            ("FROM node:20\nRUN npm test\n", &[]),
        ];
        let got: Vec<String> = cases
            .iter()
            .flat_map(|(src, args)| keys(src, args))
            .collect();
        let want: &[&str] = &[
            "0 0/base 0c82916055a5336c0e639b4c90eea412692c916bf294fdd9f6fbc3a1341db382",
            "0 0/0 a3834efede62ea527466968cf9cffedc0c1ae419ab82171eae42b598b9802e8f",
            "0 0/final a3834efede62ea527466968cf9cffedc0c1ae419ab82171eae42b598b9802e8f",
            "0 1/base 3c9fe25e71de736aa40a52e2751bbee9d883ee19067c041305bf9d8eeae3f09f",
            "0 1/0 633707e089e767e00cd0e03f59b061ada06890ec7464c06b8a44827c9b91a14b",
            "0 1/final 633707e089e767e00cd0e03f59b061ada06890ec7464c06b8a44827c9b91a14b",
            "0 2/base 7ffe1ff0f2799063b3589b19756b01412b8a6ded7ae4972c26554a7eed7682be",
            "0 2/0 ec6d8e2b0a27152a6b3b8863d2752d88eef553b2b1d0978f1d7b94c4b151bef0",
            "0 2/1 7ea2e6054e02d81e6df821ee96ff7dc5f21d7d3fb71ca1db4e681f2df0f2e391",
            "0 2/final 7ea2e6054e02d81e6df821ee96ff7dc5f21d7d3fb71ca1db4e681f2df0f2e391",
            "1 0/base d9c60e8f8343d2dda7c423fffc9b46f31a0c0ac4dfcaaff275c8bc0d8632d197",
            "1 0/0 0508fe577f90919c7bf4c9681e2ac48217516e0c2e2d8abbef86cc7f78b704b0",
            "1 0/final 0508fe577f90919c7bf4c9681e2ac48217516e0c2e2d8abbef86cc7f78b704b0",
            "1 1/base e54ab94521d97cd9067964b98231c6bd4f64e318acb6cfcdf7cab1713baf6c80",
            "1 1/0 e05c93acf09d96537c0b6b5f80ef8ab912a2d2852d4069011a83e958f842cd79",
            "1 1/final e05c93acf09d96537c0b6b5f80ef8ab912a2d2852d4069011a83e958f842cd79",
            "1 2/base 7ffe1ff0f2799063b3589b19756b01412b8a6ded7ae4972c26554a7eed7682be",
            "1 2/0 dc3523d51d175fdd818ad71f5462d9c395c2ce9a1690a193174dba4bdc98e73d",
            "1 2/1 d5d1c6a874800ae5edba91a424b71fc35110a6a5e3716cdd7c1d7039bee741cd",
            "1 2/final d5d1c6a874800ae5edba91a424b71fc35110a6a5e3716cdd7c1d7039bee741cd",
            "0 0/base 7ffe1ff0f2799063b3589b19756b01412b8a6ded7ae4972c26554a7eed7682be",
            "0 0/0 5ab0104177c95c4d5ab6976ce8504b31e24cd9b3e4a452ae395b8eaa2031c615",
            "0 0/1 3695f8b5bdf9b030e152a2c0fe1c4edc6308a9be00c71b000054a2236afc7ac8",
            "0 0/2 f5c75eba1d28821fb156f4fd958a5f39fa81f66d26b5eb27919863a7f3af2f16",
            "0 0/3 f5f59754a4e63ef689459b8898bd7c790711a3d7b8d2549acaaec671eb4e0d6d",
            "0 0/final f5f59754a4e63ef689459b8898bd7c790711a3d7b8d2549acaaec671eb4e0d6d",
            "1 0/base 7ffe1ff0f2799063b3589b19756b01412b8a6ded7ae4972c26554a7eed7682be",
            "1 0/0 5ab0104177c95c4d5ab6976ce8504b31e24cd9b3e4a452ae395b8eaa2031c615",
            "1 0/1 7864e8fe2412d7e463176e65861cd856cf15c13746fcaffe91ab417f9d025854",
            "1 0/2 afd5c3adb61eeaa14cd0bdba09f3c1657aa730c6cc1d77e374fb3bb20762991c",
            "1 0/3 d761482027f1d7fcccdcdbc238d569c47c9af8ef4914d282b15706ea6793757b",
            "1 0/final d761482027f1d7fcccdcdbc238d569c47c9af8ef4914d282b15706ea6793757b",
            "0 0/base 35391a0c1cabd9589ed488c1a63929d722050633ea070520d78bfadaeadf352a",
            "0 0/0 984231b73e756bec01213fe3b799761f4bf9f6955bc2bf81829f379864131983",
            "0 0/1 571e42016349bc1942229901bc461c6807cc9db0a8312848f59a19e2ebdd47d3",
            "0 0/2 aea5b4383322dbbdac7b95fce741bb5028d2a383bda66c2e80b0555d06d8eeb9",
            "0 0/3 d1d8c65b4c65a506c5e01f413b06af5c71ba21bc88c930ff46e0a7f6a46fc830",
            "0 0/4 9ecfa8a965508b976b2ae208591cc1c1072d7051f507c70a48b02e72e42bab5d",
            "0 0/final 9ecfa8a965508b976b2ae208591cc1c1072d7051f507c70a48b02e72e42bab5d",
            "1 0/base cdb847a3aab574c5656caa5197a1a1bd81b77fe1b8e464a5bda0b658534cf80d",
            "1 0/0 5a5efa8331400b23f5b4d97bbbe61229f408646e0e50cf348db97cd85199e9e8",
            "1 0/1 ff099161d25c34bc0e2627c85dc285116af969e7dd7f137f0cde31de5ba609fa",
            "1 0/2 77f870d35e9e8a2a1826831b84cc4329b8e4a33f96cd16ffc0d0c49af5d6e9ad",
            "1 0/3 9bb822883fba401a0a899256782877cc544e014103f6d5d9370e0d3e4d8335bc",
            "1 0/4 c7a699e7f07f28f8b302a9429b7442c4ad8c932c91d019ef266ed4d8f9cdb5f1",
            "1 0/final c7a699e7f07f28f8b302a9429b7442c4ad8c932c91d019ef266ed4d8f9cdb5f1",
            "0 0/base c165f420da0e6abd43777990682a9a2b0495544b9fcedf15fc7c98869471a7ad",
            "0 0/0 088570376e810f9bd33e8f6f17bed9574484c574945e16e5abb13d880291c717",
            "0 0/1 d61b925d282254b32206180f9431673efa2c3ff3f8d608ca4c1c958f832a30cd",
            "0 0/2 f9f691037767d09d2e9d45466a6bafe4965039e96b3525f382258176cbf9982f",
            "0 0/final f9f691037767d09d2e9d45466a6bafe4965039e96b3525f382258176cbf9982f",
            "1 0/base 06a19acfadf7e36354794126a2f847acf9fa3761848cb191455c20698eac0fe7",
            "1 0/0 1dfa13d95f884c56376ad5c50066442154b9cabade481a74f3ebad166ae8ac51",
            "1 0/1 d13ae369f0166669fd0b3b4eedfd6d3975b97edf7cd7cd85a6d6681364e653e1",
            "1 0/2 9f4a79d6823077c486a414e03b98d123505366d3fb6c8736508646bf3ff6e81a",
            "1 0/final 9f4a79d6823077c486a414e03b98d123505366d3fb6c8736508646bf3ff6e81a",
        ];
        assert_eq!(got, want, "{}", got.join("\n"));
    }
}
