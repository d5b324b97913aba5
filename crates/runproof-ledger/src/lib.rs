//! runproof-ledger owns storage of runs, requests, token usage and cost (SQLite
//! embedded by default), price tables and budgets.
//!
//! It must never lose a charge: a write that cannot be recorded is an error the
//! caller must act on, never a silent drop.

pub mod time;
