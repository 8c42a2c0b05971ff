//! Percent-encoding of path segments (keys may hold any character).

/// Encodes everything but RFC 3986 unreserved characters.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Encodes a query value.
pub fn query(s: &str) -> String {
    segment(s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_reserved_characters() {
        assert_eq!(super::segment("a/b c?é"), "a%2Fb%20c%3F%C3%A9");
        assert_eq!(super::segment("plain-key_1.x~"), "plain-key_1.x~");
    }
}
