//! Per-file checks. Each function reads one kind of file (already bounded in
//! size) and reports into a [`Sink`]. Nothing here executes, imports or
//! evaluates what it reads.

use crate::classify::FileKind;
use crate::hidden::{self, HiddenKind};
use crate::jsonc;
use crate::payload::{self, Kind, Mode};
use crate::sink::{
    self, ScriptRef, Sink, clean, evidence_at, json_line, kinds, line_at, line_of, short,
};
use regex::bytes::{Regex, RegexBuilder};
use serde_json::Value;
use std::sync::LazyLock;

/// One file being checked.
pub struct FileCtx<'a> {
    pub rel: &'a str,
    pub name: &'a str,
    pub text: &'a [u8],
    pub kind: FileKind,
}

impl FileCtx<'_> {
    fn dir(&self) -> &str {
        sink::parent(self.rel)
    }
    /// The project directory a dot-directory config belongs to
    /// (`a/.vscode/tasks.json` -> `a`).
    fn project_dir(&self) -> &str {
        let d = self.dir();
        if let Some(i) = d
            .find(".devcontainer")
            .filter(|&i| i == 0 || d.as_bytes()[i - 1] == b'/')
        {
            return d[..i].trim_end_matches('/');
        }
        let last = d.rsplit('/').next().unwrap_or("");
        if last.starts_with('.') {
            sink::parent(d)
        } else {
            d
        }
    }
    fn lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(self.text)
    }
}

fn re(s: &str) -> Regex {
    RegexBuilder::new(s)
        .unicode(false)
        .build()
        .unwrap_or_else(|e| panic!("runproof-scan: bad built-in regex {s}: {e}"))
}

/// A command that runs (from a structured file): report its payloads under
/// `payload_rule`, or its presence under `presence_rule`, and queue the local
/// scripts it runs.
#[allow(clippy::too_many_arguments)]
fn command(
    s: &mut Sink,
    f: &FileCtx,
    base: &str,
    cmd: &str,
    what: &str,
    line: usize,
    presence_rule: Option<&'static str>,
    payload_rule: &'static str,
    mode: Mode,
) {
    let hits = payload::detect(cmd.as_bytes(), mode);
    for k in kinds(&hits) {
        s.add(
            payload_rule,
            f.rel,
            line,
            format!("{what} {}", k.describe()),
            clean(cmd.as_bytes()),
        );
    }
    if hits.is_empty()
        && let Some(rule) = presence_rule
    {
        s.add(
            rule,
            f.rel,
            line,
            format!("{what} runs `{}`", short(cmd)),
            clean(cmd.as_bytes()),
        );
    }
    for p in sink::script_paths(cmd) {
        if let Some(path) = sink::join_rel(base, &p) {
            s.refs.push(ScriptRef {
                path,
                rule: payload_rule,
                mode,
                origin: format!("{what} in {}", f.rel),
            });
        }
    }
}

/// A whole file that runs: each payload shape is a finding at its line.
fn whole_file(s: &mut Sink, f: &FileCtx, rule: &'static str, mode: Mode, what: &str) -> bool {
    let hits = payload::detect(f.text, mode);
    let mut lines = sink::LineCounter::default();
    for h in &hits {
        s.add(
            rule,
            f.rel,
            lines.at(f.text, h.start),
            format!("{what} {}", h.kind.describe()),
            evidence_at(f.text, h.start),
        );
    }
    !hits.is_empty()
}

fn unparseable(s: &mut Sink, f: &FileCtx, err: &dyn std::fmt::Display, payload_rule: &'static str) {
    s.add(
        "config-unparseable",
        f.rel,
        1,
        format!(
            "could not parse ({}); scanned as plain text",
            short(&err.to_string())
        ),
        String::new(),
    );
    whole_file(s, f, payload_rule, Mode::Auto, "unparseable configuration");
}

pub fn check(f: &FileCtx, s: &mut Sink) {
    check_hidden(f, s);
    match f.kind {
        FileKind::PackageJson => package_json(f, s),
        FileKind::ComposerJson => composer_json(f, s),
        FileKind::Pnpmfile => {
            if !whole_file(s, f, "npm-install-payload", Mode::Auto, "pnpm hook file") {
                s.add(
                    "npm-install-script",
                    f.rel,
                    1,
                    format!(
                        "pnpm runs {} on every install (readPackage/afterAllResolved hooks)",
                        f.name
                    ),
                    evidence_at(f.text, 0),
                );
            }
        }
        FileKind::Npmrc => npmrc(f, s),
        FileKind::Yarnrc | FileKind::YarnrcYml => yarnrc(f, s),
        FileKind::PipConf | FileKind::Requirements => pip_conf(f, s),
        FileKind::CargoConfig => cargo_config(f, s),
        FileKind::CargoToml => cargo_toml(f, s),
        FileKind::PyProject => pyproject(f, s),
        FileKind::SetupPy => setup_py(f, s),
        FileKind::SetupCfg | FileKind::PytestIni => pytest_ini(f, s),
        FileKind::Pth => pth(f, s),
        FileKind::SiteCustomize => {
            if !whole_file(
                s,
                f,
                "python-startup-payload",
                Mode::Auto,
                "Python start-up hook",
            ) {
                s.add(
                    "python-startup-hook",
                    f.rel,
                    1,
                    format!("{} runs at every Python start once on sys.path", f.name),
                    evidence_at(f.text, 0),
                );
            }
        }
        FileKind::Conftest => {
            whole_file(s, f, "pytest-conftest-payload", Mode::Agent, "conftest.py");
        }
        FileKind::BuildRs => build_rs(f, s),
        FileKind::GitModules => gitmodules(f, s),
        FileKind::GitConfig => git_config(f, s),
        FileKind::GitHook => git_hook(f, s),
        FileKind::VscodeTasks => vscode_tasks(f, s),
        FileKind::VscodeSettings => vscode_settings(f, s),
        FileKind::Devcontainer => devcontainer(f, s),
        FileKind::Envrc => {
            whole_file(s, f, "direnv-payload", Mode::Auto, ".envrc");
            s.add(
                "direnv-envrc",
                f.rel,
                1,
                "direnv runs this file in every shell that enters the directory, once allowed"
                    .into(),
                evidence_at(f.text, 0),
            );
            hooks_path_wiring(f, s);
        }
        FileKind::PreCommit => pre_commit(f, s),
        FileKind::BuildFile => {
            whole_file(s, f, "build-file-payload", Mode::Agent, "build file");
            if matches!(
                f.name.to_ascii_lowercase().as_str(),
                "makefile" | "gnumakefile"
            ) {
                make_default_goal(f, s);
            }
            hooks_path_wiring(f, s);
        }
        FileKind::AgentSettings => agent_settings(f, s),
        FileKind::CodexConfig => codex_config(f, s),
        FileKind::McpJson => mcp_json(f, s),
        FileKind::Instructions => instructions(f, s),
        FileKind::Doc => doc(f, s, true),
        FileKind::Dockerfile => doc(f, s, false),
        FileKind::Other => {
            doc(f, s, false);
            if is_script_name(f.name) {
                hooks_path_wiring(f, s);
            }
        }
    }
}

fn is_script_name(name: &str) -> bool {
    let l = name.to_ascii_lowercase();
    [
        ".sh", ".bash", ".zsh", ".js", ".cjs", ".mjs", ".ts", ".py", ".ps1", ".rb",
    ]
    .iter()
    .any(|e| l.ends_with(e))
}

// ---------------------------------------------------------------- hidden text

/// Hidden-text findings reported per file; the rest are counted in the last.
const MAX_HIDDEN_PER_FILE: usize = 50;

