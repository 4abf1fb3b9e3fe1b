//! `kiln build -o/--output`: buildx's `type=…,key=value` syntax, and kiln's transport syntax
//! (`oci:DIR[:REF]`, `oci-archive:FILE`, `docker-archive:FILE[:NAME:TAG]`, `docker://REF`), into
//! what the build writes.
//!
//! The value is read as buildx reads it (docker/buildx `util/buildflags/export.go`,
//! `ExportEntry.UnmarshalText`): CSV fields (a field may be double-quoted to hold commas); a
//! single field without `type=` is `type=local,dest=VALUE` (`-` would be a tar on stdout);
//! otherwise `type=` and `dest=` are taken out and the other keys (lowercased) are the
//! exporter's attributes. kiln's transport prefixes are tried first, so `-o oci-archive:F`
//! keeps working. Every key kiln does not carry out is an error that names it and what to use;
//! nothing is silently ignored.
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};

use crate::layer::Compression;
use crate::ops::RootfsDest;
use crate::transport::Target;

/// What one `-o` writes after the build: an image file or layout, or the root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileOutput {
    /// The image, to an `oci:`, `oci-archive:` or `docker-archive:` target, with the name its
    /// index entry (or `RepoTags`) carries.
    Image {
        /// Where.
        target: Target,
        /// The full image name (`name=`, else the first `-t`).
        name: Option<String>,
    },
    /// The final root filesystem (`type=local`, `type=tar`).
    Rootfs(RootfsDest),
}

/// Everything the `-o` flags (and `--push`) ask for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Outputs {
    /// Written by kiln after the build, in order.
    pub files: Vec<FileOutput>,
    /// Extra names in the local store (`type=image,name=…`).
    pub names: Vec<String>,
    /// References pushed to their registries (`type=registry`, `push=true`, `docker://`, `--push`).
    pub push: Vec<String>,
    /// `compression=` / `compression-level=`: the layers' compression.
    pub compression: Option<Compression>,
    /// `rewrite-timestamp=`: clamp every mtime to the epoch.
    pub rewrite_timestamp: Option<bool>,
    /// `annotation.KEY=` / `annotation-manifest.KEY=`: manifest annotations.
    pub annotations: BTreeMap<String, String>,
}

/// Keys of BuildKit's image exporters that kiln does not carry out, with what to do instead.
const UNSUPPORTED_KEYS: &[(&str, &str)] = &[
    (
        "push-by-digest",
        "push by name (`name=REF,push=true`) and read the digest kiln prints",
    ),
    (
        "insecure",
        "use `--tls-verify=false` (plain HTTP and unverified TLS)",
    ),
    (
        "dangling-name-prefix",
        "name the image with `-t` or `name=`",
    ),
    (
        "name-canonical",
        "give the name with `-t` or `name=`; kiln adds no `@digest` name",
    ),
    (
        "unpack",
        "kiln has no snapshotter store to unpack into: use `-o type=local,dest=DIR`",
    ),
    (
        "store",
        "the image is always kept in kiln's store; remove `store=`",
    ),
    ("buildinfo", "kiln writes no build info: remove the key"),
    (
        "buildinfo-attrs",
        "kiln writes no build info: remove the key",
    ),
    (
        "attestation-inline",
        "kiln writes no attestations: remove the key",
    ),
    (
        "oci-artifact",
        "kiln writes image manifests only: remove the key",
    ),
    (
        "platform-split",
        "build one platform per `kiln build` and give each its own `dest=`",
    ),
    ("context", "kiln has no Docker daemon: remove `context=`"),
];

/// Splits `s` into CSV fields as go-csvvalue (which buildx uses) does: `,` separates, a field
/// that starts with `"` runs to the closing quote (`""` is a literal quote) and may hold commas.
fn csv_fields(s: &str) -> Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => bail!("`{s}`: a quoted field has no closing `\"`"),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => {}
                Some(c) => bail!("`{s}`: `{c}` after a quoted field (expected `,`)"),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => break,
                    Some(c) => field.push(c),
                }
            }
        }
        fields.push(field);
    }
}

/// Whether `value` uses kiln's transport syntax (`oci:`, `docker://`, … and the transports kiln
/// refuses by name) rather than buildx's.
fn is_transport(value: &str) -> bool {
    [
        "oci:",
        "oci-archive:",
        "docker-archive:",
        "docker://",
        "containers-storage:",
        "dir:",
        "docker-daemon:",
        "ostree:",
        "sif:",
    ]
    .iter()
    .any(|p| value.starts_with(p))
}

