//! The supervisor side of seccomp user notification: receives each notified
//! syscall, reads its arguments out of the sandboxed process, writes an audit
//! event, and answers.
//!
//! Everything read here is controlled by the sandboxed process, so reads are
//! bounded ([`MAX_PATH`], [`MAX_ARGS`], [`MAX_ARGV_BYTES`]) and a notification
//! whose ID is no longer valid after the read is logged as nothing, since the
//! PID may have been reused.

use std::os::fd::{AsRawFd, OwnedFd};

use crate::audit::{AuditLog, Event};
use crate::seccomp;

pub const MAX_PATH: usize = 4096;
pub const MAX_ARGS: usize = 256;
pub const MAX_ARGV_BYTES: usize = 64 * 1024;

/// How `connect` to inet addresses is treated.
#[derive(Debug, Clone, Copy)]
pub struct ConnectPolicy {
    /// Loopback connections are allowed (they stay inside the sandbox's
    /// network namespace); everything else is refused with ENETUNREACH.
    pub loopback_only: bool,
}

/// Serve notifications until every sandboxed process has exited (the
/// listener hangs up) or `stop` becomes readable.
pub fn serve(listener: OwnedFd, stop: OwnedFd, audit: AuditLog, connect: ConnectPolicy) {
    let fd = listener.as_raw_fd();
    loop {
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: a valid pollfd array.
        if unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) } < 0 {
            continue;
        }
        if fds[1].revents != 0
            || fds[0].revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
        {
            return;
        }
        // SAFETY: seccomp_notif is plain data; zeroed is the required
        // initial state for NOTIF_RECV.
        let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
        // SAFETY: fd is our listener; req is a valid out-pointer.
        let r = unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV as _, &mut req) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                // Interrupted, or the target died before we received it.
                Some(libc::EINTR) | Some(libc::ENOENT) => continue,
                // No more filter users: the sandbox is gone.
                _ => return,
            }
        }
        let (error, event) = handle(fd, &req, connect);
        if let Some(ev) = event {
            // Only log what we read while the notification was still live.
            if id_valid(fd, req.id) {
                audit.record(&ev);
            }
        }
        respond(fd, req.id, error);
    }
}

fn handle(fd: i32, req: &libc::seccomp_notif, connect: ConnectPolicy) -> (i32, Option<Event>) {
    let pid = req.pid as i32;
    let nr = req.data.nr;
    let args = req.data.args;
    if let Some((errno, what)) = seccomp::denial_for(nr, &args) {
        return (
            errno,
            Some(Event::Denied {
                pid: Some(pid),
                operation: "syscall".into(),
                detail: what,
            }),
        );
    }
    let _ = fd;
    let nr = nr as libc::c_long;
    if nr == libc::SYS_execve || nr == libc::SYS_execveat {
        let (path_ptr, argv_ptr) = if nr == libc::SYS_execve {
            (args[0], args[1])
        } else {
            (args[1], args[2])
        };
        let path = read_cstr(pid, path_ptr, MAX_PATH).unwrap_or_default();
        let (argv, truncated) = read_argv(pid, argv_ptr);
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Shells try each PATH entry in turn; mark the attempts that cannot
        // succeed (nothing there in the sandbox's view) so readers can tell
        // them from real execs. Advisory only: the file can change after.
        let full = if path.starts_with('/') {
            path.clone()
        } else {
            format!("{cwd}/{path}")
        };
        let found = std::fs::symlink_metadata(format!("/proc/{pid}/root{full}")).is_ok();
        return (
            0,
            Some(Event::Exec {
                pid,
                path,
                argv,
                cwd,
                truncated,
                found,
            }),
        );
    }
    if nr == libc::SYS_connect {
        let len = (args[2] as usize).min(128);
        let mut buf = vec![0u8; len];
        let n = read_mem(pid, args[1], &mut buf).unwrap_or(0);
        buf.truncate(n);
        let (family, address, loopback) = describe_sockaddr(&buf);
        let inet = family == "inet" || family == "inet6";
        let allowed = !(inet && connect.loopback_only && !loopback);
        let ev = Event::Connect {
            pid,
            family,
            address,
            allowed,
        };
        return (if allowed { 0 } else { libc::ENETUNREACH }, Some(ev));
    }
    (0, None)
}

fn respond(fd: i32, id: u64, error: i32) {
    let resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: -error,
        flags: if error == 0 {
            libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
        } else {
            0
        },
    };
    // SAFETY: resp is a valid seccomp_notif_resp; fd is our listener. An
    // error (ENOENT: target died) needs no handling.
    unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND as _, &resp) };
}

fn id_valid(fd: i32, id: u64) -> bool {
    // SAFETY: NOTIF_ID_VALID reads a u64 through the pointer.
    unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _, &id) == 0 }
}