fn check_hidden(f: &FileCtx, s: &mut Sink) {
    let hits = hidden::scan(f.text);
    let total = hits.len();
    let mut lines = sink::LineCounter::default();
    for (i, h) in hits.into_iter().enumerate() {
        if i == MAX_HIDDEN_PER_FILE {
            if let Some(last) = s.findings.last_mut() {
                last.message.push_str(&format!(
                    " (and {} more hidden-text runs in this file)",
                    total - i
                ));
            }
            break;
        }
        let line = lines.at(f.text, h.start);
        let ev = evidence_at(f.text, h.start);
        let (rule, msg) = match h.kind {
            HiddenKind::Tags => (
                "hidden-unicode-tags",
                format!(
                    "{} invisible tag characters hide the text: {:?}",
                    h.count, h.decoded
                ),
            ),
            HiddenKind::VariationSelectors => (
                "variation-selector-smuggling",
                format!(
                    "{} variation selectors encode the bytes: {:?}",
                    h.count, h.decoded
                ),
            ),
            HiddenKind::Bidi => (
                "bidi-control",
                format!(
                    "bidirectional control characters on this line: {}",
                    h.decoded
                ),
            ),
            HiddenKind::ZeroWidth => ("zero-width-run", format!("run of {}", h.decoded)),
        };
        s.add(rule, f.rel, line, msg, ev);
    }
}

// ---------------------------------------------------------------- npm

const NPM_INSTALL_HOOKS: &[&str] = &[
    "preinstall",
    "install",
    "postinstall",
    "prepare",
    "preprepare",
    "postprepare",
    "prepublish",
    "dependencies",
];

static HUSKY: LazyLock<Regex> = LazyLock::new(|| {
    re(r"^\s*(?:npx\s+)?husky(?:\s+install)?(?:\s+[\w./-]+)?\s*(?:\|\|\s*true)?\s*$")
});
static HOOKS_PATH: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\bgit\s+config\s+(?:--?\w+\s+)*core\.hookspath\b|\bhusky\s+install\b|\bsimple-git-hooks\b|\blefthook\s+install\b",
    )
});

fn package_json(f: &FileCtx, s: &mut Sink) {
    let text = f.lossy();
    let v: Value = match serde_json::from_str(text.trim_start_matches('\u{FEFF}')) {
        Ok(v) => v,
        // npm refuses a package.json that is not strict JSON, so nothing in
        // it would run; still scan its text.
        Err(e) => return unparseable(s, f, &e, "npm-install-payload"),
    };
    let Some(scripts) = v.get("scripts").and_then(Value::as_object) else {
        return;
    };
    let base = f.dir();
    for (name, cmd) in scripts {
        let Some(cmd) = cmd.as_str() else { continue };
        let line = json_line(f.text, cmd, name);
        let install = NPM_INSTALL_HOOKS.contains(&name.as_str());
        if HUSKY.is_match(cmd.as_bytes()) || HOOKS_PATH.is_match(cmd.as_bytes()) {
            s.add(
                "git-hook",
                f.rel,
                line,
                format!(
                    "`{}` script wires committed git hooks into .git (they run on commit/push)",
                    short(name)
                ),
                clean(cmd.as_bytes()),
            );
            if HUSKY.is_match(cmd.as_bytes()) {
                continue;
            }
        }
        if install {
            command(
                s,
                f,
                base,
                cmd,
                &format!("`{}` lifecycle script", short(name)),
                line,
                Some("npm-install-script"),
                "npm-install-payload",
                Mode::Auto,
            );
        } else {
            command(
                s,
                f,
                base,
                cmd,
                &format!("`{}` script", short(name)),
                line,
                None,
                "npm-script-payload",
                Mode::Agent,
            );
        }
    }
}

// ---------------------------------------------------------------- make

/// Medium findings reported per Makefile default goal.
const MAX_MAKE_FINDINGS: usize = 20;

/// What a bare `make` runs: the default goal's recipes (and its
/// prerequisites'), judged as code that runs on its own. A payload there is
/// reported under the default-goal rule instead of the generic build-file
/// one on the same line.
fn make_default_goal(f: &FileCtx, s: &mut Sink) {
    let text = f.lossy();
    let Some(goal) = crate::makefile::default_goal(&text) else {
        return;
    };
    let base = f.dir();
    let what = format!("recipe of the default make goal `{}`", short(&goal.goal));
    let mut payload_lines = std::collections::HashSet::new();
    let mut medium = 0;
    for r in &goal.recipes {
        let hits = payload::detect(r.cmd.as_bytes(), Mode::Auto);
        for k in kinds(&hits) {
            payload_lines.insert(r.line);
            s.add(
                "make-default-target-payload",
                f.rel,
                r.line,
                format!("{what} {}", k.describe()),
                clean(r.cmd.as_bytes()),
            );
        }
        if hits.is_empty()
            && medium < MAX_MAKE_FINDINGS
            && let Some(why) = crate::makefile::unusual(&r.cmd)
        {
            medium += 1;
            s.add(
                "make-default-target",
                f.rel,
                r.line,
                format!("bare `make` {why} ({what})"),
                clean(r.cmd.as_bytes()),
            );
        }
        for p in sink::script_paths(&r.cmd) {
            if let Some(path) = sink::join_rel(base, &p) {
                s.refs.push(ScriptRef {
                    path,
                    rule: "make-default-target-payload",
                    mode: Mode::Auto,
                    origin: format!("{what} in {}", f.rel),
                });
            }
        }
    }
    s.findings.retain(|x| {
        !(x.rule == "build-file-payload" && x.path == f.rel && payload_lines.contains(&x.line))
    });
}

// ---------------------------------------------------------------- composer

/// Composer events fired by `composer install`/`update`/`create-project`
/// (and `dump-autoload`) without the user naming the script.
const COMPOSER_AUTO_EVENTS: &[&str] = &[
    "pre-install-cmd",
    "post-install-cmd",
    "pre-update-cmd",
    "post-update-cmd",
    "pre-autoload-dump",
    "post-autoload-dump",
    "post-root-package-install",
    "post-create-project-cmd",
    "pre-package-install",
    "post-package-install",
    "pre-package-update",
    "post-package-update",
    "pre-package-uninstall",
    "post-package-uninstall",
    "pre-dependencies-solving",
    "post-dependencies-solving",
    "pre-operations-exec",
    "pre-pool-create",
    "pre-file-download",
    "post-file-download",
    "pre-command-run",
    "init",
];

/// Most commands read from one script entry (an array of commands).
const COMPOSER_MAX_CMDS: usize = 64;

fn composer_json(f: &FileCtx, s: &mut Sink) {
    let text = f.lossy();
    let v: Value = match serde_json::from_str(text.trim_start_matches('\u{FEFF}')) {
        Ok(v) => v,
        // Composer refuses invalid JSON, so nothing in it would run; still
        // scan its text.
        Err(e) => return unparseable(s, f, &e, "composer-install-payload"),
    };
    let Some(scripts) = v.get("scripts").and_then(Value::as_object) else {
        return;
    };
    let base = f.dir();
    for (name, entry) in scripts {
        // A script is one command or a list of them.
        let cmds: Vec<&str> = match entry {
            Value::String(c) => vec![c.as_str()],
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .take(COMPOSER_MAX_CMDS)
                .collect(),
            _ => continue,
        };
        let auto = COMPOSER_AUTO_EVENTS.contains(&name.as_str());
        for cmd in cmds {
            let line = json_line(f.text, cmd, name);
            // `@php x.php` and `@composer ...` run PHP/Composer; `@other`
            // runs another script of this file, reported on its own.
            let shown = cmd.trim();
            let what = if auto {
                format!("Composer `{}` event script", short(name))
            } else {
                format!("Composer `{}` script", short(name))
            };
            // A PHP callback (`Vendor\\Pkg\\Class::method`) runs the class
            // file that the project's PSR-4 autoload map points at.
            if let Some(path) = psr4_class_file(&v, shown) {
                let rule = if auto {
                    "composer-install-payload"
                } else {
                    "composer-script-payload"
                };
                if let Some(path) = sink::join_rel(base, &path) {
                    s.refs.push(ScriptRef {
                        path,
                        rule,
                        mode: if auto { Mode::Auto } else { Mode::Agent },
                        origin: format!("{what} in {}", f.rel),
                    });
                }
            }
            if auto {
                command(
                    s,
                    f,
                    base,
                    shown,
                    &what,
                    line,
                    Some("composer-install-script"),
                    "composer-install-payload",
                    Mode::Auto,
                );
            } else {
                command(
                    s,
                    f,
                    base,
                    shown,
                    &what,
                    line,
                    None,
                    "composer-script-payload",
                    Mode::Agent,
                );
            }
        }
    }
}

