//! The seccomp layer: a classic-BPF filter built here from a rule table.
//!
//! The filter does three things:
//! 1. kills any process that enters the kernel through a foreign syscall ABI
//!    (i386 `int 0x80`, x32), where syscall numbers differ and a deny list
//!    would be bypassed;
//! 2. refuses the syscalls in [`DENY`] (each with the reason it is there);
//! 3. when auditing, sends `execve`, `execveat` and `connect` to the
//!    supervisor as user notifications (see `notify`), which logs them and
//!    lets them continue. Notification is for the audit trail only: a
//!    continued syscall re-reads its arguments from memory the sandbox
//!    controls, so nothing is *enforced* from what the supervisor read.
//!
//! Denied syscalls also go to the supervisor when auditing, so the audit log
//! can name them; the answer is always the same error, so this cannot be
//! raced into an allow.

use libc::{c_int, sock_filter};

/// Why a syscall is on the deny list, and what it answers.
pub struct Rule {
    pub name: &'static str,
    pub nr: libc::c_long,
    pub errno: c_int,
    pub why: &'static str,
}

macro_rules! deny {
    ($($sys:ident => $errno:ident, $why:literal;)*) => {
        /// Syscalls the sandbox refuses outright.
        pub const DENY: &[Rule] = &[
            $(Rule { name: stringify!($sys), nr: paste_nr!($sys), errno: libc::$errno, why: $why },)*
        ];
    };
}
macro_rules! paste_nr {
    ($sys:ident) => {
        syscall_nr::$sys
    };
}

/// Syscall numbers for the native ABI, named as in the kernel.
#[allow(non_upper_case_globals)]
mod syscall_nr {
    pub const io_uring_setup: libc::c_long = libc::SYS_io_uring_setup;
    pub const io_uring_enter: libc::c_long = libc::SYS_io_uring_enter;
    pub const io_uring_register: libc::c_long = libc::SYS_io_uring_register;
    pub const bpf: libc::c_long = libc::SYS_bpf;
    pub const perf_event_open: libc::c_long = libc::SYS_perf_event_open;
    pub const keyctl: libc::c_long = libc::SYS_keyctl;
    pub const add_key: libc::c_long = libc::SYS_add_key;
    pub const request_key: libc::c_long = libc::SYS_request_key;
    pub const ptrace: libc::c_long = libc::SYS_ptrace;
    pub const process_vm_readv: libc::c_long = libc::SYS_process_vm_readv;
    pub const process_vm_writev: libc::c_long = libc::SYS_process_vm_writev;
    pub const pidfd_getfd: libc::c_long = libc::SYS_pidfd_getfd;
    pub const kcmp: libc::c_long = libc::SYS_kcmp;
    pub const kexec_load: libc::c_long = libc::SYS_kexec_load;
    pub const kexec_file_load: libc::c_long = libc::SYS_kexec_file_load;
    pub const init_module: libc::c_long = libc::SYS_init_module;
    pub const finit_module: libc::c_long = libc::SYS_finit_module;
    pub const delete_module: libc::c_long = libc::SYS_delete_module;
    pub const reboot: libc::c_long = libc::SYS_reboot;
    pub const mount: libc::c_long = libc::SYS_mount;
    pub const umount2: libc::c_long = libc::SYS_umount2;
    pub const pivot_root: libc::c_long = libc::SYS_pivot_root;
    pub const chroot: libc::c_long = libc::SYS_chroot;
    pub const open_tree: libc::c_long = libc::SYS_open_tree;
    pub const move_mount: libc::c_long = libc::SYS_move_mount;
    pub const fsopen: libc::c_long = libc::SYS_fsopen;
    pub const fsconfig: libc::c_long = libc::SYS_fsconfig;
    pub const fsmount: libc::c_long = libc::SYS_fsmount;
    pub const fspick: libc::c_long = libc::SYS_fspick;
    pub const mount_setattr: libc::c_long = libc::SYS_mount_setattr;
    pub const unshare: libc::c_long = libc::SYS_unshare;
    pub const setns: libc::c_long = libc::SYS_setns;
    pub const userfaultfd: libc::c_long = libc::SYS_userfaultfd;
    pub const open_by_handle_at: libc::c_long = libc::SYS_open_by_handle_at;
    pub const name_to_handle_at: libc::c_long = libc::SYS_name_to_handle_at;
    pub const fanotify_init: libc::c_long = libc::SYS_fanotify_init;
    pub const swapon: libc::c_long = libc::SYS_swapon;
    pub const swapoff: libc::c_long = libc::SYS_swapoff;
    pub const syslog: libc::c_long = libc::SYS_syslog;
    pub const acct: libc::c_long = libc::SYS_acct;
    pub const quotactl: libc::c_long = libc::SYS_quotactl;
    pub const settimeofday: libc::c_long = libc::SYS_settimeofday;
    pub const clock_settime: libc::c_long = libc::SYS_clock_settime;
    pub const clock_adjtime: libc::c_long = libc::SYS_clock_adjtime;
    pub const vhangup: libc::c_long = libc::SYS_vhangup;
}

