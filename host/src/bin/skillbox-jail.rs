//! `skillbox-jail`: the process a run's exec'd programs start from. It is
//! started by skillbox itself with a socket on its stdin; see
//! `skillbox::caps::sandbox`.

fn main() {
    skillbox::caps::sandbox::jail::main()
}