/// The file a Composer PHP callback (`A\\B\\C::method`) loads, through the
/// package's own `autoload.psr-4` map (longest matching prefix).
fn psr4_class_file(composer: &Value, cmd: &str) -> Option<String> {
    let (class, method) = cmd.trim().split_once("::")?;
    let class = class.trim_start_matches('\\');
    let ok = |t: &str| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok(method) || !class.split('\\').all(ok) {
        return None;
    }
    let map = composer.get("autoload")?.get("psr-4")?.as_object()?;
    let (prefix, dirs) = map
        .iter()
        .filter(|(p, _)| class.starts_with(p.as_str()))
        .max_by_key(|(p, _)| p.len())?;
    let dir = match dirs {
        Value::String(d) => d.as_str(),
        Value::Array(a) => a.first()?.as_str()?,
        _ => return None,
    };
    let rest = class[prefix.len()..].replace('\\', "/");
    Some(format!("{}/{rest}.php", dir.trim_end_matches('/')))
}

// ---------------------------------------------------------------- registries

fn default_npm_registry(url: &str) -> bool {
    let u = url
        .trim()
        .trim_matches('"')
        .trim_end_matches('/')
        .to_ascii_lowercase();
    let host = u.split("://").nth(1).unwrap_or(&u);
    host == "registry.npmjs.org" || host == "registry.yarnpkg.com" || host == "registry.npmjs.com"
}

/// Lines of an ini-like file as (line number, key, value), comments dropped.
fn ini_lines(text: &str, sep: &[char]) -> Vec<(usize, String, String)> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') || l.starts_with('[') {
            continue;
        }
        if let Some(pos) = l.find(sep) {
            let k = l[..pos].trim().to_string();
            let v = l[pos + 1..]
                .trim()
                .trim_matches('"')
                .trim_matches('\'')
                .to_string();
            out.push((i + 1, k, v));
        }
    }
    out
}

fn npmrc(f: &FileCtx, s: &mut Sink) {
    let text = f.lossy();
    let base = f.dir();
    for (line, k, v) in ini_lines(&text, &['=']) {
        let kl = k.to_ascii_lowercase();
        let ev = format!("{k}={v}");
        if kl == "registry" || kl.ends_with(":registry") {
            if !default_npm_registry(&v) {
                s.add(
                    "registry-override",
                    f.rel,
                    line,
                    format!("npm installs from {}", short(&v)),
                    clean(ev.as_bytes()),
                );
            }
        } else if kl.starts_with("//")
            && (kl.contains("_authtoken") || kl.contains("_auth") || kl.contains("_password"))
        {
            let host = kl
                .trim_start_matches('/')
                .split([':', '/'])
                .next()
                .unwrap_or("");
            if !default_npm_registry(host) && v.contains("${") {
                s.add(
                    "registry-token-forward",
                    f.rel,
                    line,
                    format!("sends the token from {} to {}", short(&v), short(host)),
                    clean(ev.as_bytes()),
                );
            }
        } else if matches!(
            kl.as_str(),
            "script-shell" | "shell" | "onload-script" | "git" | "node-gyp" | "init-module"
        ) || (kl == "node-options"
            && (v.contains("--require")
                || v.contains("-r ")
                || v.contains("--import")
                || v.contains("--loader")
                || v.contains("--experimental-loader")))
        {
            command(
                s,
                f,
                base,
                &v,
                &format!("npm `{k}` setting"),
                line,
                Some("build-tool-wrapper"),
                "build-tool-wrapper-payload",
                Mode::Auto,
            );
        }
    }
}

fn yarnrc(f: &FileCtx, s: &mut Sink) {
    let text = f.lossy();
    let base = f.dir();
    let yml = f.kind == FileKind::YarnrcYml;
    let sep: &[char] = if yml { &[':'] } else { &[' ', '='] };
    let mut custom_server = false;
    for (line, k, v) in ini_lines(&text, sep) {
        let kl = k.trim_matches('"').to_ascii_lowercase();
        let ev = format!("{k}: {v}");
        match kl.as_str() {
            "npmregistryserver" | "registry" | "npmscopes"
                if !v.is_empty() && !default_npm_registry(&v) =>
            {
                custom_server = true;
                s.add(
                    "registry-override",
                    f.rel,
                    line,
                    format!("yarn installs from {}", short(&v)),
                    clean(ev.as_bytes()),
                );
            }
            "npmauthtoken" | "npmauthident" if custom_server && v.contains("${") => s.add(
                "registry-token-forward",
                f.rel,
                line,
                "sends a token from the environment to a non-default registry".into(),
                clean(ev.as_bytes()),
            ),
            "yarnpath" | "yarn-path" => {
                let path = v.trim_start_matches("./");
                if !path.starts_with(".yarn/releases/") {
                    command(
                        s,
                        f,
                        base,
                        &v,
                        "yarnPath (runs instead of yarn)",
                        line,
                        Some("build-tool-wrapper"),
                        "build-tool-wrapper-payload",
                        Mode::Auto,
                    );
                }
            }
            _ => {}
        }
    }
}

fn pip_conf(f: &FileCtx, s: &mut Sink) {
    let text = f.lossy();
    let default = |v: &str| {
        let l = v.to_ascii_lowercase();
        l.contains("://pypi.org/")
            || l.contains("://pypi.python.org/")
            || l.contains("://files.pythonhosted.org/")
    };
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        let (k, v) = if let Some(rest) = l.strip_prefix("--") {
            // requirements.txt options: --index-url URL / --extra-index-url=URL
            let mut it = rest.splitn(2, [' ', '=']);
            (
                it.next().unwrap_or("").to_string(),
                it.next().unwrap_or("").trim().to_string(),
            )
        } else if f.kind == FileKind::PipConf {
            match l.split_once('=') {
                Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
                None => continue,
            }
        } else {
            continue;
        };
        if matches!(
            k.as_str(),
            "index-url" | "extra-index-url" | "find-links" | "trusted-host" | "i"
        ) && !v.is_empty()
            && !default(&v)
        {
            s.add(
                "registry-override",
                f.rel,
                i + 1,
                format!("pip `{k}` set to {}", short(&v)),
                clean(l.as_bytes()),
            );
        }
    }
}

fn toml_parse(f: &FileCtx, s: &mut Sink, payload_rule: &'static str) -> Option<toml::Table> {
    match f.lossy().parse::<toml::Table>() {
        Ok(t) => Some(t),
        Err(e) => {
            unparseable(s, f, &e.message(), payload_rule);
            None
        }
    }
}

fn cargo_config(f: &FileCtx, s: &mut Sink) {
    let Some(t) = toml_parse(f, s, "build-tool-wrapper-payload") else {
        return;
    };
    // .cargo/config.toml paths are relative to the directory holding .cargo.
    let base = sink::parent(f.dir());
    if let Some(src) = t.get("source").and_then(|v| v.as_table()) {
        for (name, def) in src {
            if let Some(def) = def.as_table() {
                for key in ["replace-with", "registry", "local-registry", "directory"] {
                    if let Some(v) = def.get(key).and_then(|v| v.as_str())
                        && !(key == "registry" && v.contains("index.crates.io"))
                    {
                        s.add(
                            "registry-override",
                            f.rel,
                            line_of(f.text, &[v, key]),
                            format!("crates source `{}` {key} = {}", short(name), short(v)),
                            clean(format!("{key} = \"{v}\"").as_bytes()),
                        );
                    }
                }
            }
        }
    }
    let mut wrappers: Vec<(String, String)> = Vec::new();
    if let Some(b) = t.get("build").and_then(|v| v.as_table()) {
        for key in [
            "rustc-wrapper",
            "rustc-workspace-wrapper",
            "rustc",
            "rustdoc",
        ] {
            if let Some(v) = b.get(key).and_then(toml_cmd) {
                wrappers.push((format!("build.{key}"), v));
            }
        }
    }
    if let Some(tg) = t.get("target").and_then(|v| v.as_table()) {
        for (triple, def) in tg {
            if let Some(def) = def.as_table() {
                if let Some(v) = def.get("runner").and_then(toml_cmd) {
                    wrappers.push((format!("target.{triple}.runner"), v));
                }
                if let Some(v) = def.get("linker").and_then(toml_cmd)
                    && (v.starts_with('.') || (v.contains('/') && !v.starts_with('/')))
                {
                    wrappers.push((format!("target.{triple}.linker"), v));
                }
            }
        }
    }
    for (key, v) in wrappers {
        let line = line_of(f.text, &[&v, key.rsplit('.').next().unwrap_or(&key)]);
        command(
            s,
            f,
            base,
            &v,
            &format!("cargo `{}`", short(&key)),
            line,
            Some("build-tool-wrapper"),
            "build-tool-wrapper-payload",
            Mode::Auto,
        );
    }
}

