//! The processes inside the sandbox.
//!
//! ```text
//! supervisor (host)
//!   └─ stage A: unshare(user, mount, pid, net, ipc, uts), map own uid/gid,
//!      │        receive the cgroups (made meanwhile by the supervisor), join
//!      │        the v1 ones (v2 too when clone3 is refused),
//!      │        fork (clone3 into the v2 cgroup); waits for init and exits with it
//!      └─ init (PID 1): unshare(cgroup), mounts + pivot_root, hostname, loopback up,
//!         │             listeners, pty; forks the command, reaps every orphan, forwards signals,
//!         │             reports the command's end; its exit kills the whole namespace
//!         └─ command: new session, rlimits, Landlock, capabilities dropped,
//!                     no_new_privs, seccomp, execve
//! ```
//!
//! Everything here runs after `fork` and before `execve`. The data it needs
//! (paths, argv, environment, the BPF program) was prepared by the supervisor,
//! so the children do little more than syscalls. Every failure is sent to the
//! supervisor as `step\0detail` and the child exits 125: the command never runs
//! with less confinement than planned.

use std::ffi::CString;
use std::os::fd::RawFd;

use crate::cgroup::Entry;
use crate::ipc::{self, tag};
use crate::mounts::Compiled;
use crate::report::exit;

/// Everything the children need, prepared before forking.
pub(crate) struct ChildSpec {
    pub ctrl: RawFd,
    pub uid: u32,
    pub gid: u32,
    pub mounts: Vec<Compiled>,
    pub skeleton_size: u64,
    pub hostname: CString,
    pub listen_ports: Vec<u16>,
    pub pty: bool,
    pub stdio: [Option<RawFd>; 3],
    pub cwd: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// (resource, soft, hard)
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    /// Set as well when the supervisor sends no cgroup: the per-process
    /// stand-ins for the memory and process limits.
    pub fallback_rlimits: Vec<(libc::__rlimit_resource_t, u64, u64)>,
    pub landlock: crate::landlock_layer::Rules,
    pub seccomp: Vec<libc::sock_filter>,
    pub seccomp_listener: bool,
    /// The CPUs stage A gives back to itself before it forks the sandbox
    /// (see [`place_apart`]); `None` when it was not moved.
    pub cpus: Option<libc::cpu_set_t>,
    /// Wait for the supervisor's GO before execve (`RunSpec::gate`).
    pub gated: bool,
}

fn fail(ctrl: RawFd, step: &str, err: &std::io::Error, code: i32) -> ! {
    let mut msg = step.as_bytes().to_vec();
    msg.push(0);
    msg.extend_from_slice(err.to_string().as_bytes());
    let _ = ipc::send(ctrl, tag::ERROR, &msg, &[]);
    // SAFETY: terminate the forked child without running destructors or
    // atexit handlers inherited from the parent.
    unsafe { libc::_exit(code) }
}

fn last_err() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn write_file(path: &str, data: &str) -> std::io::Result<()> {
    std::fs::write(path, data)
}

fn write_fd(fd: RawFd, data: &[u8]) -> std::io::Result<()> {
    // SAFETY: write from a valid buffer to a descriptor we were handed.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if n < 0 { Err(last_err()) } else { Ok(()) }
}

fn close_all<'a>(fds: impl IntoIterator<Item = &'a RawFd>) {
    for &fd in fds {
        // SAFETY: closing our copies of descriptors the supervisor opened.
        unsafe { libc::close(fd) };
    }
}

/// The `clone_args` of clone3(2), as of Linux 5.7 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Fork, with the child starting life in the cgroup `dir` (a v2 cgroup
/// directory descriptor). Returns the child's PID in the parent and 0 in
/// the child, like fork(2).
///
/// Only for a single-threaded caller (stage A): this is the raw system call,
/// so none of glibc's fork handlers run; the child makes plain system calls
/// and forks the command with glibc's fork, which resets what it needs.
fn clone_into_cgroup(dir: RawFd) -> std::io::Result<libc::pid_t> {
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir as u64,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack behaves as fork:
    // the child runs on a copy of our memory, returning 0 here.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        Err(last_err())
    } else {
        Ok(r as libc::pid_t)
    }
}

