//! `ignis logs FUNCTION [-f]`: a function's log lines, from every instance — those of its
//! recent activations, or, with `-f`, each new line as it is written.

use std::io::Write as _;

use clap::Args;
use ignis_client::display::rfc3339_ms;
use ignis_client::{FunctionLogLine, LogEvent, LogQuery};
use ignis_core::LogStream;

use super::GlobalOpts;

/// Print a function's logs.
#[derive(Args, Debug)]
pub struct LogsCommand {
    /// Function name
    function: String,
    /// Follow: print new lines as the function's instances write them, until interrupted
    #[arg(long, short = 'f')]
    follow: bool,
    /// Only lines of this stream: stdout or stderr
    #[arg(long, value_parser = parse_stream)]
    stream: Option<LogStream>,
    /// Only lines containing this text
    #[arg(long)]
    grep: Option<String>,
    /// Only lines of this activation
    #[arg(long)]
    activation: Option<String>,
    /// Only lines of this version
    #[arg(long, value_name = "N")]
    version: Option<u32>,
    /// Without -f: how many recent activations to print the lines of [default: 10]
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    tail: Option<u32>,
}

fn parse_stream(s: &str) -> Result<LogStream, String> {
    match s {
        "stdout" => Ok(LogStream::Stdout),
        "stderr" => Ok(LogStream::Stderr),
        other => Err(format!("stream must be stdout or stderr, not {other:?}")),
    }
}

/// One line as printed: time, activation id, stream, text.
fn format_line(l: &FunctionLogLine) -> String {
    format!(
        "{} {} {} {}",
        rfc3339_ms(l.ts_ms),
        l.activation_id,
        l.stream.as_str(),
        l.line
    )
}

impl LogsCommand {
    /// Runs the command.
    pub async fn execute(self, global: &GlobalOpts) -> anyhow::Result<()> {
        let client = global.client()?;
        let query = LogQuery {
            stream: self.stream,
            grep: self.grep,
            activation: self.activation,
            version: self.version,
            tail: self.tail,
        };
        let json = global.json;
        let print = move |l: &FunctionLogLine| {
            let text = if json {
                serde_json::to_string(l).unwrap_or_default()
            } else {
                format_line(l)
            };
            let mut out = std::io::stdout().lock();
            // A closed stdout (`| head`) ends the command.
            writeln!(out, "{text}").and_then(|()| out.flush()).is_ok()
        };
        if !self.follow {
            for l in client.recent_logs(&self.function, &query).await? {
                if !print(&l) {
                    break;
                }
            }
            return Ok(());
        }
        let function = self.function.clone();
        client
            .follow_logs(&self.function, &query, |event| match event {
                LogEvent::Ready => {
                    eprintln!("following the logs of {function} (Ctrl-C to stop)");
                    true
                }
                LogEvent::Line(l) => print(&l),
                LogEvent::Missed(n) => {
                    eprintln!("[{n} lines missed: reading too slowly]");
                    true
                }
            })
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ignis_core::ActivationId;

    #[test]
    fn a_line_names_its_activation_and_stream() {
        let id = ActivationId::new();
        let l = FunctionLogLine {
            ts_ms: 0,
            activation_id: id,
            version: 1,
            stream: LogStream::Stderr,
            line: "boom".into(),
        };
        assert_eq!(
            format_line(&l),
            format!("1970-01-01T00:00:00.000Z {id} stderr boom")
        );
        assert!(parse_stream("stdin").is_err());
    }
}
