//! `runproof.toml`: the host's settings for the metered gateway, prices,
//! budgets, the loop policy, the ledger and cost reports.
//!
//! The file is read from `--config FILE`, else `$RUNPROOF_CONFIG` (an
//! absolute path), else `$XDG_CONFIG_HOME/runproof/runproof.toml` (default
//! `~/.config/runproof/runproof.toml`). Never from the workspace or the
//! current directory: a cloned project must not be able to redirect the
//! gateway, raise a budget or change prices by shipping a file. A file that
//! other users can write is refused for the same reason. Flags override the
//! file; the file overrides the built-in defaults.

use runproof_ledger::ComputePrice;
use runproof_net::LoopPolicy;
use serde::Deserialize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Longest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

pub const DEFAULT_OPENAI_BASE: &str = "https://api.openai.com";
pub const DEFAULT_ANTHROPIC_BASE: &str = "https://api.anthropic.com";

/// Model spend without any change in the workspace that flags a metered
/// run as a runaway loop, unless the file or a flag says otherwise.
pub const DEFAULT_MAX_USD_WITHOUT_CHANGE: f64 = 2.00;

/// Compute prices when the file sets none: about $0.049 per vCPU-hour and
/// $0.0054 per GiB-hour, in line with on-demand cloud prices.
pub const DEFAULT_COMPUTE: ComputePrice = ComputePrice {
    usd_per_cpu_second: 0.0000135,
    usd_per_gib_second: 0.0054 / 3600.0,
};

/// Shown by `runproof config --help` and in errors about unknown keys.
pub const CONFIG_HELP: &str = "\
runproof reads its settings from --config FILE, else $RUNPROOF_CONFIG (an
absolute path), else $XDG_CONFIG_HOME/runproof/runproof.toml (default
~/.config/runproof/runproof.toml), never from a project or the current
directory. Flags override the file. Every key is optional:

  ledger = \"~/.local/share/runproof/ledger.db\"
  prices = \"~/litellm/model_prices_and_context_window.json\"
  budget_usd = 5.0                  # per metered run (run --gateway, bench --gateway)
  developer_hourly_rate_usd = 120   # runproof cost compares the spend with it

  [openai]                          # and [anthropic]
  base_url = \"https://api.openai.com\"
  key_env = \"OPENAI_API_KEY\"        # the variable holding the key, or:
  # key_file = \"~/.config/runproof/openai.key\"

  [compute]
  usd_per_cpu_second = 0.0000135
  usd_per_gib_hour = 0.0054

  [loop]                            # runaway-loop detection in the gateway
  window = 20                       # the last N requests...
  threshold = 6                     # ...of which this many near-identical flag a loop
  max_usd_without_change = 2.00     # model spend with no change in the workspace
                                    # (run, bench; false: off) that flags a loop
  stop = false                      # true: stop the run when a loop is flagged
                                    # (unset: run flags, bench stops)

A change is a file created, written, deleted or renamed in the workspace
(with an overlay: in its upper layer); build output, dependencies, caches
and version control (node_modules, target, .git, .venv, __pycache__, ...)
do not count.

