//! CycloneDX 1.5 JSON (cyclonedx.org/docs/1.5/json): the image as `metadata.component`
//! (`container`), a `library` component per package with its purl, licences and, as
//! properties, the path and layer it was found in (`kiln:path`, `kiln:layer`; syft writes
//! `syft:location:…`). Deterministic: components sorted, `bom-ref`s from a hash of purl and
//! path, the serial number a name-based UUID of the content, the timestamp the given epoch.
use serde_json::{json, Value};

use super::sbom::Scan;
use super::spdx::package_id;
use super::Subject;

/// The CycloneDX document of `scan` for `subject`, stamped `epoch`.
pub fn document(scan: &Scan, subject: &Subject, epoch: i64) -> Value {
    let components: Vec<Value> = scan
        .packages
        .iter()
        .map(|p| {
            let mut c = json!({
                "type": "library",
                "bom-ref": package_id(p),
                "name": p.found.name,
                "version": p.found.version,
                "purl": p.purl,
                "properties": [
                    {"name": "kiln:layer", "value": p.layer.to_string()},
                    {"name": "kiln:path", "value": p.path},
                    {"name": "kiln:type", "value": p.found.ecosystem.as_str()},
                ],
            });
            if let Some(l) = &p.found.license {
                c["licenses"] = if spdx::Expression::parse(l).is_ok() {
                    json!([{"expression": l}])
                } else {
                    json!([{"license": {"name": l}}])
                };
            }
            c
        })
        .collect();
    let mut doc = json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "version": 1,
        "metadata": {
            "timestamp": crate::oci::rfc3339(epoch),
            "tools": {"components": [{
                "type": "application",
                "name": "kiln",
                "version": env!("CARGO_PKG_VERSION"),
            }]},
            "component": {
                "type": "container",
                "bom-ref": "image",
                "name": subject.display_name(),
                "version": subject.digest.to_string(),
                "purl": subject.purl(),
            },
        },
        "components": components,
    });
    let h = crate::oci::Digest::sha256(&crate::oci::to_canonical_json(&doc));
    let x = h.hex();
    // A UUID shaped from the hash: version 8 (custom), RFC 4122 variant.
    let serial = format!(
        "urn:uuid:{}-{}-8{}-{}{}-{}",
        &x[0..8],
        &x[8..12],
        &x[13..16],
        ["8", "9", "a", "b"][usize::from(u8::from_str_radix(&x[16..17], 16).unwrap_or(0) & 3)],
        &x[17..20],
        &x[20..32]
    );
    doc["serialNumber"] = Value::from(serial);
    doc
}
