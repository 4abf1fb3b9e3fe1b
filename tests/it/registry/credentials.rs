//! Credential lookup (config.json, helpers, auth.json, GITHUB_TOKEN) and login/logout files.
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kiln::registry::{
    erase_credential, lookup_credential, store_credential, Client, ClientOptions, Credential,
    CredentialEnv, Credentials,
};

use super::{fast_retry, pull_and_check, push_image, reference, TestImage};
use crate::support::registry::{Mode, Registry};

fn env_in(dir: &Path) -> CredentialEnv {
    CredentialEnv {
        docker_config: Some(dir.join("docker")),
        home: Some(dir.join("home")),
        path: Some(dir.join("bin").into_os_string()),
        ..CredentialEnv::default()
    }
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn config_json_auths_entries_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_in(dir.path());
    // `auth` is base64("alice:pa:ss"): passwords may contain colons.
    write(
        &dir.path().join("docker/config.json"),
        r#"{"auths":{
            "https://index.docker.io/v1/":{"auth":"YWxpY2U6cGE6c3M="},
            "reg.example:5000":{"username":"bob","password":"pw"},
            "https://acr.example/v2/":{"identitytoken":"refresh-me"}
        }}"#,
    );
    assert_eq!(
        lookup_credential(&env, "docker.io", None).unwrap(),
        Some(Credential::basic("alice", "pa:ss"))
    );
    assert_eq!(
        lookup_credential(&env, "reg.example:5000", None).unwrap(),
        Some(Credential::basic("bob", "pw"))
    );
    assert_eq!(
        lookup_credential(&env, "acr.example", None).unwrap(),
        Some(Credential::IdentityToken("refresh-me".into()))
    );
    assert_eq!(
        lookup_credential(&env, "other.example", None).unwrap(),
        None
    );
    // A broken file is an error naming the file, not its content.
    write(
        &dir.path().join("docker/config.json"),
        r#"{"auths":{"x":{"auth":"%%%"}}}"#,
    );
    let e = lookup_credential(&env, "x", None).unwrap_err();
    assert!(
        e.to_string().contains("config.json") && !e.to_string().contains("%%%"),
        "{e}"
    );
}

#[test]
fn credential_helpers_are_run() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_in(dir.path());
    let helper = dir.path().join("bin/docker-credential-kilntest");
    write(
        &helper,
        "#!/bin/sh\nread server\nif [ \"$1\" = get ] && [ \"$server\" = helped.example ]; then\n  echo '{\"ServerURL\":\"helped.example\",\"Username\":\"carol\",\"Secret\":\"from-helper\"}'\n  exit 0\nfi\necho 'credentials not found in native keychain'\nexit 1\n",
    );
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    write(
        &dir.path().join("docker/config.json"),
        r#"{"credHelpers":{"helped.example":"kilntest"}}"#,
    );
    assert_eq!(
        lookup_credential(&env, "helped.example", None).unwrap(),
        Some(Credential::basic("carol", "from-helper"))
    );
    // credsStore for everything else; "not found" means anonymous, not an error.
    write(
        &dir.path().join("docker/config.json"),
        r#"{"credsStore":"kilntest"}"#,
    );
    assert_eq!(
        lookup_credential(&env, "helped.example", None).unwrap(),
        Some(Credential::basic("carol", "from-helper"))
    );
    assert_eq!(
        lookup_credential(&env, "elsewhere.example", None).unwrap(),
        None
    );
    // A helper that does not exist is a clear error naming it.
    write(
        &dir.path().join("docker/config.json"),
        r#"{"credHelpers":{"x.example":"missing"}}"#,
    );
    let e = lookup_credential(&env, "x.example", None).unwrap_err();
    assert!(e.to_string().contains("docker-credential-missing"), "{e}");
}

#[test]
fn containers_auth_json_comes_first_and_matches_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_in(dir.path());
    env.registry_auth_file = Some(dir.path().join("auth.json"));
    write(
        &dir.path().join("auth.json"),
        r#"{"auths":{"quay.example/team":{"auth":"dGVhbTp0"},"quay.example":{"auth":"YW55OmE="}}}"#,
    );
    write(
        &dir.path().join("docker/config.json"),
        r#"{"auths":{"quay.example":{"auth":"ZG9ja2VyOmQ="}}}"#,
    );
    assert_eq!(
        lookup_credential(&env, "quay.example", Some("team/app")).unwrap(),
        Some(Credential::basic("team", "t"))
    );
    assert_eq!(
        lookup_credential(&env, "quay.example", Some("other/app")).unwrap(),
        Some(Credential::basic("any", "a"))
    );
}

#[test]
fn github_token_is_used_for_ghcr_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = env_in(dir.path());
    env.github_token = Some("ghs_example".into());
    assert_eq!(
        lookup_credential(&env, "ghcr.io", None).unwrap(),
        Some(Credential::basic("github-actions", "ghs_example"))
    );
    env.github_actor = Some("octocat".into());
    assert_eq!(
        lookup_credential(&env, "ghcr.io", None).unwrap(),
        Some(Credential::basic("octocat", "ghs_example"))
    );
    assert_eq!(lookup_credential(&env, "docker.io", None).unwrap(), None);
    assert!(
        !format!("{:?}", lookup_credential(&env, "ghcr.io", None).unwrap()).contains("ghs_example")
    );
}

#[test]
fn login_writes_config_json_atomically_and_logout_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_in(dir.path());
    write(
        &dir.path().join("docker/config.json"),
        r#"{"auths":{"keep.example":{"auth":"YTpi"}},"psFormat":"x"}"#,
    );
    store_credential(&env, "new.example:5000", "dave", "pw:1").unwrap();
    let path = dir.path().join("docker/config.json");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(doc["psFormat"], "x", "other settings are kept");
    assert_eq!(
        lookup_credential(&env, "new.example:5000", None).unwrap(),
        Some(Credential::basic("dave", "pw:1"))
    );
    assert!(lookup_credential(&env, "keep.example", None)
        .unwrap()
        .is_some());
    assert!(erase_credential(&env, "new.example:5000").unwrap());
    assert_eq!(
        lookup_credential(&env, "new.example:5000", None).unwrap(),
        None
    );
    assert!(!erase_credential(&env, "new.example:5000").unwrap());
    // Docker Hub is stored under its legacy key, which other tools read.
    store_credential(&env, "docker.io", "eve", "pw").unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert!(doc["auths"]["https://index.docker.io/v1/"]["auth"].is_string());
}

#[test]
fn login_then_push_uses_the_stored_credential() {
    let Some(reg) = Registry::start(Mode::BasicTls {
        user: "frank".into(),
        password: "pw-frank".into(),
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = env_in(dir.path());
    store_credential(&env, &reg.addr, "frank", "pw-frank").unwrap();
    let mut o = ClientOptions {
        retry: fast_retry(),
        ..ClientOptions::default()
    };
    o.ca_files.extend(reg.ca_file.clone());
    o.credentials = Credentials {
        env: Some(env),
        ..Credentials::default()
    };
    let c = Client::new(o).unwrap();
    let img = TestImage::new(40, &[5000]);
    let r = reference(&reg, "login/app:v1");
    push_image(&c, &r, &img);
    pull_and_check(&c, &r, &img);
}
