//! SKU patterns: `*` matches any run of characters (`PB-*`, `*-EU`, `*`).

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkuPattern {
    parts: Vec<String>,
    source: String,
}

impl SkuPattern {
    pub fn new(source: &str) -> SkuPattern {
        SkuPattern { parts: source.split('*').map(str::to_string).collect(), source: source.to_string() }
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn matches(&self, sku: &str) -> bool {
        let (first, rest) = match self.parts.split_first() {
            Some(x) => x,
            None => return sku.is_empty(),
        };
        if rest.is_empty() {
            return sku == first;
        }
        let Some(mut s) = sku.strip_prefix(first.as_str()) else { return false };
        let (last, middle) = rest.split_last().expect("rest is not empty");
        for part in middle {
            match s.find(part.as_str()) {
                Some(i) => s = &s[i + part.len()..],
                None => return false,
            }
        }
        s.len() >= last.len() && s.ends_with(last.as_str())
    }
}

/// Whether any pattern matches (an empty list matches everything).
pub fn any_matches(patterns: &[SkuPattern], sku: &str) -> bool {
    patterns.is_empty() || patterns.iter().any(|p| p.matches(sku))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stars_match_runs() {
        assert!(SkuPattern::new("PB-*").matches("PB-STERN-GODZ"));
        assert!(!SkuPattern::new("PB-*").matches("AC-PB-1"));
        assert!(SkuPattern::new("*-EU").matches("SP-COIN-MECH-EU"));
        assert!(SkuPattern::new("SP-*-EU").matches("SP-COIN-MECH-EU"));
        assert!(!SkuPattern::new("SP-*-EU").matches("SP-EU"));
        assert!(SkuPattern::new("*").matches("anything"));
        assert!(SkuPattern::new("EXACT").matches("EXACT") && !SkuPattern::new("EXACT").matches("EXACTLY"));
        assert!(any_matches(&[], "x"));
    }
}
