//! Secrets for alert channels and gates: webhook URLs, signing keys, SMTP passwords.
//!
//! A policy never holds a secret value, only a [`SecretSource`] saying where it lives: an
//! environment variable of the daemon, a file (typically a mounted Secret volume), or a key of
//! a Kubernetes Secret in the policy's namespace. [`resolve`] reads it into a [`Secret`], whose
//! `Debug` and `Display` print `***`; errors name the source, never the value.

use crate::policy::SecretSource;
use std::collections::BTreeMap;
use std::fmt;

/// Largest secret accepted from a file or a Kubernetes Secret, in bytes. A URL or a password
/// is far smaller; a bigger file is a misconfiguration (e.g. a CA bundle named by mistake).
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

pub use crate::secret::Secret;

/// Read access to Kubernetes Secrets. Synchronous on purpose: the daemon implements it over a
/// reflector cache (kube's `reflector::Store`), so resolving never waits on the API server in
/// the middle of a delivery; tests and the demo use [`MapSecretStore`].
pub trait SecretStore: Send + Sync {
    /// The decoded bytes of `key` in Secret `namespace/name`; `Ok(None)` when the Secret or the
    /// key does not exist; `Err` with a reason (without the value) when it cannot be read.
    fn get(&self, namespace: &str, name: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
}

/// A [`SecretStore`] with no Secrets: every `secretKeyRef` is reported missing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSecretStore;

impl SecretStore for NoSecretStore {
    fn get(&self, _: &str, _: &str, _: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }
}

/// An in-memory [`SecretStore`]: `(namespace, name, key) → value`.
#[derive(Clone, Default)]
pub struct MapSecretStore {
    entries: BTreeMap<(String, String, String), Vec<u8>>,
}

impl MapSecretStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) one key of one Secret.
    pub fn insert(&mut self, namespace: &str, name: &str, key: &str, value: impl Into<Vec<u8>>) {
        self.entries.insert((namespace.into(), name.into(), key.into()), value.into());
    }

    /// Builder form of [`MapSecretStore::insert`].
    pub fn with(mut self, namespace: &str, name: &str, key: &str, value: impl Into<Vec<u8>>) -> Self {
        self.insert(namespace, name, key, value);
        self
    }
}

impl fmt::Debug for MapSecretStore {
    // Only the keys: the values are secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.entries.keys()).finish()
    }
}

impl SecretStore for MapSecretStore {
    fn get(&self, namespace: &str, name: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(self.entries.get(&(namespace.into(), name.into(), key.into())).cloned())
    }
}

/// Why a secret could not be resolved. Names the source (variable, path, Secret/key), never
/// the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The source sets none or more than one of `env`, `file`, `secretKeyRef`.
    #[error("a secret source needs exactly one of env, file or secretKeyRef ({0} set)")]
    Ambiguous(usize),
    /// The environment variable is not set (or not UTF-8).
    #[error("environment variable {0} is not set")]
    MissingEnv(String),
    /// The file cannot be read.
    #[error("secret file {path}: {reason}")]
    File { path: String, reason: String },
    /// The Secret or its key does not exist.
    #[error("secret {namespace}/{name} has no key {key}")]
    MissingKey { namespace: String, name: String, key: String },
    /// The Secret store failed.
    #[error("secret {namespace}/{name}: {reason}")]
    Store { namespace: String, name: String, reason: String },
    /// The value is empty, too large or not UTF-8.
    #[error("secret from {source_name} is unusable: {reason}")]
    Invalid { source_name: String, reason: String },
}