/// The supervisor's CPUs, when it has more than one: what stage A must
/// end up with.
pub(crate) fn cpus_to_restore() -> Option<libc::cpu_set_t> {
    // SAFETY: an all-zero cpu_set_t is the empty set; the call fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `set` is a valid, writable cpu_set_t of `size` bytes.
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } < 0 {
        return None;
    }
    // SAFETY: CPU_COUNT reads the set.
    (unsafe { libc::CPU_COUNT(&set) } > 1).then_some(set)
}

/// Supervisor side, right after the fork: keep stage A off the CPU the
/// supervisor runs on, so that it builds the namespaces while the
/// supervisor makes the cgroups. Left to itself the scheduler often queues
/// a forked child behind its parent and the two steps run one after the
/// other. Stage A restores `cpus` once it has the cgroups, before any
/// sandboxed process exists. Best effort: a refusal only costs the overlap.
pub(crate) fn place_apart(stage_a: libc::pid_t, cpus: &libc::cpu_set_t) {
    // SAFETY: sched_getcpu has no arguments.
    let here = unsafe { libc::sched_getcpu() };
    let mut others = *cpus;
    if here >= 0 {
        // SAFETY: CPU_CLR on a local set, index checked by the macro.
        unsafe { libc::CPU_CLR(here as usize, &mut others) };
    }
    // SAFETY: CPU_COUNT reads the set; sched_setaffinity reads `others`.
    unsafe {
        if libc::CPU_COUNT(&others) > 0 {
            libc::sched_setaffinity(stage_a, std::mem::size_of_val(&others), &others);
        }
    }
}

/// At most this many v1 hierarchies (memory, pids, cpuacct) per sandbox.
const MAX_V1: usize = 4;

/// The cgroup descriptors as stage A received them.
struct EntryFds {
    v1_tasks: [RawFd; MAX_V1],
    v1_count: usize,
    v2_dir: Option<RawFd>,
    v2_procs: Option<RawFd>,
}

impl EntryFds {
    fn joined(&self) -> bool {
        self.v1_count > 0 || self.v2_dir.is_some()
    }
}

/// Supervisor side: hand stage A the descriptors to enter the sandbox's
/// cgroups with (`None`: there is no cgroup; stage A goes on without).
/// The payload counts them: v1 `tasks` files, v2 directory, v2
/// `cgroup.procs`, in the order sent.
pub(crate) fn send_entry(ctrl: RawFd, entry: Option<&Entry>) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let Some(e) = entry else {
        return ipc::send(ctrl, tag::ENTER, &[0, 0, 0], &[]);
    };
    if e.v1_tasks.len() > MAX_V1 {
        return Err(std::io::Error::other("too many cgroup v1 hierarchies"));
    }
    let fds: Vec<RawFd> = e
        .v1_tasks
        .iter()
        .chain(&e.v2_dir)
        .chain(&e.v2_procs)
        .map(|f| f.as_raw_fd())
        .collect();
    let counts = [
        e.v1_tasks.len() as u8,
        e.v2_dir.is_some() as u8,
        e.v2_procs.is_some() as u8,
    ];
    ipc::send(ctrl, tag::ENTER, &counts, &fds)
}