fn toml_cmd(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

fn cargo_toml(f: &FileCtx, s: &mut Sink) {
    let Ok(t) = f.lossy().parse::<toml::Table>() else {
        return;
    };
    // A custom build script path: scan it as a build script.
    if let Some(b) = t
        .get("package")
        .and_then(|p| p.get("build"))
        .and_then(|b| b.as_str())
        && let Some(path) = sink::join_rel(f.dir(), b)
        && !path.ends_with("/build.rs")
        && path != "build.rs"
    {
        s.refs.push(ScriptRef {
            path,
            rule: "cargo-build-script-payload",
            mode: Mode::Auto,
            origin: format!("build script named in {}", f.rel),
        });
    }
}

static SETUP_CODE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\bcmdclass\b|\bsubprocess\b|\bos\.(?:system|popen|exec\w*|spawn\w*)\b|\burllib\b|\burlopen\b|\brequests\.|\bsocket\b|\bctypes\b|\bexec\s*\(|\beval\s*\(|\b__import__\s*\(",
    )
});

fn setup_py(f: &FileCtx, s: &mut Sink) {
    if whole_file(s, f, "python-setup-payload", Mode::Auto, "setup.py") {
        return;
    }
    if let Some(m) = SETUP_CODE.find(f.text) {
        s.add(
            "python-setup-code",
            f.rel,
            line_at(f.text, m.start()),
            format!(
                "setup.py runs more than setup() on install (`{}`)",
                short(&String::from_utf8_lossy(m.as_bytes()))
            ),
            evidence_at(f.text, m.start()),
        );
    }
    pytest11_plugin(f, s);
}

/// A `pytest11` entry point registers a plugin that loads into every pytest
/// run in the environment.
fn pytest11_plugin(f: &FileCtx, s: &mut Sink) {
    if let Some(at) = memchr::memmem::find(f.text, b"pytest11") {
        s.add(
            "pytest-plugin",
            f.rel,
            line_of(f.text, &["pytest11"]),
            "registers a pytest11 plugin that loads into every pytest run in the environment"
                .into(),
            evidence_at(f.text, at),
        );
    }
}

fn pyproject(f: &FileCtx, s: &mut Sink) {
    let Some(t) = toml_parse(f, s, "python-inline-backend-payload") else {
        return;
    };
    let base = f.dir();
    if let Some(bs) = t.get("build-system").and_then(|v| v.as_table())
        && let Some(paths) = bs.get("backend-path").and_then(|v| v.as_array())
    {
        let backend = bs
            .get("build-backend")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        s.add(
            "python-inline-backend",
            f.rel,
            line_of(f.text, &["backend-path"]),
            format!(
                "pip imports the in-tree build backend `{}` on install",
                short(backend)
            ),
            evidence_at(
                f.text,
                memchr::memmem::find(f.text, b"backend-path").unwrap_or(0),
            ),
        );
        let module = backend.split(':').next().unwrap_or("").replace('.', "/");
        for p in paths.iter().filter_map(|p| p.as_str()) {
            for cand in [
                format!("{p}/{module}.py"),
                format!("{p}/{module}/__init__.py"),
            ] {
                if let Some(path) = sink::join_rel(base, &cand) {
                    s.refs.push(ScriptRef {
                        path,
                        rule: "python-inline-backend-payload",
                        mode: Mode::Auto,
                        origin: format!("build backend named in {}", f.rel),
                    });
                }
            }
        }
    }
    // Hatch build hooks run hatch_build.py (or a configured path) on build.
    let hatch_hooks = t.get("tool").and_then(|v| v.get("hatch")).and_then(|h| {
        let b = h
            .get("build")
            .and_then(|b| b.get("hooks"))
            .and_then(|x| x.get("custom"));
        let m = h
            .get("metadata")
            .and_then(|b| b.get("hooks"))
            .and_then(|x| x.get("custom"));
        b.or(m)
    });
    if let Some(custom) = hatch_hooks {
        let path = custom
            .get("path")
            .and_then(|p| p.as_str())
            .unwrap_or("hatch_build.py");
        s.add(
            "python-inline-backend",
            f.rel,
            line_of(f.text, &["hooks.custom", "custom"]),
            format!(
                "hatch runs the in-tree build hook `{}` on install",
                short(path)
            ),
            clean(path.as_bytes()),
        );
        if let Some(p) = sink::join_rel(base, path) {
            s.refs.push(ScriptRef {
                path: p,
                rule: "python-inline-backend-payload",
                mode: Mode::Auto,
                origin: format!("hatch build hook named in {}", f.rel),
            });
        }
    }
    let ep = t
        .get("project")
        .and_then(|p| p.get("entry-points"))
        .and_then(|e| e.get("pytest11"));
    let poetry = t
        .get("tool")
        .and_then(|x| x.get("poetry"))
        .and_then(|p| p.get("plugins"))
        .and_then(|e| e.get("pytest11"));
    if ep.or(poetry).is_some() {
        s.add(
            "pytest-plugin",
            f.rel,
            line_of(f.text, &["pytest11"]),
            "registers a pytest11 plugin that loads into every pytest run in the environment"
                .into(),
            evidence_at(
                f.text,
                memchr::memmem::find(f.text, b"pytest11").unwrap_or(0),
            ),
        );
    }
    if let Some(addopts) = t
        .get("tool")
        .and_then(|x| x.get("pytest"))
        .and_then(|p| p.get("ini_options"))
        .and_then(|o| o.get("addopts"))
        .and_then(toml_cmd)
    {
        addopts_plugins(f, s, &addopts);
    }
}

static P_PLUGIN: LazyLock<Regex> = LazyLock::new(|| re(r"(?:^|\s)-p\s*([A-Za-z_][\w.]*)"));

fn addopts_plugins(f: &FileCtx, s: &mut Sink, addopts: &str) {
    for c in P_PLUGIN.captures_iter(addopts.as_bytes()) {
        let name = String::from_utf8_lossy(&c[1]);
        if name.starts_with("no:") || name == "no" {
            continue;
        }
        s.add(
            "pytest-plugin",
            f.rel,
            line_of(f.text, &["addopts"]),
            format!("pytest loads plugin `{}` on every run", short(&name)),
            clean(addopts.as_bytes()),
        );
        // A module in the project: scan it as code that runs with the tests.
        let path = format!("{}.py", name.replace('.', "/"));
        if let Some(p) = sink::join_rel(f.dir(), &path) {
            s.refs.push(ScriptRef {
                path: p,
                rule: "pytest-conftest-payload",
                mode: Mode::Agent,
                origin: format!("pytest plugin loaded by {}", f.rel),
            });
        }
    }
}

fn pytest_ini(f: &FileCtx, s: &mut Sink) {
    let text = f.lossy();
    for (_, k, v) in ini_lines(&text, &['=']) {
        if k == "addopts" {
            addopts_plugins(f, s, &v);
        }
    }
    if f.kind == FileKind::SetupCfg {
        pytest11_plugin(f, s);
    }
}

fn pth(f: &FileCtx, s: &mut Sink) {
    let mut first_import: Option<usize> = None;
    let mut off = 0;
    for l in f.text.split(|&b| b == b'\n') {
        if l.starts_with(b"import ") || l.starts_with(b"import\t") {
            let hits = payload::detect(l, Mode::Auto);
            for k in kinds(&hits) {
                s.add(
                    "python-startup-payload",
                    f.rel,
                    line_at(f.text, off),
                    format!(".pth import line {}", k.describe()),
                    evidence_at(f.text, off),
                );
            }
            if hits.is_empty() && first_import.is_none() {
                first_import = Some(off);
            }
        }
        off += l.len() + 1;
    }
    if let Some(off) = first_import {
        s.add(
            "python-startup-hook",
            f.rel,
            line_at(f.text, off),
            ".pth file with an import line: Python runs it at every start once the file is in site-packages".into(),
            evidence_at(f.text, off),
        );
    }
}

static BUILD_RS_CODE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r#"\bCommand::new\b|\bprocess::Command\b|\bTcpStream\b|\bUdpSocket\b|\breqwest\b|\bureq\b|\bcurl::|\bhome_dir\b|\bvar(?:_os)?\(\s*"HOME"\s*\)"#,
    )
});

