//! Grant flags shared by `run` and `inspect`.

use std::path::PathBuf;

use clap::Args;
use skillbox::policy::{Access, ExecRule, FsGrant, Grants, WriteAsk};
use skillbox::units::{ByteSize, HumanDuration};

/// The `--help` heading of the ask rules.
const ASK_RULES: &str = "Ask rules (granted call by call, with the operator's approval)";

/// What the operator grants. Nothing is granted by default.
#[derive(Args, Debug, Default)]
pub struct GrantArgs {
    /// Grant read access to a host directory, seen by the skill at GUEST
    /// (default: the same path). Repeatable.
    #[arg(
        long = "allow-read",
        value_name = "HOST[:GUEST]",
        help_heading = "Grants"
    )]
    pub read: Vec<String>,
    /// Grant read-write access to a host directory. Repeatable.
    #[arg(
        long = "allow-write",
        value_name = "HOST[:GUEST]",
        help_heading = "Grants"
    )]
    pub write: Vec<String>,
    /// Allow running a host program with arguments matching the patterns
    /// (exact strings or globs `*` `?`; a final `**` matches any remaining
    /// arguments), e.g. 'du -k -d 1 .'. No shell is ever involved. Repeatable.
    #[arg(
        long = "allow-exec",
        value_name = "'PROGRAM [ARG-PATTERN…]'",
        help_heading = "Grants"
    )]
    pub exec: Vec<String>,
    /// Give the program PROGRAM (as in --allow-exec), whenever the skill
    /// runs it, the secret NAME in its environment (as the variable NAME).
    /// The skill never sees the value: what the program prints comes back
    /// with it as [redacted]. The host defines NAME ([secrets.NAME] in its
    /// configuration; `run --secret NAME=…`). Repeatable.
    #[arg(
        long = "allow-exec-secret",
        value_names = ["PROGRAM", "NAME"],
        num_args = 2,
        action = clap::ArgAction::Append,
        help_heading = "Grants"
    )]
    pub exec_secrets: Vec<String>,
    /// Let the skill (and the programs it runs) see this environment variable. Repeatable.
    #[arg(long = "allow-env", value_name = "NAME", help_heading = "Grants")]
    pub env: Vec<String>,
    /// Allow connecting to this endpoint. Repeatable.
    #[arg(long = "allow-net", value_name = "HOST:PORT", help_heading = "Grants")]
    pub net: Vec<String>,
    /// Allow building, tagging and running Docker images whose tag matches
    /// the pattern (e.g. 'myapp:*'), and managing the containers the skill
    /// starts. The engine is the DOCKER_HOST (default
    /// unix:///var/run/docker.sock) of the process that runs the skill:
    /// `run`'s own, the daemon's for `spawn`; never the skill's choice.
    /// Repeatable.
    #[arg(
        long = "allow-docker",
        value_name = "IMAGE-PATTERN",
        help_heading = "Docker grants"
    )]
    pub docker: Vec<String>,
    /// Allow building images (from granted directories only).
    #[arg(long = "allow-docker-build", help_heading = "Docker grants")]
    pub docker_build: bool,
    /// Allow passing this build argument. Repeatable.
    #[arg(
        long = "allow-docker-build-arg",
        value_name = "NAME",
        help_heading = "Docker grants"
    )]
    pub docker_build_args: Vec<String>,
    /// Let containers (and build steps) join this network besides `none`,
    /// e.g. `host`. Repeatable.
    #[arg(
        long = "allow-docker-network",
        value_name = "NAME",
        help_heading = "Docker grants"
    )]
    pub docker_networks: Vec<String>,
    /// Memory ceiling of each container [default: 512MiB].
    #[arg(long, value_name = "SIZE", help_heading = "Docker grants")]
    pub docker_memory: Option<ByteSize>,
    /// Give builds of the Dockerfile whose sha256 is DOCKERFILE-SHA256
    /// (`sha256:HEX`, as `sha256sum` prints it) the secret NAME as the
    /// build argument NAME, when the skill passes the reference
    /// `${secret:NAME}` for it. Pin a Dockerfile you have read: its steps
    /// can read the argument. Repeatable.
    #[arg(
        long = "allow-docker-build-secret",
        value_names = ["NAME", "DOCKERFILE-SHA256"],
        num_args = 2,
        action = clap::ArgAction::Append,
        help_heading = "Docker grants"
    )]
    pub docker_build_secrets: Vec<String>,
    /// Give containers of the image whose id is IMAGE-ID (`sha256:HEX`,
    /// `docker image inspect -f '{{.Id}}' IMAGE`), running the image's own
    /// command, the secret NAME as the variable NAME, when the skill passes
    /// the reference `${secret:NAME}` for it. Repeatable.
    #[arg(
        long = "allow-docker-run-secret",
        value_names = ["NAME", "IMAGE-ID"],
        num_args = 2,
        action = clap::ArgAction::Append,
        help_heading = "Docker grants"
    )]
    pub docker_run_secrets: Vec<String>,
    /// Process ceiling of each container [default: 256].
    #[arg(long, value_name = "N", help_heading = "Docker grants")]
    pub docker_pids: Option<u32>,
    /// Owner label of the skill's containers: it may only touch containers
    /// with this owner [default: sha256-DIGEST of the skill's pinned
    /// component; an unpinned skill has none].
    #[arg(long, value_name = "NAME", help_heading = "Docker grants")]
    pub docker_owner: Option<String>,
    /// Cap on linear memory [default: 256MiB].
    #[arg(long, value_name = "SIZE", help_heading = "Limits")]
    pub memory: Option<ByteSize>,
    /// Wall-clock limit of the run: 500ms, 90s, 15m, 2h (a bare number is
    /// seconds) [default: 15m].
    #[arg(long, value_name = "DURATION", help_heading = "Limits")]
    pub timeout: Option<HumanDuration>,
    /// Cap on each output stream, the logs and the summary [default: 1MiB].
    #[arg(long, value_name = "SIZE", help_heading = "Limits")]
    pub output: Option<ByteSize>,
    /// Meter execution and stop after this much fuel (about one unit per
    /// wasm instruction).
    #[arg(long, value_name = "N", help_heading = "Limits")]
    pub fuel: Option<u64>,
    /// Allow running a program with matching arguments, but only once the
    /// operator approves each call (`skillbox tasks approve`); the call
    /// waits for the decision. Same form as --allow-exec. Repeatable.
    #[arg(
        long = "ask-exec",
        value_name = "'PROGRAM [ARG-PATTERN…]'",
        help_heading = ASK_RULES
    )]
    pub ask_exec: Vec<String>,
    /// Allow starting, stopping and removing containers of images matching
    /// the pattern, each call once approved. Builds and tags do not ask.
    /// Repeatable.
    #[arg(
        long = "ask-docker",
        value_name = "IMAGE-PATTERN",
        help_heading = ASK_RULES
    )]
    pub ask_docker: Vec<String>,
    /// Grant a directory read-write, writable once the operator approves
    /// the run's first change in it. Repeatable.
    #[arg(
        long = "ask-write",
        value_name = "HOST[:GUEST]",
        help_heading = ASK_RULES
    )]
    pub ask_write: Vec<String>,
    /// Allow connecting to this endpoint once the operator approves the
    /// run's first connection to it. Repeatable.
    #[arg(
        long = "ask-net",
        value_name = "HOST:PORT",
        help_heading = ASK_RULES
    )]
    pub ask_net: Vec<String>,
    /// How long a call waits for a decision before it is denied; the wait
    /// does not count against --timeout [default: 1h].
    #[arg(
        long = "approval-timeout",
        value_name = "DURATION",
        help_heading = ASK_RULES
    )]
    pub approval_timeout: Option<HumanDuration>,
    /// Read grants from a policy file (TOML); flags add to it.
    #[arg(long, value_name = "FILE", help_heading = "Grants")]
    pub policy: Option<PathBuf>,
}

