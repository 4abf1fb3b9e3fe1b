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
        mounts: BTreeMap::new(),
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

#[test]
fn cache_mount_contents_are_listed_in_the_manifest_and_checked_like_layers() {
    // Without mounts the config has no `mounts` member (the bytes of a mode=min cache).
    assert!(!String::from_utf8(config().to_bytes())
        .unwrap()
        .contains("mounts"));
    let mut c = config();
    let contents = MountContents {
        layer: layer(7),
        step: key(1),
    };
    c.mounts.insert(mount_key("pip"), contents.clone());
    let bytes = c.to_bytes();
    let m = parse_manifest(&c.manifest(&bytes)).unwrap();
    assert!(m
        .layers
        .iter()
        .any(|l| l.digest == layer(7).descriptor.digest));
    assert_eq!(verify_config(&m, &bytes).unwrap(), c);
    // Keys: by id, versioned, never the id itself (a path would be a file name elsewhere).
    assert_eq!(mount_key("pip"), mount_key("pip"));
    assert_ne!(mount_key("pip"), mount_key("npm"));
    assert_eq!(mount_key("pip").len(), 64);
    let mut bad = config();
    bad.mounts.insert("/root/.cache".into(), contents.clone());
    assert!(CacheConfig::parse(&bad.to_bytes())
        .unwrap_err()
        .contains("is not a mount key"));
    let mut bad = config();
    let mut l = contents;
    l.layer.descriptor.media_type = MediaType::OciConfig;
    bad.mounts.insert(mount_key("x"), l);
    assert!(CacheConfig::parse(&bad.to_bytes())
        .unwrap_err()
        .contains("not a layer media type"));
    // A mount layer the manifest does not list is refused like any entry.
    let mut m2 = parse_manifest(&config().manifest(&config().to_bytes())).unwrap();
    m2.config = Descriptor::new(
        m2.config.media_type.clone(),
        Digest::sha256(&bytes),
        bytes.len() as u64,
    );
    assert!(verify_config(&m2, &bytes)
        .unwrap_err()
        .contains("is not among the manifest's layers"));
}