fn build_rs(f: &FileCtx, s: &mut Sink) {
    if whole_file(s, f, "cargo-build-script-payload", Mode::Auto, "build.rs") {
        return;
    }
    if let Some(m) = BUILD_RS_CODE.find(f.text) {
        s.add(
            "cargo-build-script",
            f.rel,
            line_at(f.text, m.start()),
            format!(
                "build script uses `{}` (runs on build and when an editor opens the project)",
                short(&String::from_utf8_lossy(m.as_bytes()))
            ),
            evidence_at(f.text, m.start()),
        );
    }
}

// ---------------------------------------------------------------- git

fn gitmodules(f: &FileCtx, s: &mut Sink) {
    let text = f.lossy();
    for (line, k, v) in ini_lines(&text, &['=']) {
        let kl = k.to_ascii_lowercase();
        let bad = match kl.as_str() {
            "url" => {
                let vl = v.to_ascii_lowercase();
                vl.starts_with("ext::") || vl.starts_with("fd::") || v.starts_with('-')
            }
            "update" => v.starts_with('!'),
            "path" => v.starts_with('-'),
            _ => false,
        };
        if bad {
            s.add(
                "gitmodules-command",
                f.rel,
                line,
                format!("submodule `{k}` makes git run a command: {}", short(&v)),
                clean(format!("{k} = {v}").as_bytes()),
            );
        }
    }
}

fn git_config(f: &FileCtx, s: &mut Sink) {
    let text = f.lossy();
    let mut section = String::new();
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if l.starts_with('[') {
            section = l
                .trim_matches(|c| c == '[' || c == ']')
                .split_whitespace()
                .next()
                .unwrap_or("")
                .to_ascii_lowercase();
            continue;
        }
        let Some((k, v)) = l.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().trim_matches('"'));
        let runs = match (section.as_str(), k.as_str()) {
            (
                "core",
                "hookspath" | "fsmonitor" | "sshcommand" | "pager" | "editor" | "askpass"
                | "gitproxy",
            ) => !(k == "fsmonitor" && matches!(v, "true" | "false")),
            ("credential", "helper") => v.starts_with('!'),
            ("alias", _) => v.starts_with('!'),
            ("filter", "clean" | "smudge" | "process")
            | ("diff", "textconv" | "command")
            | ("merge", "driver") => !v.starts_with("git-lfs"),
            ("sequence", "editor")
            | ("gpg", "program")
            | ("include", "path")
            | ("includeif", "path") => true,
            _ => false,
        };
        if runs {
            command(
                s,
                f,
                sink::parent(f.dir()),
                v,
                &format!("git config `{section}.{k}`"),
                i + 1,
                Some("git-hook"),
                "git-hook-payload",
                Mode::Auto,
            );
        }
    }
}

fn git_hook(f: &FileCtx, s: &mut Sink) {
    let found = whole_file(s, f, "git-hook-payload", Mode::Auto, "git hook");
    if !found && f.rel.contains(".git/hooks/") {
        s.add(
            "git-hook",
            f.rel,
            1,
            "an active hook inside .git/hooks; a fresh clone never has one, so it came with the tree".into(),
            evidence_at(f.text, 0),
        );
    }
}

static HOOKS_PATH_GATE: LazyLock<Regex> =
    LazyLock::new(|| re(r"hooksPath|hookspath|HOOKSPATH|husky|simple-git-hooks|lefthook"));

fn hooks_path_wiring(f: &FileCtx, s: &mut Sink) {
    if !HOOKS_PATH_GATE.is_match(f.text) {
        return;
    }
    if let Some(m) = HOOKS_PATH.find(f.text) {
        s.add(
            "git-hook",
            f.rel,
            line_at(f.text, m.start()),
            "wires committed git hooks into .git (they run on commit/push)".into(),
            evidence_at(f.text, m.start()),
        );
    }
}

// ---------------------------------------------------------------- editors

fn json_cmd(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(a) => Some(
            a.iter()
                .filter_map(|x| x.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

fn vscode_tasks(f: &FileCtx, s: &mut Sink) {
    let v = match jsonc::parse(&f.lossy()) {
        Ok(v) => v,
        Err(e) => return unparseable(s, f, &e, "vscode-task-payload"),
    };
    let Some(tasks) = v.get("tasks").and_then(Value::as_array) else {
        return;
    };
    let base = f.project_dir();
    for t in tasks {
        let label = t
            .get("label")
            .and_then(Value::as_str)
            .unwrap_or("(unnamed)");
        let folder_open = t
            .get("runOptions")
            .and_then(|r| r.get("runOn"))
            .and_then(Value::as_str)
            == Some("folderOpen");
        let mut cmds = Vec::new();
        for scope in [Some(t), t.get("linux"), t.get("osx"), t.get("windows")]
            .into_iter()
            .flatten()
        {
            if let Some(c) = scope.get("command").and_then(json_cmd) {
                let args = scope.get("args").and_then(json_cmd).unwrap_or_default();
                cmds.push(format!("{c} {args}").trim().to_string());
            }
        }
        for c in cmds {
            let line = json_line(f.text, &c, "command");
            let what = if folder_open {
                format!("task `{}` (runs on folder open)", short(label))
            } else {
                format!("task `{}`", short(label))
            };
            command(
                s,
                f,
                base,
                &c,
                &what,
                line,
                folder_open.then_some("vscode-folder-open-task"),
                "vscode-task-payload",
                if folder_open { Mode::Auto } else { Mode::Agent },
            );
        }
    }
}

const EXEC_SETTING_SUFFIXES: &[&str] = &[
    "path",
    "executablepath",
    "serverpath",
    "interpreterpath",
    "defaultinterpreterpath",
    "pythonpath",
    "overridecommand",
    "command",
    "runtime",
    "nodepath",
    "shell.linux",
    "shell.osx",
    "shell.windows",
];

fn vscode_settings(f: &FileCtx, s: &mut Sink) {
    let v = match jsonc::parse(&f.lossy()) {
        Ok(v) => v,
        Err(e) => return unparseable(s, f, &e, "vscode-settings-payload"),
    };
    let mut flat = Vec::new();
    flatten("", &v, &mut flat, 0);
    let base = f.project_dir();
    for (key, val) in flat {
        let kl = key.to_ascii_lowercase();
        let line = line_of(
            f.text,
            &[
                &format!("\"{}\"", key.rsplit('.').next().unwrap_or(&key)),
                &val,
            ],
        );
        let truthy = !matches!(val.as_str(), "false" | "off" | "" | "null" | "0");
        if (kl.contains("autoapprove")
            || kl.contains("auto-approve")
            || kl.contains("yolo")
            || kl.contains("alwaysallow"))
            && truthy
        {
            s.add(
                "vscode-auto-approve",
                f.rel,
                line,
                format!("`{}` auto-approves agent actions", short(&key)),
                clean(format!("{key}: {val}").as_bytes()),
            );
            continue;
        }
        if kl == "task.allowautomatictasks" && val == "on" {
            s.add(
                "vscode-auto-approve",
                f.rel,
                line,
                "`task.allowAutomaticTasks: on` runs folder-open tasks without asking".into(),
                clean(format!("{key}: {val}").as_bytes()),
            );
            continue;
        }
        let hits = payload::detect(val.as_bytes(), Mode::Auto);
        for k in kinds(&hits) {
            s.add(
                "vscode-settings-payload",
                f.rel,
                line,
                format!("setting `{}` {}", short(&key), k.describe()),
                clean(format!("{key}: {val}").as_bytes()),
            );
        }
        if !hits.is_empty() {
            continue;
        }
        let exec_key = EXEC_SETTING_SUFFIXES.iter().any(|suf| kl.ends_with(suf))
            || kl.starts_with("terminal.integrated.profiles.")
            || kl.starts_with("terminal.integrated.automationprofile")
            || kl.starts_with("go.alternatetools");
        let env_key = kl.starts_with("terminal.integrated.env.")
            && [
                "ld_preload",
                "node_options",
                "pythonstartup",
                "bash_env",
                "prompt_command",
                "path",
            ]
            .iter()
            .any(|e| kl.ends_with(e));
        let in_repo = val.starts_with("./")
            || val.starts_with("../")
            || val.contains("${workspaceFolder}")
            || val.contains("${workspaceRoot}")
            || (!val.starts_with('/') && !val.contains(':') && val.contains('/'));
        if (exec_key && in_repo) || env_key {
            s.add(
                "vscode-executable-path",
                f.rel,
                line,
                format!("`{}` makes the editor run {}", short(&key), short(&val)),
                clean(format!("{key}: {val}").as_bytes()),
            );
            for p in sink::script_paths(&val) {
                if let Some(path) = sink::join_rel(base, &p) {
                    s.refs.push(ScriptRef {
                        path,
                        rule: "vscode-settings-payload",
                        mode: Mode::Auto,
                        origin: format!("setting `{}` in {}", short(&key), f.rel),
                    });
                }
            }
        }
    }
}

/// (dotted key, scalar as string) for every scalar, bounded in depth.
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>, depth: usize) {
    if depth > 16 || out.len() > 10_000 {
        return;
    }
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                flatten(&join(k), x, out, depth + 1);
            }
        }
        Value::Array(a) => {
            for x in a {
                flatten(prefix, x, out, depth + 1);
            }
        }
        Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
}

