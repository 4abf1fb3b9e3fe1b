//! Key pairs in cosign's format: an ECDSA P-256 key whose PKCS#8 DER is sealed with a password.
//!
//! The private key file is PEM `ENCRYPTED SIGSTORE PRIVATE KEY` (cosign ≥ 2.0; the older
//! `ENCRYPTED COSIGN PRIVATE KEY` label is read too) around the JSON document of
//! go-securesystemslib's `encrypted` package (cosign `pkg/cosign/keys.go`, `marshalKeyPair`
//! and `LoadPrivateKey`; go-securesystemslib `encrypted/encrypted.go`):
//!
//! ```json
//! {"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"<b64>"},
//!  "cipher":{"name":"nacl/secretbox","nonce":"<b64>"},"ciphertext":"<b64>"}
//! ```
//!
//! scrypt derives a 32-byte key from the password and a 32-byte random salt; NaCl secretbox
//! (XSalsa20-Poly1305, the 16-byte tag first) seals the PKCS#8 DER under a 24-byte random nonce.
//! We write the "legacy" parameters N=2^15, r=8, p=1 because every reader accepts them
//! (skopeo 1.9's vendored copy included); we read the three sets the Go package accepts
//! (N = 2^15, 2^16, 2^17 with r=8, p=1) and nothing else, so a hostile file cannot ask for
//! gigabytes of scrypt memory. The public key is PEM `PUBLIC KEY` (PKIX SubjectPublicKeyInfo).
use std::path::{Path, PathBuf};

use base64::Engine;
use crypto_secretbox::aead::{Aead, KeyInit};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use serde::{Deserialize, Serialize};

use super::error::Error;

/// The PEM label cosign writes for a new private key.
pub const SIGSTORE_PRIVATE_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// The label cosign wrote before 2.0, still accepted on read.
pub const COSIGN_PRIVATE_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// The scrypt parameters we accept, as go-securesystemslib's `CheckParams` does: (log2 N, r, p).
const ACCEPTED_SCRYPT: [(u8, u32, u32); 3] = [(15, 8, 1), (16, 8, 1), (17, 8, 1)];
/// What we write: go-securesystemslib's `Legacy` set, which every reader accepts.
const WRITE_SCRYPT: (u8, u32, u32) = (15, 8, 1);

#[derive(Serialize, Deserialize)]
struct Sealed {
    kdf: Kdf,
    cipher: Cipher,
    #[serde(with = "b64")]
    ciphertext: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    #[serde(with = "b64")]
    salt: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    #[serde(with = "b64")]
    nonce: Vec<u8>,
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::B64.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::B64.decode(s).map_err(serde::de::Error::custom)
    }
}

/// A private key, decrypted.
pub struct PrivateKey {
    key: SigningKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateKey")
            .field("public", &self.public().fingerprint())
            .finish_non_exhaustive()
    }
}

/// A public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
}

fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Random(e.to_string()))?;
    Ok(b)
}

fn scrypt_key(password: &[u8], salt: &[u8], (log_n, r, p): (u8, u32, u32)) -> [u8; 32] {
    let params = scrypt::Params::new(log_n, r, p).expect("fixed scrypt parameters are valid");
    let mut out = [0u8; 32];
    scrypt::scrypt(password, salt, &params, &mut out).expect("32 bytes is a valid output length");
    out
}

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> Result<PrivateKey, Error> {
        // A uniformly random 32-byte string is a valid scalar unless it is 0 or ≥ n
        // (probability about 2^-32); draw again then.
        loop {
            let bytes: [u8; 32] = random()?;
            if let Ok(key) = SigningKey::from_slice(&bytes) {
                return Ok(PrivateKey { key });
            }
        }
    }

    /// The matching public key.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: *self.key.verifying_key(),
        }
    }

    /// An ECDSA P-256 / SHA-256 signature over `message`, DER-encoded (what cosign stores).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        use p256::ecdsa::signature::Signer;
        let sig: Signature = self.key.sign(message);
        sig.to_der().as_bytes().to_vec()
    }

    /// The PEM file cosign writes: the PKCS#8 DER sealed under `password`.
    pub fn to_encrypted_pem(&self, password: &[u8]) -> Result<String, Error> {
        let der = self
            .key
            .to_pkcs8_der()
            .map_err(|e| Error::Key(format!("encoding the key as PKCS#8: {e}")))?;
        let salt: [u8; 32] = random()?;
        let nonce: [u8; 24] = random()?;
        let key = scrypt_key(password, &salt, WRITE_SCRYPT);
        let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
        let ciphertext = cipher
            .encrypt(&nonce.into(), der.as_bytes())
            .map_err(|_| Error::Key("sealing the private key failed".into()))?;
        let sealed = Sealed {
            kdf: Kdf {
                name: "scrypt".into(),
                params: KdfParams {
                    n: 1 << WRITE_SCRYPT.0,
                    r: WRITE_SCRYPT.1,
                    p: WRITE_SCRYPT.2,
                },
                salt: salt.to_vec(),
            },
            cipher: Cipher {
                name: "nacl/secretbox".into(),
                nonce: nonce.to_vec(),
            },
            ciphertext,
        };
        let json = serde_json::to_vec(&sealed).expect("plain struct");
        pem_rfc7468::encode_string(
            SIGSTORE_PRIVATE_KEY_LABEL,
            pem_rfc7468::LineEnding::LF,
            &json,
        )
        .map_err(|e| Error::Key(format!("PEM encoding: {e}")))
    }

    /// Reads a cosign private key file's text; `what` names the file in errors.
    pub fn from_encrypted_pem(text: &str, password: &[u8], what: &str) -> Result<Self, Error> {
        let bad = |reason: String| Error::KeyFile {
            path: what.to_string(),
            reason,
        };
        let (label, body) = pem_rfc7468::decode_vec(text.trim().as_bytes())
            .map_err(|e| bad(format!("not PEM: {e}")))?;
        if label != SIGSTORE_PRIVATE_KEY_LABEL && label != COSIGN_PRIVATE_KEY_LABEL {
            return Err(bad(format!(
                "PEM label `{label}` is not `{SIGSTORE_PRIVATE_KEY_LABEL}` or `{COSIGN_PRIVATE_KEY_LABEL}`"
            )));
        }
        let der = open_sealed(&body, password, what)?;
        let key = SigningKey::from_pkcs8_der(&der).map_err(|e| {
            bad(format!(
                "the decrypted key is not a PKCS#8 ECDSA P-256 key: {e}"
            ))
        })?;
        Ok(PrivateKey { key })
    }
}

