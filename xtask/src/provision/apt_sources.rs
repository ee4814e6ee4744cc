//! The apt sources this host is configured with (deb822 `.sources` and one-line `.list` files),
//! the Debian ones among them, and the bookworm-backports entry derived from them.

use std::path::PathBuf;

/// One Debian apt source: a URI, its suites and components, and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AptSource {
    /// The archive's URI.
    pub uri: String,
    /// Suites (e.g. the release and its security suite).
    pub suites: Vec<String>,
    /// Components.
    pub components: Vec<String>,
    /// The keyring, if the source names one.
    pub signed_by: Option<String>,
}

impl AptSource {
    fn is_debian(&self) -> bool {
        let uri = self.uri.trim_end_matches('/');
        self.signed_by.as_deref().is_some_and(|k| k.contains("debian-archive-keyring"))
            || uri.ends_with("/debian")
            || uri.ends_with("/debian-security")
    }
}

/// Parses deb822 `.sources` text.
pub fn parse_deb822(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields = std::collections::HashMap::new();
        for line in stanza.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if let Some((k, v)) = line.split_once(':') {
                fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let words = |k: &str| -> Vec<String> {
            fields.get(k).map(|v| v.split_whitespace().map(String::from).collect()).unwrap_or_default()
        };
        if !words("types").iter().any(|t| t == "deb") || fields.get("enabled").is_some_and(|e| e == "no") {
            continue;
        }
        for uri in words("uris") {
            out.push(AptSource {
                uri,
                suites: words("suites"),
                components: words("components"),
                signed_by: fields.get("signed-by").cloned(),
            });
        }
    }
    out
}

/// Parses one-line-style `.list` text.
pub fn parse_one_line(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| l.starts_with("deb ")) {
        let mut rest = line["deb ".len()..].trim();
        let mut signed_by = None;
        if rest.starts_with('[') {
            let Some(end) = rest.find(']') else { continue };
            for opt in rest[1..end].split_whitespace() {
                if let Some(key) = opt.strip_prefix("signed-by=") {
                    signed_by = Some(key.to_string());
                }
            }
            rest = rest[end + 1..].trim();
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else {
            continue;
        };
        out.push(AptSource {
            uri: uri.to_string(),
            suites: vec![suite.to_string()],
            components: words.map(String::from).collect(),
            signed_by,
        });
    }
    out
}

/// The apt source (deb822) for bookworm-backports, from the archive this host already takes
/// bookworm from: a mirror or a proxy stays as the system has it.
pub fn backports_entry(sources: &[AptSource]) -> Option<String> {
    let base = sources.iter().find(|s| s.suites.iter().any(|suite| suite == "bookworm"))?;
    let key = base.signed_by.as_ref().map(|k| format!("Signed-By: {k}\n")).unwrap_or_default();
    Some(format!("Types: deb\nURIs: {}\nSuites: bookworm-backports\nComponents: main\n{key}", base.uri))
}

/// The Debian sources configured on this host.
pub fn system_debian_sources() -> Vec<AptSource> {
    let mut sources = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
        sources.extend(parse_one_line(&text));
    }
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            match path.extension().and_then(|e| e.to_str()) {
                Some("sources") => sources.extend(parse_deb822(&text)),
                Some("list") => sources.extend(parse_one_line(&text)),
                _ => {}
            }
        }
    }
    sources.into_iter().filter(AptSource::is_debian).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backports_come_from_the_systems_own_bookworm_archive() {
        let text = "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\
                    Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                    Types: deb\nURIs: http://proxy.example:3142/debian\nSuites: bookworm bookworm-updates\n\
                    Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";
        let entry = backports_entry(&parse_deb822(text));
        assert_eq!(
            entry.as_deref(),
            Some(
                "Types: deb\nURIs: http://proxy.example:3142/debian\nSuites: bookworm-backports\nComponents: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            )
        );
        assert_eq!(backports_entry(&[]), None);
    }

    #[test]
    fn deb822_sources_parse() {
        let text =
            "Types: deb\n# comment\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                    Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                    Types: deb-src\nURIs: http://mirror.example/debian\nSuites: bookworm\nComponents: main\n";
        let s = parse_deb822(text);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].suites, vec!["bookworm", "bookworm-updates"]);
        assert!(s[0].is_debian());
    }

    #[test]
    fn one_line_sources_parse() {
        let text = "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://m.example/debian-security bookworm-security main contrib\n\
                    deb http://other.example/apt cloud main\n";
        let s = parse_one_line(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].signed_by.as_deref(), Some("/k.gpg"));
        assert_eq!(s[0].components, vec!["main", "contrib"]);
        assert!(s[0].is_debian());
        assert!(!s[1].is_debian());
    }
}
