use super::*;
use crate::oci::{Descriptor, Digest, MediaType};

fn layer(n: u8) -> CachedLayer {
    CachedLayer {
        descriptor: Descriptor::new(MediaType::OciLayerGzip, Digest::sha256(&[n]), 10 + n as u64),
        diff_id: Digest::sha256(&[n, n]),
    }
}

fn key(n: u8) -> String {
    Digest::sha256(&[b'k', n]).hex().to_string()
}

fn config() -> CacheConfig {
    CacheConfig {
        version: FORMAT_VERSION,
        layers: [(key(1), layer(1)), (key(2), layer(2)), (key(3), layer(1))]
            .into_iter()
            .collect(),
    }
}

#[test]
fn a_cache_round_trips_through_its_manifest_and_config() {
    let c = config();
    let bytes = c.to_bytes();
    let m = parse_manifest(&c.manifest(&bytes)).unwrap();
    assert_eq!(m.config.media_type.as_str(), CONFIG_MEDIA_TYPE);
    assert_eq!(m.artifact_type.as_deref(), Some(ARTIFACT_TYPE));
    // Each layer once, whatever keys share it.
    assert_eq!(m.layers.len(), 2);
    assert_eq!(verify_config(&m, &bytes).unwrap(), c);
    // The same entries give the same bytes (concurrent writers of one build agree).
    assert_eq!(config().manifest(&config().to_bytes()), c.manifest(&bytes));
}

#[test]
fn a_config_that_does_not_match_its_manifest_is_refused() {
    let c = config();
    let bytes = c.to_bytes();
    let m = parse_manifest(&c.manifest(&bytes)).unwrap();
    // Other bytes than the manifest's digest names.
    let mut other = c.clone();
    other.layers.remove(&key(2));
    let e = verify_config(&m, &other.to_bytes()).unwrap_err();
    assert!(e.contains("does not match its digest"), "{e}");
    // A layer the manifest does not list (its holder need not have it).
    let mut extra = c.clone();
    extra.layers.insert(key(9), layer(9));
    let extra_bytes = extra.to_bytes();
    let mut m2 = m.clone();
    m2.config = Descriptor::new(
        m.config.media_type.clone(),
        Digest::sha256(&extra_bytes),
        extra_bytes.len() as u64,
    );
    let e = verify_config(&m2, &extra_bytes).unwrap_err();
    assert!(e.contains("is not among the manifest's layers"), "{e}");
}

#[test]
fn configs_of_other_versions_keys_or_media_types_are_refused() {
    let mut c = config();
    c.version = 2;
    assert!(CacheConfig::parse(&c.to_bytes())
        .unwrap_err()
        .contains("version 2"));
    let mut c = config();
    c.layers.insert("../../etc".into(), layer(4));
    assert!(CacheConfig::parse(&c.to_bytes())
        .unwrap_err()
        .contains("is not a layer key"));
    let mut c = config();
    let mut l = layer(5);
    l.descriptor.media_type = MediaType::OciConfig;
    c.layers.insert(key(5), l);
    assert!(CacheConfig::parse(&c.to_bytes())
        .unwrap_err()
        .contains("not a layer media type"));
    assert!(CacheConfig::parse(b"{\"version\":1,\"layers\":{},\"x\":1}").is_err());
}

#[test]
fn a_manifest_of_another_kind_or_too_large_a_config_is_refused() {
    let c = config();
    let bytes = c.to_bytes();
    let mut m: crate::oci::Manifest = crate::oci::from_json("m", &c.manifest(&bytes)).unwrap();
    m.config.media_type = MediaType::OciConfig;
    let e = parse_manifest(&crate::oci::to_canonical_json(&m)).unwrap_err();
    assert!(e.contains("not a kiln cache"), "{e}");
    m.config.media_type = MediaType::Other(CONFIG_MEDIA_TYPE.into());
    m.config.size = MAX_CONFIG_SIZE + 1;
    let e = parse_manifest(&crate::oci::to_canonical_json(&m)).unwrap_err();
    assert!(e.contains("limit"), "{e}");
}
