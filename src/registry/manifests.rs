//! Manifests, indexes, platform selection, tag listing and the referrers API.
//!
//! A manifest is returned as the raw bytes the registry sent, with its media type and digest:
//! callers keep the bytes (a re-serialised manifest would have another digest). Its digest is
//! verified when the reference pins one and computed otherwise; anything over 4 MiB is refused
//! (the distribution spec says registries should accept at least 4 MiB, so nothing legitimate
//! is larger, and the limit keeps a hostile registry from filling memory).
use std::io::Read;

use super::auth::Scope;
use super::client::{resolve_url, Body, Client};
use super::error::{redact_url, Error, Result};
use super::reference::Reference;
use crate::oci::{from_json, Descriptor, Digest, Index, Manifest, MediaType, Platform};

/// The largest manifest we accept ([`crate::oci::limits::MAX_MANIFEST_SIZE`]).
pub const MAX_MANIFEST_SIZE: u64 = crate::oci::limits::MAX_MANIFEST_SIZE;

/// The media types we ask for, best first.
pub const MANIFEST_MEDIA_TYPES: [MediaType; 4] = [
    MediaType::OciManifest,
    MediaType::OciIndex,
    MediaType::DockerManifest,
    MediaType::DockerManifestList,
];

fn accept_header() -> String {
    MANIFEST_MEDIA_TYPES
        .iter()
        .map(MediaType::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A manifest or index as the registry sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteManifest {
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// Its media type (from `Content-Type`, else from the document's `mediaType`).
    pub media_type: MediaType,
    /// The digest of `bytes`.
    pub digest: Digest,
}

impl RemoteManifest {
    /// A descriptor for these bytes.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            self.media_type.clone(),
            self.digest.clone(),
            self.bytes.len() as u64,
        )
    }

    /// Whether this is an index (or Docker manifest list).
    pub fn is_index(&self) -> bool {
        self.media_type.is_index()
    }

    /// Parses the bytes as an image manifest.
    pub fn manifest(&self) -> Result<Manifest> {
        Ok(from_json("manifest", &self.bytes)?)
    }

    /// Parses the bytes as an index.
    pub fn index(&self) -> Result<Index> {
        Ok(from_json("index", &self.bytes)?)
    }
}

/// The platforms an index offers, in order (entries without a platform are skipped).
pub fn platforms(index: &Index) -> Vec<Platform> {
    index
        .manifests
        .iter()
        .filter_map(|d| d.platform.clone())
        .collect()
}

/// The first image manifest in `index` whose platform satisfies `wanted`. Attestation entries
/// (BuildKit's `unknown/unknown`) never match a real platform.
pub fn select_platform<'a>(index: &'a Index, wanted: &Platform) -> Option<&'a Descriptor> {
    index.manifests.iter().find(|d| {
        d.media_type.is_manifest() && d.platform.as_ref().is_some_and(|p| p.satisfies(wanted))
    })
}

/// The tag the referrers tag schema uses for `digest` (OCI distribution spec 1.1, "Referrers
/// Tag Schema"): `sha256-<hex>`.
pub fn referrers_tag(digest: &Digest) -> String {
    format!("{}-{}", digest.algorithm().as_str(), digest.hex())
}

/// Guesses a media type from the document when `Content-Type` is missing or generic.
fn sniff_media_type(bytes: &[u8]) -> Option<MediaType> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde::de::IgnoredAny>,
        config: Option<serde::de::IgnoredAny>,
    }
    let p: Probe = serde_json::from_slice(bytes).ok()?;
    match (p.media_type, p.manifests, p.config) {
        (Some(m), _, _) => Some(MediaType::parse(&m)),
        (None, Some(_), _) => Some(MediaType::OciIndex),
        (None, None, Some(_)) => Some(MediaType::OciManifest),
        _ => None,
    }
}

impl Client {
    fn manifest_path(r: &Reference, reference: &str) -> String {
        format!("/v2/{}/manifests/{reference}", r.repository())
    }

    /// Fetches the manifest or index `r` names, verified against `r`'s digest if it has one.
    /// A body cut short or corrupted in transit is fetched again (temporary errors are retried).
    pub fn get_manifest(&self, r: &Reference) -> Result<RemoteManifest> {
        self.with_retries(|| self.get_manifest_once(r))
    }