const DEVCONTAINER_HOOKS: &[&str] = &[
    "initializeCommand",
    "onCreateCommand",
    "updateContentCommand",
    "postCreateCommand",
    "postStartCommand",
    "postAttachCommand",
];

fn devcontainer(f: &FileCtx, s: &mut Sink) {
    let v = match jsonc::parse(&f.lossy()) {
        Ok(v) => v,
        Err(e) => return unparseable(s, f, &e, "devcontainer-payload"),
    };
    let base = f.project_dir();
    for key in DEVCONTAINER_HOOKS {
        let Some(val) = v.get(*key) else { continue };
        let mut cmds = Vec::new();
        match val {
            Value::Object(m) => cmds.extend(m.values().filter_map(json_cmd)),
            other => cmds.extend(json_cmd(other)),
        }
        let what = if *key == "initializeCommand" {
            format!("`{key}` (runs on the host)")
        } else {
            format!("`{key}`")
        };
        for c in cmds {
            let line = json_line(f.text, &c, key);
            command(
                s,
                f,
                base,
                &c,
                &what,
                line,
                Some("devcontainer-lifecycle"),
                "devcontainer-payload",
                Mode::Auto,
            );
        }
    }
}

fn pre_commit(f: &FileCtx, s: &mut Sink) {
    let text = f.lossy();
    let mut local = false;
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if let Some(repo) = l
            .strip_prefix("- repo:")
            .or_else(|| l.strip_prefix("-   repo:"))
        {
            local = matches!(repo.trim().trim_matches(['"', '\'']), "local" | "meta");
            local &= repo.trim().trim_matches(['"', '\'']) == "local";
            continue;
        }
        if !local {
            continue;
        }
        let l = l.trim_start_matches("- ");
        if let Some(entry) = l.strip_prefix("entry:") {
            let entry = entry.trim().trim_matches(['"', '\'']);
            command(
                s,
                f,
                f.dir(),
                entry,
                "pre-commit local hook",
                i + 1,
                Some("pre-commit-local-hook"),
                "pre-commit-payload",
                Mode::Agent,
            );
        }
    }
}

// ---------------------------------------------------------------- agents

fn agent_settings(f: &FileCtx, s: &mut Sink) {
    let v = match jsonc::parse(&f.lossy()) {
        Ok(v) => v,
        Err(e) => return unparseable(s, f, &e, "claude-hooks-payload"),
    };
    let base = f.project_dir();
    // Hooks: every "command" string under "hooks".
    if let Some(h) = v.get("hooks") {
        let mut cmds = Vec::new();
        collect_commands(h, &mut cmds, 0);
        for c in cmds {
            let line = json_line(f.text, &c, "command");
            command(
                s,
                f,
                base,
                &c,
                "agent hook",
                line,
                Some("claude-hooks"),
                "claude-hooks-payload",
                Mode::Auto,
            );
        }
    }
    for key in [
        "apiKeyHelper",
        "awsCredentialExport",
        "awsAuthRefresh",
        "otelHeadersHelper",
    ] {
        if let Some(c) = v.get(key).and_then(Value::as_str) {
            let line = json_line(f.text, c, key);
            command(
                s,
                f,
                base,
                c,
                &format!("`{key}`"),
                line,
                Some("claude-hooks"),
                "claude-hooks-payload",
                Mode::Auto,
            );
        }
    }
    if let Some(c) = v
        .get("statusLine")
        .and_then(|x| x.get("command"))
        .and_then(Value::as_str)
    {
        let line = json_line(f.text, c, "statusLine");
        command(
            s,
            f,
            base,
            c,
            "status line command",
            line,
            Some("claude-hooks"),
            "claude-hooks-payload",
            Mode::Auto,
        );
    }
    let bypass = |s: &mut Sink, what: String, needle: &str| {
        s.add(
            "agent-approval-bypass",
            f.rel,
            line_of(f.text, &[needle]),
            what,
            evidence_at(
                f.text,
                memchr::memmem::find(f.text, needle.as_bytes()).unwrap_or(0),
            ),
        );
    };
    if let Some(p) = v.get("permissions") {
        if let Some(mode) = p.get("defaultMode").and_then(Value::as_str)
            && matches!(mode, "bypassPermissions" | "dontAsk")
        {
            bypass(
                s,
                format!("permissions.defaultMode = {mode}: the agent runs anything without asking"),
                mode,
            );
        }
        if let Some(allow) = p.get("allow").and_then(Value::as_array) {
            for a in allow.iter().filter_map(Value::as_str) {
                if broad_allow(a) {
                    bypass(
                        s,
                        format!(
                            "allow rule `{}` lets the agent run arbitrary commands without asking",
                            short(a)
                        ),
                        a,
                    );
                }
            }
        }
    }
    if v.get("enableAllProjectMcpServers").and_then(Value::as_bool) == Some(true) {
        bypass(
            s,
            "enableAllProjectMcpServers starts every project MCP server without asking".into(),
            "enableAllProjectMcpServers",
        );
    }
    if let Some(list) = v.get("enabledMcpjsonServers").and_then(Value::as_array)
        && !list.is_empty()
    {
        bypass(
            s,
            "enabledMcpjsonServers approves project MCP servers on the user's behalf".into(),
            "enabledMcpjsonServers",
        );
    }
    for key in ["autoAccept", "yolo", "yoloMode"] {
        let val = v
            .get(key)
            .or_else(|| v.get("tools").and_then(|t| t.get(key)));
        if val.and_then(Value::as_bool) == Some(true) {
            bypass(
                s,
                format!("`{key}: true` runs tools without confirmation"),
                key,
            );
        }
    }
    if let Some(env) = v.get("env").and_then(Value::as_object) {
        for (k, val) in env {
            let ku = k.to_ascii_uppercase();
            if ku.ends_with("_BASE_URL")
                || ku == "HTTPS_PROXY"
                || ku == "HTTP_PROXY"
                || ku.ends_with("_API_URL")
            {
                bypass(
                    s,
                    format!(
                        "`env.{}` sends the agent's API traffic (and key) to {}",
                        short(k),
                        short(&val.to_string())
                    ),
                    k,
                );
            }
        }
    }
    mcp_servers(f, s, &v);
}

