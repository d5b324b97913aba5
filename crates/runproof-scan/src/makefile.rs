//! Makefile default goal: what a bare `make` runs. Parses just enough of
//! make's syntax (continuations, `define` blocks, rules, inline `;` recipes,
//! `.DEFAULT_GOAL`) to find the default goal and every explicit target it
//! pulls in through prerequisites, with their recipe lines. Variables are
//! not expanded and `include`d files are not followed: a target named
//! `$(BIN)` is matched as that literal text.

use std::collections::{HashMap, HashSet};

/// Most rules read from one Makefile, and most targets followed from the
/// default goal: a hostile file costs bounded time.
const MAX_RULES: usize = 20_000;
const MAX_CLOSURE: usize = 512;

/// One recipe line: 1-based line number and the command text (without the
/// leading tab and the `@`/`-`/`+` prefixes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipeLine {
    pub line: usize,
    pub cmd: String,
}

/// The default goal and the recipe lines a bare `make` runs for it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DefaultGoal {
    pub goal: String,
    pub recipes: Vec<RecipeLine>,
}

#[derive(Default)]
struct Rule {
    prereqs: Vec<String>,
    recipe: Vec<RecipeLine>,
}

/// A target that can be the default goal: not a special or dot target
/// (unless it has a slash), not a pattern rule.
fn can_be_default(t: &str) -> bool {
    (!t.starts_with('.') || t.contains('/')) && !t.contains('%')
}

