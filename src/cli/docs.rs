//! `tarpit man` and `tarpit completions SHELL`: the manual pages and shell
//! completions, generated from the same clap definitions that parse the
//! command line, so they cannot drift from it. The Debian package is built
//! with files these commands write.

use super::{Cli, Error};
use clap::{Args, CommandFactory};
use std::io::Write;
use std::path::PathBuf;

#[derive(Debug, Args, Clone)]
pub struct ManArgs {
    /// Write tarpit.1 and one page per subcommand (tarpit-serve.1, ...) into
    /// this directory instead of printing tarpit.1.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args, Clone)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Appended to tarpit.1: where things live and what to read next, which the
/// clap definitions cannot say.
const MAIN_PAGE_EXTRA: &str = r#".SH FILES
.TP
\fI/etc/tarpit/tarpit.toml\fR
Configuration: \fB[serve]\fR and \fB[watch]\fR tables; command-line flags override it.
.TP
\fI/etc/tarpit/tarpit.nft\fR
nftables include: table \fBinet tarpit\fR, sets \fBtrap4\fR/\fBtrap6\fR and the redirect rule, the same ruleset \fBtarpit watch\fR creates.
.TP
\fI/etc/fail2ban/action.d/tarpit.conf\fR, \fI/etc/fail2ban/jail.d/tarpit-multiban.conf\fR
fail2ban action that puts banned hosts into the trap sets, and the multi-ban jail (3 bans in 24 h: trapped for a week), shipped disabled.
.TP
\fI/var/lib/tarpit/state.db\fR, \fI/var/lib/tarpit/history.db\fR
The watcher's bans and the connection history (SQLite).
.TP
\fI/run/tarpit/control.sock\fR
Control socket of a running \fBtarpit serve\fR (\fBtarpit stats\fR, takeover).
.SH SEE ALSO
\fBnft\fR(8), \fBfail2ban-client\fR(1), \fBjail.conf\fR(5), \fBsystemd.socket\fR(5), \fBsystemd.exec\fR(5)
"#;

pub fn man(a: &ManArgs) -> Result<(), Error> {
    let cmd = Cli::command();
    let result = match &a.dir {
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd).render(&mut out).and_then(|()| {
                out.extend_from_slice(MAIN_PAGE_EXTRA.as_bytes());
                std::io::stdout().write_all(&out)
            })
        }
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(cmd, dir))
            .and_then(|()| {
                let main = dir.join("tarpit.1");
                let mut f = std::fs::OpenOptions::new().append(true).open(main)?;
                f.write_all(MAIN_PAGE_EXTRA.as_bytes())
            }),
    };
    result.map_err(|e| Error::Failed(format!("cannot write the manual page: {e}")))
}

pub fn completions(a: &CompletionsArgs) -> Result<(), Error> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "tarpit", &mut out);
    std::io::stdout()
        .write_all(&out)
        .map_err(|e| Error::Failed(format!("cannot write completions: {e}")))
}