Relative paths are relative to the file's directory; ~/ is the home directory.";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileData {
    ledger: Option<PathBuf>,
    prices: Option<PathBuf>,
    budget_usd: Option<f64>,
    developer_hourly_rate_usd: Option<f64>,
    openai: Option<UpstreamData>,
    anthropic: Option<UpstreamData>,
    compute: Option<ComputeData>,
    #[serde(rename = "loop")]
    loops: Option<LoopData>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpstreamData {
    base_url: Option<String>,
    key_env: Option<String>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComputeData {
    usd_per_cpu_second: Option<f64>,
    usd_per_gib_hour: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoopData {
    window: Option<usize>,
    threshold: Option<usize>,
    max_usd_without_change: Option<UsdOrOff>,
    stop: Option<bool>,
}

/// An amount of USD, or `false` for off (TOML has no null).
#[derive(Debug, Clone, Copy)]
enum UsdOrOff {
    Usd(f64),
    Switch(bool),
}

impl<'de> Deserialize<'de> for UsdOrOff {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = UsdOrOff;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an amount of USD (e.g. 0.50), or false to turn the check off")
            }
            fn visit_f64<E>(self, v: f64) -> Result<UsdOrOff, E> {
                Ok(UsdOrOff::Usd(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<UsdOrOff, E> {
                Ok(UsdOrOff::Usd(v as f64))
            }
            fn visit_u64<E>(self, v: u64) -> Result<UsdOrOff, E> {
                Ok(UsdOrOff::Usd(v as f64))
            }
            fn visit_bool<E>(self, v: bool) -> Result<UsdOrOff, E> {
                Ok(UsdOrOff::Switch(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// `--max-usd-without-change`: a positive amount of USD, or `off`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UsdLimit(pub Option<f64>);

impl std::str::FromStr for UsdLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(UsdLimit(None));
        }
        match s.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok(UsdLimit(Some(x))),
            _ => Err(format!(
                "{s:?} is not a positive amount of USD; write e.g. 0.50, or off to turn the check off"
            )),
        }
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Flag,
    File,
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Source::Flag => "flag",
            Source::File => "file",
            Source::Default => "default",
        })
    }
}

/// How the host's API key for one provider is found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An environment variable of runproof's own environment.
    Env(String),
    /// A file holding only the key.
    File(PathBuf),
}

impl KeySource {
    /// The key, `Ok(None)` when the variable is unset or empty. A key file
    /// that cannot be read is an error: it was configured explicitly.
    pub fn read(&self) -> Result<Option<String>, String> {
        match self {
            KeySource::Env(v) => Ok(std::env::var(v).ok().filter(|k| !k.trim().is_empty())),
            KeySource::File(p) => runproof_net::read_key_file(p).map(Some),
        }
    }

    /// The variable or file the key is read from, for messages.
    pub fn name(&self) -> String {
        match self {
            KeySource::Env(v) => v.clone(),
            KeySource::File(p) => p.display().to_string(),
        }
    }

    /// For `runproof config`: where the key comes from and whether it is
    /// there, never the key.
    fn describe(&self) -> String {
        match self {
            KeySource::Env(v) => format!(
                "env {v} ({})",
                if std::env::var(v).is_ok_and(|k| !k.trim().is_empty()) {
                    "set"
                } else {
                    "not set"
                }
            ),
            KeySource::File(p) => format!(
                "file {} ({})",
                p.display(),
                match runproof_net::read_key_file(p) {
                    Ok(_) => "readable".to_string(),
                    Err(e) => e,
                }
            ),
        }
    }
}

/// One of the two upstream providers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Anthropic,
}

impl Provider {
    fn table(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
        }
    }
    fn default_base(self) -> &'static str {
        match self {
            Provider::OpenAi => DEFAULT_OPENAI_BASE,
            Provider::Anthropic => DEFAULT_ANTHROPIC_BASE,
        }
    }
    fn default_env(self) -> &'static str {
        match self {
            Provider::OpenAi => "OPENAI_API_KEY",
            Provider::Anthropic => "ANTHROPIC_API_KEY",
        }
    }
}

