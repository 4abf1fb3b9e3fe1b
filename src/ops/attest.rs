//! `kiln build --sbom/--provenance` ([`attach`]: the attestations of a built image in an index,
//! as buildx lays them out) and `kiln sbom` ([`sbom`]: the SBOM of any image kiln can read).
use serde_json::Value;

use crate::attest::manifest::{attestation_manifest, index_with_attestations, Statement};
use crate::attest::{self, provenance, sbom as scan, Subject};
use crate::builder::BuildOutcome;
use crate::image::Image;
use crate::oci::{Descriptor, Platform};
use crate::store::Store;
use crate::transport::{self, LayerSource, Remote, Target, Tree};

/// Which attestations a build makes.
#[derive(Debug, Clone, Default)]
pub struct AttestOptions {
    /// An SPDX SBOM.
    pub sbom: bool,
    /// SLSA provenance, and its mode.
    pub provenance: Option<provenance::Mode>,
}

impl AttestOptions {
    /// Whether any attestation is asked for.
    pub fn any(&self) -> bool {
        self.sbom || self.provenance.is_some()
    }
}

/// An SBOM document format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SbomFormat {
    /// SPDX 2.3 JSON.
    SpdxJson,
    /// CycloneDX 1.5 JSON.
    CycloneDxJson,
}

/// Errors of attestations.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// Scanning the image's layers.
    #[error("cannot scan `{image}` for its SBOM")]
    Scan {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: scan::Error,
    },
    /// Reading the image.
    #[error("cannot read `{image}`")]
    Read {
        /// The image.
        image: String,
        /// Why.
        #[source]
        source: Box<transport::Error>,
    },
    /// Writing blobs or names to the store.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// Reading the Dockerfile (for its digest).
    #[error("cannot read `{}`", path.display())]
    Dockerfile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The provenance facts of one platform's build of bake target `t` (built with `b`):
/// `template` (git, builder platform, times) with the target's Dockerfile, stage, platform,
/// args and secrets.
pub(crate) fn target_facts(
    template: &provenance::Facts,
    t: &crate::bake::PlannedTarget,
    b: &crate::builder::BuildOptions,
) -> Result<provenance::Facts, AttestError> {
    let mut f = template.clone();
    let bytes = std::fs::read(&t.dockerfile).map_err(|source| AttestError::Dockerfile {
        path: t.dockerfile.clone(),
        source,
    })?;
    f.dockerfile_digest = Some(crate::oci::Digest::sha256(&bytes));
    f.dockerfile_path = t
        .dockerfile
        .strip_prefix(&t.context)
        .unwrap_or(&t.dockerfile)
        .display()
        .to_string();
    f.target = t.stage.clone();
    f.platforms = vec![b.platform.clone()];
    f.build_args = t.build_args.clone();
    f.secrets = b.secrets.keys().cloned().collect();
    Ok(f)
}

/// A built image with its attestations: the index (stored, the build's names moved to it)
/// and its manifests, the image first.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The index and its manifests.
    pub tree: Tree,
    /// Warnings of the scan (naming layer and path).
    pub warnings: Vec<String>,
    /// Layers scanned, and answered by the cache.
    pub layers: (usize, usize),
}

/// One image's attestation manifest (stored) and its index entry, with the scan's warnings
/// and (layers scanned, layers from the cache).
pub struct ImageAttestations {
    /// The attestation manifest as an image, and its index entry.
    pub manifest: (Image, Descriptor),
    /// Warnings of the scan.
    pub warnings: Vec<String>,
    /// Layers scanned, and answered by the cache.
    pub layers: (usize, usize),
}

/// Makes the statements `opts` asks for about `outcome`'s image (`facts`: what the build was
/// given, without its images, URLs and steps, which come from `outcome`) and stores its
/// attestation manifest. `epoch` dates the SBOM.
pub fn attest_image(
    store: &Store,
    layers: LayerSource<'_>,
    outcome: &BuildOutcome,
    facts: &provenance::Facts,
    opts: &AttestOptions,
    epoch: i64,
) -> Result<ImageAttestations, AttestError> {
    let image = &outcome.image;
    let subject = Subject {
        name: outcome.names.first().cloned(),
        digest: image.digest().clone(),
        platform: image.platform(),
    };
    let mut statements = Vec::new();
    let mut warnings = Vec::new();
    let mut counts = (0, 0);
    if opts.sbom {
        let s = scan::scan_image(layers, image).map_err(|source| AttestError::Scan {
            image: subject.display_name(),
            source,
        })?;
        counts = (s.layers_scanned, s.layers_cached);
        warnings.extend(s.warnings.iter().cloned());
        let doc = attest::spdx::document(&s, &subject, epoch);
        statements.push(Statement {
            predicate_type: attest::PREDICATE_SPDX.into(),
            bytes: attest::statement(&subject, attest::PREDICATE_SPDX, doc),
        });
    }
    if let Some(mode) = opts.provenance {
        let mut f = facts.clone();
        f.mode = mode;
        f.images = outcome
            .images
            .iter()
            .map(|(r, p, d)| (r.clone(), p.parse::<Platform>().ok(), d.clone()))
            .collect();
        f.urls = outcome.urls.clone();
        f.steps = outcome
            .steps
            .iter()
            .map(|s| provenance::StepFact {
                stage: s.stage.clone(),
                instruction: s.step.clone(),
                cache_key: s.cache_key.clone(),
            })
            .collect();
        let p = provenance::predicate(&f);
        statements.push(Statement {
            predicate_type: attest::PREDICATE_SLSA_V1.into(),
            bytes: attest::statement(&subject, attest::PREDICATE_SLSA_V1, p),
        });
    }
    Ok(ImageAttestations {
        manifest: attestation_manifest(store, image, &statements)?,
        warnings,
        layers: counts,
    })
}

