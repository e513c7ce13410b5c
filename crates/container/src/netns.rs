//! The Runtime API's listening socket, opened inside the sandbox's network
//! namespace (Decision 9).
//!
//! The sandbox's network namespace holds nothing but a loopback device, so
//! the only address the function can reach is `127.0.0.1:9001`, served by
//! the host. The host thread enters the namespace, brings `lo` up, binds, and
//! goes back: a socket stays in the namespace it was created in, so the
//! host's tokio runtime then serves it from outside.

use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::limits;

/// A failure to open the Runtime API inside a sandbox, naming the step.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// A namespace file could not be opened.
    #[error("opening {0}: {1}")]
    OpenNamespace(String, io::Error),
    /// `setns` into the sandbox's (or back into the host's) namespace failed.
    #[error("entering network namespace {0}: {1}")]
    EnterNamespace(String, io::Error),
    /// The loopback device could not be brought up.
    #[error("bringing up lo in the sandbox: {0}")]
    LoopbackUp(io::Error),
    /// The listener could not be bound.
    #[error("binding 127.0.0.1:{port} in the sandbox: {1}", port = limits::RUNTIME_API_PORT)]
    Bind((), io::Error),
}

/// Opens the Runtime API listener (non-blocking) inside the network namespace of `pid`.
///
/// Must run on a thread of its own: `setns` moves only the calling thread.
pub fn bind_runtime_api(pid: libc::pid_t) -> Result<TcpListener, ListenerError> {
    let own_path = "/proc/thread-self/ns/net".to_owned();
    let own =
        File::open(&own_path).map_err(|e| ListenerError::OpenNamespace(own_path.clone(), e))?;
    let target_path = format!("/proc/{pid}/ns/net");
    let target = File::open(&target_path)
        .map_err(|e| ListenerError::OpenNamespace(target_path.clone(), e))?;
    enter(&target, &target_path)?;
    let bound = loopback_up().and_then(|()| {
        let listener = TcpListener::bind(("127.0.0.1", limits::RUNTIME_API_PORT))
            .map_err(|e| ListenerError::Bind((), e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| ListenerError::Bind((), e))?;
        Ok(listener)
    });
    // Back home even when binding failed, so the thread never does anything
    // else from inside a sandbox's network.
    enter(&own, &own_path)?;
    bound
}

fn enter(namespace: &File, path: &str) -> Result<(), ListenerError> {
    // SAFETY: setns on a namespace descriptor we own; it changes only this thread.
    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(ListenerError::EnterNamespace(
            path.to_owned(),
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Sets `IFF_UP` on `lo` of the current network namespace.
fn loopback_up() -> Result<(), ListenerError> {
    // SAFETY: plain socket creation; the descriptor is owned right away.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(ListenerError::LoopbackUp(io::Error::last_os_error()));
    }
    // SAFETY: raw is a fresh descriptor nobody else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: an all-zero ifreq is valid; the name is set below.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: request is a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) < 0 {
            return Err(ListenerError::LoopbackUp(io::Error::last_os_error()));
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) < 0 {
            return Err(ListenerError::LoopbackUp(io::Error::last_os_error()));
        }
    }
    Ok(())
}