impl GrantArgs {
    /// The grants these flags (and the policy file) give.
    pub fn to_grants(&self) -> Result<Grants, skillbox::Error> {
        let mut g = match &self.policy {
            Some(p) => Grants::load(p)?,
            None => Grants::default(),
        };
        let bad = |e: String| skillbox::Error::Grant(e);
        let mut flags = Grants::default();
        for s in &self.read {
            flags
                .fs
                .push(FsGrant::parse_cli(s, Access::Read).map_err(bad)?);
        }
        for s in &self.write {
            flags
                .fs
                .push(FsGrant::parse_cli(s, Access::ReadWrite).map_err(bad)?);
        }
        for s in &self.exec {
            flags.exec.allow.push(ExecRule::parse_cli(s).map_err(bad)?);
        }
        for pair in self.exec_secrets.chunks(2) {
            if let [program, name] = pair {
                flags
                    .secrets
                    .exec
                    .push(skillbox::policy::ExecSecret::parse_cli(program, name).map_err(bad)?);
            }
        }
        for pair in self.docker_build_secrets.chunks(2) {
            if let [name, digest] = pair {
                let digest = if digest.starts_with("sha256:") {
                    digest.clone()
                } else {
                    format!("sha256:{digest}")
                };
                flags
                    .secrets
                    .docker_build
                    .push(skillbox::policy::BuildSecret::parse_cli(name, &digest).map_err(bad)?);
            }
        }
        for pair in self.docker_run_secrets.chunks(2) {
            if let [name, image] = pair {
                flags
                    .secrets
                    .docker_run
                    .push(skillbox::policy::RunSecret::parse_cli(name, image).map_err(bad)?);
            }
        }
        flags.env.allow = self.env.clone();
        flags.net.allow = self.net.clone();
        flags.docker = skillbox::policy::DockerGrant {
            images: self.docker.clone(),
            build: self.docker_build,
            build_args: self.docker_build_args.clone(),
            networks: self.docker_networks.clone(),
            memory: self.docker_memory,
            pids: self.docker_pids,
            owner: self.docker_owner.clone(),
        };
        flags.limits.memory = self.memory;
        flags.limits.timeout = self.timeout;
        flags.limits.output = self.output;
        flags.limits.fuel = self.fuel;
        for s in &self.ask_exec {
            flags.ask.exec.push(ExecRule::parse_cli(s).map_err(bad)?);
        }
        flags.ask.docker = self.ask_docker.clone();
        for s in &self.ask_write {
            flags.ask.write.push(WriteAsk::parse_cli(s).map_err(bad)?);
        }
        flags.ask.net = self.ask_net.clone();
        flags.ask.timeout = self.approval_timeout;
        flags.validate().map_err(bad)?;
        g.merge(flags);
        Ok(g)
    }
}
