//! `runproof serve` and `runproof worker` (runproof-server), with the
//! ledger from the config: each newly stored verdict is recorded there
//! under the same attempt key as `runproof eval`'s, so a prediction graded
//! by the service and by `eval` counts once in `runproof cost`.

use runproof_server::cli::{ServeArgs, WorkerArgs};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

pub fn serve(mut a: ServeArgs, config: Option<&Path>) -> ExitCode {
    if a.ledger.is_none() && !a.no_ledger {
        match crate::config::Config::load(config).and_then(|c| c.ledger(None)) {
            Ok(l) => a.ledger = Some(l.0),
            Err(e) => {
                eprintln!("runproof serve: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let hook: Option<runproof_server::queue::ResultHook> = a.ledger.clone().map(|path| {
        let f = move |spec: &runproof_server::JobSpec, v: &runproof_server::job::Verdict| {
            let id = spec.instance_id().to_string();
            let rec = runproof_ledger::VerdictRecord {
                key: crate::verdicts::attempt_key(
                    &id,
                    Some(&spec.model_name_or_path),
                    spec.model_patch.as_deref(),
                ),
                run_id: None,
                task: Some(id),
                agent: Some(spec.model_name_or_path.clone()),
                source: "serve".into(),
                outcome: v.outcome.clone(),
                verified: v.resolved,
                ts_ms: runproof_ledger::time::unix_ms(),
            };
            if let Err(e) =
                runproof_ledger::Ledger::open(&path).and_then(|l| l.record_verdict(&rec))
            {
                eprintln!("runproof serve: verdict not recorded in the ledger: {e}");
            }
        };
        Arc::new(f) as runproof_server::queue::ResultHook
    });
    let network = match crate::task_net::network(&a.net) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("runproof serve: {e}");
            return ExitCode::from(2);
        }
    };
    match runproof_server::cli::serve(&a, hook, network) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runproof serve: {e}");
            ExitCode::from(2)
        }
    }
}

pub fn worker(a: &WorkerArgs) -> ExitCode {
    let network = match crate::task_net::network(&a.net) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("runproof worker: {e}");
            return ExitCode::from(2);
        }
    };
    match runproof_server::cli::worker(a, network) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runproof worker: {e}");
            ExitCode::from(2)
        }
    }
}
