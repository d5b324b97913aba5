//! The sandbox policy: what a command may see, write, spend and reach.
//!
//! A [`Policy`] comes from three places, in increasing precedence: the built-in
//! deny-by-default [`Policy::default`], a TOML file (`--policy FILE`), and
//! command-line flags. [`Policy::from_toml`] rejects unknown keys so that a
//! misspelt rule is an error instead of a silently missing restriction.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use crate::error::PolicyError;

/// Everything a sandboxed run is allowed to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// The directory mounted read-write at its own path; the command starts
    /// there. `None` means the current directory.
    pub workspace: Option<PathBuf>,
    pub limits: Limits,
    pub paths: PathRules,
    pub env: EnvRules,
    pub network: NetworkPolicy,
    /// Toolchain homes made visible read-only (see [`Toolchain`]).
    pub toolchains: Vec<Toolchain>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            workspace: None,
            limits: Limits::default(),
            paths: PathRules::default(),
            env: EnvRules::default(),
            network: NetworkPolicy::default(),
            toolchains: Toolchain::ALL.to_vec(),
        }
    }
}

/// Resource limits. Every limit set here is enforced by the strongest layer
/// the kernel offers (cgroup v2, else cgroup v1, else an rlimit), and the run
/// report says which one applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Wall-clock limit; the run ends with status 124 when it passes.
    pub timeout: Option<Seconds>,
    /// Memory limit for the whole sandbox (all processes together).
    pub memory: Option<ByteSize>,
    /// Maximum number of processes and threads alive at once.
    pub pids: Option<u64>,
    /// CPU time limit for the whole sandbox (user + system, all processes).
    pub cpu: Option<Seconds>,
    /// Size of the private `/tmp` (and of the private home directory).
    pub tmp_size: ByteSize,
    /// Largest file a process may write (RLIMIT_FSIZE).
    pub file_size: Option<ByteSize>,
    /// Refuse to run when memory/pids cannot be enforced by a cgroup.
    /// `None` means: required when the limit was asked for explicitly.
    pub require_cgroup: Option<bool>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: None,
            memory: Some(ByteSize(8 << 30)),
            pids: Some(4096),
            cpu: None,
            tmp_size: ByteSize(1 << 30),
            file_size: None,
            require_cgroup: None,
        }
    }
}

/// Extra path rules on top of the default view.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PathRules {
    /// Made visible read-only at the same path.
    pub read: Vec<PathBuf>,
    /// Made visible read-write at the same path.
    pub write: Vec<PathBuf>,
    /// Hidden: replaced by an empty file or directory, whatever else says.
    pub deny: Vec<PathBuf>,
}

/// Environment rules. The sandbox starts from an empty environment.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnvRules {
    /// `NAME` (take the host's value) or `NAME=VALUE`.
    pub pass: Vec<String>,
    /// Names that may pass even though they look like credentials.
    pub allow_secrets: Vec<String>,
}

/// How the sandbox reaches the network.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkPolicy {
    pub mode: NetworkMode,
    /// Domains the egress proxy allows (proxy mode only).
    pub allow: Vec<String>,
    /// Domains the egress proxy refuses; deny wins over allow.
    pub deny: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A private network namespace with loopback only.
    #[default]
    None,
    /// Loopback only, plus relayed listeners to the host-side egress proxy.
    Proxy,
}

/// A language toolchain installed under a home directory, which the sandbox
/// makes visible read-only because the default view hides home directories.
/// Each is found through its usual variable or its default location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Toolchain {
    /// `$CARGO_HOME` or `~/.cargo` (credentials masked).
    Cargo,
    /// `$RUSTUP_HOME` or `~/.rustup`.
    Rustup,
    /// `$PYENV_ROOT` or `~/.pyenv`.
    Pyenv,
    /// `$NVM_DIR` or `~/.nvm`.
    Nvm,
}

impl Toolchain {
    pub const ALL: [Toolchain; 4] = [
        Toolchain::Cargo,
        Toolchain::Rustup,
        Toolchain::Pyenv,
        Toolchain::Nvm,
    ];

    /// The variable that names the toolchain's home, and its default below `$HOME`.
    pub fn home_var(self) -> (&'static str, &'static str) {
        match self {
            Toolchain::Cargo => ("CARGO_HOME", ".cargo"),
            Toolchain::Rustup => ("RUSTUP_HOME", ".rustup"),
            Toolchain::Pyenv => ("PYENV_ROOT", ".pyenv"),
            Toolchain::Nvm => ("NVM_DIR", ".nvm"),
        }
    }

    /// Files below the toolchain home that hold credentials and stay hidden.
    pub fn secrets(self) -> &'static [&'static str] {
        match self {
            Toolchain::Cargo => &["credentials", "credentials.toml"],
            _ => &[],
        }
    }

    /// Where this toolchain lives on this host, if it is installed.
    pub fn locate(self, host_home: Option<&Path>) -> Option<PathBuf> {
        let (var, default) = self.home_var();
        let path = match std::env::var_os(var) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => host_home?.join(default),
        };
        path.is_dir().then_some(path)
    }
}

