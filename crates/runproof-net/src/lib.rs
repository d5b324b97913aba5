//! runproof-net owns the only way out of a sandbox: the egress proxy (HTTP
//! CONNECT, plain HTTP, SOCKS5) with its domain allowlist, and the metered LLM
//! gateway that injects credentials on the host side.
//!
//! It must never connect to a loopback, private, link-local or metadata address
//! on behalf of a sandbox, never resolve a name that the policy does not allow,
//! and never let a credential travel into the sandbox.