fn broad_allow(a: &str) -> bool {
    let a = a.trim();
    if matches!(a, "Bash" | "Bash(*)" | "Bash(:*)" | "*" | "Bash(**)") {
        return true;
    }
    let Some(inner) = a.strip_prefix("Bash(").and_then(|x| x.strip_suffix(')')) else {
        return false;
    };
    let cmd = inner.split([':', ' ']).next().unwrap_or("");
    matches!(
        cmd,
        "sh" | "bash"
            | "zsh"
            | "curl"
            | "wget"
            | "python"
            | "python3"
            | "node"
            | "perl"
            | "ruby"
            | "eval"
            | "env"
            | "sudo"
            | "nc"
            | "npx"
            | "xargs"
            | "*"
    )
}

fn collect_commands(v: &Value, out: &mut Vec<String>, depth: usize) {
    if depth > 12 || out.len() > 1000 {
        return;
    }
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "command" {
                    if let Some(c) = json_cmd(x) {
                        out.push(c);
                    }
                } else {
                    collect_commands(x, out, depth + 1);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_commands(x, out, depth + 1)),
        _ => {}
    }
}

fn mcp_servers(f: &FileCtx, s: &mut Sink, v: &Value) {
    let base = f.project_dir();
    for key in ["mcpServers", "servers", "mcp_servers", "context_servers"] {
        let Some(m) = v.get(key).and_then(Value::as_object) else {
            continue;
        };
        for (name, def) in m {
            let Some(cmd) = def.get("command").and_then(json_cmd) else {
                continue;
            };
            let args = def.get("args").and_then(json_cmd).unwrap_or_default();
            let full = format!("{cmd} {args}").trim().to_string();
            let line = json_line(f.text, &cmd, name);
            command(
                s,
                f,
                base,
                &full,
                &format!("MCP server `{}`", short(name)),
                line,
                Some("mcp-server-command"),
                "mcp-server-payload",
                Mode::Auto,
            );
        }
    }
}

fn mcp_json(f: &FileCtx, s: &mut Sink) {
    match jsonc::parse(&f.lossy()) {
        Ok(v) => mcp_servers(f, s, &v),
        Err(e) => unparseable(s, f, &e, "mcp-server-payload"),
    }
}

fn codex_config(f: &FileCtx, s: &mut Sink) {
    let Some(t) = toml_parse(f, s, "mcp-server-payload") else {
        return;
    };
    let get = |k: &str| t.get(k).and_then(|v| v.as_str()).map(str::to_string);
    if get("approval_policy").as_deref() == Some("never") {
        s.add(
            "agent-approval-bypass",
            f.rel,
            line_of(f.text, &["approval_policy"]),
            "approval_policy = never: Codex runs commands without asking".into(),
            evidence_at(
                f.text,
                memchr::memmem::find(f.text, b"approval_policy").unwrap_or(0),
            ),
        );
    }
    if get("sandbox_mode").as_deref() == Some("danger-full-access") {
        s.add(
            "agent-approval-bypass",
            f.rel,
            line_of(f.text, &["sandbox_mode"]),
            "sandbox_mode = danger-full-access: Codex runs without its sandbox".into(),
            evidence_at(
                f.text,
                memchr::memmem::find(f.text, b"sandbox_mode").unwrap_or(0),
            ),
        );
    }
    if let Some(m) = t.get("mcp_servers").and_then(|v| v.as_table()) {
        for (name, def) in m {
            let Some(cmd) = def.get("command").and_then(toml_cmd) else {
                continue;
            };
            let args = def.get("args").and_then(toml_cmd).unwrap_or_default();
            let full = format!("{cmd} {args}").trim().to_string();
            let line = line_of(f.text, &[&cmd, name]);
            command(
                s,
                f,
                f.project_dir(),
                &full,
                &format!("MCP server `{}`", short(name)),
                line,
                Some("mcp-server-command"),
                "mcp-server-payload",
                Mode::Auto,
            );
        }
    }
}

// ---------------------------------------------------------------- text an agent reads

/// Phrases that tell the reader to run something (and phrases addressing an
/// agent), checked near a fetch-and-execute command.
static RUN_PHRASE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"\b[Rr]un\b|\bRUN\s+(?:THIS|THE\s+FOLLOWING)\b|\b[Ee]xecute\b|\b[Pp]aste\b|\b[Ii]nstall(?:ed)?\s+(?:it\s+)?(?:with|using|via|by)\b|\b[Tt]o\s+(?:fix|resolve|continue|proceed|repair|install|set\s*up|get\s+started)\b|\b[Yy]ou\s+(?:must|need\s+to|should|have\s+to)\b|\b[Pp]lease\b|\b[Ff]irst\b|\b[Bb]efore\s+(?:running|building|you|continuing|proceeding)\b|\b[Rr]equired\b|\b[Ff]ix\s+(?:this|it)\s+by\b|\b[Ss]imply\b|\b(?:AI|LLM|[Aa]gent|[Aa]ssistant|Claude|Copilot|Cursor|Codex|Gemini)\b",
    )
});

/// Text that steers an agent against its user: counts in any doc.
static STEER: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"(?i)\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+)?(?:of\s+)?(?:the\s+|your\s+)?(?:previous|prior|above|earlier|preceding|user'?s?|system|original)\s+(?:instructions|prompts?|messages|rules|directions|guidelines)",
        r"|\b(?:do\s+not|don'?t|never)\s+(?:tell|inform|mention|reveal|show|report|disclose|notify|alert)\s+(?:\w+\s+){0,3}?(?:to\s+)?(?:the\s+)?(?:user|human|developer|operator|reviewer)s?\b",
        r"|\bwithout\s+(?:asking|telling|informing|notifying|alerting|confirming\s+with)\s+(?:the\s+)?(?:user|human|developer)",
        r"|\b(?:hide|conceal)\s+(?:this|these|the|all|any|your)\s+(?:\w+\s+)?(?:actions?|commands?|changes|steps|output|instructions?|activity)\s+from\b",
        r"|\b(?:silently|quietly|secretly|covertly)\s+(?:run|execute|install|download|send|upload|fetch|modify|add|write)\b"
    ))
});

/// Weaker steering that is ordinary in CLI docs ("do not ask for
/// confirmation" describes a flag) but not in an agent's instructions.
static STEER_AGENT: LazyLock<Regex> = LazyLock::new(|| {
    re(concat!(
        r"(?i)\b(?:do\s+not|don'?t|never)\s+(?:ask|wait)\s+(?:the\s+user\s+)?for\s+(?:\w+\s+)?(?:confirmation|permission|approval)",
        r"|\b(?:hide|conceal)\s+(?:this|these|the|all|any|your)\s+(?:\w+\s+)?(?:actions?|commands?|changes|steps|output|instructions?|activity)\b",
        r"|\b(?:skip|bypass|disable)\s+(?:the\s+|any\s+|all\s+)?(?:user'?s?\s+)?(?:approval|confirmation|permission\s+(?:checks?|prompts?)|security\s+(?:checks?|scans?|review)|sandbox)"
    ))
});

static SECRET_PATH: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)~/\.(?:ssh|aws|gnupg|netrc|npmrc|pypirc|docker|kube|config/gh)\b|\bid_(?:rsa|ed25519|ecdsa)\b|\.git-credentials\b|/etc/shadow\b|\bprintenv\b|\bprocess\.env\b|\bos\.environ\b|\b(?:api[_ -]?keys?|access[_ -]?tokens?|auth[_ -]?tokens?|secrets?|credentials?|passwords?|private\s+keys?|env(?:ironment)?\s+var(?:iable)?s?)\b",
    )
});
static SECRET_CONCRETE: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)~/\.(?:ssh|aws|gnupg|netrc|npmrc|pypirc|docker|kube|config/gh)\b|\bid_(?:rsa|ed25519|ecdsa)\b|\.git-credentials\b|/etc/shadow\b|\bprintenv\b",
    )
});
static SECRET_VERB: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(?:send|upload|post|exfiltrate|transmit|forward|share|e-?mail|paste|include|attach|append|print|cat|read|dump|collect|copy|leak|output|encode)\b",
    )
});
static SECRET_DEST: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)https?://|\bwebhook|\bcurl\b|\bwget\b|\bto\s+(?:this|the\s+following|our|my)\s+(?:url|endpoint|server|address|webhook)",
    )
});
static WRITE_VERB: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?i)\b(?:write|add|append|copy|cp|echo|tee|modify|edit|create|install|put|insert|overwrite|replace|update|ln)\b",
    )
});
static NEGATION: LazyLock<Regex> =
    LazyLock::new(|| re(r"(?i)\b(?:never|not|don'?t|avoid|must\s+not|no|without)\b"));

