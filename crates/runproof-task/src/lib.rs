//! runproof-task owns the task and prediction model (SWE-bench compatible),
//! patch validation and application, test-report parsers and the
//! FAIL_TO_PASS / PASS_TO_PASS verdict.
//!
//! It must never trust anything the graded patch produced: reports and logs
//! from inside a sandbox are hostile input, parsed outside it, bounded in size.
