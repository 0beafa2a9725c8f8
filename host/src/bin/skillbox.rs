//! `skillbox`: the command users run. It hands `skillbox run` to a running
//! daemon and starts `skillbox-host`, the whole command line, for the
//! rest; see `skillbox::handoff`.
//!
//! It starts without Rust's runtime set-up (`no_main`): that set-up (a
//! stack guard found by parsing `/proc/self/maps`, an alternate signal
//! stack, signal dispositions) is a fifth of a handed-off run's time, and
//! the front end neither recurses deeply nor writes to pipes.

#![no_main]

/// The C entry point; `std::env::args_os` still works (glibc hands
/// `argv` to the standard library through `.init_array`).
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: libc::c_int, _argv: *const *const libc::c_char) -> libc::c_int {
    skillbox::handoff::front_main()
}
