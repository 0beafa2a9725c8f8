//! The embedding example (host/examples/agent_runtime.rs), run as a user
//! would run it: `cargo test` builds the examples, and this runs the binary.

use std::process::Command;

use crate::harness::{cli_cache_dir, example, real_skill};

#[test]
fn the_agent_runtime_example_spawns_streams_relays_and_handles_a_denial() {
    let exe = example("agent_runtime");
    let hello = real_skill("hello");
    let disk = real_skill("disk-report");
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    std::fs::create_dir_all(data.join("logs")).unwrap();
    std::fs::write(data.join("logs/big.log"), vec![b'x'; 64 * 1024]).unwrap();
    let policy = work.path().join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "fs = [{{ host = {:?}, guest = \"/data\", access = \"read\" }}]\n\
             [exec]\nallow = [{{ program = \"du\", args = [\"-k\", \"-d\", \"1\", \".\"] }},\n\
             {{ program = \"stat\", args = [\"-f\", \"-c\", \"%b %f %S\", \".\"] }}]\n",
            data.to_str().unwrap()
        ),
    )
    .unwrap();
    let out = Command::new(&exe)
        .arg(hello.path())
        .arg(disk.path())
        .arg(&policy)
        .arg(work.path().join("store"))
        .env("SKILLBOX_CACHE_DIR", cli_cache_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "[denied] disk-report without grants:",
        "[hello] progress 50%: composing the greeting",
        "[hello] succeeded",
        "[disk-report] succeeded",
        "[summary] hello succeeded: Hello, agent!",
        "[summary] disk-report succeeded:",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains("--allow-read"),
        "the denial says how to grant: {stdout}"
    );
}
