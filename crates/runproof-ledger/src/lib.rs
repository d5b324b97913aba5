//! runproof-ledger owns storage of runs, requests, token usage and cost (SQLite
//! embedded by default), price tables and budgets.
//!
//! It must never lose a charge: a write that cannot be recorded is an error the
//! caller must act on, never a silent drop.

pub mod budget;
pub mod cli;
pub mod prices;
pub mod report;
pub mod store;
pub mod time;

pub use budget::{Budget, BudgetError, BudgetStatus, Reservation};
pub use prices::{ComputePrice, ModelPrice, PriceError, PriceTable, Usage};
pub use report::{CostOptions, CostReport, CostRow, GroupBy, cost_report, render_text};
pub use store::{
    ComputeRecord, Ledger, LedgerError, LedgerWriter, RequestRecord, RunEnd, RunRecord,
    VerdictRecord, default_path,
};
