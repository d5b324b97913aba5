//! Messages between the sandbox's processes and the supervisor, over one
//! `SOCK_SEQPACKET` socket pair: a tag byte, a payload, and optionally file
//! descriptors (SCM_RIGHTS).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Message tags.
pub mod tag {
    /// How stage A entered the sandbox's cgroups (text, for the report).
    pub const CGROUP: u8 = b'C';
    /// Host PID of the sandbox's init (i32).
    pub const INIT_PID: u8 = b'I';
    /// A set-up step failed: `step\0detail`.
    pub const ERROR: u8 = b'E';
    /// Landlock status text.
    pub const LANDLOCK: u8 = b'K';
    /// The seccomp listener descriptor; the command is about to exec.
    pub const SECCOMP_FD: u8 = b'S';
    /// The command is about to exec (no listener).
    pub const READY: u8 = b'R';
    /// The pty master descriptor.
    pub const PTY: u8 = b'P';
    /// Loopback listening sockets bound inside the sandbox.
    pub const LISTENERS: u8 = b'L';
    /// The command's end: code (i32), signal (i32).
    pub const EXIT: u8 = b'X';
    /// Supervisor to stage A: the descriptors to enter the sandbox's
    /// cgroups with (see `child::send_entry`); none when there is no cgroup.
    pub const ENTER: u8 = b'G';
    /// Supervisor to the command: the gate passed, it may exec.
    pub const GO: u8 = b'O';
}

pub const MAX_MSG: usize = 8192;

pub fn pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out-array of two ints.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair returned two fresh descriptors we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Send one message with optional descriptors. Async-signal-safe apart from
/// the stack buffer: usable in forked children.
pub fn send(sock: RawFd, tag: u8, payload: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut buf = [0u8; MAX_MSG];
    let n = payload.len().min(MAX_MSG - 1);
    buf[0] = tag;
    buf[1..1 + n].copy_from_slice(&payload[..n]);
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: n + 1,
    };
    // Room for up to 16 descriptors.
    let mut cmsg_buf = [0u64; 16];
    // SAFETY: msghdr is plain data; fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        let fds = &fds[..fds.len().min(16)];
        let data_len = std::mem::size_of_val(fds) as u32;
        // SAFETY: CMSG_SPACE/CMSG_LEN are pure arithmetic.
        let space = unsafe { libc::CMSG_SPACE(data_len) } as usize;
        msg.msg_control = cmsg_buf.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: msg_control points at a buffer of at least `space` bytes,
        // so the first header and its data fit.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(data_len) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c).cast::<RawFd>(),
                fds.len(),
            );
        }
    }
    loop {
        // SAFETY: msg is fully initialised and its buffers outlive the call.
        let r = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// A received message.
pub struct Msg {
    pub tag: u8,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

/// Receive one message into `buf` (tag byte first) and its descriptors
/// into `fds`, without allocating: usable in forked children. Returns the
/// bytes and descriptors received; 0 bytes is the end of the stream.
/// Descriptors beyond `fds.len()` are closed.
pub fn recv_into(sock: RawFd, buf: &mut [u8], fds: &mut [RawFd]) -> io::Result<(usize, usize)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut cmsg_buf = [0u64; 16];
    // SAFETY: plain data, set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg_buf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cmsg_buf);
    let n = loop {
        // SAFETY: msg points at live buffers.
        let r = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    };
    let mut got = 0;
    // SAFETY: walking the control messages the kernel wrote into cmsg_buf.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c).cast::<RawFd>();
                let count =
                    ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / std::mem::size_of::<RawFd>();
                for i in 0..count {
                    let fd = std::ptr::read_unaligned(data.add(i));
                    if got < fds.len() {
                        fds[got] = fd;
                        got += 1;
                    } else {
                        libc::close(fd);
                    }
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n, got))
}

/// Receive one message; `Ok(None)` at end of stream.
pub fn recv(sock: &impl AsRawFd) -> io::Result<Option<Msg>> {
    let mut buf = vec![0u8; MAX_MSG];
    let mut raw = [-1; 16];
    let (n, got) = recv_into(sock.as_raw_fd(), &mut buf, &mut raw)?;
    // SAFETY: the kernel just installed these descriptors for us.
    let fds = raw[..got]
        .iter()
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if n == 0 {
        return Ok(None);
    }
    buf.truncate(n);
    let tag = buf[0];
    buf.remove(0);
    Ok(Some(Msg {
        tag,
        payload: buf,
        fds,
    }))
}
