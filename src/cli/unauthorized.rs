//! A registry's 401, headed by what to do about it: `kiln login HOST`, or fix the credentials
//! kiln sent.
use crate::registry::{self, CredentialEnv};

/// A registry's 401, headed by what to do about it: "no credentials for HOST: run `kiln login
/// HOST`" when kiln found none to send, "credentials for HOST were rejected" when it sent some
/// (the registry's own answer follows as the cause). Other errors are returned as they are.
pub(crate) fn explain(error: anyhow::Error) -> anyhow::Error {
    let host = error.chain().find_map(|c| match registry_error(c)? {
        registry::Error::Status {
            status: 401,
            registry,
            ..
        }
        | registry::Error::Token {
            status: Some(401),
            registry,
            ..
        } => Some(registry.clone()),
        _ => None,
    });
    let Some(host) = host else {
        return error;
    };
    let env = CredentialEnv::from_process_env();
    let head = match registry::lookup_credential(&env, &host, None) {
        Ok(Some(_)) => format!(
            "credentials for {host} were rejected: check them and run `kiln login {host}` again"
        ),
        Ok(None) => format!("no credentials for {host}: run `kiln login {host}`"),
        Err(_) => return error,
    };
    error.context(head)
}

/// The registry error `c` is or wraps: `#[error(transparent)]` wrappers (transport, ops,
/// builder outputs) hide it from `anyhow::Error::chain`.
fn registry_error<'a>(c: &'a (dyn std::error::Error + 'static)) -> Option<&'a registry::Error> {
    fn in_transport(t: &crate::transport::Error) -> Option<&registry::Error> {
        match t {
            crate::transport::Error::Registry(r) => Some(r),
            _ => None,
        }
    }
    if let Some(r) = c.downcast_ref::<registry::Error>() {
        return Some(r);
    }
    if let Some(t) = c.downcast_ref::<crate::transport::Error>() {
        return in_transport(t);
    }
    if let Some(crate::ops::Error::Transport(t)) = c.downcast_ref::<crate::ops::Error>() {
        return in_transport(t);
    }
    if let Some(crate::builder::Error::Output(t)) = c.downcast_ref::<crate::builder::Error>() {
        return in_transport(t);
    }
    None
}
