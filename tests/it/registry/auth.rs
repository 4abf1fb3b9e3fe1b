//! Basic auth behind TLS with a generated CA, and the bearer-token flow.
use std::collections::BTreeMap;

use kiln::registry::{Client, ClientOptions, Credential, Error};

use super::{fast_retry, pull_and_check, push_image, reference, TestImage};
use crate::support::registry::{Mode, Registry};

fn with_creds(reg: &Registry, cred: Option<Credential>) -> Client {
    // Behind TLS, refuse the loopback plain-HTTP fallback so the test proves TLS is used.
    let tls = reg.ca_file.is_some();
    let mut o = ClientOptions {
        retry: fast_retry(),
        plain_http_loopback: !tls,
        ..ClientOptions::default()
    };
    o.ca_files.extend(reg.ca_file.clone());
    if let Some(c) = cred {
        o.credentials.explicit.insert(reg.addr.clone(), c);
    }
    Client::new(o).unwrap()
}

#[test]
fn basic_auth_over_tls_with_generated_ca() {
    let Some(reg) = Registry::start(Mode::BasicTls {
        user: "kiln".into(),
        password: "s3cret-pw".into(),
    }) else {
        return;
    };
    let c = with_creds(&reg, Some(Credential::basic("kiln", "s3cret-pw")));
    let img = TestImage::new(30, &[20_000]);
    let r = reference(&reg, "secure/app:v1");
    push_image(&c, &r, &img);
    pull_and_check(&c, &r, &img);

    // Without the CA the certificate is refused, and we do not fall back to plain HTTP.
    let mut o = ClientOptions {
        retry: fast_retry(),
        plain_http_loopback: false,
        ..ClientOptions::default()
    };
    o.credentials
        .explicit
        .insert(reg.addr.clone(), Credential::basic("kiln", "s3cret-pw"));
    let e = Client::new(o).unwrap().get_manifest(&r).unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    // Even with the loopback plain-HTTP fallback the certificate error is what we report.
    let mut o = ClientOptions {
        retry: fast_retry(),
        ..ClientOptions::default()
    };
    o.credentials
        .explicit
        .insert(reg.addr.clone(), Credential::basic("kiln", "s3cret-pw"));
    let e = Client::new(o).unwrap().get_manifest(&r).unwrap_err();
    assert!(matches!(e, Error::Transport { .. }), "{e:?}");
    assert!(e.to_string().contains(&reg.addr), "{e}");
    // With --tls-verify=false it works without the CA.
    let insecure = {
        let mut o = ClientOptions {
            retry: fast_retry(),
            tls_verify: false,
            ..ClientOptions::default()
        };
        o.credentials
            .explicit
            .insert(reg.addr.clone(), Credential::basic("kiln", "s3cret-pw"));
        Client::new(o).unwrap()
    };
    assert_eq!(insecure.get_manifest(&r).unwrap().bytes, img.manifest);
}

#[test]
fn wrong_password_names_registry_and_code_not_the_password() {
    let Some(reg) = Registry::start(Mode::BasicTls {
        user: "kiln".into(),
        password: "right-pw".into(),
    }) else {
        return;
    };
    let c = with_creds(&reg, Some(Credential::basic("kiln", "wrong-pw-xyz")));
    let e = c
        .get_manifest(&reference(&reg, "secure/app:v1"))
        .unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    let text = format!("{e} {e:?}");
    assert!(text.contains(&reg.addr), "{text}");
    assert!(
        text.contains("401") && text.contains("UNAUTHORIZED"),
        "{text}"
    );
    assert!(!text.contains("wrong-pw-xyz"), "{text}");
    // Anonymous: the same clear 401.
    let anon = with_creds(&reg, None);
    let e = anon
        .get_manifest(&reference(&reg, "secure/app:v1"))
        .unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
}

fn token_registry() -> Option<Registry> {
    let users = BTreeMap::from([
        ("kiln".to_string(), "tok-pw".to_string()),
        ("<refresh>".to_string(), "refresh-me-123".to_string()),
    ]);
    Registry::start(Mode::Token { users })
}

#[test]
fn token_flow_push_with_credentials_and_anonymous_pull() {
    let Some(reg) = token_registry() else { return };
    let c = with_creds(&reg, Some(Credential::basic("kiln", "tok-pw")));
    let img = TestImage::new(31, &[30_000, 10]);
    let r = reference(&reg, "tok/app:v1");
    push_image(&c, &r, &img);
    pull_and_check(&c, &r, &img);
    let issuer = reg.issuer.as_ref().unwrap();
    let requests = issuer.requests.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|(scopes, user)| user.as_deref() == Some("kiln")
                && scopes.iter().any(|s| s == "repository:tok/app:pull,push")),
        "{requests:?}"
    );
    // Tokens are cached: far fewer token requests than registry requests.
    assert!(requests.len() <= 4, "{} token requests", requests.len());

    // Anonymous clients get pull-only tokens: pulling works, pushing is refused clearly.
    let anon = with_creds(&reg, None);
    pull_and_check(&anon, &r, &img);
    let e = anon
        .put_manifest(
            &reference(&reg, "tok/app:v2"),
            &img.manifest,
            &kiln::oci::MediaType::OciManifest,
        )
        .unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
    assert!(
        e.to_string().contains("UNAUTHORIZED") || e.to_string().contains("DENIED"),
        "{e}"
    );
}

