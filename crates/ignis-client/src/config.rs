//! The CLI config file: where the server is and the key to use, written by `ignis serve` on
//! first start so that the CLI works with no set-up.
//!
//! ```toml
//! url = "http://127.0.0.1:8080"
//! key = "ik_0123abcd:0123…"
//! namespace = "default"   # optional
//! ```

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use ignis_core::DEFAULT_NAMESPACE;
use serde::{Deserialize, Serialize};

use crate::ClientError;
use crate::client::normalize_url;

/// Environment variable naming the config file, overriding the default location.
pub const CONFIG_ENV: &str = "IGNIS_CONFIG";

/// The contents of the CLI config file (TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`.
    pub url: String,
    /// API key, `ik_<id>:<secret>`.
    pub key: String,
    /// Namespace to work in when none is given; `default` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl CliConfig {
    /// Where the config file is: `$IGNIS_CONFIG` if set, else
    /// `$XDG_CONFIG_HOME/ignis/cli.toml`, else `$HOME/.config/ignis/cli.toml`; `None` when
    /// none of these variables is set.
    pub fn default_path() -> Option<PathBuf> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        Self::path_from(var(CONFIG_ENV), var("XDG_CONFIG_HOME"), var("HOME"))
    }

    fn path_from(
        explicit: Option<std::ffi::OsString>,
        xdg_config_home: Option<std::ffi::OsString>,
        home: Option<std::ffi::OsString>,
    ) -> Option<PathBuf> {
        if let Some(path) = explicit {
            return Some(PathBuf::from(path));
        }
        // The XDG spec says relative values are to be ignored.
        if let Some(dir) = xdg_config_home
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
        {
            return Some(dir.join("ignis").join("cli.toml"));
        }
        home.map(|h| {
            PathBuf::from(h)
                .join(".config")
                .join("ignis")
                .join("cli.toml")
        })
    }

    /// Reads the config file at `path`: `Ok(None)` if there is none, an error naming the file
    /// (and the offending key or line) if it cannot be read or is malformed.
    pub fn load(path: &Path) -> Result<Option<Self>, ClientError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(ClientError::Config(format!(
                    "cannot read the CLI config file {}: {e}",
                    path.display()
                )));
            }
        };
        Self::parse(&text)
            .map(Some)
            .map_err(|reason| ClientError::Config(format!("{}{reason}", path.display())))
    }

    /// Parses the TOML text; the error starts with `:<line>: ` when the line is known.
    fn parse(text: &str) -> Result<Self, String> {
        toml::from_str::<CliConfig>(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim_end_matches('.');
            match line {
                Some(line) => format!(":{line}: invalid CLI config: {message}"),
                None => format!(": invalid CLI config: {message}"),
            }
        })
    }

    /// Writes the config to `path`, creating its directory (mode 0700) if needed. The file is
    /// written to a temporary file beside it with mode 0600 and renamed into place, so a reader
    /// never sees half a file and the key is never readable by others.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let text = toml::to_string(self).map_err(io::Error::other)?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let file_name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a file path", path.display()),
            )
        })?;
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(file_name);
        tmp_name.push(format!(
            ".tmp.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let tmp = dir.join(tmp_name);
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        // Make the rename durable; failing to is not worth failing the save for.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Where the server is, resolved from flags, environment and the config file.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Settings {
    pub(crate) url: String,
    pub(crate) key: String,
    pub(crate) namespace: String,
}

/// Combines flags/environment with the config file; see [`crate::Client::from_opts`].
pub(crate) fn resolve(
    url: Option<String>,
    key: Option<String>,
    namespace: Option<String>,
    file: Option<CliConfig>,
    file_path: Option<&Path>,
) -> Result<Settings, ClientError> {
    let (file, other_server) = match (file, &url) {
        (Some(f), Some(u)) if !same_server(u, &f.url) => (None, Some(f.url)),
        (f, _) => (f, None),
    };
    let (file_url, file_key, file_ns) = match file {
        Some(f) => (Some(f.url), Some(f.key), f.namespace),
        None => (None, None, None),
    };
    let Some(url) = url.or(file_url) else {
        let written = match file_path {
            Some(p) => format!(" (it writes {} for the CLI)", p.display()),
            None => String::new(),
        };
        return Err(ClientError::Config(format!(
            "no Ignis server configured: start one with `ignis serve`{written}, \
             or set IGNIS_URL and IGNIS_KEY"
        )));
    };
    normalize_url(&url)?;
    let Some(key) = key.or(file_key) else {
        let note = match (other_server, file_path) {
            (Some(other), Some(p)) => {
                format!(" ({} holds the key of {other} only)", p.display())
            }
            _ => String::new(),
        };
        return Err(ClientError::Config(format!(
            "no API key for {url}: set IGNIS_KEY or pass --key{note}"
        )));
    };
    Ok(Settings {
        url,
        key,
        namespace: namespace
            .or(file_ns)
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned()),
    })
}

