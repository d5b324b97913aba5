//! `runproof verify` and `runproof eval` with their verdicts recorded in the
//! ledger, so `runproof cost` reports cost per verified fix.
//!
//! Grading itself is `runproof_task::cli`; this reads the reports it wrote
//! (`OUT/<model>/<instance>/report.json`) and records one verdict per graded
//! attempt. An attempt is identified by its task, its agent
//! (`model_name_or_path`) and the SHA-256 of its patch, so grading the same
//! prediction again (a resumed or repeated `eval`) replaces its verdict
//! instead of adding one. The ledger joins a verdict to the agent runs that
//! produced it through that task and agent (`runproof run --task ID --agent
//! NAME`), or through `verify --run RUN_ID`.

use clap::Args;
use runproof_task::cli::{CliError, EvalArgs, VerifyArgs};
use runproof_task::{InstanceReport, TestRunner};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where verdicts go.
#[derive(Args, Debug)]
pub struct LedgerArgs {
    /// Ledger to record the verdicts in (default: ledger from the config,
    /// else ~/.local/share/runproof/ledger.db).
    #[arg(long, value_name = "FILE", conflicts_with = "no_ledger")]
    pub ledger: Option<PathBuf>,
    /// Grade without recording anything in the ledger.
    #[arg(long)]
    pub no_ledger: bool,
}

#[derive(Args, Debug)]
pub struct VerifyCmd {
    #[command(flatten)]
    pub grade: VerifyArgs,
    #[command(flatten)]
    pub ledger: LedgerArgs,
    /// The agent that wrote the patch (the model_name_or_path of its
    /// predictions), recorded with the verdict and joined to that agent's
    /// runs for the same task (`runproof run --task ID --agent NAME`).
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// The agent run that produced the patch (`run-...` from the ledger),
    /// recorded with the verdict.
    #[arg(long = "run", value_name = "RUN_ID")]
    pub run_id: Option<String>,
}

#[derive(Args, Debug)]
pub struct EvalCmd {
    #[command(flatten)]
    pub grade: EvalArgs,
    #[command(flatten)]
    pub ledger: LedgerArgs,
}

pub const VERIFY_HELP: &str = "\
With --patch, the verdict is recorded in the ledger (see --ledger, --no-ledger,
--agent, --run), so `runproof cost` can report cost per verified fix. --gold
and --empty grade no agent's patch and record nothing.";

pub const EVAL_HELP: &str = "\
Each graded prediction's verdict is recorded in the ledger (unless
--no-ledger), identified by instance_id, model_name_or_path and the patch's
SHA-256: a re-run records nothing twice. `runproof cost --by task` or
`--by agent` then joins each verdict to the runs recorded with
`runproof run --task INSTANCE_ID --agent MODEL_NAME_OR_PATH` and reports the
cost per verified fix.";