/// Stage A side of [`send_entry`]: wait for the descriptors (allocating
/// nothing unless the message is bad).
fn recv_entry(ctrl: RawFd) -> std::io::Result<EntryFds> {
    let mut buf = [0u8; 8];
    let mut fds = [-1; MAX_V1 + 2];
    let (n, got) = ipc::recv_into(ctrl, &mut buf, &mut fds)?;
    let bad = |what: &str| {
        close_all(&fds[..got]);
        Err(std::io::Error::other(format!(
            "malformed cgroup message from the supervisor: {what}"
        )))
    };
    if n == 0 {
        return bad("the supervisor is gone");
    }
    if n != 4 || buf[0] != tag::ENTER {
        return bad("unexpected message");
    }
    let (v1, dir, procs) = (buf[1] as usize, buf[2] as usize, buf[3] as usize);
    if v1 > MAX_V1 || dir > 1 || procs > 1 || v1 + dir + procs != got {
        return bad("descriptor counts do not match");
    }
    let mut e = EntryFds {
        v1_tasks: [-1; MAX_V1],
        v1_count: v1,
        v2_dir: (dir == 1).then_some(fds[v1]),
        v2_procs: (procs == 1).then_some(fds[v1 + dir]),
    };
    e.v1_tasks[..v1].copy_from_slice(&fds[..v1]);
    Ok(e)
}

/// Stage A. Called in the child right after `fork` in the supervisor.
pub(crate) fn stage_a(spec: &ChildSpec) -> ! {
    let ctrl = spec.ctrl;
    // Die with the supervisor.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS;
    // SAFETY: unshare with flags; we are single-threaded after fork.
    if unsafe { libc::unshare(flags) } < 0 {
        fail(ctrl, "unshare namespaces", &last_err(), exit::SETUP);
    }
    // Map our own uid and gid to themselves: an unprivileged process may
    // write exactly this one-line map for itself.
    if let Err(e) = write_file("/proc/self/setgroups", "deny") {
        if e.kind() != std::io::ErrorKind::NotFound {
            fail(ctrl, "write setgroups", &e, exit::SETUP);
        }
    }
    if let Err(e) = write_file("/proc/self/uid_map", &format!("{0} {0} 1\n", spec.uid)) {
        fail(ctrl, "write uid_map", &e, exit::SETUP);
    }
    if let Err(e) = write_file("/proc/self/gid_map", &format!("{0} {0} 1\n", spec.gid)) {
        fail(ctrl, "write gid_map", &e, exit::SETUP);
    }
    // The supervisor made the cgroups while we built the namespaces; nothing
    // has forked yet, so every process of the sandbox starts inside them.
    let cg = match recv_entry(ctrl) {
        Ok(cg) => cg,
        Err(e) => fail(ctrl, "receive the cgroups", &e, exit::SETUP),
    };
    // Writing to v1 `tasks` moves the calling thread only, which for us
    // is the whole process (see `cgroup`'s module documentation). The
    // kernel checks the credentials of the descriptor's opener, the
    // supervisor.
    for &fd in &cg.v1_tasks[..cg.v1_count] {
        if let Err(e) = write_fd(fd, b"0") {
            fail(ctrl, "join cgroup v1 (write 0 to tasks)", &e, exit::SETUP);
        }
    }
    close_all(&cg.v1_tasks[..cg.v1_count]);
    // The supervisor sent the cgroups after moving us (`place_apart`), so
    // this undoes the move for good: the sandbox gets every CPU it had.
    if let Some(cpus) = &spec.cpus {
        // SAFETY: sched_setaffinity reads a valid cpu_set_t.
        if unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(cpus), cpus) } < 0 {
            fail(ctrl, "restore the CPU affinity", &last_err(), exit::SETUP);
        }
    }
    let mut how: &[u8] = if cg.v1_count == 0 {
        b""
    } else {
        b"v1: stage A wrote itself to tasks"
    };
    let init = match cg.v2_dir {
        Some(dir) => match clone_into_cgroup(dir) {
            Ok(pid) => {
                how = if cg.v1_count == 0 {
                    b"v2: init created in its cgroup by clone3(CLONE_INTO_CGROUP)"
                } else {
                    b"v1: stage A wrote itself to tasks; v2: init created in its cgroup by clone3(CLONE_INTO_CGROUP)"
                };
                pid
            }
            // clone3 refused (an old kernel, or a container's seccomp
            // profile): join through cgroup.procs, with the descriptor the
            // supervisor opened (the kernel checks the opener's rights).
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
                ) =>
            {
                let procs = cg.v2_procs.unwrap_or(-1);
                if let Err(e) = write_fd(procs, b"0") {
                    fail(
                        ctrl,
                        "join cgroup v2 (write 0 to cgroup.procs)",
                        &e,
                        exit::SETUP,
                    );
                }
                how = b"v2: stage A wrote itself to cgroup.procs (clone3 refused)";
                // SAFETY: fork in a single-threaded process.
                unsafe { libc::fork() }
            }
            Err(e) => fail(ctrl, "clone3 into cgroup v2", &e, exit::SETUP),
        },
        // SAFETY: fork in a single-threaded process.
        None => unsafe { libc::fork() },
    };
    if init < 0 {
        fail(ctrl, "fork init", &last_err(), exit::SETUP);
    }
    close_all(cg.v2_dir.iter().chain(&cg.v2_procs));
    if init == 0 {
        init_main(spec, cg.joined());
    }
    if !how.is_empty() {
        let _ = ipc::send(ctrl, tag::CGROUP, how, &[]);
    }
    let _ = ipc::send(ctrl, tag::INIT_PID, &init.to_ne_bytes(), &[]);
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child.
        let r = unsafe { libc::waitpid(init, &mut status, 0) };
        if r == init {
            break;
        }
        if r < 0 && last_err().raw_os_error() != Some(libc::EINTR) {
            break;
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    // SAFETY: exit the forked child.
    unsafe { libc::_exit(code) }
}

