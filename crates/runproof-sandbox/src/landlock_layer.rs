//! Landlock: a second layer under the mounts. The mount view already hides
//! what the sandbox must not see; Landlock restates the same policy in the
//! kernel's own access-control terms, so a mistake in one layer is caught by
//! the other. It is applied at the best ABI the kernel has, and the command's
//! run report says which ABI and what it covered.

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};
use std::path::PathBuf;

/// Paths (inside the sandbox) and what may be done beneath them.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// Read and execute.
    pub read: Vec<PathBuf>,
    /// Read, execute, create, write, remove, rename.
    pub write: Vec<PathBuf>,
    /// Directory listing only (for `/`, whose contents the mounts decide).
    pub list: Vec<PathBuf>,
    /// Device files that must be writable and take ioctls (/dev/null, ttys).
    pub devices: Vec<PathBuf>,
}

/// The Landlock ABI of the running kernel (0 when Landlock is unavailable).
pub fn kernel_abi() -> i32 {
    // SAFETY: LANDLOCK_CREATE_RULESET_VERSION takes a null attr and size 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            1u32,
        )
    };
    if r < 0 { 0 } else { r as i32 }
}

fn abi_of(v: i32) -> ABI {
    match v {
        ..=0 => ABI::Unsupported,
        1 => ABI::V1,
        2 => ABI::V2,
        3 => ABI::V3,
        4 => ABI::V4,
        5 => ABI::V5,
        6 => ABI::V6,
        _ => ABI::V7,
    }
}

/// Restrict the calling process. Returns a one-line status for the report.
pub fn restrict(rules: &Rules) -> Result<String, String> {
    let v = kernel_abi();
    if v <= 0 {
        return Ok(
            "unavailable: the kernel has no Landlock (needs Linux 5.13 with lsm=landlock)".into(),
        );
    }
    let abi = abi_of(v);
    let all = AccessFs::from_all(abi);
    let read = AccessFs::from_read(abi);
    let dev = read | AccessFs::WriteFile | AccessFs::IoctlDev;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .map_err(|e| e.to_string())?;
    if v >= 6 {
        ruleset = ruleset
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(|e| e.to_string())?;
    }
    let mut created = ruleset.create().map_err(|e| e.to_string())?;
    let list = AccessFs::ReadDir.into();
    for (paths, access) in [
        (&rules.list, list),
        (&rules.read, read),
        (&rules.write, all),
        (&rules.devices, dev),
    ] {
        for p in paths {
            // A path the plan made visible but that does not exist here
            // (an optional system dir) simply gets no rule.
            let Ok(fd) = PathFd::new(p) else { continue };
            created = created
                .add_rule(PathBeneath::new(fd, access))
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    let status = created.restrict_self().map_err(|e| e.to_string())?;
    let scopes = if v >= 6 {
        ", abstract unix sockets and signals scoped"
    } else {
        ""
    };
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => format!("enforced: ABI {v}, file system{scopes}"),
        RulesetStatus::PartiallyEnforced => {
            format!("partial: ABI {v}, some file-system rights unknown to this kernel{scopes}")
        }
        RulesetStatus::NotEnforced => "unavailable: Landlock is disabled on this kernel".into(),
    })
}
