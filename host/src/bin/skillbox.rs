//! `skillbox`: the command users run. It hands `skillbox run` to a running
//! daemon and starts `skillbox-host`, the whole command line, for the
//! rest; see `skillbox::handoff`.

fn main() {
    skillbox::handoff::front_main()
}