fn same_server(a: &str, b: &str) -> bool {
    match (normalize_url(a), normalize_url(b)) {
        (Ok(a), Ok(b)) => a.eq_ignore_ascii_case(&b),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn sample() -> CliConfig {
        CliConfig {
            url: "http://127.0.0.1:8080".into(),
            key: "ik_abcd:0123".into(),
            namespace: Some("team-a".into()),
        }
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("ignis").join("cli.toml");
        assert_eq!(CliConfig::load(&path).unwrap(), None);

        sample().save(&path).unwrap();
        assert_eq!(CliConfig::load(&path).unwrap(), Some(sample()));
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        // Saving again replaces the file and leaves no temporary file behind.
        let without_ns = CliConfig {
            namespace: None,
            ..sample()
        };
        without_ns.save(&path).unwrap();
        assert_eq!(CliConfig::load(&path).unwrap(), Some(without_ns));
        let entries: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, vec![std::ffi::OsString::from("cli.toml")]);
    }

    #[test]
    fn malformed_files_name_the_file_and_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cli.toml");
        fs::write(
            &path,
            "url = \"http://x\"\nkey = \"k\"\nnamespase = \"a\"\n",
        )
        .unwrap();
        let err = CliConfig::load(&path).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}:3: ", path.display())), "{err}");
        assert!(err.contains("namespase"), "{err}");

        fs::write(&path, "url = \"http://x\"\n").unwrap();
        let err = CliConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("key"), "{err}");
    }

    #[test]
    fn default_path_prefers_explicit_then_xdg_then_home() {
        let p = |e: Option<&str>, x: Option<&str>, h: Option<&str>| {
            CliConfig::path_from(e.map(Into::into), x.map(Into::into), h.map(Into::into))
        };
        assert_eq!(
            p(Some("/etc/i.toml"), Some("/x"), Some("/h")),
            Some(PathBuf::from("/etc/i.toml"))
        );
        assert_eq!(
            p(None, Some("/x"), Some("/h")),
            Some(PathBuf::from("/x/ignis/cli.toml"))
        );
        assert_eq!(
            p(None, Some("relative"), Some("/h")),
            Some(PathBuf::from("/h/.config/ignis/cli.toml"))
        );
        assert_eq!(p(None, None, None), None);
    }

    fn file_config() -> CliConfig {
        CliConfig {
            url: "http://127.0.0.1:8080".into(),
            key: "ik_file:secret".into(),
            namespace: Some("team".into()),
        }
    }

    #[test]
    fn flags_and_environment_win_over_the_file() {
        let path = PathBuf::from("/home/u/.config/ignis/cli.toml");
        let s = resolve(
            None,
            Some("ik_flag:x".into()),
            None,
            Some(file_config()),
            Some(&path),
        )
        .unwrap();
        assert_eq!(
            s,
            Settings {
                url: "http://127.0.0.1:8080".into(),
                key: "ik_flag:x".into(),
                namespace: "team".into(),
            }
        );
        let s = resolve(None, None, Some("ns2".into()), Some(file_config()), None).unwrap();
        assert_eq!(
            (s.key.as_str(), s.namespace.as_str()),
            ("ik_file:secret", "ns2")
        );
        // The same server spelled differently still gets the file's key.
        let s = resolve(
            Some("127.0.0.1:8080/".into()),
            None,
            None,
            Some(file_config()),
            None,
        )
        .unwrap();
        assert_eq!(s.key, "ik_file:secret");
    }

    #[test]
    fn the_file_key_is_never_sent_to_another_server() {
        let path = PathBuf::from("/c/cli.toml");
        let err = resolve(
            Some("http://other:9000".into()),
            None,
            None,
            Some(file_config()),
            Some(&path),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("no API key for http://other:9000"), "{err}");
        assert!(
            err.contains("/c/cli.toml holds the key of http://127.0.0.1:8080"),
            "{err}"
        );
    }

    #[test]
    fn nothing_configured_says_how_to_start() {
        let err = resolve(None, None, None, None, Some(&PathBuf::from("/c/cli.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ignis serve"), "{err}");
        assert!(err.contains("IGNIS_URL"), "{err}");
        let s = resolve(Some("h:1".into()), Some("k".into()), None, None, None).unwrap();
        assert_eq!(s.namespace, "default");
    }
}
