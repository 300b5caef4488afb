//! Records a fatal signal (SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT) in the marker's
//! fatal slot before the process dies of it, so the next start knows which signal
//! killed it and which message the dispatcher had in hand.
//!
//! The handler does async-signal-safe work only: atomic loads, `pthread_self`, one
//! `write(2)` through a descriptor opened at start, `sigaction` and `raise`. It then
//! puts back the action that was there before (for SIGSEGV and SIGBUS that is the Rust
//! runtime's, which tells a stack overflow apart and prints "has overflowed its
//! stack") and lets the signal take its course, so the exit status still shows the
//! signal.
//!
//! A stack overflow is a SIGSEGV on the guard page below the thread's stack; the
//! handler can only run on an alternate signal stack. The Rust runtime installs one
//! for the main thread and for every thread it spawns once its own SIGSEGV handler is
//! in place (checked at start by [`register_dispatcher_thread`], which installs one
//! if it is missing).

use std::sync::{
    atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering},
    OnceLock,
};

use log::{info, warn};

use super::marker::{Fatal, NONE};

/// The spool record whose plugin call is running on the dispatcher thread, or
/// [`NONE`]. Read by the signal handler and the watchdog.
pub static IN_HAND: AtomicU64 = AtomicU64::new(NONE);

static FATAL_FD: AtomicI32 = AtomicI32::new(-1);
/// Only the first fatal event is recorded: a stack overflow's SIGSEGV is followed by
/// the runtime's SIGABRT, and the SIGSEGV is the one that says what happened.
static RECORDED: AtomicBool = AtomicBool::new(false);
/// `pthread_self()` of the dispatcher thread; 0 before it registers.
static DISPATCHER: AtomicUsize = AtomicUsize::new(0);
/// Lowest address of the dispatcher's stack and its guard size, for telling a stack
/// overflow from another SIGSEGV.
static STACK_LOW: AtomicUsize = AtomicUsize::new(0);
static GUARD_BYTES: AtomicUsize = AtomicUsize::new(0);

const SIGNALS: [libc::c_int; 5] = [
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGABRT,
];

struct Previous([libc::sigaction; SIGNALS.len()]);
// SAFETY: plain C data (function addresses, masks, flags), written once before the
// handler is installed and only read afterwards.
unsafe impl Sync for Previous {}
unsafe impl Send for Previous {}
static PREVIOUS: OnceLock<Previous> = OnceLock::new();

/// The signal's name, for logs and dead letters.
pub fn name(signal: i32) -> String {
    match signal {
        libc::SIGSEGV => "SIGSEGV (invalid memory access)".into(),
        libc::SIGBUS => "SIGBUS (bus error)".into(),
        libc::SIGILL => "SIGILL (illegal instruction)".into(),
        libc::SIGFPE => "SIGFPE (arithmetic fault)".into(),
        libc::SIGABRT => "SIGABRT (abort)".into(),
        libc::SIGKILL => "SIGKILL".into(),
        n => format!("signal {n}"),
    }
}