/// As [`attest_image`], then an index of the image and its attestation manifest, stored, the
/// build's names moved to it.
pub fn attach(
    store: &Store,
    layers: LayerSource<'_>,
    outcome: &BuildOutcome,
    facts: &provenance::Facts,
    opts: &AttestOptions,
    epoch: i64,
) -> Result<Attached, AttestError> {
    let a = attest_image(store, layers, outcome, facts, opts, epoch)?;
    let (top, images) = index_with_attestations(
        store,
        std::slice::from_ref(&outcome.image),
        &[a.manifest],
        &Default::default(),
    )?;
    for n in &outcome.names {
        store.tag(n, &top)?;
    }
    Ok(Attached {
        tree: Tree { top, images },
        warnings: a.warnings,
        layers: a.layers,
    })
}

/// Writes `attached` to `dest`: the whole index to the store, `oci:`, `oci-archive:` and
/// registries; to a docker-archive, which cannot hold an index, the image alone (the caller
/// warns). Returns the top descriptor written.
pub fn write_attached(
    store: &Store,
    attached: &Attached,
    dest: &Target,
    name: Option<&str>,
    remote: Option<&Remote>,
) -> Result<Descriptor, transport::Error> {
    match dest {
        Target::DockerArchive(..) => {
            transport::write_from_store(store, &attached.tree.images[0], dest, name, remote)
        }
        _ => transport::write_all_from_store(store, &attached.tree, dest, name, remote),
    }
}

/// The SBOM of the image at `source` (`platform` picks from an index; the host's by
/// default) in `format`, dated `epoch` when given, else the image's creation time; with the
/// scan's warnings.
pub fn sbom(
    store: &Store,
    source: &Target,
    platform: Option<&Platform>,
    remote: Option<&Remote>,
    format: SbomFormat,
    epoch: Option<i64>,
) -> Result<(Value, Vec<String>), AttestError> {
    let image = transport::read_base_into_store(store, source, platform, remote).map_err(|e| {
        AttestError::Read {
            image: source.to_string(),
            source: Box::new(e),
        }
    })?;
    let name = match source {
        Target::Store(n) | Target::Registry(n) => Some(n.clone()),
        _ => None,
    };
    let subject = Subject {
        name,
        digest: image.digest().clone(),
        platform: image.platform(),
    };
    let s = scan::scan_image(LayerSource::new(store, remote), &image).map_err(|source| {
        AttestError::Scan {
            image: subject.display_name(),
            source,
        }
    })?;
    let epoch = epoch
        .or_else(|| image.config.created.as_deref().and_then(parse_rfc3339))
        .unwrap_or(0);
    let doc = match format {
        SbomFormat::SpdxJson => attest::spdx::document(&s, &subject, epoch),
        SbomFormat::CycloneDxJson => attest::cyclonedx::document(&s, &subject, epoch),
    };
    Ok((doc, s.warnings))
}

/// Seconds since the epoch of an RFC 3339 time (`1970-01-01T00:00:00Z`, fractions and
/// offsets allowed); `None` when it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (
        n(0..4)?,
        n(5..7)?,
        n(8..10)?,
        n(11..13)?,
        n(14..16)?,
        n(17..19)?,
    );
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 => {
            let sign = match &o[..1] {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Howard Hinnant's days_from_civil.
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_round_trips_with_kilns_writer() {
        for t in [0, 86_399, 1_700_000_000, 951_782_400] {
            assert_eq!(super::parse_rfc3339(&crate::oci::rfc3339(t)), Some(t));
        }
        assert_eq!(
            super::parse_rfc3339("2024-01-01T01:00:00.5+01:00"),
            Some(1_704_067_200)
        );
        assert_eq!(super::parse_rfc3339("nope"), None);
    }
}