    fn get_manifest_once(&self, r: &Reference) -> Result<RemoteManifest> {
        let path = Self::manifest_path(r, &r.manifest_reference());
        let headers = [("Accept", accept_header())];
        let resp = self
            .send(
                r.registry(),
                "GET",
                &path,
                &headers,
                Body::Empty,
                &Scope::pull(r.repository()),
            )?
            .expect(&[200])?;
        let url = redact_url(&resp.url);
        if resp
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > MAX_MANIFEST_SIZE)
        {
            return Err(Error::ManifestTooLarge {
                url,
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let content_type = resp
            .header("content-type")
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let mut bytes = Vec::new();
        resp.reader()
            .take(MAX_MANIFEST_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::from_body_io(r.registry(), "GET", &url, e))?;
        if bytes.len() as u64 > MAX_MANIFEST_SIZE {
            return Err(Error::ManifestTooLarge {
                url,
                limit: MAX_MANIFEST_SIZE,
            });
        }
        let media_type = match content_type.map(|c| MediaType::parse(&c)) {
            Some(m) if m.is_manifest() || m.is_index() => m,
            // Some registries send `application/json` or nothing; trust the document then.
            other => sniff_media_type(&bytes)
                .or(other)
                .unwrap_or_else(|| MediaType::Other(String::new())),
        };
        if !(media_type.is_manifest() || media_type.is_index()) {
            return Err(Error::UnsupportedMediaType {
                url,
                media_type: media_type.as_str().to_string(),
            });
        }
        let digest = match r.digest() {
            Some(expected) => {
                if !expected.matches(&bytes) {
                    return Err(Error::DigestMismatch {
                        what: "manifest",
                        url,
                        expected: expected.clone(),
                        actual: Digest::sha256(&bytes),
                    });
                }
                expected.clone()
            }
            None => Digest::sha256(&bytes),
        };
        Ok(RemoteManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// Fetches the image manifest for `platform`: `r` itself if it is an image manifest, else
    /// the matching entry of the index it names. Returns the manifest and, if there was one, the
    /// index it came from.
    pub fn get_image_manifest(
        &self,
        r: &Reference,
        platform: &Platform,
    ) -> Result<(RemoteManifest, Option<RemoteManifest>)> {
        let top = self.get_manifest(r)?;
        if !top.is_index() {
            return Ok((top, None));
        }
        let index = top.index()?;
        let Some(desc) = select_platform(&index, platform) else {
            return Err(Error::NoMatchingPlatform {
                platform: platform.to_string(),
                url: redact_url(&format!("{}/{}", r.name(), r.manifest_reference())),
                available: platforms(&index).iter().map(ToString::to_string).collect(),
            });
        };
        let child = self.get_manifest(&r.with_digest(desc.digest.clone()))?;
        if child.is_index() {
            return Err(Error::UnsupportedMediaType {
                url: format!("{}@{}", r.name(), desc.digest),
                media_type: child.media_type.as_str().to_string(),
            });
        }
        Ok((child, Some(top)))
    }

    /// Fetches `r`'s manifest through the configured mirrors (see [`RegistriesConfig`]), in
    /// order, then the upstream. Returns the reference that answered (pull its blobs from
    /// there) and the manifest. A failing mirror is skipped; if every source fails, the
    /// upstream's error is returned.
    ///
    /// [`RegistriesConfig`]: super::RegistriesConfig
    pub fn get_manifest_via_mirrors(&self, r: &Reference) -> Result<(Reference, RemoteManifest)> {
        let sources = self.options().registries.pull_sources(r)?;
        let mut last = None;
        for source in sources {
            match self.get_manifest(&source.reference) {
                Ok(m) => return Ok((source.reference, m)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.expect("pull_sources always includes the upstream"))
    }

    /// `HEAD` of a manifest: its descriptor, or `None` if the registry does not have it.
    pub fn head_manifest(&self, r: &Reference) -> Result<Option<Descriptor>> {
        let path = Self::manifest_path(r, &r.manifest_reference());
        let headers = [("Accept", accept_header())];
        let resp = self.send(
            r.registry(),
            "HEAD",
            &path,
            &headers,
            Body::Empty,
            &Scope::pull(r.repository()),
        )?;
        if resp.status == 404 {
            return Ok(None);
        }
        let resp = resp.expect(&[200])?;
        let digest = resp
            .header("docker-content-digest")
            .and_then(|d| d.parse::<Digest>().ok())
            .or_else(|| r.digest().cloned());
        let size = resp
            .header("content-length")
            .and_then(|v| v.parse::<u64>().ok());
        let media_type = resp
            .header("content-type")
            .map(|c| MediaType::parse(c.split(';').next().unwrap_or(c).trim()));
        match (digest, size, media_type) {
            (Some(d), Some(s), Some(m)) => Ok(Some(Descriptor::new(m, d, s))),
            _ => Err(Error::BadHeader {
                registry: r.registry().to_string(),
                method: "HEAD",
                url: redact_url(&resp.url),
                header: "Docker-Content-Digest",
            }),
        }
    }

    /// Uploads a manifest under `r`'s tag (or digest), with `media_type` as its `Content-Type`.
    /// Returns the digest of `bytes`.
    pub fn put_manifest(
        &self,
        r: &Reference,
        bytes: &[u8],
        media_type: &MediaType,
    ) -> Result<Digest> {
        Ok(self.put_manifest_with_subject(r, bytes, media_type)?.0)
    }

    /// [`Client::put_manifest`], also saying whether the registry answered with an
    /// `OCI-Subject` header: it indexed the manifest's `subject` itself (OCI distribution spec
    /// 1.1, "Pushing Manifests with Subject"); without it a client keeps the referrers tag
    /// schema's `sha256-<hex>` index up to date.
    pub fn put_manifest_with_subject(
        &self,
        r: &Reference,
        bytes: &[u8],
        media_type: &MediaType,
    ) -> Result<(Digest, bool)> {
        let digest = Digest::sha256(bytes);
        let reference = match (r.digest(), r.tag()) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.to_string(),
            (None, None) => digest.to_string(),
        };
        let path = Self::manifest_path(r, &reference);
        let headers = [("Content-Type", media_type.as_str().to_string())];
        let resp = self
            .send(
                r.registry(),
                "PUT",
                &path,
                &headers,
                Body::Bytes(bytes),
                &Scope::push(r.repository()),
            )?
            .expect(&[200, 201])?;
        let indexed = resp.header("oci-subject").is_some();
        resp.drain();
        Ok((digest, indexed))
    }

    /// Deletes a manifest by digest (registries must enable deletes).
    pub fn delete_manifest(&self, r: &Reference, digest: &Digest) -> Result<()> {
        let path = Self::manifest_path(r, &digest.to_string());
        let scope = Scope::none().with(r.repository(), &["delete"]);
        self.send(r.registry(), "DELETE", &path, &[], Body::Empty, &scope)?
            .expect(&[200, 202])?
            .drain();
        Ok(())
    }

    /// Lists `r`'s repository's tags, following `Link` pagination; `page_size` sets `n=`.
    pub fn list_tags(&self, r: &Reference, page_size: Option<u32>) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct TagList {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let mut url = format!("/v2/{}/tags/list", r.repository());
        if let Some(n) = page_size {
            url.push_str(&format!("?n={n}"));
        }
        let mut tags = Vec::new();
        // A registry that loops its Link header must not keep us here forever.
        for _ in 0..10_000 {
            let resp = self
                .send(
                    r.registry(),
                    "GET",
                    &url,
                    &[],
                    Body::Empty,
                    &Scope::pull(r.repository()),
                )?
                .expect(&[200])?;
            let next = resp
                .header("link")
                .and_then(next_link)
                .map(|l| resolve_url(&resp.url, &l));
            let page_url = redact_url(&resp.url);
            let body = read_json_body(resp, "tag list")?;
            let page: TagList = serde_json::from_slice(&body).map_err(|source| Error::Json {
                what: "tag list",
                url: page_url,
                source,
            })?;
            tags.extend(page.tags.unwrap_or_default());
            match next {
                Some(n) => url = n,
                None => return Ok(tags),
            }
        }
        Ok(tags)
    }

    /// The manifests that refer to `subject` (OCI 1.1 referrers API), optionally filtered by
    /// artifact type. Registries without the API (distribution 2.8, GHCR as of 2024) answer
    /// 404; then we read the referrers tag schema (`sha256-<hex>`), and no such tag means none.
    pub fn referrers(
        &self,
        r: &Reference,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> Result<Index> {
        let mut path = format!("/v2/{}/referrers/{subject}", r.repository());
        if let Some(t) = artifact_type {
            path = super::client::add_query(&path, "artifactType", t);
        }
        let headers = [("Accept", MediaType::OciIndex.as_str().to_string())];
        let resp = self.send(
            r.registry(),
            "GET",
            &path,
            &headers,
            Body::Empty,
            &Scope::pull(r.repository()),
        )?;
        let mut index = if resp.status == 200 {
            let url = redact_url(&resp.url);
            let body = read_json_body(resp, "referrers index")?;
            serde_json::from_slice::<Index>(&body).map_err(|source| Error::Json {
                what: "referrers index",
                url,
                source,
            })?
        } else if resp.status == 404 || resp.status == 405 {
            resp.drain();
            let tagged = r.with_tag(&referrers_tag(subject))?;
            match self.get_manifest(&tagged) {
                Ok(m) if m.is_index() => m.index()?,
                Ok(_) => Index::new(),
                Err(e) if e.is_not_found() => Index::new(),
                Err(e) => return Err(e),
            }
        } else {
            return Err(resp.into_error());
        };
        if let Some(t) = artifact_type {
            // The tag schema cannot filter server-side, and the API may ignore the filter
            // (it then omits the `OCI-Filters-Applied` header): filter here either way.
            index
                .manifests
                .retain(|d| d.artifact_type.as_deref() == Some(t));
        }
        Ok(index)
    }
}

/// Reads a small JSON body (at most the manifest limit).
fn read_json_body(resp: super::client::Response, _what: &'static str) -> Result<Vec<u8>> {
    let url = redact_url(&resp.url);
    let registry = resp.registry.clone();
    let mut bytes = Vec::new();
    resp.reader()
        .take(MAX_MANIFEST_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::from_body_io(&registry, "GET", &url, e))?;
    if bytes.len() as u64 > MAX_MANIFEST_SIZE {
        return Err(Error::ManifestTooLarge {
            url,
            limit: MAX_MANIFEST_SIZE,
        });
    }
    Ok(bytes)
}

/// The `rel="next"` target of a `Link` header (RFC 8288), as distribution sends it for tag
/// and catalog pagination: `</v2/a/tags/list?last=x&n=2>; rel="next"`.
fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
        params
            .split(';')
            .any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            })
            .then(|| target.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_header_next() {
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=b&n=2")
        );
        assert_eq!(next_link(r#"<x>; rel="prev""#), None);
    }

    #[test]
    fn platform_selection_skips_attestations() {
        let d = Digest::sha256(b"x");
        let mut idx = Index::new();
        let mut att = Descriptor::new(MediaType::OciManifest, d.clone(), 1);
        att.platform = Some(Platform {
            os: "unknown".into(),
            ..Platform::linux("unknown")
        });
        let mut amd = Descriptor::new(MediaType::OciManifest, Digest::sha256(b"amd"), 1);
        amd.platform = Some(Platform::linux("amd64"));
        let mut arm = Descriptor::new(MediaType::OciManifest, Digest::sha256(b"arm"), 1);
        arm.platform = Some(Platform::linux("arm64"));
        idx.manifests = vec![att, amd, arm];
        let got = select_platform(&idx, &"linux/arm64/v8".parse().unwrap()).unwrap();
        assert_eq!(got.digest, Digest::sha256(b"arm"));
        assert!(select_platform(&idx, &Platform::linux("s390x")).is_none());
        assert_eq!(platforms(&idx).len(), 3);
        assert_eq!(referrers_tag(&d), format!("sha256-{}", d.hex()));
    }
}