fn abs(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The identity of a graded attempt (see the module documentation).
/// The parts are JSON-encoded, so no task or agent name can be written to
/// collide with another pair.
pub fn attempt_key(task: &str, agent: Option<&str>, patch: Option<&str>) -> String {
    let patch = sha256_hex(patch.unwrap_or("").as_bytes());
    format!("patch:{}", serde_json::json!([task, agent, patch]))
}

/// A report written by the grader, if it holds a final grade.
fn graded_report(dir: &Path) -> Option<InstanceReport> {
    let path = dir.join("report.json");
    let len = std::fs::metadata(&path).ok()?.len();
    if len > 64 << 20 {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    InstanceReport::from_swebench(&v).filter(|r| r.status.is_graded())
}

fn ledger_path(a: &LedgerArgs, config: Option<&Path>) -> Result<PathBuf, String> {
    let cfg = crate::config::Config::load(config)?;
    Ok(cfg.ledger(a.ledger.as_deref())?.0)
}

fn record(path: &Path, verdicts: &[runproof_ledger::VerdictRecord]) {
    let res = runproof_ledger::Ledger::open(path).and_then(|l| {
        let mut new = 0;
        for v in verdicts {
            new += l.record_verdict(v)? as usize;
        }
        Ok(new)
    });
    match res {
        Ok(new) => eprintln!(
            "runproof: ledger {}: {} verdict(s), {new} new",
            path.display(),
            verdicts.len()
        ),
        Err(e) => eprintln!(
            "runproof: graded, but the verdicts could not be recorded in the ledger: {e}; `runproof cost` will not count them (fix the ledger, or pass --no-ledger)"
        ),
    }
}

pub fn verify(
    a: &VerifyCmd,
    config: Option<&Path>,
    runner: Arc<dyn TestRunner>,
) -> Result<i32, CliError> {
    let ledger = if a.ledger.no_ledger || a.grade.patch.is_none() {
        None
    } else {
        Some(ledger_path(&a.ledger, config).map_err(CliError::Usage)?)
    };
    let code = runproof_task::cli::verify(&a.grade, runner)?;
    let (Some(ledger), Some(patch)) = (ledger, &a.grade.patch) else {
        return Ok(code);
    };
    let tasks = runproof_task::load_tasks(&abs(&a.grade.task))?;
    let Some(task) = (match &a.grade.instance {
        Some(id) => tasks.iter().find(|t| &t.instance_id == id),
        None => tasks.first(),
    }) else {
        return Ok(code);
    };
    let dir = abs(&a.grade.common.out)
        .join(runproof_task::eval::safe_name("patch"))
        .join(&task.instance_id);
    let Some(rep) = graded_report(&dir) else {
        eprintln!(
            "runproof: no verdict recorded: the patch was not graded (infrastructure failure)"
        );
        return Ok(code);
    };
    // verify read the same file and refused it when over the limit.
    let text = std::fs::read(patch).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let key = match &a.run_id {
        Some(r) => format!("run:{r}"),
        None => attempt_key(&task.instance_id, a.agent.as_deref(), Some(&text)),
    };
    record(
        &ledger,
        &[runproof_ledger::VerdictRecord {
            key,
            run_id: a.run_id.clone(),
            task: Some(task.instance_id.clone()),
            agent: a.agent.clone(),
            source: "verify".into(),
            outcome: rep.status.name().into(),
            verified: rep.resolved,
            ts_ms: runproof_ledger::time::unix_ms(),
        }],
    );
    Ok(code)
}

pub fn eval(
    a: &EvalCmd,
    config: Option<&Path>,
    runner: Arc<dyn TestRunner>,
) -> Result<i32, CliError> {
    let ledger = if a.ledger.no_ledger {
        None
    } else {
        Some(ledger_path(&a.ledger, config).map_err(CliError::Usage)?)
    };
    let code = runproof_task::cli::eval(&a.grade, runner)?;
    let Some(ledger) = ledger else {
        return Ok(code);
    };
    let tasks = runproof_task::load_tasks(&abs(&a.grade.tasks))?;
    let preds = runproof_task::load_predictions(&abs(&a.grade.predictions))?;
    let out = abs(&a.grade.common.out);
    let now = runproof_ledger::time::unix_ms();
    let mut verdicts = Vec::new();
    for p in &preds {
        if !tasks.iter().any(|t| t.instance_id == p.instance_id) {
            continue;
        }
        let dir = out
            .join(runproof_task::eval::safe_name(&p.model_name_or_path))
            .join(&p.instance_id);
        let Some(rep) = graded_report(&dir) else {
            continue;
        };
        verdicts.push(runproof_ledger::VerdictRecord {
            key: attempt_key(
                &p.instance_id,
                Some(&p.model_name_or_path),
                p.model_patch.as_deref(),
            ),
            run_id: None,
            task: Some(p.instance_id.clone()),
            agent: Some(p.model_name_or_path.clone()),
            source: "eval".into(),
            outcome: rep.status.name().into(),
            verified: rep.resolved,
            ts_ms: now,
        });
    }
    record(&ledger, &verdicts);
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_keys_tell_patches_and_agents_apart() {
        let k = attempt_key("t1", Some("A"), Some("diff"));
        assert_eq!(k, attempt_key("t1", Some("A"), Some("diff")));
        assert_ne!(k, attempt_key("t1", Some("A"), Some("diff2")));
        assert_ne!(k, attempt_key("t1", Some("B"), Some("diff")));
        assert_ne!(k, attempt_key("t2", Some("A"), Some("diff")));
        assert!(k.contains(&sha256_hex(b"diff")));
        // A separator inside a name cannot forge another pair's key.
        assert_ne!(
            attempt_key("t\",\"A", Some("x"), None),
            attempt_key("t", Some("A\",\"x"), None)
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