fn init_main(spec: &ChildSpec, in_cgroup: bool) -> ! {
    let ctrl = spec.ctrl;
    // SAFETY: prctl with integer arguments. Die with stage A; keep our memory
    // and /proc entries away from the sandboxed processes.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        libc::prctl(libc::PR_SET_DUMPABLE, 0);
    }
    // A cgroup namespace rooted at the sandbox's own cgroups (we are in
    // them by now), so /proc/self/cgroup shows nothing of the host's tree.
    // SAFETY: unshare with a flag; single-threaded.
    if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } < 0 {
        fail(ctrl, "unshare cgroup namespace", &last_err(), exit::SETUP);
    }
    if let Err((step, e)) = crate::mounts::execute(&spec.mounts, spec.skeleton_size) {
        fail(ctrl, step, &e, exit::SETUP);
    }
    // SAFETY: valid C string and length.
    if unsafe { libc::sethostname(spec.hostname.as_ptr(), spec.hostname.as_bytes().len()) } < 0 {
        fail(ctrl, "set hostname", &last_err(), exit::SETUP);
    }
    if let Err(e) = loopback_up() {
        fail(ctrl, "bring up loopback", &e, exit::SETUP);
    }
    if !spec.listen_ports.is_empty() {
        let mut fds = Vec::new();
        for &port in &spec.listen_ports {
            match listen_loopback(port) {
                Ok(fd) => fds.push(fd),
                Err(e) => fail(ctrl, "bind relay listener", &e, exit::SETUP),
            }
        }
        if let Err(e) = ipc::send(ctrl, tag::LISTENERS, &[], &fds) {
            fail(ctrl, "hand over relay listeners", &e, exit::SETUP);
        }
        for fd in fds {
            // SAFETY: closing descriptors we opened.
            unsafe { libc::close(fd) };
        }
    }
    let mut pty_slave = None;
    if spec.pty {
        match open_pty() {
            Ok((master, slave)) => {
                if let Err(e) = ipc::send(ctrl, tag::PTY, &[], &[master]) {
                    fail(ctrl, "hand over pty", &e, exit::SETUP);
                }
                // SAFETY: closing our copy of the master.
                unsafe { libc::close(master) };
                pty_slave = Some(slave);
            }
            Err(e) => fail(ctrl, "open pty", &e, exit::SETUP),
        }
    }

    // Signals to forward to the command; SIGCHLD to reap.
    // SAFETY: sigset manipulation on a local set.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, *s);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }

    // SAFETY: fork in a single-threaded process.
    let cmd = unsafe { libc::fork() };
    if cmd < 0 {
        fail(ctrl, "fork command", &last_err(), exit::SETUP);
    }
    if cmd == 0 {
        // SAFETY: restore the default mask for the command.
        unsafe { libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut()) };
        command_main(spec, pty_slave, in_cgroup);
    }
    if let Some(s) = pty_slave {
        // SAFETY: closing our copy of the slave.
        unsafe { libc::close(s) };
    }

    // Reap everything; end when the command ends.
    loop {
        // SAFETY: sigwaitinfo fills a local siginfo.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig < 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            // The command leads its own session and process group.
            // SAFETY: kill with a plain pid and signal.
            unsafe { libc::kill(-cmd, sig) };
            continue;
        }
        loop {
            let mut status = 0;
            // SAFETY: reaping our children.
            let r = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if r <= 0 {
                break;
            }
            if r == cmd {
                let (code, signal) = if libc::WIFEXITED(status) {
                    (libc::WEXITSTATUS(status), 0)
                } else {
                    (-1, libc::WTERMSIG(status))
                };
                let mut payload = code.to_ne_bytes().to_vec();
                payload.extend_from_slice(&signal.to_ne_bytes());
                let _ = ipc::send(ctrl, tag::EXIT, &payload, &[]);
                // Exiting as PID 1 kills whatever the command left behind.
                // SAFETY: exit the forked child.
                unsafe { libc::_exit(0) };
            }
        }
    }
}

