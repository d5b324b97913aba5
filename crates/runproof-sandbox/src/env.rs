//! The sandbox's environment: built from an allowlist, never inherited whole.
//!
//! A variable passes when it is on [`DEFAULT_PASS`] or named by the policy,
//! and never when its name or value looks like a credential, unless the policy
//! lists the name in `env.allow_secrets`.

use std::collections::BTreeMap;

use crate::error::PolicyError;
use crate::policy::EnvRules;

/// Variables that pass from the host by default: they configure how programs
/// behave and carry no secrets.
pub const DEFAULT_PASS: &[&str] = &[
    "PATH",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LC_COLLATE",
    "LC_NUMERIC",
    "LC_TIME",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "TZ",
    "COLUMNS",
    "LINES",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "CARGO_HOME",
    "PYENV_ROOT",
    "PYENV_VERSION",
    "NVM_DIR",
    "NVM_BIN",
    "JAVA_HOME",
    "GOROOT",
];

/// Name fragments that mark a credential.
const SECRET_NAME_PARTS: &[&str] = &[
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASSPHRASE",
    "API_KEY",
    "APIKEY",
    "ACCESS_KEY",
    "PRIVATE_KEY",
    "CREDENTIAL",
    "AUTH",
    "COOKIE",
    "SESSION",
    "_PAT",
    "SSH_AUTH_SOCK",
    "GPG_AGENT",
    "KUBECONFIG",
    "DATABASE_URL",
    "DSN",
    "SIGNING_KEY",
    "_KEY_ID",
];

/// Value prefixes of well-known token formats.
const SECRET_VALUE_PREFIXES: &[&str] = &[
    "sk-",
    "sk_live_",
    "rk_live_",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "xoxa-",
    "AKIA",
    "ASIA",
    "AIza",
    "npm_",
    "pypi-",
    "hf_",
    "-----BEGIN",
];

/// Whether a variable looks like it carries a credential.
pub fn looks_secret(name: &str, value: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    if upper.starts_with("AWS_")
        || upper.starts_with("AZURE_")
        || upper.starts_with("GOOGLE_APPLICATION")
    {
        return true;
    }
    if SECRET_NAME_PARTS.iter().any(|p| upper.contains(p)) {
        return true;
    }
    let v = value.trim();
    if SECRET_VALUE_PREFIXES.iter().any(|p| v.starts_with(p)) {
        return true;
    }
    // user:password@ in a URL
    if let Some(rest) = v.split_once("://").map(|(_, r)| r) {
        let authority = rest.split('/').next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if userinfo.contains(':') {
                return true;
            }
        }
    }
    false
}

/// Build the sandbox environment from the host environment and the rules.
/// Returns the environment and the names refused as credentials.
pub fn build(
    host: &BTreeMap<String, String>,
    rules: &EnvRules,
) -> Result<(BTreeMap<String, String>, Vec<String>), PolicyError> {
    let mut out = BTreeMap::new();
    let mut refused = Vec::new();
    let allowed_secret = |n: &str| rules.allow_secrets.iter().any(|a| a == n);
    for name in DEFAULT_PASS {
        if let Some(v) = host.get(*name) {
            out.insert(name.to_string(), v.clone());
        }
    }
    for rule in &rules.pass {
        let (name, value) = match rule.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (rule.as_str(), None),
        };
        if name.is_empty()
            || name.contains('\0')
            || value.as_deref().is_some_and(|v| v.contains('\0'))
        {
            return Err(PolicyError::Invalid(format!(
                "environment rule `{rule}` is not NAME or NAME=VALUE"
            )));
        }
        let Some(value) = value.or_else(|| host.get(name).cloned()) else {
            continue;
        };
        if looks_secret(name, &value) && !allowed_secret(name) {
            refused.push(name.to_string());
            continue;
        }
        out.insert(name.to_string(), value);
    }
    Ok((out, refused))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> BTreeMap<String, String> {
        [
            ("PATH", "/usr/bin"),
            ("HOME", "/root"),
            ("GITHUB_TOKEN", "ghp_abc"),
            ("AWS_SECRET_ACCESS_KEY", "x"),
            ("HARMLESS", "sk-proj-123"),
            ("DEBUG", "1"),
            ("DB", "postgres://u:pw@db/x"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    #[test]
    fn only_the_allowlist_passes_by_default() {
        let (env, refused) = build(&host(), &EnvRules::default()).unwrap();
        assert_eq!(env.keys().collect::<Vec<_>>(), vec!["PATH"]);
        assert!(refused.is_empty());
    }

    #[test]
    fn credentials_never_pass_even_when_named() {
        let rules = EnvRules {
            pass: vec![
                "GITHUB_TOKEN".into(),
                "HARMLESS".into(),
                "DEBUG".into(),
                "DB".into(),
                "X=ghp_zzz".into(),
            ],
            allow_secrets: vec![],
        };
        let (env, refused) = build(&host(), &rules).unwrap();
        assert_eq!(env.get("DEBUG").map(String::as_str), Some("1"));
        assert_eq!(refused, vec!["GITHUB_TOKEN", "HARMLESS", "DB", "X"]);
        let rules = EnvRules {
            pass: vec!["GITHUB_TOKEN".into()],
            allow_secrets: vec!["GITHUB_TOKEN".into()],
        };
        let (env, _) = build(&host(), &rules).unwrap();
        assert_eq!(env.get("GITHUB_TOKEN").map(String::as_str), Some("ghp_abc"));
    }

    #[test]
    fn malformed_rules_are_errors() {
        let rules = EnvRules {
            pass: vec!["=x".into()],
            allow_secrets: vec![],
        };
        assert!(build(&host(), &rules).is_err());
    }
}
