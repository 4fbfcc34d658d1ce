//! Scrubbing secret values out of text that leaves the process: error
//! messages from platforms, audit summaries, log lines.

use crate::config::secret::Secret;

/// Replace every occurrence of any secret with `[redacted]`.
pub fn redact<'a>(text: &str, secrets: impl IntoIterator<Item = &'a Secret>) -> String {
    let mut out = text.to_string();
    for s in secrets {
        let v = s.expose();
        // Very short values would blank out ordinary words; such secrets are refused at load.
        if v.len() >= 4 && out.contains(v) {
            out = out.replace(v, "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_scrubbed() {
        let s = [Secret::new("shpat_abc123")];
        assert_eq!(redact("token shpat_abc123 refused", &s), "token [redacted] refused");
    }
}