/// Signals the init passes on to the command's process group.
const FORWARDED: &[libc::c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a throwaway socket for the interface ioctls.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(last_err());
    }
    // SAFETY: ifreq is plain data; the name is NUL-terminated "lo".
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name[0] = b'l' as libc::c_char;
    req.ifr_name[1] = b'o' as libc::c_char;
    let r = unsafe {
        let mut r = libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            r = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
        }
        r
    };
    let err = last_err();
    // SAFETY: closing our socket.
    unsafe { libc::close(fd) };
    if r < 0 { Err(err) } else { Ok(()) }
}

fn listen_loopback(port: u16) -> std::io::Result<RawFd> {
    // SAFETY: socket/bind/listen on a fresh descriptor with a local sockaddr.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(last_err());
        }
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            4,
        );
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_port = port.to_be();
        addr.sin_addr.s_addr = u32::from_be_bytes([127, 0, 0, 1]).to_be();
        if libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) < 0
            || libc::listen(fd, 512) < 0
        {
            let e = last_err();
            libc::close(fd);
            return Err(e);
        }
        Ok(fd)
    }
}

/// Open a pty pair on the sandbox's own devpts instance.
fn open_pty() -> std::io::Result<(RawFd, RawFd)> {
    // SAFETY: opening /dev/ptmx and the slave it names.
    unsafe {
        let ptmx = CString::new("/dev/pts/ptmx").unwrap();
        let master = libc::open(
            ptmx.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if master < 0 {
            return Err(last_err());
        }
        let unlock: libc::c_int = 0;
        let mut n: libc::c_uint = 0;
        if libc::ioctl(master, libc::TIOCSPTLCK, &unlock) < 0
            || libc::ioctl(master, libc::TIOCGPTN, &mut n) < 0
        {
            let e = last_err();
            libc::close(master);
            return Err(e);
        }
        let path = CString::new(format!("/dev/pts/{n}")).unwrap();
        let slave = libc::open(
            path.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        if slave < 0 {
            let e = last_err();
            libc::close(master);
            return Err(e);
        }
        Ok((master, slave))
    }
}

fn command_main(spec: &ChildSpec, pty_slave: Option<RawFd>, in_cgroup: bool) -> ! {
    let ctrl = spec.ctrl;
    // SAFETY: process-attribute syscalls with plain arguments; each result
    // is checked.
    unsafe {
        // A new session: no controlling terminal shared with the host, so
        // nothing typed into the host's terminal can come from here.
        if libc::setsid() < 0 {
            fail(ctrl, "setsid", &last_err(), exit::SETUP);
        }
        if let Some(slave) = pty_slave {
            if libc::ioctl(slave, libc::TIOCSCTTY, 0) < 0 {
                fail(ctrl, "set controlling terminal", &last_err(), exit::SETUP);
            }
            for fd in 0..3 {
                libc::dup2(slave, fd);
            }
            libc::close(slave);
        } else {
            for (i, fd) in spec.stdio.iter().enumerate() {
                if let Some(fd) = fd {
                    if libc::dup2(*fd, i as i32) < 0 {
                        fail(ctrl, "redirect stdio", &last_err(), exit::SETUP);
                    }
                }
            }
        }
        if libc::chdir(spec.cwd.as_ptr()) < 0 {
            fail(ctrl, "enter workspace", &last_err(), exit::SETUP);
        }
        let fallback = if in_cgroup {
            &[][..]
        } else {
            &spec.fallback_rlimits[..]
        };
        for &(res, soft, hard) in spec.rlimits.iter().chain(fallback) {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(res, &lim) < 0 {
                fail(ctrl, "set rlimit", &last_err(), exit::SETUP);
            }
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            fail(ctrl, "set no_new_privs", &last_err(), exit::SETUP);
        }
    }
    let status = crate::landlock_layer::restrict(&spec.landlock);
    let status_text = match &status {
        Ok(s) => s.clone(),
        Err(e) => fail(
            ctrl,
            "landlock",
            &std::io::Error::other(e.clone()),
            exit::SETUP,
        ),
    };
    let _ = ipc::send(ctrl, tag::LANDLOCK, status_text.as_bytes(), &[]);
    if let Err(e) = drop_capabilities() {
        fail(ctrl, "drop capabilities", &e, exit::SETUP);
    }
    match crate::seccomp::install(&spec.seccomp, spec.seccomp_listener) {
        Ok(Some(listener)) => {
            if let Err(e) = ipc::send(ctrl, tag::SECCOMP_FD, &[], &[listener]) {
                fail(ctrl, "hand over seccomp listener", &e, exit::SETUP);
            }
            // SAFETY: the command must not hold its own listener.
            unsafe { libc::close(listener) };
        }
        Ok(None) => {
            let _ = ipc::send(ctrl, tag::READY, &[], &[]);
        }
        Err(e) => fail(ctrl, "install seccomp filter", &e, exit::SETUP),
    }

    if spec.gated {
        wait_for_go(ctrl);
    }
    let mut argv: Vec<*const libc::c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = spec.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: close_range marks every inherited descriptor above stderr
    // close-on-exec (the control socket included); the arrays are
    // NULL-terminated and point at live C strings.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        libc::execvpe(argv[0], argv.as_ptr(), envp.as_ptr());
    }
    let err = last_err();
    let code = match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => exit::NOT_FOUND,
        _ => exit::NOT_EXECUTABLE,
    };
    fail(ctrl, "exec", &err, code)
}