/// Read another process's memory. Returns the number of bytes read.
fn read_mem(pid: i32, addr: u64, buf: &mut [u8]) -> Option<usize> {
    if addr == 0 || buf.is_empty() {
        return None;
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: local points at buf; remote is only dereferenced by the kernel
    // in the target's address space.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    (n > 0).then_some(n as usize)
}

/// Read a NUL-terminated string of at most `max` bytes, page by page so a
/// string ending just before an unmapped page is still read.
fn read_cstr(pid: i32, addr: u64, max: usize) -> Option<String> {
    let mut out = Vec::new();
    let mut cur = addr;
    while out.len() < max {
        let to_page_end = 4096 - (cur as usize % 4096);
        let mut chunk = vec![0u8; to_page_end.min(max - out.len())];
        let n = read_mem(pid, cur, &mut chunk)?;
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Some(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&chunk[..n]);
        cur += n as u64;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn read_argv(pid: i32, argv_ptr: u64) -> (Vec<String>, bool) {
    let mut argv = Vec::new();
    let mut total = 0;
    let mut ptrs = [0u8; 8 * 64];
    let mut idx = 0u64;
    'outer: while argv.len() < MAX_ARGS {
        let Some(n) = read_mem(pid, argv_ptr + idx * 8, &mut ptrs) else {
            break;
        };
        for c in ptrs[..n - n % 8].chunks_exact(8) {
            let p = u64::from_ne_bytes(c.try_into().unwrap());
            if p == 0 {
                return (argv, false);
            }
            let remaining = MAX_ARGV_BYTES.saturating_sub(total);
            if remaining == 0 || argv.len() >= MAX_ARGS {
                break 'outer;
            }
            let s = read_cstr(pid, p, remaining.min(MAX_PATH * 4)).unwrap_or_default();
            total += s.len() + 1;
            argv.push(s);
            idx += 1;
        }
        if n < ptrs.len() {
            break;
        }
    }
    (argv, true)
}

/// (family, printable address, is loopback)
pub fn describe_sockaddr(buf: &[u8]) -> (String, String, bool) {
    if buf.len() < 2 {
        return ("unknown".into(), String::new(), false);
    }
    let family = u16::from_ne_bytes([buf[0], buf[1]]) as i32;
    match family {
        libc::AF_INET if buf.len() >= 8 => {
            let port = u16::from_be_bytes([buf[2], buf[3]]);
            let ip = std::net::Ipv4Addr::new(buf[4], buf[5], buf[6], buf[7]);
            ("inet".into(), format!("{ip}:{port}"), ip.is_loopback())
        }
        libc::AF_INET6 if buf.len() >= 24 => {
            let port = u16::from_be_bytes([buf[2], buf[3]]);
            let mut a = [0u8; 16];
            a.copy_from_slice(&buf[8..24]);
            let ip = std::net::Ipv6Addr::from(a);
            let lo = ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback());
            ("inet6".into(), format!("[{ip}]:{port}"), lo)
        }
        libc::AF_UNIX => {
            let path = &buf[2..];
            let s = if path.first() == Some(&0) {
                let end = path.len();
                format!("@{}", String::from_utf8_lossy(&path[1..end]))
            } else {
                let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                String::from_utf8_lossy(&path[..end]).into_owned()
            };
            ("unix".into(), s, false)
        }
        libc::AF_UNSPEC => ("unspec".into(), String::new(), false),
        other => (format!("af{other}"), String::new(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddrs_are_described() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            describe_sockaddr(&v4),
            ("inet".into(), "127.0.0.1:8080".into(), true)
        );
        v4[4..8].copy_from_slice(&[93, 184, 216, 34]);
        assert!(!describe_sockaddr(&v4).2);
        let mut un = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        un.extend_from_slice(b"/run/docker.sock\0");
        assert_eq!(describe_sockaddr(&un).1, "/run/docker.sock");
        assert_eq!(describe_sockaddr(&[1]).0, "unknown");
    }

    #[test]
    fn reads_own_memory_bounded() {
        let s = std::ffi::CString::new("hello").unwrap();
        let pid = std::process::id() as i32;
        assert_eq!(read_cstr(pid, s.as_ptr() as u64, 100).unwrap(), "hello");
        assert_eq!(read_cstr(pid, s.as_ptr() as u64, 3).unwrap(), "hel");
        let a = std::ffi::CString::new("a").unwrap();
        let b = std::ffi::CString::new("bb").unwrap();
        let ptrs = [a.as_ptr() as u64, b.as_ptr() as u64, 0];
        let (argv, trunc) = read_argv(pid, ptrs.as_ptr() as u64);
        assert_eq!(argv, vec!["a", "bb"]);
        assert!(!trunc);
    }
}