fn boolean(spec: &str, key: &str, v: &str) -> Result<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => bail!("-o `{spec}`: `{key}={v}`: expected true or false"),
    }
}

/// Parses every `-o` (in order) and `--push`; `tags` are the `-t` names, which name the image
/// in outputs without `name=` (as buildx gives its tags to the exporters).
pub(crate) fn parse(specs: &[String], tags: &[String], push: bool) -> Result<Outputs> {
    let mut out = Outputs::default();
    for spec in specs {
        one(&mut out, spec, tags)?;
    }
    if push {
        // `--push` is buildx's shorthand for `--output=type=registry`.
        if tags.is_empty() {
            bail!("--push needs a name to push to: add -t REF (or use -o type=registry,name=REF)");
        }
        one(&mut out, "type=registry", tags)?;
    }
    Ok(out)
}

fn one(out: &mut Outputs, spec: &str, tags: &[String]) -> Result<()> {
    if is_transport(spec) {
        match spec.parse::<Target>()? {
            Target::Registry(r) => out.push.push(r),
            target => out.files.push(FileOutput::Image {
                target,
                name: tags.first().cloned(),
            }),
        }
        return Ok(());
    }
    let fields = csv_fields(spec)?;
    if fields.len() == 1 && fields[0] == spec && !spec.starts_with("type=") {
        if spec == "-" {
            bail!(
                "-o `-` (a tar of the files on stdout) is not supported by kiln: stdout carries \
                 the digest; use `-o type=tar,dest=FILE`"
            );
        }
        out.files
            .push(FileOutput::Rootfs(RootfsDest::Dir(PathBuf::from(spec))));
        return Ok(());
    }
    let mut kind = None;
    let mut dest = None;
    let mut attrs = BTreeMap::new();
    for f in &fields {
        let Some((k, v)) = f.split_once('=') else {
            bail!("-o `{spec}`: `{f}` is not KEY=VALUE");
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "type" => kind = Some(v.to_string()),
            "dest" => dest = Some(v.to_string()),
            k => {
                attrs.insert(k.to_string(), v.to_string());
            }
        }
    }
    let kind = kind.ok_or_else(|| anyhow!("-o `{spec}`: type is required for output"))?;
    Exporter {
        spec,
        kind: &kind,
        dest,
        attrs,
        tags,
    }
    .apply(out)
}

/// One buildx-form `-o`, its `type`, `dest` and other keys.
struct Exporter<'a> {
    spec: &'a str,
    kind: &'a str,
    dest: Option<String>,
    attrs: BTreeMap<String, String>,
    tags: &'a [String],
}