/// Held here, confined, until the supervisor's gate passes. Anything but
/// GO (the supervisor gone, or a refusal, after which it kills the
/// sandbox anyway) ends the process before the command could run.
fn wait_for_go(ctrl: RawFd) {
    let mut buf = [0u8; 8];
    let mut no_fds = [-1; 1];
    match ipc::recv_into(ctrl, &mut buf, &mut no_fds) {
        Ok((n, got)) if n >= 1 && buf[0] == tag::GO => close_all(&no_fds[..got]),
        // SAFETY: end the forked child without running anything.
        _ => unsafe { libc::_exit(exit::SETUP) },
    }
}

/// Drop every capability for good: the bounding and ambient sets, the
/// inheritable, permitted and effective sets, and the securebits that would
/// otherwise hand them back to uid 0 on execve.
fn drop_capabilities() -> std::io::Result<()> {
    const SECBIT_NOROOT: libc::c_ulong = 1 << 0;
    const SECBIT_NOROOT_LOCKED: libc::c_ulong = 1 << 1;
    const SECBIT_NO_SETUID_FIXUP: libc::c_ulong = 1 << 2;
    const SECBIT_NO_SETUID_FIXUP_LOCKED: libc::c_ulong = 1 << 3;
    const SECBIT_KEEP_CAPS_LOCKED: libc::c_ulong = 1 << 5;
    const SECBIT_NO_CAP_AMBIENT_RAISE: libc::c_ulong = 1 << 6;
    const SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED: libc::c_ulong = 1 << 7;
    // SAFETY: prctl/capset with plain arguments and a local header.
    unsafe {
        let bits = SECBIT_NOROOT
            | SECBIT_NOROOT_LOCKED
            | SECBIT_NO_SETUID_FIXUP
            | SECBIT_NO_SETUID_FIXUP_LOCKED
            | SECBIT_KEEP_CAPS_LOCKED
            | SECBIT_NO_CAP_AMBIENT_RAISE
            | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED;
        if libc::prctl(libc::PR_SET_SECUREBITS, bits, 0, 0, 0) < 0 {
            return Err(last_err());
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        let mut cap = 0;
        while libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) >= 0 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 {
                return Err(last_err());
            }
            cap += 1;
        }
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let hdr = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let data = [Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        if libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) < 0 {
            return Err(last_err());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, OwnedFd};

    fn devnull() -> OwnedFd {
        std::fs::File::open("/dev/null").unwrap().into()
    }

    fn inode(fd: RawFd) -> (u64, u64) {
        // SAFETY: fstat into a local stat buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
        (st.st_dev, st.st_ino)
    }

    #[test]
    fn the_cgroup_descriptors_arrive_in_order_and_counted() {
        let (sup, a) = ipc::pair().unwrap();
        let dir: OwnedFd = std::fs::File::open("/").unwrap().into();
        let entry = Entry {
            v1_tasks: vec![devnull(), devnull()],
            v2_dir: Some(dir),
            v2_procs: None,
        };
        send_entry(sup.as_raw_fd(), Some(&entry)).unwrap();
        let got = recv_entry(a.as_raw_fd()).unwrap();
        assert_eq!(got.v1_count, 2);
        assert!(got.joined());
        assert_eq!(got.v2_procs, None);
        let root = inode(entry.v2_dir.as_ref().unwrap().as_raw_fd());
        assert_eq!(
            inode(got.v2_dir.unwrap()),
            root,
            "v2 dir is not the directory sent"
        );
        for &fd in &got.v1_tasks[..2] {
            assert_eq!(inode(fd), inode(entry.v1_tasks[0].as_raw_fd()));
        }
        close_all(got.v1_tasks[..2].iter().chain(&got.v2_dir));

        send_entry(sup.as_raw_fd(), None).unwrap();
        let none = recv_entry(a.as_raw_fd()).unwrap();
        assert!(!none.joined(), "no cgroup must read as none");
    }

    #[test]
    fn a_malformed_or_missing_cgroup_message_is_refused() {
        let (sup, a) = ipc::pair().unwrap();
        // Counts that promise more descriptors than came.
        let null = devnull();
        ipc::send(sup.as_raw_fd(), tag::ENTER, &[2, 1, 0], &[null.as_raw_fd()]).unwrap();
        let e = recv_entry(a.as_raw_fd())
            .err()
            .expect("counts mismatch accepted");
        assert!(e.to_string().contains("counts"), "{e}");
        // Another tag where the cgroups should be.
        ipc::send(sup.as_raw_fd(), tag::READY, &[], &[]).unwrap();
        assert!(recv_entry(a.as_raw_fd()).is_err());
        // The supervisor gone before sending.
        drop(sup);
        let e = recv_entry(a.as_raw_fd())
            .err()
            .expect("end of stream accepted");
        assert!(e.to_string().contains("gone"), "{e}");
    }
}