/// The configuration in effect: the file that applied (if any) and its
/// validated contents.
#[derive(Debug, Default)]
pub struct Config {
    /// The file read, and how it was chosen (`--config`, `$RUNPROOF_CONFIG`,
    /// the default path).
    pub file: Option<(PathBuf, &'static str)>,
    /// The default path, when no file was named (shown when it is absent).
    pub searched: Option<PathBuf>,
    data: FileData,
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// `$XDG_CONFIG_HOME/runproof/runproof.toml`, or under `~/.config`. A
/// relative `$XDG_CONFIG_HOME` is ignored (the XDG rule), since it would
/// name a file in whatever directory runproof starts in.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home().map(|h| h.join(".config")))?;
    Some(base.join("runproof").join("runproof.toml"))
}

fn bad(file: &Path, key: &str, problem: impl std::fmt::Display) -> String {
    format!("config {}: {key}: {problem}", file.display())
}

impl Config {
    /// Find and read the configuration. `flag` is `--config FILE`.
    pub fn load(flag: Option<&Path>) -> Result<Config, String> {
        if let Some(f) = flag {
            let f = std::path::absolute(f).unwrap_or_else(|_| f.to_path_buf());
            return Self::read(&f, "--config");
        }
        if let Some(env) = std::env::var_os("RUNPROOF_CONFIG").filter(|v| !v.is_empty()) {
            let p = PathBuf::from(&env);
            if !p.is_absolute() {
                return Err(format!(
                    "$RUNPROOF_CONFIG={}: must be an absolute path (a relative one would read a file from whatever project runproof starts in); write it as /home/you/...",
                    p.display()
                ));
            }
            return Self::read(&p, "$RUNPROOF_CONFIG");
        }
        match default_path() {
            Some(p) if p.exists() => Self::read(&p, "default path"),
            p => Ok(Config {
                searched: p,
                ..Config::default()
            }),
        }
    }