impl Exporter<'_> {
    fn dest(&self, what: &str) -> Result<PathBuf> {
        match self.dest.as_deref() {
            None | Some("") => bail!(
                "-o `{}`: type={} needs dest=PATH ({what})",
                self.spec,
                self.kind
            ),
            Some("-") => bail!(
                "-o `{}`: dest=- (stdout) is not supported by kiln: stdout carries the \
                 digest; give dest=FILE",
                self.spec
            ),
            Some(d) => Ok(PathBuf::from(d)),
        }
    }

    /// `name=` (comma-separated when quoted), else the `-t` names.
    fn names(&self) -> Vec<String> {
        match self.attrs.get("name") {
            Some(n) => n
                .split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(String::from)
                .collect(),
            None => self.tags.to_vec(),
        }
    }

    fn apply(mut self, out: &mut Outputs) -> Result<()> {
        let spec = self.spec;
        match self.kind {
            "local" | "tar" => {
                let d = if self.kind == "local" {
                    RootfsDest::Dir(self.dest("a directory for the files")?)
                } else {
                    RootfsDest::Tar(self.dest("the tar file to write")?)
                };
                if let Some(k) = self.attrs.keys().next() {
                    bail!(
                        "-o `{spec}`: type={} takes only dest=; `{k}` is not a key of it",
                        self.kind
                    );
                }
                out.files.push(FileOutput::Rootfs(d));
                return Ok(());
            }
            "cacheonly" => {
                if let Some(k) = self.attrs.keys().next() {
                    bail!("-o `{spec}`: type=cacheonly takes no keys (`{k}`)");
                }
                return Ok(());
            }
            "oci" | "docker" | "image" | "registry" => {}
            other => bail!(
                "-o `{spec}`: unknown output type `{other}`: kiln writes type=oci, docker, \
                 image, registry, local, tar or cacheonly"
            ),
        }
        self.image_keys(out)?;
        let names = self.names();
        match self.kind {
            "oci" => {
                let tar = match self.attrs.remove("tar") {
                    Some(v) => boolean(spec, "tar", &v)?,
                    None => true,
                };
                let target = if tar {
                    Target::OciArchive(self.dest("the OCI archive to write")?, None)
                } else {
                    Target::OciDir(self.dest("the OCI layout directory to write")?, None)
                };
                out.files.push(FileOutput::Image {
                    target,
                    name: names.first().cloned(),
                });
            }
            "docker" => {
                let file = self
                    .dest
                    .as_deref()
                    .filter(|d| !d.is_empty())
                    .ok_or_else(|| {
                        anyhow!(
                            "-o `{spec}`: type=docker without dest= loads into a Docker daemon, \
                         and kiln has none: give dest=FILE and run `docker load -i FILE`"
                        )
                    })?;
                if let Some(t) = self.attrs.remove("tar") {
                    if !boolean(spec, "tar", &t)? {
                        bail!("-o `{spec}`: type=docker,tar=false is not supported by kiln: use type=oci,tar=false for a layout directory");
                    }
                }
                let _ = self.dest("the docker-archive to write")?;
                out.files.push(FileOutput::Image {
                    target: Target::DockerArchive(PathBuf::from(file), None),
                    name: names.first().cloned(),
                });
            }
            _ => {
                let push = self.kind == "registry"
                    || match self.attrs.remove("push") {
                        Some(v) => boolean(spec, "push", &v)?,
                        None => false,
                    };
                if self.dest.is_some() {
                    bail!("-o `{spec}`: type={} takes no dest=; use type=oci or type=docker to write a file", self.kind);
                }
                if names.is_empty() {
                    bail!(
                        "-o `{spec}`: type={} needs a name: add name=REF or -t REF",
                        self.kind
                    );
                }
                if push {
                    out.push.extend(names.iter().cloned());
                }
                out.names.extend(names);
            }
        }
        self.attrs.remove("name");
        if let Some(k) = self.attrs.keys().next() {
            bail!(
                "-o `{spec}`: `{k}` is not a key of type={} (kiln takes name, push, \
                 compression, compression-level, force-compression, oci-mediatypes, \
                 rewrite-timestamp, annotation.*)",
                self.kind
            );
        }
        Ok(())
    }

    /// The keys every image exporter shares; each one kiln carries out is taken out of `attrs`.
    fn image_keys(&mut self, out: &mut Outputs) -> Result<()> {
        let spec = self.spec;
        for (k, what) in UNSUPPORTED_KEYS {
            if self.attrs.contains_key(*k) {
                bail!("-o `{spec}`: `{k}` is not supported by kiln: {what}");
            }
        }
        let level = self.attrs.remove("compression-level");
        if let Some(c) = self.attrs.remove("compression") {
            let name = match c.as_str() {
                "uncompressed" => "none".to_string(),
                "estargz" => bail!(
                    "-o `{spec}`: compression=estargz is not supported by kiln: use gzip or zstd"
                ),
                other => other.to_string(),
            };
            let text = match &level {
                Some(l) => format!("{name}:{l}"),
                None => name,
            };
            let parsed: Compression = text.parse().map_err(|e| anyhow!("-o `{spec}`: {e}"))?;
            if out.compression.is_some_and(|p| p != parsed) {
                bail!("-o `{spec}`: another -o asks for a different compression; kiln compresses the layers once, for every output");
            }
            out.compression = Some(parsed);
        } else if level.is_some() {
            bail!("-o `{spec}`: compression-level= needs compression=gzip or compression=zstd");
        }
        if let Some(v) = self.attrs.remove("force-compression") {
            if boolean(spec, "force-compression", &v)? {
                bail!(
                    "-o `{spec}`: force-compression=true is not supported by kiln: the base \
                     image's layers keep their compression (only the layers the build writes \
                     take compression=)"
                );
            }
        }
        if let Some(v) = self.attrs.remove("oci-mediatypes") {
            // A docker-archive's manifest.json carries no media types, so either is fine there.
            if !boolean(spec, "oci-mediatypes", &v)? && self.kind != "docker" {
                bail!("-o `{spec}`: oci-mediatypes=false is not supported by kiln: it writes OCI media types only");
            }
        }
        if let Some(v) = self.attrs.remove("rewrite-timestamp") {
            let b = boolean(spec, "rewrite-timestamp", &v)?;
            if out.rewrite_timestamp.is_some_and(|p| p != b) {
                bail!("-o `{spec}`: another -o sets rewrite-timestamp differently; the layers are written once, for every output");
            }
            out.rewrite_timestamp = Some(b);
        }
        let keys: Vec<String> = self
            .attrs
            .keys()
            .filter(|k| k.starts_with("annotation"))
            .cloned()
            .collect();
        for k in keys {
            let v = self.attrs.remove(&k).unwrap_or_default();
            let key = k
                .strip_prefix("annotation.")
                .or_else(|| k.strip_prefix("annotation-manifest."))
                .filter(|key| !key.is_empty())
                .ok_or_else(|| {
                    anyhow!(
                        "-o `{spec}`: `{k}` is not supported by kiln: it annotates the manifest \
                         only (annotation.KEY= or annotation-manifest.KEY=)"
                    )
                })?;
            out.annotations.insert(key.to_string(), v);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(specs: &[&str], tags: &[&str]) -> Result<Outputs> {
        let s: Vec<String> = specs.iter().map(|s| s.to_string()).collect();
        let t: Vec<String> = tags.iter().map(|s| s.to_string()).collect();
        parse(&s, &t, false)
    }

    #[test]
    fn csv_fields_as_go_csvvalue_splits_them() {
        assert_eq!(csv_fields("a=1,b=2").unwrap(), ["a=1", "b=2"]);
        assert_eq!(
            csv_fields(r#"type=image,"name=a,b",push=true"#).unwrap(),
            ["type=image", "name=a,b", "push=true"]
        );
        assert_eq!(csv_fields(r#""a""b""#).unwrap(), [r#"a"b"#]);
        assert!(csv_fields(r#""open"#).is_err());
    }

    #[test]
    fn buildx_forms_map_onto_kiln_outputs() {
        let o = p(&["type=oci,dest=x.tar"], &["app:1"]).unwrap();
        assert_eq!(
            o.files,
            [FileOutput::Image {
                target: Target::OciArchive("x.tar".into(), None),
                name: Some("app:1".into())
            }]
        );
        let o = p(&["type=oci,dest=d,tar=false,name=reg.io/a:2"], &["app:1"]).unwrap();
        assert_eq!(
            o.files,
            [FileOutput::Image {
                target: Target::OciDir("d".into(), None),
                name: Some("reg.io/a:2".into())
            }]
        );
        let o = p(&["out"], &[]).unwrap();
        assert_eq!(o.files, [FileOutput::Rootfs(RootfsDest::Dir("out".into()))]);
        let o = p(&["type=tar,dest=f.tar"], &[]).unwrap();
        assert_eq!(
            o.files,
            [FileOutput::Rootfs(RootfsDest::Tar("f.tar".into()))]
        );
        let o = p(&["type=registry"], &["r/a:1", "r/a:2"]).unwrap();
        assert_eq!(o.push, ["r/a:1", "r/a:2"]);
        let o = p(&["type=image,name=x:1,push=true"], &[]).unwrap();
        assert_eq!(
            (o.names.as_slice(), o.push.as_slice()),
            (&["x:1".to_string()][..], &["x:1".to_string()][..])
        );
        let o = p(
            &["type=oci,dest=x,compression=zstd,compression-level=3,annotation.a=b,rewrite-timestamp=true"],
            &[],
        )
        .unwrap();
        assert_eq!(o.compression, Some(Compression::Zstd { level: 3 }));
        assert_eq!(o.annotations.get("a").map(String::as_str), Some("b"));
        assert_eq!(o.rewrite_timestamp, Some(true));
        let o = p(&["oci-archive:f.tar:v1", "docker://r/a:1"], &[]).unwrap();
        assert_eq!(o.push, ["r/a:1"]);
        assert_eq!(
            o.files[0],
            FileOutput::Image {
                target: Target::OciArchive("f.tar".into(), Some("v1".into())),
                name: None
            }
        );
    }

    #[test]
    fn keys_kiln_does_not_carry_out_are_named() {
        for (spec, word) in [
            ("type=oci,dest=x,push-by-digest=true", "push-by-digest"),
            (
                "type=oci,dest=x,force-compression=true",
                "force-compression",
            ),
            ("type=oci,dest=x,oci-mediatypes=false", "oci-mediatypes"),
            ("type=oci,dest=x,bogus=1", "bogus"),
            ("type=local,dest=x,name=a", "name"),
            ("type=docker", "docker load"),
            ("type=oci", "dest=PATH"),
            ("type=weird", "weird"),
            ("type=image", "name=REF"),
            ("-", "type=tar,dest=FILE"),
            ("type=oci,dest=x,annotation-index.a=b", "annotation-index.a"),
        ] {
            let e = p(&[spec], &[]).unwrap_err().to_string();
            assert!(e.contains(word), "{spec}: {e}");
        }
    }
}