impl Policy {
    /// Parse a policy file. Unknown keys are errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Policy, PolicyError> {
        toml::from_str(text).map_err(|e| PolicyError::Parse {
            file: origin.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Read and parse a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError::Read {
            file: path.to_path_buf(),
            source: e,
        })?;
        Self::from_toml(&text, path)
    }
}

/// A byte count written as `512M`, `2G`, `1GiB`, `300k` or plain bytes.
/// Suffixes are binary (K = 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let value: f64 = num
            .parse()
            .map_err(|_| format!("`{s}` is not a size; write e.g. 512M, 2G or 1048576"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            "t" | "tb" | "tib" => 1 << 40,
            other => {
                return Err(format!(
                    "`{s}` has an unknown unit `{other}`; use K, M, G or T"
                ));
            }
        };
        let bytes = value * mult as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(format!("`{s}` is out of range; give a positive size"));
        }
        Ok(ByteSize(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        for (unit, shift) in [("T", 40), ("G", 30), ("M", 20), ("K", 10)] {
            if b >= 1 << shift && b % (1 << shift) == 0 {
                return write!(f, "{}{unit}", b >> shift);
            }
        }
        write!(f, "{b}")
    }
}

/// A duration written as `90`, `90s`, `10m`, `1h` or `1.5s`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Seconds(pub f64);

impl Seconds {
    pub fn duration(self) -> Duration {
        Duration::from_secs_f64(self.0)
    }
}

impl FromStr for Seconds {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let (num, mult) = match t.char_indices().last() {
            Some((i, 's')) => (&t[..i], 1.0),
            Some((i, 'm')) => (&t[..i], 60.0),
            Some((i, 'h')) => (&t[..i], 3600.0),
            _ => (t, 1.0),
        };
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not a duration; write e.g. 90, 90s, 10m or 1h"))?;
        let secs = v * mult;
        if !secs.is_finite() || secs <= 0.0 || secs > 365.0 * 86400.0 {
            return Err(format!(
                "`{s}` is out of range; give a positive duration under a year"
            ));
        }
        Ok(Seconds(secs))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

macro_rules! serde_via_str {
    ($t:ty, $expect:literal) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expect)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$t, E> {
                        v.to_string().parse().map_err(E::custom)
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$t, E> {
                        v.to_string().parse().map_err(E::custom)
                    }
                    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<$t, E> {
                        v.to_string().parse().map_err(E::custom)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}
serde_via_str!(ByteSize, "a size such as 512M or 2G");
serde_via_str!(Seconds, "a duration such as 90s or 10m");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!("512M".parse::<ByteSize>().unwrap().0, 512 << 20);
        assert_eq!("2G".parse::<ByteSize>().unwrap().0, 2 << 30);
        assert_eq!("1GiB".parse::<ByteSize>().unwrap().0, 1 << 30);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert_eq!("1.5k".parse::<ByteSize>().unwrap().0, 1536);
        assert!(
            "12X"
                .parse::<ByteSize>()
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!("lots".parse::<ByteSize>().is_err());
        assert!("0".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(2 << 30).to_string(), "2G");
    }

    #[test]
    fn durations_parse() {
        assert_eq!("90".parse::<Seconds>().unwrap().0, 90.0);
        assert_eq!("10m".parse::<Seconds>().unwrap().0, 600.0);
        assert_eq!("1h".parse::<Seconds>().unwrap().0, 3600.0);
        assert_eq!("0.5s".parse::<Seconds>().unwrap().0, 0.5);
        assert!("-1".parse::<Seconds>().is_err());
        assert!("soon".parse::<Seconds>().is_err());
    }

    #[test]
    fn toml_policy_round_trips_and_rejects_unknown_keys() {
        let p = Policy::from_toml(
            r#"
            workspace = "/work/x"
            toolchains = ["cargo"]
            [limits]
            timeout = "10m"
            memory = "2G"
            pids = 256
            tmp_size = 67108864
            [paths]
            read = ["/data"]
            deny = ["/etc/ssl/private"]
            [env]
            pass = ["FOO", "BAR=baz"]
            [network]
            mode = "proxy"
            allow = ["pypi.org"]
            "#,
            Path::new("p.toml"),
        )
        .unwrap();
        assert_eq!(p.limits.timeout, Some(Seconds(600.0)));
        assert_eq!(p.limits.memory, Some(ByteSize(2 << 30)));
        assert_eq!(p.limits.tmp_size, ByteSize(64 << 20));
        assert_eq!(p.network.mode, NetworkMode::Proxy);
        assert_eq!(p.toolchains, vec![Toolchain::Cargo]);
        let again = Policy::from_toml(&toml::to_string(&p).unwrap(), Path::new("x")).unwrap();
        assert_eq!(again, p);

        let err = Policy::from_toml("[limits]\nmemroy = \"1G\"\n", Path::new("bad.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml") && err.contains("memroy"), "{err}");
    }
}
