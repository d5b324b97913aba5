//! runproof-scan owns the pre-execution scanner: it finds everything in a
//! project tree that would run code or steer an agent without an explicit step
//! by the user (lifecycle scripts, hooks, editor tasks, agent configuration,
//! instruction files, hidden Unicode, payload shapes) and reports it as text,
//! JSON or SARIF 2.1.0.
//!
//! It must never execute, import or evaluate anything it scans, never follow a
//! symlink out of the scanned tree, and never honour an ignore or suppression
//! file found inside the tree it scans: the scanned project is hostile.
