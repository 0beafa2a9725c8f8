//! `skillbox completions` and `skillbox man`: shell completion scripts and
//! man pages, generated from the same clap definitions as `--help`.

use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::exit;

/// Print a shell completion script.
///
/// bash: `skillbox completions bash > ~/.local/share/bash-completion/completions/skillbox`;
/// zsh: `skillbox completions zsh > ~/.zfunc/_skillbox` (with `fpath+=~/.zfunc`);
/// fish: `skillbox completions fish > ~/.config/fish/completions/skillbox.fish`.
#[derive(Args, Debug)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    pub shell: Shell,
}

/// Write man pages: skillbox(1) and one per command (skillbox-run(1), …).
///
/// `skillbox man --out ~/.local/share/man/man1`, then `man skillbox-run`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `skillbox completions`.
pub fn completions(args: CompletionsArgs) -> u8 {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "skillbox", &mut std::io::stdout());
    exit::OK
}

/// `skillbox man`.
pub fn man(args: ManArgs) -> u8 {
    match write_pages(&args.out) {
        Ok(pages) => {
            errln!("wrote {} man pages to {}", pages, args.out.display());
            exit::OK
        }
        Err(e) => {
            errln!("error: {e}");
            exit::FAILED
        }
    }
}

/// Writes the page of `skillbox` and of every command beneath it; how
/// many.
fn write_pages(out: &std::path::Path) -> Result<usize, String> {
    std::fs::create_dir_all(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut cmd = super::Cli::command();
    cmd.build();
    let mut pending = vec![cmd];
    let mut written = 0;
    while let Some(cmd) = pending.pop() {
        let name = cmd.get_display_name().unwrap_or(cmd.get_name()).to_string();
        let path = out.join(format!("{name}.1"));
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd.clone())
            .render(&mut page)
            .map_err(|e| format!("{name}: {e}"))?;
        std::fs::write(&path, page).map_err(|e| format!("{}: {e}", path.display()))?;
        written += 1;
        pending.extend(
            cmd.get_subcommands()
                .filter(|c| c.get_name() != "help")
                .cloned(),
        );
    }
    Ok(written)
}