deny! {
    io_uring_setup => EPERM, "io_uring runs I/O on kernel threads that seccomp never sees, and it is a large kernel attack surface";
    io_uring_enter => EPERM, "io_uring (see io_uring_setup)";
    io_uring_register => EPERM, "io_uring (see io_uring_setup)";
    bpf => EPERM, "loading BPF programs is kernel attack surface and can read kernel memory";
    perf_event_open => EPERM, "performance counters leak host activity and are a frequent kernel exploit entry";
    keyctl => EPERM, "kernel keyrings are not namespaced: host keys could be read or planted";
    add_key => EPERM, "kernel keyrings (see keyctl)";
    request_key => EPERM, "kernel keyrings (see keyctl)";
    ptrace => EPERM, "tracing another process reads its memory and hijacks it, including the sandbox's init";
    process_vm_readv => EPERM, "reads another process's memory (as ptrace)";
    process_vm_writev => EPERM, "writes another process's memory (as ptrace)";
    pidfd_getfd => EPERM, "steals file descriptors from another process (as ptrace)";
    kcmp => EPERM, "compares kernel objects of other processes: an information leak";
    kexec_load => EPERM, "replaces the running kernel";
    kexec_file_load => EPERM, "replaces the running kernel";
    init_module => EPERM, "loads kernel code";
    finit_module => EPERM, "loads kernel code";
    delete_module => EPERM, "unloads kernel code";
    reboot => EPERM, "reboots the machine, or the PID namespace";
    mount => EPERM, "changing mounts could undo the sandbox's view of the file system";
    umount2 => EPERM, "unmounting could reveal what the sandbox hides";
    pivot_root => EPERM, "changes the root the sandbox was given";
    chroot => EPERM, "changes root; with open descriptors it is an escape pattern";
    open_tree => EPERM, "new mount API (see mount)";
    move_mount => EPERM, "new mount API (see mount)";
    fsopen => EPERM, "new mount API (see mount)";
    fsconfig => EPERM, "new mount API (see mount)";
    fsmount => EPERM, "new mount API (see mount)";
    fspick => EPERM, "new mount API (see mount)";
    mount_setattr => EPERM, "could clear read-only and nosuid flags on the sandbox's mounts";
    unshare => EPERM, "a nested user namespace hands back every capability and the kernel attack surface that comes with it";
    setns => EPERM, "joining other namespaces (see unshare)";
    userfaultfd => EPERM, "stalls kernel page faults at will, the classic way to win kernel races";
    open_by_handle_at => EPERM, "opens files by handle, bypassing the mount view (the 'shocker' escape)";
    name_to_handle_at => EPERM, "file handles (see open_by_handle_at)";
    fanotify_init => EPERM, "watches file access system-wide";
    swapon => EPERM, "machine administration";
    swapoff => EPERM, "machine administration";
    syslog => EPERM, "the kernel log leaks kernel addresses and host activity";
    acct => EPERM, "process accounting is machine administration";
    quotactl => EPERM, "disk quotas are machine administration";
    settimeofday => EPERM, "the clock is shared with the host";
    clock_settime => EPERM, "the clock is shared with the host";
    clock_adjtime => EPERM, "the clock is shared with the host";
    vhangup => EPERM, "hangs up the terminal of other sessions";
}

