//! runproof-integrity owns honest scores: leak-free environments (git history
//! and cache sanitising, leak scans), retrieval detection in what an agent did,
//! and patch similarity to the known fix.
//!
//! It must never modify the user's source repository (it prepares copies), and
//! must treat trajectories and workspaces as hostile input: bounded, never run.
