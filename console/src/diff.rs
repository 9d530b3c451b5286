//! Line differences between two texts (longest common subsequence), for comparing revisions.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Same,
    Added,
    Removed,
}

/// The lines of `before` and `after`, each marked same, added or removed, in order.
pub fn lines(before: &str, after: &str) -> Vec<(Change, String)> {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    // lcs[i][j]: length of the longest common subsequence of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push((Change::Same, a[i].to_string()));
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push((Change::Added, b[j].to_string()));
            j += 1;
        } else {
            out.push((Change::Removed, a[i].to_string()));
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_added_and_removed_lines() {
        let d = lines("a\nb\nc", "a\nx\nc\nd");
        let marks: Vec<(Change, &str)> = d.iter().map(|(c, l)| (*c, l.as_str())).collect();
        assert_eq!(
            marks,
            [
                (Change::Same, "a"),
                (Change::Added, "x"),
                (Change::Removed, "b"),
                (Change::Same, "c"),
                (Change::Added, "d"),
            ]
        );
        assert!(lines("", "").is_empty());
    }
}