/// Installs the handler for the fatal signals, writing to `fatal_fd`. Once per
/// process; later calls only change the descriptor.
pub fn install(fatal_fd: i32) -> Result<(), String> {
    FATAL_FD.store(fatal_fd, Ordering::SeqCst);
    if PREVIOUS.get().is_some() {
        return Ok(());
    }
    // SAFETY: zeroed sigaction structs are valid "empty" values; sigaction only reads
    // `new` and writes `old`.
    unsafe {
        let mut previous: [libc::sigaction; SIGNALS.len()] = std::mem::zeroed();
        for (i, &sig) in SIGNALS.iter().enumerate() {
            if libc::sigaction(sig, std::ptr::null(), &mut previous[i]) != 0 {
                return Err(format!(
                    "cannot read the action of {}: {}",
                    name(sig),
                    std::io::Error::last_os_error()
                ));
            }
        }
        // Saved before the handler can run, since the handler restores from it.
        let _ = PREVIOUS.set(Previous(previous));
        for &sig in &SIGNALS {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fatal_signal as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(sig, &action, std::ptr::null_mut()) != 0 {
                return Err(format!(
                    "cannot install the handler for {}: {}",
                    name(sig),
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

/// Called on the dispatcher thread: the handler attributes a signal to the message in
/// hand only when it arrives there. Also makes sure the thread has an alternate signal
/// stack, without which a stack overflow kills the process before any handler runs.
pub fn register_dispatcher_thread() {
    // SAFETY: pthread and sigaltstack queries about the calling thread; the attr is
    // initialised by pthread_getattr_np and destroyed after use.
    unsafe {
        DISPATCHER.store(libc::pthread_self() as usize, Ordering::SeqCst);
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) == 0 {
            let mut addr: *mut libc::c_void = std::ptr::null_mut();
            let mut size: libc::size_t = 0;
            let mut guard: libc::size_t = 0;
            if libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0 {
                STACK_LOW.store(addr as usize, Ordering::SeqCst);
            }
            if libc::pthread_attr_getguardsize(&attr, &mut guard) == 0 {
                GUARD_BYTES.store(guard, Ordering::SeqCst);
            }
            libc::pthread_attr_destroy(&mut attr);
        }
        let mut current: libc::stack_t = std::mem::zeroed();
        libc::sigaltstack(std::ptr::null(), &mut current);
        if current.ss_flags & libc::SS_DISABLE == 0 {
            info!(
                "dispatcher thread: alternate signal stack of {} bytes (set up by the Rust runtime), so a plugin's stack overflow is recorded",
                current.ss_size
            );
            return;
        }
        // Leaked on purpose: it must outlive the thread's last signal.
        let size = 64 << 10;
        let stack = Box::leak(vec![0u8; size].into_boxed_slice());
        let alt = libc::stack_t {
            ss_sp: stack.as_mut_ptr().cast(),
            ss_flags: 0,
            ss_size: size,
        };
        if libc::sigaltstack(&alt, std::ptr::null_mut()) != 0 {
            warn!(
                "dispatcher thread: no alternate signal stack and none can be set up ({}); a plugin's stack overflow will kill the collector without being recorded",
                std::io::Error::last_os_error()
            );
        } else {
            info!("dispatcher thread: installed an alternate signal stack of {size} bytes");
        }
    }
}

/// Writes `fatal` to the marker unless something was recorded first. For the
/// watchdog; the signal handler does the same inline.
pub fn record(fatal: Fatal) -> bool {
    if RECORDED.swap(true, Ordering::SeqCst) {
        return false;
    }
    let fd = FATAL_FD.load(Ordering::SeqCst);
    if fd < 0 {
        return false;
    }
    let buf = fatal.encode();
    // SAFETY: writes a stack buffer through a descriptor the marker keeps open.
    unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) == buf.len() as isize }
}

extern "C" fn on_fatal_signal(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    _context: *mut libc::c_void,
) {
    if !RECORDED.swap(true, Ordering::SeqCst) {
        let fd = FATAL_FD.load(Ordering::SeqCst);
        // SAFETY: pthread_self is async-signal-safe (POSIX.1-2008 TC1).
        let on_dispatcher =
            unsafe { libc::pthread_self() } as usize == DISPATCHER.load(Ordering::SeqCst);
        let in_hand = if on_dispatcher {
            IN_HAND.load(Ordering::SeqCst)
        } else {
            NONE
        };
        let stack_overflow = on_dispatcher
            && (signal == libc::SIGSEGV || signal == libc::SIGBUS)
            && !info.is_null()
            && {
                // SAFETY: the kernel hands a valid siginfo to an SA_SIGINFO handler.
                let addr = unsafe { (*info).si_addr() } as usize;
                let low = STACK_LOW.load(Ordering::SeqCst);
                let guard = GUARD_BYTES.load(Ordering::SeqCst).max(4096);
                low != 0 && addr >= low.saturating_sub(guard) && addr < low + 4096
            };
        if fd >= 0 {
            let buf = Fatal::Signal {
                signal,
                in_hand,
                stack_overflow,
            }
            .encode();
            // SAFETY: write(2) is async-signal-safe; the buffer is on this stack.
            unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        }
    }
    // SAFETY: sigaction and raise are async-signal-safe; PREVIOUS was set before this
    // handler was installed.
    unsafe {
        if let Some(previous) = PREVIOUS.get() {
            if let Some(i) = SIGNALS.iter().position(|&s| s == signal) {
                libc::sigaction(signal, &previous.0[i], std::ptr::null_mut());
            }
        } else {
            let mut default: libc::sigaction = std::mem::zeroed();
            default.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(signal, &default, std::ptr::null_mut());
        }
        // A fault (si_code > 0) happens again when the instruction is retried on
        // return, now under the previous action; a signal that was sent (abort's
        // raise, kill) is sent again, delivered once this handler returns.
        if info.is_null() || (*info).si_code <= 0 {
            libc::raise(signal);
        }
    }
}