/// Opens go-securesystemslib's `encrypted` JSON document with `password`.
fn open_sealed(body: &[u8], password: &[u8], what: &str) -> Result<Vec<u8>, Error> {
    let bad = |reason: String| Error::KeyFile {
        path: what.to_string(),
        reason,
    };
    let sealed: Sealed = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the encrypted key document: {e}")))?;
    if sealed.kdf.name != "scrypt" {
        return Err(bad(format!("unknown kdf `{}`", sealed.kdf.name)));
    }
    if sealed.cipher.name != "nacl/secretbox" {
        return Err(bad(format!("unknown cipher `{}`", sealed.cipher.name)));
    }
    let KdfParams { n, r, p } = sealed.kdf.params;
    let params = ACCEPTED_SCRYPT
        .into_iter()
        .find(|&(log_n, pr, pp)| 1u64 << log_n == n && pr == r && pp == p)
        .ok_or_else(|| bad(format!("unsupported scrypt parameters N={n} r={r} p={p}")))?;
    let nonce: [u8; 24] = sealed
        .cipher
        .nonce
        .as_slice()
        .try_into()
        .map_err(|_| bad("the nonce is not 24 bytes".into()))?;
    let key = scrypt_key(password, &sealed.kdf.salt, params);
    let cipher = crypto_secretbox::XSalsa20Poly1305::new(&key.into());
    cipher
        .decrypt(&nonce.into(), sealed.ciphertext.as_slice())
        .map_err(|_| Error::WrongPassword {
            path: what.to_string(),
        })
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` (PKIX) holding an ECDSA P-256 key.
    pub fn from_pem(text: &str, what: &str) -> Result<PublicKey, Error> {
        let key = VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| Error::KeyFile {
            path: what.to_string(),
            reason: format!("not a PEM `PUBLIC KEY` holding an ECDSA P-256 key: {e}"),
        })?;
        Ok(PublicKey { key })
    }

    /// Reads a public key file.
    pub fn load(path: &Path) -> Result<PublicKey, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        PublicKey::from_pem(&text, &path.display().to_string())
    }

    /// PEM `PUBLIC KEY`.
    pub fn to_pem(&self) -> String {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .expect("a P-256 public key encodes")
    }

    /// The key's fingerprint: `SHA256:` and the hex SHA-256 of its PKIX DER.
    pub fn fingerprint(&self) -> String {
        let der = self
            .key
            .to_public_key_der()
            .expect("a P-256 public key encodes");
        format!(
            "SHA256:{}",
            crate::oci::Digest::sha256(der.as_bytes()).hex()
        )
    }

    /// Whether `der_signature` (ASN.1 DER, or the 64-byte r‖s form) is this key's ECDSA P-256 /
    /// SHA-256 signature over `message`. A high-S signature (Go's `crypto/ecdsa` makes them) is
    /// normalised first; it is the same signature.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier;
        let sig = Signature::from_der(signature).or_else(|_| Signature::from_slice(signature));
        let Ok(sig) = sig else { return false };
        let sig = sig.normalize_s();
        self.key.verify(message, &sig).is_ok()
    }
}

/// Where `kiln key generate` writes: `<prefix>.key` and `<prefix>.pub`.
pub fn key_paths(prefix: &Path) -> (PathBuf, PathBuf) {
    let mut key = prefix.as_os_str().to_owned();
    key.push(".key");
    let mut public = prefix.as_os_str().to_owned();
    public.push(".pub");
    (key.into(), public.into())
}

/// Writes `bytes` to `path` atomically (a temporary file in the same directory, renamed) with
/// `mode`; an existing file is an error unless `force`.
pub fn write_new_file(path: &Path, bytes: &[u8], mode: u32, force: bool) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if !force && std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::Exists {
            path: path.to_path_buf(),
        });
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".kiln-key-")
        .permissions(std::fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    if force {
        tmp.persist(path).map_err(|e| io(e.error))?;
    } else {
        // No replace: another writer between our check and here still loses nothing.
        tmp.persist_noclobber(path).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Exists {
                    path: path.to_path_buf(),
                }
            } else {
                io(e.error)
            }
        })?;
    }
    Ok(())
}

/// The base64 (standard) of `bytes`.
pub(crate) fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// Decodes standard base64.
pub(crate) fn unb64(text: &str) -> Option<Vec<u8>> {
    B64.decode(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encrypted_key_round_trip_and_wrong_password() {
        let k = PrivateKey::generate().unwrap();
        let pem = k.to_encrypted_pem(b"pw").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        let back = PrivateKey::from_encrypted_pem(&pem, b"pw", "k").unwrap();
        assert_eq!(back.public(), k.public());
        assert!(matches!(
            PrivateKey::from_encrypted_pem(&pem, b"nope", "k"),
            Err(Error::WrongPassword { .. })
        ));
        // The old label reads too.
        let old = pem.replace("SIGSTORE", "COSIGN");
        assert!(PrivateKey::from_encrypted_pem(&old, b"pw", "k").is_ok());
        let sig = k.sign(b"hello");
        assert!(k.public().verify(b"hello", &sig));
        assert!(!k.public().verify(b"hullo", &sig));
        let pubkey = PublicKey::from_pem(&k.public().to_pem(), "p").unwrap();
        assert_eq!(pubkey, k.public());
        assert!(k.public().fingerprint().starts_with("SHA256:"));
    }

    /// go-securesystemslib's own vectors (`encrypted/encrypted_test.go`, `kdfVectors`): Go's
    /// scrypt + nacl/secretbox output opens here.
    #[test]
    fn go_securesystemslib_vectors_open() {
        let legacy = br#"{"kdf":{"name":"scrypt","params":{"N":32768,"r":8,"p":1},"salt":"WO3mVvyTwJ9vwT5/Tk5OW5WPIBUofMjcpEfrLnfY4uA="},"cipher":{"name":"nacl/secretbox","nonce":"tCy7HcTFr4uxv4Nrg/DWmncuZ148U1MX"},"ciphertext":"08n43p5G5yviPEZpO7tPPF4aZQkWiWjkv4taFdhDBA0tamKH4nw="}"#;
        let standard = br#"{"kdf":{"name":"scrypt","params":{"N":65536,"r":8,"p":1},"salt":"FhzPOt9/bJG4PTq6lQ6ecG6GzaOuOy/ynG5+yRiFlNs="},"cipher":{"name":"nacl/secretbox","nonce":"aw1ng1jHaDz/tQ7V2gR9O2+IGQ8xJEuE"},"ciphertext":"HycvuLZL4sYH0BrYTh4E/H20VtAW6u5zL5Pr+IBjYLYnCPzDkq8="}"#;
        for v in [&legacy[..], &standard[..]] {
            // The vectors were made with `Marshal`: the plaintext is the JSON string of
            // base64("reallyimportant").
            assert_eq!(
                open_sealed(v, b"supersecret", "v").unwrap(),
                br#""cmVhbGx5aW1wb3J0YW50""#
            );
            assert!(matches!(
                open_sealed(v, b"Supersecret", "v"),
                Err(Error::WrongPassword { .. })
            ));
        }
    }

    #[test]
    fn hostile_scrypt_parameters_are_refused() {
        let k = PrivateKey::generate().unwrap();
        let pem = k.to_encrypted_pem(b"").unwrap();
        let (_, body) = pem_rfc7468::decode_vec(pem.as_bytes()).unwrap();
        let text = String::from_utf8(body)
            .unwrap()
            .replace("32768", "1073741824");
        let pem = pem_rfc7468::encode_string(
            SIGSTORE_PRIVATE_KEY_LABEL,
            pem_rfc7468::LineEnding::LF,
            text.as_bytes(),
        )
        .unwrap();
        let e = PrivateKey::from_encrypted_pem(&pem, b"", "k.key").unwrap_err();
        assert!(
            e.to_string().contains("unsupported scrypt parameters"),
            "{e}"
        );
    }
}
