//! `berth images pull REF`: pulls an image into the node's store with the node's registry
//! configuration (`<data-dir>/registries.yaml`), printing each layer's progress on stderr
//! (updated in place on a terminal, one final line per layer otherwise) and the image id on
//! stdout.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use berth_images::{Credentials, LayerProgress, LayerState, PullOptions, PullProgress};

/// Pulls `reference` into `<data_dir>/images`.
pub fn run(
    reference: &str,
    data_dir: &Path,
    username: Option<String>,
    password: Option<String>,
) -> anyhow::Result<()> {
    let store = berth_images::ImageStore::open(&data_dir.join("images"))
        .context("failed to open the image store")?;
    let registries = berth_images::RegistriesConfig::load(&data_dir.join("registries.yaml"))?;
    let printer = Printer {
        tty: std::io::stderr().is_terminal(),
        last: Mutex::new(None),
    };
    let options = PullOptions {
        registries,
        credentials: username.map(|username| Credentials {
            username,
            password: password.unwrap_or_default(),
        }),
        progress: Some(&printer),
    };
    let started = std::time::Instant::now();
    let pulled = store.pull(reference, &options);
    printer.finish_line();
    // The error's message already carries its causes (containerd's wording).
    let pulled = pulled.map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!(
        "pulled {} in {:.1}s: {} ({} fetched)",
        pulled
            .image
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| reference.to_string()),
        started.elapsed().as_secs_f64(),
        human(pulled.size),
        human(pulled.downloaded)
    );
    println!("{}", pulled.image.id);
    Ok(())
}

/// Prints layer progress on stderr.
struct Printer {
    tty: bool,
    /// The layer whose line is open (on a terminal), and its last report.
    last: Mutex<Option<LayerProgress>>,
}

impl Printer {
    fn line(p: &LayerProgress) -> String {
        let short: String = p.digest.to_string().chars().take(19).collect();
        match p.state {
            LayerState::Exists => format!("{short}… already exists"),
            LayerState::Downloading => {
                format!("{short}… {} / {}", human(p.done), human(p.total))
            }
            LayerState::Downloaded => {
                format!("{short}… {} / {} done", human(p.done), human(p.total))
            }
        }
    }

    /// Ends the open line on a terminal.
    fn finish_line(&self) {
        if let Ok(mut last) = self.last.lock() {
            if self.tty && last.take().is_some() {
                eprintln!();
            }
        }
    }
}

impl PullProgress for Printer {
    fn layer(&self, p: &LayerProgress) {
        let Ok(mut last) = self.last.lock() else {
            return;
        };
        let mut err = std::io::stderr().lock();
        if self.tty {
            if last.as_ref().is_some_and(|l| l.digest != p.digest) {
                let _ = writeln!(err);
            }
            let _ = write!(err, "\r\x1b[K{}", Self::line(p));
            let _ = err.flush();
            *last = Some(p.clone());
        } else if p.state != LayerState::Downloading {
            // Not a terminal: one plain line per layer when it is done.
            let _ = writeln!(err, "{}", Self::line(p));
        }
    }
}

/// Bytes as people read them: `512 B`, `1.2 MiB`.
fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(1023), "1023 B");
        assert_eq!(human(1024), "1.0 KiB");
        assert_eq!(human(1_258_291), "1.2 MiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