/// Well-known installers: ordinary in a README (host + path prefix).
const KNOWN_INSTALLERS: &[&str] = &[
    "sh.rustup.rs",
    "static.rust-lang.org/rustup",
    "raw.githubusercontent.com/nvm-sh/nvm/",
    "raw.githubusercontent.com/homebrew/install/",
    "install.python-poetry.org",
    "bun.sh/install",
    "deno.land/install.sh",
    "deno.land/x/install",
    "astral.sh/uv/",
    "astral.sh/ruff/",
    "get.pnpm.io/install.sh",
    "get.docker.com",
    "deb.nodesource.com/setup",
    "rpm.nodesource.com/setup",
    "sdk.cloud.google.com",
    "get.sdkman.io",
    "nixos.org/nix/install",
    "install.determinate.systems/nix",
    "starship.rs/install.sh",
    "raw.githubusercontent.com/ohmyzsh/ohmyzsh/",
    "get.rvm.io",
    "fnm.vercel.app/install",
    "get.volta.sh",
    "foundry.paradigm.xyz",
    "claude.ai/install.sh",
    "ollama.com/install.sh",
    "pyenv.run",
    "get.haskellstack.org",
    "get-ghcup.haskell.org",
    "install.julialang.org",
    "tailscale.com/install.sh",
    "get.k3s.io",
    "mise.run",
    "dot.net/v1/dotnet-install.sh",
    "raw.githubusercontent.com/leanprover/elan/",
    "raw.githubusercontent.com/golangci/golangci-lint/",
    "bootstrap.pypa.io/get-pip.py",
    "cli.github.com",
    "raw.githubusercontent.com/helm/helm/",
    "get.helm.sh",
    "opencode.ai/install",
    "cursor.com/install",
];

static URL: LazyLock<Regex> = LazyLock::new(|| re(r"(?i)https?://([^\s'`)|;&]+)"));

fn known_installer(line: &[u8]) -> bool {
    let mut any = false;
    for c in URL.captures_iter(line) {
        any = true;
        let u = String::from_utf8_lossy(&c[1]).to_ascii_lowercase();
        let u = u.trim_matches('"');
        if !KNOWN_INSTALLERS.iter().any(|k| u.starts_with(k)) {
            return false;
        }
    }
    // sh.rustup.rs is often written without a scheme.
    any || memchr::memmem::find(line, b"sh.rustup.rs").is_some()
}

/// The text of the hit's line and up to three lines before it.
fn context_before(text: &[u8], at: usize) -> &[u8] {
    let (ls, le) = payload::line_bounds(text, at, 400);
    let mut start = ls;
    for _ in 0..3 {
        if start == 0 {
            break;
        }
        let lo = start.saturating_sub(400);
        start = memchr::memrchr(b'\n', &text[lo..start - 1]).map_or(lo, |i| lo + i + 1);
    }
    &text[start..le]
}

/// Docs (`is_doc`), source files and anything else an agent may read.
fn doc(f: &FileCtx, s: &mut Sink, is_doc: bool) {
    let hits = payload::detect(f.text, if is_doc { Mode::Text } else { Mode::Code });
    let mut lines = sink::LineCounter::default();
    for h in hits {
        let line = lines.at(f.text, h.start);
        let ev = evidence_at(f.text, h.start);
        if h.kind != Kind::FetchExec {
            s.add(
                "payload-shape",
                f.rel,
                line,
                format!("this text {}", h.kind.describe()),
                ev,
            );
            continue;
        }
        let (ls, le) = payload::line_bounds(f.text, h.start, 400);
        if known_installer(&f.text[ls..le]) {
            s.add(
                "known-installer",
                f.rel,
                line,
                "installs a well-known toolchain by fetching and running a script".into(),
                ev,
            );
            continue;
        }
        // Docs: phrasing on this line or the three before it. Code: the
        // same line only (an error string or a comment next to the command).
        let ctx = if is_doc {
            context_before(f.text, h.start)
        } else {
            &f.text[ls..le]
        };
        if f.kind != FileKind::Dockerfile && RUN_PHRASE.is_match(ctx) {
            s.add(
                "doc-run-remote-exec",
                f.rel,
                line,
                "tells the reader (human or agent) to run a command that fetches and executes remote code".into(),
                ev,
            );
        } else {
            s.add(
                "fetch-exec-mention",
                f.rel,
                line,
                "a fetch-and-execute command".into(),
                ev,
            );
        }
    }
    if is_doc {
        for m in STEER.find_iter(f.text).take(20) {
            s.add(
                "doc-prompt-injection",
                f.rel,
                line_at(f.text, m.start()),
                format!(
                    "text steering an agent: \"{}\"",
                    short(&String::from_utf8_lossy(m.as_bytes()))
                ),
                evidence_at(f.text, m.start()),
            );
        }
    }
}

fn instructions(f: &FileCtx, s: &mut Sink) {
    s.add(
        "agent-instructions-file",
        f.rel,
        1,
        "agents read this file as instructions; review it like code".into(),
        evidence_at(f.text, 0),
    );
    let mut lines = sink::LineCounter::default();
    for h in payload::detect(f.text, Mode::Agent) {
        let line = lines.at(f.text, h.start);
        let ev = evidence_at(f.text, h.start);
        let (ls, le) = payload::line_bounds(f.text, h.start, 400);
        let (rule, msg) = match h.kind {
            Kind::FetchExec if known_installer(&f.text[ls..le]) => (
                "known-installer",
                "installs a well-known toolchain by fetching and running a script".to_string(),
            ),
            Kind::FetchExec | Kind::DecodeExec | Kind::ReverseShell | Kind::DnsExec => (
                "agent-instructions-remote-exec",
                format!(
                    "instructs the agent to run a command that {}",
                    h.kind.describe()
                ),
            ),
            Kind::CredentialAccess | Kind::CredentialExfil => (
                "agent-instructions-secrets",
                format!(
                    "instructs the agent to run a command that {}",
                    h.kind.describe()
                ),
            ),
            Kind::AgentConfigWrite
                if WRITE_VERB.is_match(&f.text[ls..le]) && !NEGATION.is_match(&f.text[ls..le]) =>
            {
                (
                    "agent-instructions-deception",
                    "instructs the agent to change agent or editor configuration outside the project"
                        .to_string(),
                )
            }
            // Mentioning where user settings live is not an instruction.
            Kind::AgentConfigWrite => continue,
            Kind::ApprovalBypass => (
                "agent-approval-bypass",
                "instructs the agent to run with its approvals disabled".to_string(),
            ),
        };
        s.add(rule, f.rel, line, msg, ev);
    }
    let steer = STEER.find_iter(f.text).chain(STEER_AGENT.find_iter(f.text));
    for m in steer.take(20) {
        s.add(
            "agent-instructions-deception",
            f.rel,
            line_at(f.text, m.start()),
            format!(
                "steers the agent against its user: \"{}\"",
                short(&String::from_utf8_lossy(m.as_bytes()))
            ),
            evidence_at(f.text, m.start()),
        );
    }
    // Secrets: a concrete credential location with a directive, or secret
    // words with a directive and a destination; never a negated sentence.
    let mut off = 0;
    let mut reported = 0;
    for line in f.text.split(|&b| b == b'\n') {
        let here = off;
        off += line.len() + 1;
        if reported >= 20 || line.len() > 4096 {
            continue;
        }
        let Some(sm) = SECRET_PATH.find(line) else {
            continue;
        };
        let Some(vm) = SECRET_VERB.find(line) else {
            continue;
        };
        let concrete = SECRET_CONCRETE.is_match(line);
        if !concrete && !SECRET_DEST.is_match(line) {
            continue;
        }
        let first = sm.start().min(vm.start());
        if NEGATION.is_match(&line[..first.max(vm.start())]) {
            continue;
        }
        reported += 1;
        s.add(
            "agent-instructions-secrets",
            f.rel,
            line_at(f.text, here),
            "points the agent at credentials or tells it to send secrets".into(),
            evidence_at(f.text, here),
        );
    }
}
