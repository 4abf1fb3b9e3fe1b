//! SPDX 2.3 JSON (spdx.github.io/spdx-spec/v2.3): one document describing the image, a
//! package per package found, each `CONTAINS`-related to the image. Deterministic: packages
//! sorted, ids from a hash of the purl and path, `created` the given epoch, the namespace
//! from the image digest and the document's own content.
//!
//! A licence the metadata declares is `licenseDeclared` when it is a valid SPDX expression;
//! otherwise it becomes a `LicenseRef-…` with the text in `hasExtractedLicensingInfos`, as
//! syft writes it, so the document stays valid for `pyspdxtools`.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::sbom::{Package, Scan};
use super::Subject;

/// The tool name and version written as the creator.
pub fn tool() -> String {
    format!("kiln-{}", env!("CARGO_PKG_VERSION"))
}

/// A short stable id of a package: its ecosystem, a readable name, a hash of purl and path.
pub fn package_id(p: &Package) -> String {
    let h = crate::oci::Digest::sha256(format!("{}\n{}", p.purl, p.path).as_bytes());
    let name: String = p
        .found
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    format!("{}-{}-{}", p.found.ecosystem.as_str(), name, &h.hex()[..16])
}

/// `text` as an SPDX licence expression: itself when valid, else a `LicenseRef-` (recorded in
/// `extracted`).
pub fn license_expression(text: &str, extracted: &mut BTreeMap<String, String>) -> String {
    if spdx::Expression::parse(text).is_ok() {
        return text.to_string();
    }
    let h = crate::oci::Digest::sha256(text.as_bytes());
    let id = format!("LicenseRef-{}", &h.hex()[..16]);
    extracted.insert(id.clone(), text.to_string());
    id
}

/// The SPDX document of `scan` for `subject`, created at `epoch`.
pub fn document(scan: &Scan, subject: &Subject, epoch: i64) -> Value {
    let mut extracted = BTreeMap::new();
    let mut packages = vec![json!({
        "SPDXID": "SPDXRef-Image",
        "name": subject.display_name(),
        "versionInfo": subject.digest.to_string(),
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": subject.purl(),
        }],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": "SPDXRef-Image",
    })];
    for p in &scan.packages {
        let id = format!("SPDXRef-Package-{}", package_id(p));
        let declared = match &p.found.license {
            Some(l) => license_expression(l, &mut extracted),
            None => "NOASSERTION".into(),
        };
        packages.push(json!({
            "SPDXID": id,
            "name": p.found.name,
            "versionInfo": p.found.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": declared,
            "copyrightText": "NOASSERTION",
            "sourceInfo": format!("{} in layer {}", p.path, p.layer),
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl,
            }],
        }));
        relationships.push(json!({
            "spdxElementId": "SPDXRef-Image",
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": id,
        }));
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": subject.display_name(),
        "creationInfo": {
            "created": crate::oci::rfc3339(epoch),
            "creators": [format!("Tool: {}", tool())],
        },
        "packages": packages,
        "relationships": relationships,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = extracted
            .into_iter()
            .map(|(id, text)| json!({"licenseId": id, "extractedText": text, "name": text}))
            .collect();
    }
    let content = crate::oci::Digest::sha256(&crate::oci::to_canonical_json(&doc));
    doc["documentNamespace"] = Value::from(format!(
        "https://github.com/kiln-build/kiln/spdx/{}-{}",
        subject.digest.hex(),
        &content.hex()[..16]
    ));
    doc
}