/// Position of the rule colon in a line, or `None` for assignments and
/// other non-rule lines. Skips colons inside `$(...)`/`${...}`.
fn rule_colon(line: &str) -> Option<usize> {
    let b = line.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'$' if matches!(b.get(i + 1), Some(b'(' | b'{')) => {
                depth += 1;
                i += 1;
            }
            b'(' | b'{' if depth > 0 => depth += 1,
            b')' | b'}' if depth > 0 => depth -= 1,
            b'=' if depth == 0 => return None, // VAR = x, VAR ?= x, VAR += x
            b':' if depth == 0 => {
                // `:=`, `::=`, `:::=` are assignments.
                let rest = &b[i..];
                let colons = rest.iter().take_while(|&&c| c == b':').count();
                if rest.get(colons) == Some(&b'=') {
                    return None;
                }
                return Some(i);
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn strip_prefixes(cmd: &str) -> &str {
    cmd.trim_start_matches(|c: char| c == '@' || c == '-' || c == '+' || c.is_whitespace())
}

/// Parses a Makefile and returns its default goal with the recipe lines of
/// the goal and of every explicit target it depends on (transitively).
pub fn default_goal(text: &str) -> Option<DefaultGoal> {
    let mut rules: HashMap<String, Rule> = HashMap::new();
    let mut first: Option<String> = None;
    let mut explicit: Option<String> = None;
    let mut current: Vec<String> = Vec::new();
    let mut in_define = 0usize;
    let mut n_rules = 0usize;

    let mut lines = text.split('\n').enumerate().peekable();
    while let Some((i, raw)) = lines.next() {
        // Join backslash continuations into one logical line.
        let mut logical = raw.trim_end_matches('\r').to_string();
        while logical.ends_with('\\') {
            logical.pop();
            match lines.next() {
                Some((_, next)) => {
                    logical.push(' ');
                    logical.push_str(next.trim_end_matches('\r').trim_start());
                }
                None => break,
            }
        }
        let line_no = i + 1;
        if let Some(body) = logical.strip_prefix('\t') {
            if in_define == 0 && !current.is_empty() {
                let cmd = strip_prefixes(body).trim_end().to_string();
                if !cmd.is_empty() {
                    for t in &current {
                        if let Some(r) = rules.get_mut(t) {
                            r.recipe.push(RecipeLine {
                                line: line_no,
                                cmd: cmd.clone(),
                            });
                        }
                    }
                }
            }
            continue;
        }
        let trimmed = logical.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let word = trimmed.split_whitespace().next().unwrap_or("");
        if word == "define" {
            in_define += 1;
            continue;
        }
        if word == "endef" {
            in_define = in_define.saturating_sub(1);
            continue;
        }
        if in_define > 0 {
            continue;
        }
        if matches!(
            word,
            "ifeq" | "ifneq" | "ifdef" | "ifndef" | "else" | "endif"
        ) {
            continue; // conditionals keep the rule context (both branches kept)
        }
        let assign = trimmed
            .strip_prefix("override ")
            .unwrap_or(trimmed)
            .trim_start();
        if let Some(rest) = assign.strip_prefix(".DEFAULT_GOAL") {
            let rest = rest.trim_start();
            let value = rest
                .trim_start_matches([':', '?', '+', '!'])
                .strip_prefix('=')
                .map(str::trim);
            if let Some(v) = value {
                explicit = v.split_whitespace().next().map(str::to_string);
            }
            current.clear();
            continue;
        }
        let Some(colon) = rule_colon(trimmed) else {
            current.clear(); // assignment or directive ends the rule
            continue;
        };
        let targets: Vec<String> = trimmed[..colon]
            .split_whitespace()
            .map(str::to_string)
            .collect();
        let mut after = trimmed[colon..].trim_start_matches(':');
        let mut inline = None;
        if let Some(semi) = after.find(';') {
            inline = Some(strip_prefixes(&after[semi + 1..]).trim().to_string());
            after = &after[..semi];
        }
        if targets.is_empty() || after.contains('=') {
            // Target-specific variable, or no target: no recipe follows.
            current.clear();
            continue;
        }
        let prereqs: Vec<String> = after
            .split_whitespace()
            .filter(|p| *p != "|")
            .map(str::to_string)
            .collect();
        n_rules += 1;
        if n_rules > MAX_RULES {
            break;
        }
        if first.is_none() {
            first = targets.iter().find(|t| can_be_default(t)).cloned();
        }
        for t in &targets {
            let r = rules.entry(t.clone()).or_default();
            r.prereqs.extend(prereqs.iter().cloned());
            if let Some(cmd) = inline.as_ref().filter(|c| !c.is_empty()) {
                r.recipe.push(RecipeLine {
                    line: line_no,
                    cmd: cmd.clone(),
                });
            }
        }
        current = targets;
    }

    let goal = explicit.filter(|g| !g.is_empty()).or(first)?;
    let mut out = DefaultGoal {
        goal: goal.clone(),
        recipes: Vec::new(),
    };
    let mut seen: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = vec![goal.as_str()];
    let mut lines_seen: HashSet<usize> = HashSet::new();
    while let Some(t) = stack.pop() {
        if seen.len() >= MAX_CLOSURE || !seen.insert(t) {
            continue;
        }
        let Some(r) = rules.get(t) else { continue };
        for l in &r.recipe {
            if lines_seen.insert(l.line) {
                out.recipes.push(l.clone());
            }
        }
        stack.extend(r.prereqs.iter().rev().map(String::as_str));
    }
    out.recipes.sort_by_key(|l| l.line);
    Some(out)
}

/// Why a recipe command is more than an ordinary build step, if it is:
/// it downloads, reaches another host, installs from the network, runs as
/// root, or runs a program from a temporary, home or hidden directory.
pub fn unusual(cmd: &str) -> Option<String> {
    for seg in cmd.split(['|', ';', '&', '(', ')', '`']) {
        let mut words = seg
            .split_whitespace()
            .map(|w| w.trim_matches(|c| c == '"' || c == '\''));
        let Some(mut w) = words.next() else {
            continue;
        };
        let mut sudo = false;
        // Skip env assignments and wrappers to reach the program.
        loop {
            let assignment = w.contains('=') && !w.starts_with('-') && !w.starts_with('/');
            let wrapper = matches!(w, "env" | "exec" | "nohup" | "time" | "command" | "nice");
            if w == "sudo" || w == "doas" {
                sudo = true;
            } else if !(assignment || wrapper) {
                break;
            }
            match words.next() {
                Some(n) => w = n,
                None => break,
            }
        }
        if sudo {
            return Some("runs a command as root".into());
        }
        let prog = w.rsplit('/').next().unwrap_or(w);
        let rest: Vec<&str> = words.collect();
        let sub = rest.first().copied().unwrap_or("");
        let net = match prog {
            "curl" | "wget" | "aria2c" | "fetch" | "ftp" | "tftp" | "sftp" | "scp" | "ssh"
            | "rsync" | "nc" | "ncat" | "netcat" | "socat" | "telnet" => true,
            "git" => matches!(sub, "clone" | "fetch" | "pull" | "submodule" | "ls-remote"),
            "pip" | "pip3" | "pipx" | "uv" | "gem" | "npm" | "pnpm" | "yarn" | "bun" => {
                matches!(sub, "install" | "i" | "add" | "ci" | "dlx" | "x")
                    || (prog == "uv" && sub == "pip")
            }
            "npx" | "bunx" => true,
            "go" => {
                matches!(sub, "install" | "get" | "run") && rest.iter().any(|a| a.contains('@'))
            }
            "cargo" => sub == "install",
            "docker" | "podman" => matches!(sub, "run" | "pull"),
            _ => false,
        };
        if net {
            return Some(format!(
                "runs `{prog}`, which downloads or reaches another host"
            ));
        }
        // `python -m pip install`
        if prog.starts_with("python")
            && rest
                .windows(3)
                .any(|x| x[0] == "-m" && x[1] == "pip" && x[2] == "install")
        {
            return Some("installs packages from the network (pip)".into());
        }
        let interp = matches!(
            prog,
            "sh" | "bash"
                | "zsh"
                | "dash"
                | "python"
                | "python3"
                | "node"
                | "perl"
                | "ruby"
                | "php"
        );
        let target = if interp {
            rest.iter().find(|a| !a.starts_with('-')).copied()
        } else {
            Some(w)
        };
        if let Some(t) = target
            && odd_location(t)
        {
            return Some(format!("runs `{t}` from outside the project's sources"));
        }
    }
    None
}

fn odd_location(p: &str) -> bool {
    const ODD: &[&str] = &[
        "/tmp/",
        "/var/tmp/",
        "/dev/shm/",
        "~/",
        "$HOME/",
        "$(HOME)/",
        "${HOME}/",
        "$$HOME/",
    ];
    if ODD.iter().any(|o| p.starts_with(o)) {
        return true;
    }
    // A hidden directory inside the project (`.cache/x`, `./.tools/run`),
    // except the tool directories package managers make for the project
    // (`node_modules/.bin`, `.venv/bin`).
    let rel = p.strip_prefix("./").unwrap_or(p);
    if rel.starts_with("node_modules/.bin/")
        || rel.contains("/node_modules/.bin/")
        || rel.starts_with(".venv/bin/")
    {
        return false;
    }
    let parts: Vec<&str> = rel.split('/').collect();
    parts.len() > 1
        && parts[..parts.len() - 1]
            .iter()
            .any(|d| d.starts_with('.') && *d != "." && *d != "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmds(t: &str) -> (String, Vec<String>) {
        let g = default_goal(t).unwrap();
        (g.goal, g.recipes.into_iter().map(|r| r.cmd).collect())
    }

    #[test]
    fn first_ordinary_target_and_its_prerequisites() {
        let t = "CC = cc\n.PHONY: all\n%.o: %.c\n\t$(CC) -c $<\nall: prog docs\nprog: main.o\n\t@$(CC) -o $@ $^\ndocs: ; -echo docs\nclean:\n\trm -f prog\n";
        assert_eq!(
            cmds(t),
            (
                "all".into(),
                vec!["$(CC) -o $@ $^".into(), "echo docs".into()]
            )
        );
    }

    #[test]
    fn default_goal_variable_wins_and_continuations_join() {
        let t = "help:\n\t@echo help\nbuild: dep\n\tcc x.c\ndep:\n\tcurl -s https://example.invalid/x \\\n\t  | sh\n.DEFAULT_GOAL := build\n";
        let g = default_goal(t).unwrap();
        assert_eq!(g.goal, "build");
        assert_eq!(g.recipes.len(), 2);
        assert_eq!(g.recipes[1].line, 6);
        assert!(g.recipes[1].cmd.contains("| sh"), "{:?}", g.recipes);
    }

    #[test]
    fn assignments_and_defines_are_not_rules() {
        let t = "X := a:b\nY ?= c\ndefine T\nfake:\n\tcurl x\nendef\nall:\n\tgo build ./...\n";
        assert_eq!(cmds(t), ("all".into(), vec!["go build ./...".into()]));
        assert!(default_goal("X = 1\n").is_none());
    }

    #[test]
    fn cyclic_prerequisites_terminate() {
        let t = "a: b\n\techo a\nb: a\n\techo b\n";
        assert_eq!(cmds(t).1.len(), 2);
    }

    #[test]
    fn unusual_commands() {
        for c in [
            "curl -sLO https://example.invalid/x.tgz",
            "cd deps && wget https://example.invalid/y",
            "sudo make install",
            "/tmp/tool/run --fast",
            "bash .cache/setup.sh",
            "./.tools/gen",
            "python3 -m pip install -r requirements.txt",
            "git clone https://example.invalid/r.git",
            "npx some-tool",
        ] {
            assert!(unusual(c).is_some(), "{c}");
        }
        for c in [
            "$(CC) $(CFLAGS) -o $@ $^",
            "cargo build --release",
            "go build ./...",
            "pytest -q",
            "python -m pytest",
            "./configure --prefix=/usr",
            "mkdir -p build && cd build && cmake .. && make",
            "install -m 755 prog $(DESTDIR)/usr/bin",
            "echo done",
            "rm -rf .cache",
            "node_modules/.bin/tape test.js",
            "./node_modules/.bin/eslint .",
            ".venv/bin/pytest",
        ] {
            assert!(unusual(c).is_none(), "{c}: {:?}", unusual(c));
        }
    }
}
