//! A control group per run for the programs it starts: a memory ceiling
//! and a process ceiling over all of them together.
//!
//! cgroup v2 is used where the host's own group can have children with the
//! `memory` and `pids` controllers; otherwise the v1 `memory` and `pids`
//! hierarchies (a hybrid host, as systemd's legacy layouts and many CI
//! machines have). The run's groups are made beneath the host's own, so
//! the host's limits still hold, and are named `skillbox-<host pid>-<n>`:
//! leftovers of a host that died are removed by the next one.
//!
//! Where neither works (an unprivileged host without delegation), there is
//! no cgroup; the jail then caps each program's address space instead
//! (`RLIMIT_AS`), and [`super::SandboxStatus`] says so.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

const ROOT: &str = "/sys/fs/cgroup";

/// Which cgroup layout runs get.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// The unified hierarchy, `memory` and `pids` controllers.
    V2,
    /// The v1 `memory` and `pids` hierarchies.
    V1,
}

/// One run's group(s); removed when dropped (once their processes are
/// gone).
#[derive(Debug)]
pub struct RunGroup {
    dirs: Vec<PathBuf>,
    memory_dir: PathBuf,
    layout: Layout,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The host's own group in the hierarchy whose `/proc/self/cgroup` line
/// matches `controller` (`""` for v2).
fn own_group(controller: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, ctls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() {
            ctls.is_empty()
        } else {
            ctls.split(',').any(|c| c == controller)
        };
        matches.then(|| PathBuf::from(path.trim_start_matches('/')))
    })
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    std::fs::write(path, value)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// The parent directories a run's groups go in, per layout, if usable.
fn parents() -> Option<(Layout, PathBuf, Option<PathBuf>)> {
    let v2_mounted = rustix::fs::statfs(ROOT)
        // The field's and the constant's types differ between architectures.
        .map(|s| {
            #[allow(clippy::unnecessary_cast)]
            let same = s.f_type as i64 == libc::CGROUP2_SUPER_MAGIC as i64;
            same
        })
        .unwrap_or(false);
    if v2_mounted {
        let own = Path::new(ROOT).join(own_group("")?);
        let controllers = std::fs::read_to_string(own.join("cgroup.subtree_control")).ok()?;
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        return (has("memory") && has("pids")).then_some((Layout::V2, own, None));
    }
    let memory = Path::new(ROOT).join("memory").join(own_group("memory")?);
    let pids = Path::new(ROOT).join("pids").join(own_group("pids")?);
    // A hierarchy's root group has no limit files of its own, but takes
    // children all the same.
    (memory.join("cgroup.procs").exists() && pids.join("cgroup.procs").exists()).then_some((
        Layout::V1,
        memory,
        Some(pids),
    ))
}

/// The layout this host gives runs, checked by making (and removing) a
/// group. `None`: no cgroup for runs here.
pub fn probe() -> Option<Layout> {
    let g = RunGroup::create(64 << 20, 8).ok()?;
    Some(g.layout)
}

impl RunGroup {
    /// Makes the run's group(s) with the given ceilings.
    pub fn create(memory: u64, pids: u32) -> io::Result<RunGroup> {
        let (layout, first, second) = parents()
            .ok_or_else(|| io::Error::other("no cgroup hierarchy with memory and pids here"))?;
        sweep(&first);
        if let Some(second) = &second {
            sweep(second);
        }
        let name = format!(
            "skillbox-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut group = RunGroup {
            dirs: Vec::new(),
            memory_dir: first.join(&name),
            layout,
        };
        for parent in std::iter::once(&first).chain(second.as_ref()) {
            let dir = parent.join(&name);
            std::fs::create_dir(&dir)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
            group.dirs.push(dir);
        }
        let mem = memory.to_string();
        match layout {
            Layout::V2 => {
                let d = &group.dirs[0];
                write(&d.join("memory.max"), &mem)?;
                // No swap: the ceiling is real memory, as in v1 below.
                let _ = write(&d.join("memory.swap.max"), "0");
                write(&d.join("pids.max"), &pids.to_string())?;
            }
            Layout::V1 => {
                let (m, p) = (&group.dirs[0], &group.dirs[1]);
                write(&m.join("memory.limit_in_bytes"), &mem)?;
                // Present only with swap accounting; must not be below the
                // limit above, which is why it comes second.
                let memsw = m.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &mem)?;
                }
                write(&p.join("pids.max"), &pids.to_string())?;
            }
        }
        Ok(group)
    }

    /// The `cgroup.procs` files a process writes `0` to, to join.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// How many times the kernel killed a process of this group for memory.
    pub fn oom_kills(&self) -> u64 {
        let (file, key) = match self.layout {
            Layout::V2 => ("memory.events", "oom_kill"),
            Layout::V1 => ("memory.oom_control", "oom_kill"),
        };
        std::fs::read_to_string(self.memory_dir.join(file))
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse().ok())?
                })
            })
            .unwrap_or(0)
    }
}

impl Drop for RunGroup {
    fn drop(&mut self) {
        // The jail's processes were killed just before; they may take a
        // moment to leave. Removal waits for them off the caller's thread.
        let dirs = std::mem::take(&mut self.dirs);
        if dirs.iter().all(|d| std::fs::remove_dir(d).is_ok()) {
            return;
        }
        let _ = std::thread::Builder::new()
            .name("skillbox-cgroup-rm".into())
            .spawn(move || {
                for _ in 0..500 {
                    if dirs
                        .iter()
                        .all(|d| !d.exists() || std::fs::remove_dir(d).is_ok())
                    {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                tracing::warn!("could not remove cgroups {dirs:?}: processes remain in them");
            });
    }
}

/// Removes the empty groups of hosts that are gone.
fn sweep(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("skillbox-"))
            .and_then(|n| n.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where runs get a cgroup (root on this machine kind, with v1 memory
    /// and pids controllers), one is made with the ceilings and removed.
    #[test]
    fn a_run_group_is_made_and_removed() {
        // SAFETY: geteuid cannot fail.
        if parents().is_none() && unsafe { libc::geteuid() } != 0 {
            eprintln!("not root and no delegated cgroup: nothing to test");
            return;
        }
        let g = RunGroup::create(32 << 20, 7).unwrap();
        let dirs = g.dirs.clone();
        assert!(dirs.iter().all(|d| d.is_dir()));
        let pids = dirs.iter().find(|d| d.join("pids.max").exists()).unwrap();
        assert_eq!(
            std::fs::read_to_string(pids.join("pids.max"))
                .unwrap()
                .trim(),
            "7"
        );
        assert_eq!(g.oom_kills(), 0);
        drop(g);
        assert!(dirs.iter().all(|d| !d.exists()));
    }
}