/// Architecture-specific additions to [`DENY`].
#[cfg(target_arch = "x86_64")]
pub const DENY_ARCH: &[Rule] = &[
    Rule {
        name: "iopl",
        nr: libc::SYS_iopl,
        errno: libc::EPERM,
        why: "raw I/O port access",
    },
    Rule {
        name: "ioperm",
        nr: libc::SYS_ioperm,
        errno: libc::EPERM,
        why: "raw I/O port access",
    },
];
#[cfg(not(target_arch = "x86_64"))]
pub const DENY_ARCH: &[Rule] = &[];

/// Every refused syscall of this architecture, with its reason.
pub fn deny_rules() -> impl Iterator<Item = &'static Rule> {
    DENY.iter().chain(DENY_ARCH)
}

/// Namespace flags refused in `clone(2)`: a new user namespace would hand
/// back capabilities; the others need them. `clone3` passes its flags in
/// memory BPF cannot read, so it answers ENOSYS and libc falls back to clone.
const CLONE_NS_FLAGS: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP) as u64
    | 0x80; // CLONE_NEWTIME

/// ioctls refused: TIOCSTI pushes bytes into a terminal's input queue (typed
/// into the host shell after the sandbox exits); TIOCLINUX can do the same on
/// a virtual console.
#[allow(clippy::unnecessary_cast)] // the ioctl type differs between targets
pub const DENIED_IOCTLS: &[(u64, &str)] =
    &[(libc::TIOCSTI as u64, "TIOCSTI"), (0x541C, "TIOCLINUX")];

/// Socket families that are not confined by a network namespace: vsock talks
/// to the hypervisor and host services; Bluetooth reaches real radios.
pub const DENIED_SOCKET_FAMILIES: &[(u64, &str)] = &[(40, "AF_VSOCK"), (31, "AF_BLUETOOTH")];

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E; // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7; // AUDIT_ARCH_AARCH64

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_KILL_PROCESS: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const RET_NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;
fn ret_errno(e: c_int) -> u32 {
    libc::SECCOMP_RET_ERRNO | (e as u32 & libc::SECCOMP_RET_DATA)
}

// seccomp_data offsets
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
fn off_arg_lo(i: u32) -> u32 {
    16 + 8 * i
}
fn off_arg_hi(i: u32) -> u32 {
    20 + 8 * i
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}
fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

/// What the filter should do with the audited syscalls.
#[derive(Debug, Clone, Copy)]
pub struct FilterOptions {
    /// Notify the supervisor of execve/execveat/connect and of denials.
    pub notify: bool,
}

/// Syscalls reported to the supervisor when auditing.
pub const NOTIFIED: &[libc::c_long] = &[libc::SYS_execve, libc::SYS_execveat, libc::SYS_connect];

/// Build the filter program.
pub fn build(opts: FilterOptions) -> Vec<sock_filter> {
    let mut p = Vec::with_capacity(160);
    p.push(stmt(LD_W_ABS, OFF_ARCH));
    p.push(jump(JEQ_K, AUDIT_ARCH, 1, 0));
    p.push(stmt(RET_K, RET_KILL_PROCESS));
    p.push(stmt(LD_W_ABS, OFF_NR));
    #[cfg(target_arch = "x86_64")]
    {
        // x32 syscalls carry bit 30; they reach the same kernel code under
        // other numbers.
        p.push(jump(JGE_K, 0x4000_0000, 0, 1));
        p.push(stmt(RET_K, ret_errno(libc::EPERM)));
    }
    let deny_ret = |e: c_int| {
        if opts.notify {
            RET_NOTIFY
        } else {
            ret_errno(e)
        }
    };

    // clone3: always ENOSYS (never notified: glibc calls it for every thread).
    p.push(jump(JEQ_K, libc::SYS_clone3 as u32, 0, 1));
    p.push(stmt(RET_K, ret_errno(libc::ENOSYS)));

    // clone: refuse namespace flags (arg 0 on x86_64 and aarch64).
    p.push(jump(JEQ_K, libc::SYS_clone as u32, 0, 4));
    p.push(stmt(LD_W_ABS, off_arg_lo(0)));
    p.push(jump(JSET_K, CLONE_NS_FLAGS as u32, 0, 1));
    p.push(stmt(RET_K, deny_ret(libc::EPERM)));
    p.push(stmt(RET_K, RET_ALLOW));

    // ioctl: refuse terminal injection. The request is an int: compare the
    // low word only, and require the high word to be zero or sign bits as
    // the kernel truncates it.
    let n = DENIED_IOCTLS.len() as u8;
    p.push(jump(JEQ_K, libc::SYS_ioctl as u32, 0, 2 + n + 1));
    p.push(stmt(LD_W_ABS, off_arg_lo(1)));
    for (i, (req, _)) in DENIED_IOCTLS.iter().enumerate() {
        // on match jump to the deny return after the remaining checks
        p.push(jump(JEQ_K, *req as u32, n - i as u8, 0));
    }
    p.push(stmt(RET_K, RET_ALLOW));
    p.push(stmt(RET_K, deny_ret(libc::EPERM)));

    // socket: refuse families a network namespace does not confine.
    let n = DENIED_SOCKET_FAMILIES.len() as u8;
    p.push(jump(JEQ_K, libc::SYS_socket as u32, 0, 2 + n + 1));
    p.push(stmt(LD_W_ABS, off_arg_lo(0)));
    for (i, (fam, _)) in DENIED_SOCKET_FAMILIES.iter().enumerate() {
        p.push(jump(JEQ_K, *fam as u32, n - i as u8, 0));
    }
    p.push(stmt(RET_K, RET_ALLOW));
    p.push(stmt(RET_K, deny_ret(libc::EAFNOSUPPORT)));

    for rule in deny_rules() {
        p.push(jump(JEQ_K, rule.nr as u32, 0, 1));
        p.push(stmt(RET_K, deny_ret(rule.errno)));
    }
    if opts.notify {
        for nr in NOTIFIED {
            p.push(jump(JEQ_K, *nr as u32, 0, 1));
            p.push(stmt(RET_K, RET_NOTIFY));
        }
    }
    p.push(stmt(RET_K, RET_ALLOW));
    let _ = off_arg_hi; // high words are not needed by the checks above
    p
}