/// Reads the secret a policy points at. `namespace` is the policy's namespace (where
/// `secretKeyRef`s are looked up). A trailing line break is dropped (files written with
/// `echo` and Secrets created from such files end with one); other whitespace is kept.
pub fn resolve(
    source: &SecretSource,
    namespace: &str,
    store: &dyn SecretStore,
) -> Result<Secret, SecretError> {
    let set = [source.env.is_some(), source.file.is_some(), source.secret_key_ref.is_some()];
    let count = set.iter().filter(|s| **s).count();
    if count != 1 {
        return Err(SecretError::Ambiguous(count));
    }
    let (name, bytes) = if let Some(var) = &source.env {
        let value = std::env::var(var).map_err(|_| SecretError::MissingEnv(var.clone()))?;
        (format!("env {var}"), value.into_bytes())
    } else if let Some(path) = &source.file {
        let file_err = |reason: String| SecretError::File { path: path.clone(), reason };
        let meta = std::fs::metadata(path).map_err(|e| file_err(e.kind().to_string()))?;
        if meta.len() > MAX_SECRET_BYTES as u64 {
            return Err(file_err(format!("larger than {MAX_SECRET_BYTES} bytes")));
        }
        let bytes = std::fs::read(path).map_err(|e| file_err(e.kind().to_string()))?;
        (format!("file {path}"), bytes)
    } else {
        let r = source.secret_key_ref.as_ref().expect("counted above");
        let bytes = store
            .get(namespace, &r.name, &r.key)
            .map_err(|reason| SecretError::Store {
                namespace: namespace.into(),
                name: r.name.clone(),
                reason,
            })?
            .ok_or_else(|| SecretError::MissingKey {
                namespace: namespace.into(),
                name: r.name.clone(),
                key: r.key.clone(),
            })?;
        (format!("secret {namespace}/{}:{}", r.name, r.key), bytes)
    };
    let invalid = |reason: &str| SecretError::Invalid { source_name: name.clone(), reason: reason.into() };
    if bytes.len() > MAX_SECRET_BYTES {
        return Err(invalid("too large"));
    }
    let text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8"))?;
    let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if text.is_empty() {
        return Err(invalid("empty"));
    }
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SecretKeyRef;

    fn key_ref(name: &str, key: &str) -> SecretSource {
        SecretSource {
            secret_key_ref: Some(SecretKeyRef { name: name.into(), key: key.into() }),
            ..SecretSource::default()
        }
    }

    #[test]
    fn secret_prints_stars() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn resolves_env_file_and_secret_key_ref() {
        // PATH is set in every test environment; setting variables would race other threads.
        let env = SecretSource { env: Some("PATH".into()), ..SecretSource::default() };
        assert_eq!(resolve(&env, "ns", &NoSecretStore).unwrap().expose(), std::env::var("PATH").unwrap());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "https://hooks.example/abc\n").unwrap();
        let file = SecretSource { file: Some(path.display().to_string()), ..SecretSource::default() };
        assert_eq!(resolve(&file, "ns", &NoSecretStore).unwrap().expose(), "https://hooks.example/abc");

        let store = MapSecretStore::new().with("shop", "alerts", "slack", "https://hooks.slack/x");
        assert_eq!(
            resolve(&key_ref("alerts", "slack"), "shop", &store).unwrap().expose(),
            "https://hooks.slack/x"
        );
    }

    #[test]
    fn errors_name_the_source_but_never_the_value() {
        let store = MapSecretStore::new().with("shop", "alerts", "empty", "");
        let missing = resolve(&key_ref("alerts", "nope"), "shop", &store).unwrap_err();
        assert_eq!(missing.to_string(), "secret shop/alerts has no key nope");
        let empty = resolve(&key_ref("alerts", "empty"), "shop", &store).unwrap_err();
        assert!(empty.to_string().contains("shop/alerts:empty"), "{empty}");
        let env =
            SecretSource { env: Some("CANARYD_TEST_SURELY_UNSET_VAR".into()), ..SecretSource::default() };
        assert!(matches!(resolve(&env, "ns", &store), Err(SecretError::MissingEnv(_))));
        let both =
            SecretSource { env: Some("PATH".into()), file: Some("/x".into()), ..SecretSource::default() };
        assert_eq!(resolve(&both, "ns", &store), Err(SecretError::Ambiguous(2)));
        let file = SecretSource { file: Some("/nonexistent/canaryd".into()), ..SecretSource::default() };
        let e = resolve(&file, "ns", &store).unwrap_err().to_string();
        assert!(e.starts_with("secret file /nonexistent/canaryd: "), "{e}");
        assert!(!format!("{store:?}").contains("hooks"));
    }
}
