//! Trusted roots: the bundled Mozilla roots (`webpki-root-certs`) plus extra CA files and
//! `--cert-dir` directories of `*.crt` files (the layout containers' `certs.d` uses).
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ureq::tls::{Certificate, PemItem, RootCerts};

use super::error::{Error, Result};

/// The root certificates for a client: [`RootCerts::WebPki`] when there is nothing extra,
/// else the Mozilla roots and the extra CAs together.
pub(crate) fn root_certs(files: &[PathBuf], dirs: &[PathBuf]) -> Result<RootCerts> {
    let mut paths: Vec<PathBuf> = files.to_vec();
    for dir in dirs {
        let entries = std::fs::read_dir(dir).map_err(|e| Error::Certificates {
            path: dir.clone(),
            reason: e.to_string(),
        })?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "crt"))
            .collect();
        found.sort();
        paths.extend(found);
    }
    if paths.is_empty() {
        return Ok(RootCerts::WebPki);
    }
    let mut certs: Vec<Certificate<'static>> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|c| Certificate::from_der(c.as_ref()).to_owned())
        .collect();
    for path in &paths {
        certs.extend(load_pem(path)?);
    }
    Ok(RootCerts::Specific(Arc::new(certs)))
}

fn load_pem(path: &Path) -> Result<Vec<Certificate<'static>>> {
    let bad = |reason: String| Error::Certificates {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::new();
    for item in ureq::tls::parse_pem(&bytes) {
        match item.map_err(|e| bad(e.to_string()))? {
            PemItem::Certificate(c) => out.push(c),
            _ => continue,
        }
    }
    if out.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(out)
}