    fn read(path: &Path, origin: &'static str) -> Result<Config, String> {
        let meta = std::fs::metadata(path).map_err(|e| {
            format!(
                "config {} (from {origin}): {e}; create it or name another file",
                path.display()
            )
        })?;
        if !meta.is_file() {
            return Err(format!(
                "config {} (from {origin}) is not a regular file",
                path.display()
            ));
        }
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "config {} is writable by other users (mode {:o}): whoever can write it can redirect the gateway and raise budgets; fix with `chmod go-w {}`",
                path.display(),
                meta.mode() & 0o7777,
                path.display()
            ));
        }
        if meta.uid() != me && meta.uid() != 0 {
            return Err(format!(
                "config {} belongs to user {}, not to you ({me}) or root: refusing settings another user controls; copy it and own the copy",
                path.display(),
                meta.uid()
            ));
        }
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(format!(
                "config {} is {} bytes; the limit is {MAX_CONFIG_BYTES}",
                path.display(),
                meta.len()
            ));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("config {}: {e}", path.display()))?;
        let mut data: FileData = toml::from_str(&text).map_err(|e| {
            format!(
                "config {}: {}\n(see `runproof config --help` for the keys and their meaning)",
                path.display(),
                e.to_string().trim_end()
            )
        })?;
        let dir = path.parent().unwrap_or(Path::new("/"));
        validate(path, dir, &mut data)?;
        Ok(Config {
            file: Some((path.to_path_buf(), origin)),
            searched: None,
            data,
        })
    }

    fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> (T, Source) {
        match (flag, file) {
            (Some(v), _) => (v, Source::Flag),
            (None, Some(v)) => (v, Source::File),
            (None, None) => (default, Source::Default),
        }
    }

    fn upstream(&self, p: Provider) -> Option<&UpstreamData> {
        match p {
            Provider::OpenAi => self.data.openai.as_ref(),
            Provider::Anthropic => self.data.anthropic.as_ref(),
        }
    }

    pub fn base_url(&self, p: Provider, flag: Option<&str>) -> (String, Source) {
        Self::pick(
            flag.map(str::to_string),
            self.upstream(p).and_then(|u| u.base_url.clone()),
            p.default_base().to_string(),
        )
    }

    /// Whether the file names this provider's upstream (for `runproof
    /// gateway`, which serves only the upstreams it is given).
    pub fn has_base_url(&self, p: Provider) -> bool {
        self.upstream(p).is_some_and(|u| u.base_url.is_some())
    }

    pub fn key(&self, p: Provider) -> (KeySource, Source) {
        match self.upstream(p) {
            Some(UpstreamData {
                key_file: Some(f), ..
            }) => (KeySource::File(f.clone()), Source::File),
            Some(UpstreamData {
                key_env: Some(v), ..
            }) => (KeySource::Env(v.clone()), Source::File),
            _ => (KeySource::Env(p.default_env().into()), Source::Default),
        }
    }

    pub fn prices(&self, flag: Option<&Path>) -> (Option<PathBuf>, Source) {
        Self::pick(
            flag.map(|p| Some(p.to_path_buf())),
            self.data.prices.clone().map(Some),
            None,
        )
    }

    pub fn ledger(&self, flag: Option<&Path>) -> Result<(PathBuf, Source), String> {
        if let Some(f) = flag {
            return Ok((f.to_path_buf(), Source::Flag));
        }
        if let Some(f) = &self.data.ledger {
            return Ok((f.clone(), Source::File));
        }
        runproof_ledger::default_path()
            .map(|p| (p, Source::Default))
            .map_err(|e| e.to_string())
    }

    pub fn budget(&self, flag: Option<f64>) -> (Option<f64>, Source) {
        Self::pick(flag.map(Some), self.data.budget_usd.map(Some), None)
    }

    pub fn hourly_rate(&self, flag: Option<f64>) -> (Option<f64>, Source) {
        Self::pick(
            flag.map(Some),
            self.data.developer_hourly_rate_usd.map(Some),
            None,
        )
    }

    pub fn compute(&self) -> (ComputePrice, Source) {
        match &self.data.compute {
            None => (DEFAULT_COMPUTE, Source::Default),
            Some(c) => (
                ComputePrice {
                    usd_per_cpu_second: c
                        .usd_per_cpu_second
                        .unwrap_or(DEFAULT_COMPUTE.usd_per_cpu_second),
                    usd_per_gib_second: c
                        .usd_per_gib_hour
                        .map_or(DEFAULT_COMPUTE.usd_per_gib_second, |h| h / 3600.0),
                },
                Source::File,
            ),
        }
    }

    /// `loop.max_usd_without_change`, a flag over it; `None` is off.
    pub fn max_usd_without_change(&self, flag: Option<UsdLimit>) -> (Option<f64>, Source) {
        let file = self
            .data
            .loops
            .as_ref()
            .and_then(|l| l.max_usd_without_change)
            .map(|v| match v {
                UsdOrOff::Usd(x) => Some(x),
                // `true` is refused by `validate`.
                UsdOrOff::Switch(_) => None,
            });
        Self::pick(
            flag.map(|f| f.0),
            file,
            Some(DEFAULT_MAX_USD_WITHOUT_CHANGE),
        )
    }

    /// The loop policy of `runproof run`: a loop is flagged, and stops the
    /// run only with `loop.stop = true`. (`runproof gateway` takes it
    /// without the spend-without-change check: it sees no workspace.)
    pub fn loops(&self) -> (LoopPolicy, Source) {
        self.loops_with_default_stop(LoopPolicy::default().stop)
    }

    /// The loop policy with `stop` as `default_stop` unless the file sets
    /// `loop.stop`. `runproof bench` passes true: a run that loops is a
    /// wasted run.
    pub fn loops_with_default_stop(&self, default_stop: bool) -> (LoopPolicy, Source) {
        let d = LoopPolicy {
            stop: default_stop,
            max_usd_without_change: self.max_usd_without_change(None).0,
            ..LoopPolicy::default()
        };
        match &self.data.loops {
            None => (d, Source::Default),
            Some(l) => (
                LoopPolicy {
                    window: l.window.unwrap_or(d.window),
                    threshold: l.threshold.unwrap_or(d.threshold),
                    stop: l.stop.unwrap_or(d.stop),
                    ..d
                },
                Source::File,
            ),
        }
    }

    /// Every setting with its value and source, for `runproof config`.
    pub fn effective(&self) -> Vec<(&'static str, String, Source)> {
        let mut out = Vec::new();
        for p in [Provider::OpenAi, Provider::Anthropic] {
            let (b, s) = self.base_url(p, None);
            let (k, ks) = self.key(p);
            let (bk, kk) = match p {
                Provider::OpenAi => ("openai.base_url", "openai.key"),
                Provider::Anthropic => ("anthropic.base_url", "anthropic.key"),
            };
            out.push((bk, b, s));
            out.push((kk, k.describe(), ks));
        }
        let (pr, s) = self.prices(None);
        out.push((
            "prices",
            pr.map_or("bundled table only".into(), |p| {
                format!("{} (over the bundled table)", p.display())
            }),
            s,
        ));
        let (c, s) = self.compute();
        out.push((
            "compute.usd_per_cpu_second",
            c.usd_per_cpu_second.to_string(),
            s,
        ));
        out.push((
            "compute.usd_per_gib_hour",
            format!("{}", c.usd_per_gib_second * 3600.0),
            s,
        ));
        let (b, s) = self.budget(None);
        out.push((
            "budget_usd",
            b.map_or(
                "none (metered runs are accounted, not capped)".into(),
                |b| b.to_string(),
            ),
            s,
        ));
        let (l, s) = self.loops();
        out.push(("loop.window", l.window.to_string(), s));
        out.push(("loop.threshold", l.threshold.to_string(), s));
        let (m, ms) = self.max_usd_without_change(None);
        out.push((
            "loop.max_usd_without_change",
            m.map_or("off".into(), |m| m.to_string()),
            ms,
        ));
        out.push(("loop.stop", l.stop.to_string(), s));
        let (bl, bs) = self.loops_with_default_stop(true);
        out.push(("loop.stop (bench)", bl.stop.to_string(), bs));
        match self.ledger(None) {
            Ok((p, s)) => out.push(("ledger", p.display().to_string(), s)),
            Err(e) => out.push(("ledger", e, Source::Default)),
        }
        let (r, s) = self.hourly_rate(None);
        out.push((
            "developer_hourly_rate_usd",
            r.map_or("none".into(), |r| r.to_string()),
            s,
        ));
        out
    }

    /// One line naming the file in effect (for `doctor` and `config`).
    pub fn describe_file(&self) -> String {
        match (&self.file, &self.searched) {
            (Some((p, origin)), _) => format!("{} (from {origin})", p.display()),
            (None, Some(p)) => format!("none: {} does not exist; built-in defaults", p.display()),
            (None, None) => "none: no HOME or XDG_CONFIG_HOME to look in; built-in defaults".into(),
        }
    }
}