#[test]
fn token_flow_with_wrong_password_is_a_clear_error() {
    let Some(reg) = token_registry() else { return };
    let c = with_creds(&reg, Some(Credential::basic("kiln", "bad-pw-123")));
    let e = c.get_manifest(&reference(&reg, "tok/app:v1")).unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        matches!(
            e,
            Error::Token {
                status: Some(401),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        text.contains(&reg.addr) && text.contains("UNAUTHORIZED"),
        "{text}"
    );
    assert!(!text.contains("bad-pw-123"), "{text}");
}

#[test]
fn cross_repository_mount_with_tokens_asks_for_both_scopes() {
    let Some(reg) = token_registry() else { return };
    let c = with_creds(&reg, Some(Credential::basic("kiln", "tok-pw")));
    let base = TestImage::new(32, &[10_000]);
    push_image(&c, &reference(&reg, "tok/base:1"), &base);
    let app = reference(&reg, "tok/derived:1");
    let outcomes = kiln::registry::push_blobs(
        &c,
        &app,
        &base.uploads(&["tok/base"]),
        1,
        &kiln::registry::NoProgress,
    )
    .unwrap();
    assert!(
        outcomes
            .iter()
            .all(|o| *o == kiln::registry::BlobOutcome::Mounted),
        "{outcomes:?}"
    );
    let requests = reg
        .issuer
        .as_ref()
        .unwrap()
        .requests
        .lock()
        .unwrap()
        .clone();
    assert!(
        requests
            .iter()
            .any(|(s, _)| s.contains(&"repository:tok/base:pull".to_string())
                && s.contains(&"repository:tok/derived:pull,push".to_string())),
        "{requests:?}"
    );
}

#[test]
fn identity_token_is_exchanged_with_a_refresh_grant() {
    let Some(reg) = token_registry() else { return };
    let c = with_creds(
        &reg,
        Some(Credential::IdentityToken("refresh-me-123".into())),
    );
    let img = TestImage::new(33, &[2000]);
    let r = reference(&reg, "tok/oauth:v1");
    push_image(&c, &r, &img);
    pull_and_check(&c, &r, &img);
    let requests = reg
        .issuer
        .as_ref()
        .unwrap()
        .requests
        .lock()
        .unwrap()
        .clone();
    assert!(
        requests
            .iter()
            .all(|(_, u)| u.as_deref() == Some("refresh")),
        "{requests:?}"
    );
    // A stale refresh token is a clear error without the token in it.
    let bad = with_creds(
        &reg,
        Some(Credential::IdentityToken("stale-token-456".into())),
    );
    let e = bad.get_manifest(&r).unwrap_err();
    let text = format!("{e} {e:?}");
    assert!(
        matches!(
            e,
            Error::Token {
                status: Some(401),
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!text.contains("stale-token-456"), "{text}");
}

#[test]
fn redirect_to_another_host_does_not_forward_the_token() {
    let Some(reg) = token_registry() else { return };
    let Some(storage) = Registry::start(Mode::Plain) else {
        return;
    };
    use crate::support::fault_proxy::{Fault, FaultProxy};
    let c = with_creds(&reg, Some(Credential::basic("kiln", "tok-pw")));
    let img = TestImage::new(34, &[8000]);
    push_image(&c, &reference(&reg, "tok/redir:v1"), &img);
    // The "storage" host holds the same blobs under the same repository name.
    push_image(&super::client(), &reference(&storage, "tok/redir:v1"), &img);
    let front = FaultProxy::start(&reg.addr);
    let back = FaultProxy::start(&storage.addr);
    front.add(
        "GET",
        "/blobs/sha256:",
        Fault::RedirectTo(format!("http://{}", back.addr)),
        10,
    );
    let r = kiln::registry::Reference::parse(&format!("{}/tok/redir:v1", front.addr)).unwrap();
    let c = with_creds(&reg, None);
    let c = {
        // Credentials for the front host (the registry is reached through the proxy).
        let mut o = c.options().clone();
        o.credentials
            .explicit
            .insert(front.addr.clone(), Credential::basic("kiln", "tok-pw"));
        Client::new(o).unwrap()
    };
    pull_and_check(&c, &r, &img);
    let front_auth = front.authorization.lock().unwrap().clone();
    assert!(
        front_auth.iter().any(|(p, a)| p.contains("/blobs/") && *a),
        "{front_auth:?}"
    );
    let back_auth = back.authorization.lock().unwrap().clone();
    assert!(!back_auth.is_empty());
    assert!(
        back_auth.iter().all(|(_, a)| !a),
        "Authorization leaked to another host: {back_auth:?}"
    );
}

#[test]
fn credentials_are_checked_for_login() {
    let Some(reg) = Registry::start(Mode::BasicTls {
        user: "kiln".into(),
        password: "login-pw".into(),
    }) else {
        return;
    };
    with_creds(&reg, Some(Credential::basic("kiln", "login-pw")))
        .check_credentials(&reg.addr)
        .unwrap();
    let e = with_creds(&reg, Some(Credential::basic("kiln", "nope-pw")))
        .check_credentials(&reg.addr)
        .unwrap_err();
    assert!(
        e.is_unauthorized() && !format!("{e:?}").contains("nope-pw"),
        "{e:?}"
    );
    let Some(tok) = token_registry() else { return };
    with_creds(&tok, Some(Credential::basic("kiln", "tok-pw")))
        .check_credentials(&tok.addr)
        .unwrap();
    let e = with_creds(&tok, Some(Credential::basic("kiln", "nope-pw")))
        .check_credentials(&tok.addr)
        .unwrap_err();
    assert!(e.is_unauthorized(), "{e:?}");
}