/// The errno a denied syscall answers when the supervisor handles it, with
/// the syscall's name for the audit log. `None` for syscalls that are
/// notified for auditing only.
pub fn denial_for(nr: i32, args: &[u64; 6]) -> Option<(c_int, String)> {
    let nr = nr as libc::c_long;
    if let Some(r) = deny_rules().find(|r| r.nr == nr) {
        return Some((r.errno, r.name.to_string()));
    }
    if nr == libc::SYS_clone && args[0] & CLONE_NS_FLAGS != 0 {
        return Some((
            libc::EPERM,
            format!("clone with namespace flags {:#x}", args[0] & CLONE_NS_FLAGS),
        ));
    }
    if nr == libc::SYS_ioctl {
        let req = args[1] & 0xffff_ffff;
        if let Some((_, name)) = DENIED_IOCTLS.iter().find(|(r, _)| *r == req) {
            return Some((libc::EPERM, format!("ioctl {name}")));
        }
    }
    if nr == libc::SYS_socket {
        let fam = args[0] & 0xffff_ffff;
        if let Some((_, name)) = DENIED_SOCKET_FAMILIES.iter().find(|(f, _)| *f == fam) {
            return Some((libc::EAFNOSUPPORT, format!("socket {name}")));
        }
    }
    None
}

/// Install the filter on the calling thread. With `listener`, returns the
/// user-notification descriptor. Requires no_new_privs.
pub fn install(prog: &[sock_filter], listener: bool) -> std::io::Result<Option<c_int>> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut sock_filter,
    };
    let flags = if listener {
        libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
    } else {
        0
    };
    // SAFETY: fprog points at a live, well-formed program for the duration
    // of the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(listener.then_some(r as c_int))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_fits_the_kernel_limits() {
        for notify in [false, true] {
            let p = build(FilterOptions { notify });
            assert!(
                p.len() < 4096,
                "BPF programs are limited to 4096 instructions"
            );
            assert_eq!(p.last().unwrap().k, RET_ALLOW);
        }
    }

    #[test]
    fn every_denied_syscall_has_a_reason_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in deny_rules() {
            assert!(!r.why.is_empty(), "{} has no reason", r.name);
            assert!(seen.insert(r.nr), "{} listed twice", r.name);
        }
        assert!(denial_for(libc::SYS_bpf as i32, &[0; 6]).is_some());
        assert!(denial_for(libc::SYS_read as i32, &[0; 6]).is_none());
        let mut args = [0u64; 6];
        args[1] = DENIED_IOCTLS[0].0;
        assert!(denial_for(libc::SYS_ioctl as i32, &args).is_some());
    }
}