/// Resolve `~/` and relative paths (against the file's directory).
fn resolve(dir: &Path, p: &Path) -> PathBuf {
    if let Ok(rest) = p.strip_prefix("~")
        && let Some(h) = home()
    {
        return h.join(rest);
    }
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        dir.join(p)
    }
}

fn positive_usd(file: &Path, key: &str, v: Option<f64>, example: &str) -> Result<(), String> {
    match v {
        Some(x) if !(x.is_finite() && x > 0.0) => Err(bad(
            file,
            key,
            format!("{x} is not a positive amount of USD; write e.g. {key} = {example}"),
        )),
        _ => Ok(()),
    }
}

fn validate(file: &Path, dir: &Path, d: &mut FileData) -> Result<(), String> {
    positive_usd(file, "budget_usd", d.budget_usd, "5.0")?;
    positive_usd(
        file,
        "developer_hourly_rate_usd",
        d.developer_hourly_rate_usd,
        "120",
    )?;
    if let Some(c) = &d.compute {
        for (k, v) in [
            ("compute.usd_per_cpu_second", c.usd_per_cpu_second),
            ("compute.usd_per_gib_hour", c.usd_per_gib_hour),
        ] {
            if let Some(x) = v
                && !(x.is_finite() && x >= 0.0)
            {
                return Err(bad(
                    file,
                    k,
                    format!("{x} is not a price; write 0 or a positive number of USD"),
                ));
            }
        }
    }
    if let Some(l) = &d.loops {
        let window = l.window.unwrap_or(LoopPolicy::default().window);
        if let Some(t) = l.threshold
            && (t < 2 || t > window)
        {
            return Err(bad(
                file,
                "loop.threshold",
                format!(
                    "{t} must be at least 2 and at most loop.window ({window}): it counts near-identical requests among the last `window`"
                ),
            ));
        }
        match l.max_usd_without_change {
            Some(UsdOrOff::Usd(x)) if !(x.is_finite() && x > 0.0) => {
                return Err(bad(
                    file,
                    "loop.max_usd_without_change",
                    format!(
                        "{x} is not a positive amount of USD; write e.g. max_usd_without_change = 0.50, or false to turn the check off"
                    ),
                ));
            }
            Some(UsdOrOff::Switch(true)) => {
                return Err(bad(
                    file,
                    "loop.max_usd_without_change",
                    "true is not an amount; write an amount of USD (e.g. max_usd_without_change = 0.50), or false to turn the check off",
                ));
            }
            _ => {}
        }
        if l.window == Some(0) || l.window.is_some_and(|w| w > 10_000) {
            return Err(bad(
                file,
                "loop.window",
                "must be between 1 and 10000 requests",
            ));
        }
    }
    for (p, u) in [
        (Provider::OpenAi, &mut d.openai),
        (Provider::Anthropic, &mut d.anthropic),
    ] {
        let Some(u) = u else { continue };
        let t = p.table();
        if let Some(b) = &u.base_url {
            let ok = (b.starts_with("https://") || b.starts_with("http://"))
                && b.split("://").nth(1).is_some_and(|h| !h.is_empty());
            if !ok {
                return Err(bad(
                    file,
                    &format!("{t}.base_url"),
                    format!(
                        "{b:?} is not an http:// or https:// URL; write e.g. base_url = \"{}\"",
                        p.default_base()
                    ),
                ));
            }
        }
        if u.key_env.is_some() && u.key_file.is_some() {
            return Err(bad(
                file,
                &format!("{t}.key_env"),
                "key_env and key_file are both set; keep one",
            ));
        }
        if let Some(v) = &u.key_env {
            let valid = v
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(bad(
                    file,
                    &format!("{t}.key_env"),
                    format!(
                        "{v:?} is not an environment variable name; write e.g. key_env = \"{}\" (the name, not the key)",
                        p.default_env()
                    ),
                ));
            }
        }
        if let Some(f) = &u.key_file {
            u.key_file = Some(resolve(dir, f));
        }
    }
    if let Some(p) = &d.ledger {
        d.ledger = Some(resolve(dir, p));
    }
    if let Some(p) = &d.prices {
        let r = resolve(dir, p);
        if !r.is_file() {
            return Err(bad(
                file,
                "prices",
                format!(
                    "{} is not a file; give a LiteLLM model_prices_and_context_window.json",
                    r.display()
                ),
            ));
        }
        d.prices = Some(r);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("runproof.toml");
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    #[test]
    fn file_values_paths_and_sources() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("prices.json"), "{}").unwrap();
        let f = write(
            d.path(),
            r#"
ledger = "data/ledger.db"
prices = "prices.json"
budget_usd = 2.5
[openai]
base_url = "http://127.0.0.1:9"
key_file = "keys/openai"
[anthropic]
key_env = "MY_ANTHROPIC_KEY"
[compute]
usd_per_gib_hour = 0.36
[loop]
threshold = 3
max_usd_without_change = 1.5
stop = true
"#,
        );
        let c = Config::load(Some(&f)).unwrap();
        assert_eq!(c.file.as_ref().unwrap().1, "--config");
        assert_eq!(
            c.ledger(None).unwrap(),
            (d.path().join("data/ledger.db"), Source::File)
        );
        assert_eq!(
            c.ledger(Some(Path::new("/x.db"))).unwrap(),
            (PathBuf::from("/x.db"), Source::Flag)
        );
        assert_eq!(c.budget(None), (Some(2.5), Source::File));
        assert_eq!(c.budget(Some(9.0)), (Some(9.0), Source::Flag));
        assert_eq!(
            c.base_url(Provider::OpenAi, None),
            ("http://127.0.0.1:9".into(), Source::File)
        );
        assert_eq!(
            c.base_url(Provider::Anthropic, None),
            (DEFAULT_ANTHROPIC_BASE.into(), Source::Default)
        );
        assert_eq!(
            c.key(Provider::OpenAi).0,
            KeySource::File(d.path().join("keys/openai"))
        );
        assert_eq!(
            c.key(Provider::Anthropic).0,
            KeySource::Env("MY_ANTHROPIC_KEY".into())
        );
        let (cp, s) = c.compute();
        assert_eq!(s, Source::File);
        assert_eq!(cp.usd_per_cpu_second, DEFAULT_COMPUTE.usd_per_cpu_second);
        assert!((cp.usd_per_gib_second - 0.0001).abs() < 1e-12);
        let (l, _) = c.loops();
        assert_eq!((l.window, l.threshold, l.stop), (20, 3, true));
        assert_eq!(l.max_usd_without_change, Some(1.5));
        assert_eq!(
            c.max_usd_without_change(Some(UsdLimit(None))),
            (None, Source::Flag)
        );
        // A loop.stop in the file wins over bench's default too.
        assert!(c.loops_with_default_stop(false).0.stop);
        assert_eq!(c.hourly_rate(None), (None, Source::Default));
        let keys: Vec<_> = c.effective().iter().map(|e| e.0).collect();
        assert!(keys.contains(&"openai.key") && keys.contains(&"ledger"));
    }

    #[test]
    fn bad_files_name_the_file_the_key_and_the_fix() {
        let d = tempfile::tempdir().unwrap();
        for (text, want) in [
            ("budget = 5", "unknown field `budget`"),
            ("[openai]\nbase = \"x\"", "unknown field `base`"),
            ("budget_usd = -1", "budget_usd: -1 is not a positive amount"),
            ("budget_usd = \"5\"", "budget_usd"),
            (
                "[openai]\nbase_url = \"api.openai.com\"",
                "openai.base_url: \"api.openai.com\" is not an http",
            ),
            (
                "[anthropic]\nkey_env = \"sk-ant-123\"",
                "anthropic.key_env: \"sk-ant-123\" is not an environment variable name",
            ),
            (
                "[openai]\nkey_env = \"A\"\nkey_file = \"k\"",
                "key_env and key_file are both set",
            ),
            (
                "[loop]\nthreshold = 1",
                "loop.threshold: 1 must be at least 2",
            ),
            (
                "[compute]\nusd_per_cpu_second = -0.1",
                "compute.usd_per_cpu_second",
            ),
            ("prices = \"missing.json\"", "prices:"),
            (
                "[loop]\nmax_usd_without_change = 0",
                "loop.max_usd_without_change: 0 is not a positive amount",
            ),
        ] {
            let f = write(d.path(), text);
            let e = Config::load(Some(&f)).unwrap_err();
            assert!(
                e.contains(&f.display().to_string()) && e.contains(want),
                "{text:?}: {e}"
            );
        }
        let e = Config::load(Some(&d.path().join("none.toml"))).unwrap_err();
        assert!(e.contains("none.toml") && e.contains("--config"), "{e}");
    }

    #[test]
    fn bench_stops_loops_unless_the_file_sets_loop_stop() {
        let d = tempfile::tempdir().unwrap();
        let none = Config::default();
        assert!(!none.loops().0.stop, "run only flags a loop by default");
        assert_eq!(
            none.loops_with_default_stop(true).0.max_usd_without_change,
            Some(DEFAULT_MAX_USD_WITHOUT_CHANGE)
        );
        assert!(none.loops_with_default_stop(true).0.stop);
        for (text, run_stop, bench_stop) in [
            ("[loop]\nthreshold = 3", false, true),
            ("[loop]\nstop = false", false, false),
            ("[loop]\nstop = true", true, true),
        ] {
            let c = Config::load(Some(&write(d.path(), text))).unwrap();
            assert_eq!(c.loops().0.stop, run_stop, "{text}");
            let (l, s) = c.loops_with_default_stop(true);
            assert_eq!((l.stop, s), (bench_stop, Source::File), "{text}");
        }
    }

    #[test]
    fn a_file_others_can_write_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = write(d.path(), "budget_usd = 1000");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = Config::load(Some(&f)).unwrap_err();
        assert!(
            e.contains("writable by other users") && e.contains("chmod go-w"),
            "{e}"
        );
    }
}
